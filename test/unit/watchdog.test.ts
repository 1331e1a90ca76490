/**
 * The watchdog (src/fleet/watchdog.ts) closes a descriptor from its worker
 * thread when the main thread stops running, and only then; a descriptor
 * closed that way is never closed again by the main thread (its number may
 * have been reused). Any descriptor will do, so no root: the daemon's is
 * the announce device's (test/lab/e2e-fleet.test.ts stalls a real daemon).
 */
import assert from 'node:assert/strict';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { test } from 'node:test';
import { SharedDescriptor } from '../../src/fleet/shared-descriptor.js';
import { Watchdog } from '../../src/fleet/watchdog.js';
import type { WatchdogFired } from '../../src/fleet/watchdog-worker.js';

const STALL_MS = 300;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // The main thread is stuck: no timer, no I/O.
  }
}

test('a main thread that keeps running is left alone', async () => {
  const descriptor = SharedDescriptor.wrap(openSync('/dev/null', 'r'));
  const fired: WatchdogFired[] = [];
  const watchdog = await Watchdog.start({ stallMs: STALL_MS, descriptor, onFired: (e) => fired.push(e) });
  try {
    // Busy, but for less than the limit each time.
    for (let i = 0; i < 8; i++) {
      busy(STALL_MS / 3);
      await sleep(20);
    }
    assert.equal(descriptor.open, true);
    assert.deepEqual(fired, []);
  } finally {
    await watchdog.stop();
    assert.equal(descriptor.closeOnce(), true);
  }
});

test('a stuck main thread: the worker closes the descriptor within the limit and says so once the thread runs again', async (t) => {
  const fd = openSync('/dev/null', 'r');
  const descriptor = SharedDescriptor.wrap(fd);
  const fired: Array<WatchdogFired & { at: number }> = [];
  const watchdog = await Watchdog.start({ stallMs: STALL_MS, descriptor, onFired: (e) => fired.push({ ...e, at: performance.now() }) });
  try {
    const stuckAt = performance.now();
    let closedAfter: number | undefined;
    // Stuck for three times the limit, watching the shared state (as the kernel would see the descriptor go).
    while (performance.now() - stuckAt < 3 * STALL_MS) {
      if (closedAfter === undefined && !descriptor.open) closedAfter = performance.now() - stuckAt;
    }
    assert.notEqual(closedAfter, undefined, 'the worker closed the descriptor while the main thread was stuck');
    t.diagnostic(`stuck main thread: descriptor closed after ${closedAfter!.toFixed(0)} ms (limit ${STALL_MS} ms)`);
    assert.ok(closedAfter! >= STALL_MS, `not before the limit (${closedAfter} ms)`);
    assert.ok(closedAfter! < 2 * STALL_MS, `within the limit and a check (${closedAfter} ms)`);
    assert.throws(() => fstatSync(fd), { code: 'EBADF' }, 'the descriptor itself is closed');
    assert.equal(fired.length, 0, 'the main thread hears of it only once it runs');
    await sleep(50);
    assert.equal(fired.length, 1);
    assert.equal(fired[0]!.closed, true);
    assert.ok(fired[0]!.stalledMs >= STALL_MS);
    // The number is free again: whatever takes it is not closed by the main thread's close.
    const reused = openSync('/dev/null', 'r');
    assert.equal(descriptor.closeOnce(), false);
    fstatSync(reused);
    closeSync(reused);
  } finally {
    await watchdog.stop();
  }
});
