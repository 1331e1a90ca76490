/**
 * The watchdog's thread (src/fleet/watchdog.ts): it runs beside the daemon's
 * main thread and needs nothing of it. When the heartbeat counter the main
 * thread bumps has not moved for stallMs, the main thread is stuck: close
 * the announce device's descriptor, which withdraws every VIP at once, and
 * say so (the main thread reads the message once it runs again).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SharedDescriptor } from './shared-descriptor.js';

export interface WatchdogWorkerData {
  /** [heartbeat counter] */
  readonly heartbeat: SharedArrayBuffer;
  readonly descriptor: SharedArrayBuffer;
  readonly stallMs: number;
  readonly pollMs: number;
}

export interface WatchdogFired {
  readonly fired: true;
  /** How long the heartbeat had not moved. */
  readonly stalledMs: number;
  readonly closed: boolean;
}

const data = workerData as WatchdogWorkerData;
const heartbeat = new Int32Array(data.heartbeat);
const descriptor = SharedDescriptor.attach(data.descriptor);
let seen = Atomics.load(heartbeat, 0);
let movedAt = performance.now();

const timer = setInterval(() => {
  const now = performance.now();
  const beat = Atomics.load(heartbeat, 0);
  if (beat !== seen) {
    seen = beat;
    movedAt = now;
    return;
  }
  if (now - movedAt < data.stallMs || !descriptor.open) return;
  const closed = descriptor.closeOnce();
  const message: WatchdogFired = { fired: true, stalledMs: Math.round(now - movedAt), closed };
  parentPort!.postMessage(message);
  clearInterval(timer);
}, data.pollMs);
