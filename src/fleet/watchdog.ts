/**
 * Withdraws every VIP when the daemon's event loop is stuck, well before the
 * kill-switch fails open: the main thread bumps a counter in shared memory
 * on a timer, and a worker thread, which keeps running whatever the main
 * thread does, closes the announce device's descriptor when the counter has
 * not moved for stallMs. The kernel then deletes the device and every route
 * through it, as it does when the process dies.
 */
import { Worker } from 'node:worker_threads';
import type { SharedDescriptor } from './shared-descriptor.js';
import type { WatchdogFired, WatchdogWorkerData } from './watchdog-worker.js';

export interface WatchdogOptions {
  /** The main thread counts as stuck once it has not run for this long. */
  readonly stallMs: number;
  readonly descriptor: SharedDescriptor;
  /** Called on the main thread, once it runs again. */
  readonly onFired: (event: WatchdogFired) => void;
}

/** Beats and checks this many times per stall period: the watchdog fires within stallMs × (1 + 1/BEATS_PER_STALL). */
const BEATS_PER_STALL = 10;
const MIN_BEAT_MS = 10;

export class Watchdog {
  private stopped = false;

  private constructor(
    private readonly worker: Worker,
    private readonly beat: NodeJS.Timeout,
  ) {}

  /** Resolves once the worker runs (it watches from then on). */
  static async start(options: WatchdogOptions): Promise<Watchdog> {
    const heartbeat = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
    const beatMs = Math.max(MIN_BEAT_MS, Math.floor(options.stallMs / BEATS_PER_STALL));
    const workerData: WatchdogWorkerData = {
      heartbeat: heartbeat.buffer as SharedArrayBuffer,
      descriptor: options.descriptor.buffer,
      stallMs: options.stallMs,
      pollMs: beatMs,
    };
    const worker = new Worker(new URL('./watchdog-worker.js', import.meta.url), { workerData });
    await new Promise<void>((resolve, reject) => {
      worker.once('online', resolve);
      worker.once('error', reject);
    });
    // It watches; it does not keep the process alive.
    worker.unref();
    worker.on('message', (message: WatchdogFired) => options.onFired(message));
    const beat = setInterval(() => Atomics.add(heartbeat, 0, 1), beatMs);
    beat.unref();
    return new Watchdog(worker, beat);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.beat);
    await this.worker.terminate();
  }
}
