/**
 * One daemon per interface, pin directory and socket: flock(2) locks held
 * by real processes, refused with the holder's pid, released by the kernel
 * when the holder dies (SIGKILL included).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { acquireLock, interfaceLock, pinDirLock, socketLock } from '../../src/daemon/instance-lock.js';

const root = mkdtempSync(join(tmpdir(), 'lbctl-lock-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** Another process that takes the lock and holds it until killed. */
async function holder(dir: string, subject: object): Promise<ChildProcess> {
  const module = JSON.stringify(new URL('../../src/daemon/instance-lock.js', import.meta.url).href);
  const script = `import { acquireLock } from ${module};
    acquireLock(${JSON.stringify(dir)}, ${JSON.stringify(subject)});
    process.stdout.write('held\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the holder exited (${code})`)));
  });
  return child;
}

test('a lock held by another process is refused, naming it; its death (even SIGKILL) releases it', async () => {
  const dir = join(root, 'locks');
  const subject = interfaceLock(4026531840, 'eth0');
  const other = await holder(dir, subject);
  try {
    assert.throws(() => acquireLock(dir, subject), {
      name: 'InputError',
      message: new RegExp(
        `^interface eth0 \\(network namespace 4026531840\\) is in use by the lbctl daemon with pid ${other.pid} \\(lock ${dir}/interface-4026531840-eth0\\.lock\\); stop it first$`,
      ),
    });
    // Other subjects are free.
    acquireLock(dir, interfaceLock(4026531840, 'eth1')).release();
    acquireLock(dir, interfaceLock(4026532000, 'eth0')).release();
  } finally {
    other.kill('SIGKILL');
    await new Promise((resolve) => other.once('exit', resolve));
  }
  const mine = acquireLock(dir, subject);
  assert.throws(() => acquireLock(dir, subject), new RegExp(`pid ${process.pid}`), 'one holder, even in one process');
  mine.release();
  assert.equal(existsSync(mine.path), false, 'the holder removes its lock file');
  acquireLock(dir, subject).release();
});

test('pin directories and sockets are locked by their full path', () => {
  const dir = join(root, 'paths');
  const pins = acquireLock(dir, pinDirLock('/sys/fs/bpf/lbctl/host/eth0'));
  try {
    assert.throws(
      () => acquireLock(dir, pinDirLock('/sys/fs/bpf/lbctl/host/../host/eth0')),
      /^InputError: pin directory \/sys\/fs\/bpf\/lbctl\/host\/eth0 is in use/,
    );
    acquireLock(dir, pinDirLock('/sys/fs/bpf/lbctl/host/eth1')).release();
    acquireLock(dir, socketLock('/run/lbctl/lbctl.sock')).release();
  } finally {
    pins.release();
  }
});

test('a lock directory others can write to is refused', () => {
  const dir = join(root, 'open');
  mkdirSync(dir);
  chmodSync(dir, 0o777);
  assert.throws(() => acquireLock(dir, socketLock('/run/x.sock')), /^InputError: refusing the lock directory: .* is writable by its group/);
});
