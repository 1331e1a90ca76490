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

/** The daemon's modules: only `start` loads them. */
const DAEMON = [
  /(^|\/)node_modules\/(pino|pino-pretty|koffi|prom-client)\//,
  /(^|\/)dist\/src\/(daemon|dataplane|health|metrics|net)\//,
  /(^|\/)dist\/src\/log\.js$/,
];
/** The config file's parser and what it builds: only the commands that read a config file load them. */
const CONFIG_PARSER = [/(^|\/)node_modules\/yaml\//, /(^|\/)dist\/src\/model\/(config|desired-state)\.js$/, /(^|\/)dist\/src\/maglev\//];
const matching = (files: readonly string[], patterns: readonly RegExp[]) => files.filter((f) => patterns.some((p) => p.test(f)));

/** The module files a call of lbctl loads, as paths relative to the tree. */
function loads(args: readonly string[]): { files: string[]; status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', TRACE, LBCTL, ...args], { encoding: 'utf8' });
  const files = r.stderr
    .split('\n')
    .map((line) => /^import: (file:.*)$/.exec(line)?.[1] ?? /^require: (\/.*)$/.exec(line)?.[1])
    .filter((f) => f !== undefined)
    .map((f) => relative(PROJECT_ROOT, f.startsWith('file:') ? fileURLToPath(f) : f))
    .filter((f, i, all) => f !== relative(PROJECT_ROOT, TRACE) && all.indexOf(f) === i);
  return { files, status: r.status, stderr: r.stderr };
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
  assert.deepEqual(matching(inputs, [...DAEMON, ...CONFIG_PARSER]), [], 'nothing of the daemon or the config parser in the bundle');
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
    if (status === 4) assert.match(run.stderr, /^lbctl: no lbctl daemon is listening on \/nonexistent\/lbctl\.sock/m);
  }
});

test('a command that needs the config parser loads it when it runs', () => {
  const run = loads(['config', 'check', join(PROJECT_ROOT, 'packaging', 'lbctl.example.yaml')]);
  assert.equal(run.status, 0, run.stderr);
  assert.ok(run.files.includes('dist/src/model/config.js'), run.files.join(' '));
  assert.ok(
    run.files.some((f) => f.startsWith('node_modules/yaml/')),
    'the YAML library',
  );
  assert.deepEqual(matching(run.files, DAEMON), [], 'nothing of the daemon');
});
