/** lbctl's exit codes and --json errors, as scripts see them (no daemon needed: its absence is one of the cases). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { EXIT } from '../../src/api/exit-codes.js';
import { PROJECT_ROOT } from '../../src/paths.js';

const LBCTL = join(PROJECT_ROOT, 'bin', 'lbctl');
const NO_DAEMON = ['--socket', '/nonexistent/lbctl.sock'];

function lbctl(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [LBCTL, ...args], { encoding: 'utf8', env: { ...process.env, LBCTL_SOCKET: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('each kind of failure has its own exit code', () => {
  const cases: Array<[string[], number, RegExp]> = [
    [['--version'], EXIT.ok, /^$/],
    [['--help'], EXIT.ok, /^$/],
    [['vip', 'list', '--help'], EXIT.ok, /^$/],
    [['frobnicate'], EXIT.usage, /^lbctl: unknown command 'frobnicate'/],
    [['vip'], EXIT.usage, /Usage: lbctl vip/],
    [['vip', 'add'], EXIT.usage, /^lbctl: missing required argument 'vip'/],
    [['vip', 'list', '--colour'], EXIT.usage, /^lbctl: unknown option '--colour'/],
    [['vip', 'add', '10.0.0.1:80/tcp', '--forward', 'gre', ...NO_DAEMON], EXIT.usage, /argument 'gre' is invalid/],
    [
      ['vip', 'add', '10.0.0.1:80/tcp', '--check-interval', '2000', ...NO_DAEMON],
      EXIT.invalid,
      /^lbctl: invalid check interval "2000": give a unit/,
    ],
    [['backend', 'weight', '10.0.0.1:80/tcp', '10.0.0.2', 'six', ...NO_DAEMON], EXIT.invalid, /^lbctl: invalid weight "six"/],
    [['vip', 'list', ...NO_DAEMON], EXIT.unreachable, /^lbctl: no lbctl daemon is listening on \/nonexistent\/lbctl\.sock/],
  ];
  for (const [args, code, stderr] of cases) {
    const r = lbctl(...args);
    assert.equal(r.code, code, `lbctl ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, stderr, `lbctl ${args.join(' ')}`);
  }
  assert.match(
    lbctl('--help').stdout,
    /Exit codes: 0 done; 1 internal error; 2 usage error \(command line\); 3 invalid input or refused \(nothing changed\); 4 no daemon answers\./,
  );
});

test('with --json an error is a JSON object on stdout, and nothing on stderr', () => {
  const unreachable = lbctl('vip', 'list', '--json', ...NO_DAEMON);
  assert.equal(unreachable.code, EXIT.unreachable);
  assert.equal(unreachable.stderr, '');
  const answer = JSON.parse(unreachable.stdout);
  assert.equal(answer.error.kind, 'unreachable');
  assert.equal(answer.error.exitCode, EXIT.unreachable);
  assert.match(answer.error.message, /^no lbctl daemon is listening on \/nonexistent\/lbctl\.sock/);

  const usage = lbctl('vip', 'add', '--json', ...NO_DAEMON);
  assert.equal(usage.code, EXIT.usage);
  assert.equal(usage.stderr, '');
  assert.deepEqual(JSON.parse(usage.stdout), {
    error: { kind: 'usage', message: "missing required argument 'vip'", exitCode: EXIT.usage },
  });

  const invalid = lbctl('backend', 'weight', '10.0.0.1:80/tcp', '10.0.0.2', 'six', '--json', ...NO_DAEMON);
  assert.equal(invalid.code, EXIT.invalid);
  assert.equal(JSON.parse(invalid.stdout).error.kind, 'input');
});

test('lbctl config check validates a file without a daemon', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'lbctl-check-'));
  try {
    const good = join(dir, 'good.yaml');
    writeFileSync(good, 'vips:\n  - vip: 10.0.0.1:80/tcp\n    backends:\n      - address: 10.0.0.11\n      - address: 10.0.0.12\n');
    const ok = lbctl('config', 'check', good);
    assert.equal(ok.code, EXIT.ok, ok.stderr);
    assert.equal(ok.stdout, `lbctl: ${good}: valid, 1 VIPs with 2 backends\n`);
    assert.deepEqual(JSON.parse(lbctl('config', 'check', good, '--json').stdout), { file: good, valid: true, vips: 1, backends: 2 });

    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'vips:\n  - vip: 10.0.0.1:80/tcp\n    check_interval: 2000\n');
    const refused = lbctl('config', 'check', bad);
    assert.equal(refused.code, EXIT.invalid);
    assert.equal(
      refused.stderr,
      `lbctl: ${bad}:3:21: vips[0].check_interval: invalid check interval "2000": give a unit, e.g. 2000s or 2000ms (a bare number is ambiguous)\n`,
    );
    const missing = lbctl('config', 'check', join(dir, 'nope.yaml'));
    assert.equal(missing.code, EXIT.invalid);
    assert.match(missing.stderr, /cannot read config .*nope\.yaml: ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
