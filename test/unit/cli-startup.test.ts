/**
 * Every CLI call is a new process: `lbctl --help`, `--version` and a change
 * load only what defines the commands, plus the socket client for the
 * change; never the daemon, the data plane, native code, the YAML library or
 * the logger. (What this costs is measured by the benchmarks: bench/control-plane.ts.)
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { PROJECT_ROOT } from '../../src/paths.js';

const LBCTL = join(PROJECT_ROOT, 'bin', 'lbctl');
const TRACE = join(PROJECT_ROOT, 'dist', 'test', 'support', 'trace-imports.js');

/** What must stay out of a CLI call that does not start the daemon. */
const HEAVY = [
  /\/node_modules\/(yaml|pino|pino-pretty|koffi|prom-client)\//,
  /\/dist\/src\/(daemon|dataplane|health|metrics|net|maglev)\//,
  /\/dist\/src\/model\/(config|desired-state)\.js$/,
  /\/dist\/src\/log\.js$/,
];

function imports(args: readonly string[]): { urls: string[]; status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', TRACE, LBCTL, ...args], { encoding: 'utf8' });
  const urls = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('import: '))
    .map((l) => l.slice('import: '.length));
  return { urls, status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function assertLight(urls: readonly string[], what: string): void {
  assert.ok(
    urls.some((u) => u.endsWith('/dist/src/cli/main.js')),
    `${what}: the trace sees the CLI (${urls.length} imports)`,
  );
  const heavy = urls.filter((u) => HEAVY.some((pattern) => pattern.test(u)));
  assert.deepEqual(heavy, [], `${what} imports none of the daemon's modules`);
}

test('lbctl --version and --help import only what defines the commands', () => {
  for (const args of [['--version'], ['--help']]) {
    const run = imports(args);
    assert.equal(run.status, 0, run.stderr);
    assertLight(run.urls, `lbctl ${args.join(' ')}`);
    assert.ok(!run.urls.some((u) => u.endsWith('/dist/src/api/client.js')), 'no socket client');
  }
});

test('a change imports the socket client and nothing of the daemon', () => {
  const run = imports(['backend', 'weight', '10.0.0.100:80/tcp', '10.0.0.11', '3', '--socket', '/nonexistent/lbctl.sock']);
  assert.equal(run.status, 4, 'no daemon answers');
  assert.match(run.stderr, /^lbctl: no lbctl daemon is listening on \/nonexistent\/lbctl\.sock/m);
  assertLight(run.urls, 'lbctl backend weight');
  assert.ok(
    run.urls.some((u) => u.endsWith('/dist/src/api/client.js')),
    'the socket client',
  );
});
