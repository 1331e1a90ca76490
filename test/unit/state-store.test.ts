/** Runtime changes on disk, and the atomic file replacement under them. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadKillSwitch, loadRuntimeChanges, runtimeStatePath, saveKillSwitch, saveRuntimeChanges } from '../../src/daemon/state-store.js';
import { NO_CHANGES, type RuntimeChanges, vipSettings } from '../../src/model/desired-state.js';
import { InputError } from '../../src/model/errors.js';
import { parseVip } from '../../src/model/address.js';
import { writeFileAtomic } from '../../src/util/atomic-write.js';

const root = mkdtempSync(join(tmpdir(), 'lbctl-state-'));
after(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
function freshDir(): string {
  const dir = join(root, `case-${++counter}`);
  mkdirSync(dir);
  return dir;
}

const CHANGES: RuntimeChanges = {
  vips: {
    '10.100.0.200:8080/tcp': {
      op: 'add',
      ...vipSettings(parseVip('10.100.0.200:8080/tcp'), {
        forward: 'ipip',
        tableSize: 251,
        check: { spec: { kind: 'http', path: '/health' }, rise: 4, dsr: true },
        onAllDown: 'drop',
      }),
      backends: {
        '10.10.0.21': { op: 'add', backend: { address: '10.10.0.21', family: 4, weight: 7 } },
        '10.10.0.22': {
          op: 'add',
          backend: { address: '10.10.0.22', family: 4, weight: 1, forward: 'l2dsr', check: { spec: { kind: 'tcp' }, port: 8080, fall: 5 } },
        },
      },
    },
    '10.100.0.100:80/tcp': {
      op: 'modify',
      backends: {
        '10.10.0.11': { op: 'remove' },
        '10.10.0.13': { op: 'add', backend: { address: '10.10.0.13', family: 4, weight: 65535, forward: 'ipip' } },
        '10.10.0.14': { op: 'set', weight: 4 },
        '10.10.0.15': { op: 'set', drain: { since: '2026-11-23T10:00:00.000Z', timeoutSeconds: 300, idleSeconds: 30 } },
        '10.10.0.16': {
          op: 'add',
          backend: {
            address: '10.10.0.16',
            family: 4,
            weight: 1,
            drain: { since: '2026-11-23T10:00:00.000Z', timeoutSeconds: 60, idleSeconds: 5 },
          },
        },
      },
    },
    '[2001:db8::10]:443/udp': { op: 'remove' },
    '10.100.0.201:0/tcp': {
      op: 'add',
      ...vipSettings(parseVip('10.100.0.201:0/tcp'), { check: { port: 443 }, hash: 'source', need: 2 }),
      backends: {},
    },
    '[2001:db8::20]:53/udp': {
      op: 'add',
      ...vipSettings(parseVip('[2001:db8::20]:53/udp'), { forward: 'l2dsr', tableSize: 65537 }),
      backends: { '2001:db8::21': { op: 'add', backend: { address: '2001:db8::21', family: 6, weight: 2 } } },
    },
  },
};

describe('runtime state file', () => {
  test('what is saved loads back the same', () => {
    const dir = freshDir();
    saveRuntimeChanges(dir, CHANGES);
    assert.deepEqual(loadRuntimeChanges(dir), CHANGES);
    const onDisk = JSON.parse(readFileSync(runtimeStatePath(dir), 'utf8')) as { version: number };
    assert.equal(onDisk.version, 1);
    saveRuntimeChanges(dir, NO_CHANGES);
    assert.deepEqual(loadRuntimeChanges(dir), NO_CHANGES);
  });

  test('the state directory is created when missing, and the file is private (0600)', () => {
    const dir = join(freshDir(), 'nested', 'state');
    saveRuntimeChanges(dir, CHANGES);
    assert.equal(statSync(runtimeStatePath(dir)).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
  });

  test('an existing file with looser permissions is replaced by a private one', () => {
    const dir = freshDir();
    writeFileSync(runtimeStatePath(dir), '{}', { mode: 0o644 });
    saveRuntimeChanges(dir, CHANGES);
    assert.equal(statSync(runtimeStatePath(dir)).mode & 0o777, 0o600);
    assert.deepEqual(loadRuntimeChanges(dir), CHANGES);
  });

  test('no file means no changes', () => {
    assert.deepEqual(loadRuntimeChanges(freshDir()), NO_CHANGES);
    assert.deepEqual(loadRuntimeChanges(join(root, 'does-not-exist')), NO_CHANGES);
  });

  test('a state directory that group or others can write to, or that another user owns, is refused', () => {
    for (const mode of [0o777, 0o775, 0o757]) {
      const dir = freshDir();
      saveRuntimeChanges(dir, CHANGES);
      chmodSync(dir, mode);
      const refused = {
        name: 'InputError',
        message: /^refusing the state directory: .* is writable by (its group|others) \(mode 0\d{3}\): chmod go-w /,
      };
      assert.throws(() => loadRuntimeChanges(dir), refused);
      assert.throws(() => saveRuntimeChanges(dir, NO_CHANGES), refused);
      assert.throws(() => loadKillSwitch(dir), refused);
      assert.throws(() => saveKillSwitch(dir, null), refused);
      assert.deepEqual(JSON.parse(readFileSync(runtimeStatePath(dir), 'utf8')).vips, CHANGES.vips, 'nothing written');
    }
    if (process.getuid?.() === 0) {
      const dir = freshDir();
      spawnSync('chown', ['65534', dir]);
      assert.throws(() => loadRuntimeChanges(dir), { message: /is owned by uid 65534, not by uid 0/ });
    }
  });

  test('a file that cannot be read for another reason is not taken as "no changes"', () => {
    const dir = freshDir();
    mkdirSync(runtimeStatePath(dir)); // a directory where the file should be
    assert.throws(() => loadRuntimeChanges(dir), { code: 'EISDIR' });
  });

  const valid = (vips: unknown) => JSON.stringify({ version: 1, vips });
  const CORRUPT: Array<[string, string, RegExp]> = [
    ['bad JSON', '{"version": 1, "vips": {', /JSON/],
    ['an empty file', '', /JSON/],
    ['not an object', '[1, 2]', /file must be an object/],
    ['a wrong version', JSON.stringify({ version: 2, vips: {} }), /unsupported version 2/],
    ['no version', JSON.stringify({ vips: {} }), /unsupported version undefined/],
    ['vips not an object', JSON.stringify({ version: 1, vips: [] }), /vips must be an object/],
    ['an invalid VIP key', valid({ nonsense: { op: 'remove' } }), /invalid VIP "nonsense"/],
    [
      'a non-canonical VIP key (protocol case)',
      valid({ '10.100.0.100:80/TCP': { op: 'remove' } }),
      /VIP key 10\.100\.0\.100:80\/TCP is not in canonical form/,
    ],
    ['a non-canonical VIP key (IPv6 spelling)', valid({ '[2001:DB8:0::10]:443/tcp': { op: 'remove' } }), /not in canonical form/],
    [
      'an unknown VIP op',
      valid({ '10.100.0.100:80/tcp': { op: 'replace', backends: {} } }),
      /10\.100\.0\.100:80\/tcp: unknown op "replace"/,
    ],
    [
      'an unknown backend op',
      valid({ '10.100.0.100:80/tcp': { op: 'modify', backends: { '10.10.0.11': { op: 'drain' } } } }),
      /backend 10\.10\.0\.11: unknown op "drain"/,
    ],
    [
      'a weight of 70000',
      valid({
        '10.100.0.100:80/tcp': {
          op: 'modify',
          backends: { '10.10.0.11': { op: 'add', backend: { address: '10.10.0.11', family: 4, weight: 70000 } } },
        },
      }),
      /invalid weight "70000"/,
    ],
    [
      'a weight too large',
      valid({
        '10.100.0.100:80/tcp': {
          op: 'modify',
          backends: { '10.10.0.11': { op: 'add', backend: { address: '10.10.0.11', family: 4, weight: 65536 } } },
        },
      }),
      /invalid weight/,
    ],
    [
      'a fractional weight',
      valid({
        '10.100.0.100:80/tcp': {
          op: 'modify',
          backends: { '10.10.0.11': { op: 'add', backend: { address: '10.10.0.11', family: 4, weight: 1.5 } } },
        },
      }),
      /invalid weight/,
    ],
    [
      'a missing weight',
      valid({
        '10.100.0.100:80/tcp': { op: 'modify', backends: { '10.10.0.11': { op: 'add', backend: { address: '10.10.0.11', family: 4 } } } },
      }),
      /backend 10\.10\.0\.11: weight must be a number/,
    ],
    [
      'a weight written as a string',
      valid({
        '10.100.0.100:80/tcp': {
          op: 'modify',
          backends: { '10.10.0.11': { op: 'add', backend: { address: '10.10.0.11', family: 4, weight: '5' } } },
        },
      }),
      /weight must be a number/,
    ],
    [
      'a backend that does not match its key',
      valid({
        '10.100.0.100:80/tcp': {
          op: 'modify',
          backends: { '10.10.0.11': { op: 'add', backend: { address: '10.10.0.12', family: 4, weight: 1 } } },
        },
      }),
      /backend 10\.10\.0\.11 does not match its key/,
    ],
    [
      'a non-canonical backend key',
      valid({ '[2001:db8::20]:53/udp': { op: 'modify', backends: { '2001:DB8::21': { op: 'remove' } } } }),
      /backend key 2001:DB8::21 is not in canonical form/,
    ],
    [
      'an invalid backend address',
      valid({ '10.100.0.100:80/tcp': { op: 'modify', backends: { 'backend-1': { op: 'remove' } } } }),
      /invalid address "backend-1"/,
    ],
    [
      'an unknown forwarding method',
      valid({ '10.100.0.100:80/tcp': { op: 'add', forward: 'nat', tableSize: 251, backends: {} } }),
      /invalid forwarding method "nat"/,
    ],
    [
      'a drain without a date',
      valid({
        '10.100.0.100:80/tcp': {
          op: 'modify',
          backends: { '10.10.0.11': { op: 'set', drain: { since: 'yesterday', timeoutSeconds: 1, idleSeconds: 1 } } },
        },
      }),
      /drain\.since must be a date/,
    ],
    [
      'a drain with a negative timeout',
      valid({
        '10.100.0.100:80/tcp': {
          op: 'modify',
          backends: { '10.10.0.11': { op: 'set', drain: { since: '2026-11-23T10:00:00Z', timeoutSeconds: -1, idleSeconds: 1 } } },
        },
      }),
      /drain\.timeoutSeconds must be a positive number/,
    ],
    [
      'a patched weight of -1',
      valid({ '10.100.0.100:80/tcp': { op: 'modify', backends: { '10.10.0.11': { op: 'set', weight: -1 } } } }),
      /invalid weight "-1"/,
    ],
    [
      'a table size that is not prime',
      valid({ '10.100.0.100:80/tcp': { op: 'add', forward: 'l2dsr', tableSize: 256, backends: {} } }),
      /invalid Maglev table size 256/,
    ],
  ];

  for (const [what, content, reason] of CORRUPT) {
    test(`a file with ${what} is an error that says what to do, and is left alone`, () => {
      const dir = freshDir();
      const path = runtimeStatePath(dir);
      writeFileSync(path, content, { mode: 0o640 });
      assert.throws(
        () => loadRuntimeChanges(dir),
        (error: unknown) => {
          assert.ok(error instanceof InputError, `expected an InputError, got ${String(error)}`);
          assert.ok(error.message.startsWith(`runtime state ${path} is unreadable (`), error.message);
          assert.ok(error.message.endsWith('; move it away to start from the config alone'), error.message);
          assert.match(error.message, reason);
          return true;
        },
      );
      assert.equal(readFileSync(path, 'utf8'), content);
      assert.equal(statSync(path).mode & 0o777, 0o640);
      assert.deepEqual(readdirSync(dir), ['runtime.json']);
    });
  }
});

describe('writeFileAtomic', () => {
  test('creates and replaces the content, leaving no temporary file', () => {
    const dir = freshDir();
    const path = join(dir, 'data.txt');
    writeFileAtomic(path, 'first\n');
    assert.equal(readFileSync(path, 'utf8'), 'first\n');
    writeFileAtomic(path, 'second, longer than the first\n');
    assert.equal(readFileSync(path, 'utf8'), 'second, longer than the first\n');
    writeFileAtomic(path, 'x');
    assert.equal(readFileSync(path, 'utf8'), 'x');
    assert.deepEqual(readdirSync(dir), ['data.txt']);
  });

  test('the mode is 0600 unless told otherwise', () => {
    const dir = freshDir();
    writeFileAtomic(join(dir, 'private'), 'a');
    writeFileAtomic(join(dir, 'shared'), 'b', 0o644);
    assert.equal(statSync(join(dir, 'private')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'shared')).mode & 0o777, 0o644);
  });

  test('a write into a directory that does not exist throws and changes nothing', () => {
    const dir = freshDir();
    const path = join(dir, 'data.txt');
    writeFileAtomic(path, 'old content');
    assert.throws(() => writeFileAtomic(join(dir, 'missing', 'data.txt'), 'new content'), { code: 'ENOENT' });
    assert.equal(readFileSync(path, 'utf8'), 'old content');
    assert.deepEqual(readdirSync(dir), ['data.txt']);
  });

  test('a write cut short is finished or fails: never a truncated file (a file size limit cuts it short)', () => {
    const dir = freshDir();
    const path = join(dir, 'data.txt');
    writeFileAtomic(path, 'old content');
    // With RLIMIT_FSIZE the kernel takes the first 64 KiB of a longer write, then refuses more (EFBIG).
    const module = new URL('../../src/util/atomic-write.js', import.meta.url).href;
    const script = `import { writeFileAtomic } from ${JSON.stringify(module)};
      try { writeFileAtomic(${JSON.stringify(path)}, 'x'.repeat(100000)); console.log('written'); } catch (e) { console.log(e.code); }`;
    const child = spawnSync('prlimit', ['--fsize=65536', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(child.stderr, '');
    assert.equal(child.stdout.trim(), 'EFBIG', 'the write fails instead of leaving 64 KiB of 100 KB');
    assert.equal(readFileSync(path, 'utf8'), 'old content');
    assert.deepEqual(readdirSync(dir), ['data.txt'], 'no temporary file left');

    const enough = spawnSync('prlimit', ['--fsize=1048576', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(enough.stdout.trim(), 'written');
    assert.equal(readFileSync(path, 'utf8').length, 100000);
  });

  test('a failed replacement leaves the old target and no temporary file', () => {
    const dir = freshDir();
    // The target is a non-empty directory: writing the temporary file works,
    // renaming it over the target cannot.
    const path = join(dir, 'data.txt');
    mkdirSync(path);
    writeFileSync(join(path, 'inside'), 'kept');
    assert.throws(
      () => writeFileAtomic(path, 'new content'),
      (error: NodeJS.ErrnoException) => {
        assert.ok(['EISDIR', 'ENOTEMPTY', 'EEXIST'].includes(error.code ?? ''), `unexpected ${error.code}`);
        return true;
      },
    );
    assert.equal(readFileSync(join(path, 'inside'), 'utf8'), 'kept');
    assert.deepEqual(readdirSync(dir), ['data.txt']);
  });
});
