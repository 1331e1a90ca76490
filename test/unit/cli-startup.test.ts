/**
 * Every CLI call is a new process: bin/lbctl loads one bundled file
 * (scripts/bundle-cli.mjs) holding what defines the commands and the socket
 * client; never the daemon, the data plane, native code, the YAML library or
 * the logger, which load as modules of their own when a command needs them.
 * (What a call costs is measured by the benchmarks: bench/control-plane.ts.)
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PROJECT_ROOT } from '../../src/paths.js';

const LBCTL = join(PROJECT_ROOT, 'bin', 'lbctl');
const BUNDLE = join(PROJECT_ROOT, 'dist', 'cli', 'lbctl.cjs');
const TRACE = join(PROJECT_ROOT, 'dist', 'test', 'support', 'trace-loads.js');

/** What must stay out of a CLI call that does not start the daemon or read a config file. */
const HEAVY = [
  /(^|\/)node_modules\/(yaml|pino|pino-pretty|koffi|prom-client)\//,
  /(^|\/)dist\/src\/(daemon|dataplane|health|metrics|net|maglev)\//,
  /(^|\/)dist\/src\/model\/(config|desired-state)\.js$/,
  /(^|\/)dist\/src\/log\.js$/,
];
const heavy = (files: readonly string[]) => files.filter((f) => HEAVY.some((pattern) => pattern.test(f)));

/** The module files a call of lbctl loads, as paths relative to the tree. */
function loads(args: readonly string[]): { files: string[]; status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', TRACE, LBCTL, ...args], { encoding: 'utf8' });
  const files = r.stderr
    .split('\n')
    .map((line) => /^import: (file:.*)$/.exec(line)?.[1] ?? /^require: (\/.*)$/.exec(line)?.[1])
    .filter((f) => f !== undefined)
    .map((f) => relative(PROJECT_ROOT, f.startsWith('file:') ? fileURLToPath(f) : f))
    .filter((f, i, all) => f !== relative(PROJECT_ROOT, TRACE) && all.indexOf(f) === i);
  return { files, status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('the bundle holds the command line and the socket client, none of the daemon', () => {
  const meta = JSON.parse(readFileSync(join(PROJECT_ROOT, 'dist', 'cli', 'lbctl.meta.json'), 'utf8')) as {
    inputs: Record<string, unknown>;
  };
  const inputs = Object.keys(meta.inputs);
  for (const inside of ['dist/src/cli/main.js', 'dist/src/api/client.js', 'dist/src/cli/format.js'])
    assert.ok(inputs.includes(inside), `${inside} in the bundle`);
  assert.ok(
    inputs.some((f) => f.startsWith('node_modules/commander/')),
    'commander in the bundle',
  );
  assert.deepEqual(heavy(inputs), [], 'nothing of the daemon in the bundle');
  const source = readFileSync(BUNDLE, 'utf8');
  for (const outside of ['../src/daemon/start.js', '../src/model/config.js', '../src/dataplane/decap.js', '../src/cli/top.js'])
    assert.ok(source.includes(`import("${outside}")`), `${outside} loaded when its command runs`);
});

test('lbctl --version, --help and a change load only the bundle', () => {
  const runs: Array<[string[], number]> = [
    [['--version'], 0],
    [['--help'], 0],
    [['backend', 'weight', '10.0.0.100:80/tcp', '10.0.0.11', '3', '--socket', '/nonexistent/lbctl.sock'], 4],
  ];
  for (const [args, status] of runs) {
    const run = loads(args);
    assert.equal(run.status, status, run.stderr);
    assert.deepEqual(run.files, ['bin/lbctl', 'dist/cli/lbctl.cjs'], `lbctl ${args.join(' ')}`);
  }
  const change = loads(runs[2]![0]);
  assert.match(change.stderr, /^lbctl: no lbctl daemon is listening on \/nonexistent\/lbctl\.sock/m);
});

test('a command that needs the config parser loads it when it runs', () => {
  const run = loads(['config', 'check', join(PROJECT_ROOT, 'packaging', 'lbctl.example.yaml')]);
  assert.equal(run.status, 0, run.stderr);
  assert.ok(run.files.includes('dist/src/model/config.js'), run.files.join(' '));
  assert.ok(
    run.files.some((f) => f.startsWith('node_modules/yaml/')),
    'the YAML library',
  );
  const daemon = run.files.filter((f) => /^dist\/src\/(daemon|dataplane|health|metrics|net)\/|^node_modules\/(koffi|pino)/.test(f));
  assert.deepEqual(daemon, [], 'nothing of the daemon');
});
