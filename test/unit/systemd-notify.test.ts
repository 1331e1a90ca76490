/** sd_notify(3) as systemd receives it: datagrams on a path or an abstract socket. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { notifySystemd, underSystemd } from '../../src/daemon/systemd.js';

const dir = mkdtempSync(join(tmpdir(), 'lbctl-notify-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/**
 * What socat received, one string per datagram, once `count` arrived. With -v socat logs each
 * datagram's length on stderr ("> 2026/... length=10 from=0 to=9"), which splits its standard output.
 */
async function receive(address: string, ready: () => Promise<void>, send: () => Promise<void>, count: number): Promise<string[]> {
  const socat = spawn('socat', ['-v', '-u', address, 'STDOUT'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let data = '';
    const lengths: number[] = [];
    socat.stdout.on('data', (chunk: Buffer) => {
      data += chunk.toString();
    });
    socat.stderr.on('data', (chunk: Buffer) => {
      for (const m of chunk.toString().matchAll(/length=(\d+)/g)) lengths.push(Number(m[1]));
    });
    const datagrams = () => {
      let offset = 0;
      return lengths.map((length) => data.slice(offset, (offset += length)));
    };
    await ready();
    await send();
    const deadline = Date.now() + 5000;
    const complete = () => lengths.length >= count && data.length >= lengths.reduce((a, b) => a + b, 0);
    while (!complete() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return datagrams();
  } finally {
    socat.kill();
  }
}

const until = async (condition: () => boolean) => {
  const deadline = Date.now() + 5000;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.ok(condition(), 'socat is listening');
};

test('notifies a socket given by path, one datagram per call', async () => {
  const path = join(dir, 'notify.sock');
  const datagrams = await receive(
    `UNIX-RECV:${path}`,
    () => until(() => existsSync(path)),
    async () => {
      assert.equal(await notifySystemd('READY=1\nSTATUS=balancing on eth0\nMAINPID=42', path), true);
      assert.equal(await notifySystemd('STOPPING=1', path), true);
    },
    2,
  );
  assert.deepEqual(datagrams, ['READY=1\nSTATUS=balancing on eth0\nMAINPID=42', 'STOPPING=1']);
});

test('notifies an abstract socket (@name), as systemd gives one', async () => {
  const name = `lbctl-notify-test-${process.pid}`;
  // An abstract socket leaves no file to wait for: retry until socat has bound it.
  const datagrams = await receive(
    `ABSTRACT-RECV:${name}`,
    async () => undefined,
    async () => {
      const deadline = Date.now() + 5000;
      for (;;) {
        try {
          await notifySystemd('READY=1', `@${name}`);
          return;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    },
    1,
  );
  assert.deepEqual(datagrams, ['READY=1']);
});

test('without NOTIFY_SOCKET nothing is sent; a bad or absent socket is an error', async () => {
  assert.equal(await notifySystemd('READY=1', undefined), false);
  assert.equal(await notifySystemd('READY=1', ''), false);
  await assert.rejects(notifySystemd('READY=1', 'relative.sock'), /neither a path nor an abstract socket/);
  await assert.rejects(notifySystemd('READY=1', `/${'x'.repeat(120)}`), /too long/);
  await assert.rejects(notifySystemd('READY=1', join(dir, 'nobody-listens.sock')), /sendto .* failed/);
});

test('systemd is recognised by NOTIFY_SOCKET or INVOCATION_ID', () => {
  assert.equal(underSystemd({}), false);
  assert.equal(underSystemd({ NOTIFY_SOCKET: '/run/systemd/notify' }), true);
  assert.equal(underSystemd({ INVOCATION_ID: 'abc' }), true);
});
