/**
 * Routes, neighbours, addresses and links change under the balancer:
 * `ip monitor` says when (debounced), and a periodic refresh catches what it
 * missed and keeps the kernel's entries for our next hops fresh (they see
 * no kernel traffic: the data plane sends around the stack).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { Logger } from 'pino';

const REFRESH_MS = 30_000;
const DEBOUNCE_MS = 250;

export interface NetworkListener {
  /** Something changed: resolve the paths again. */
  pathsChanged(): Promise<void>;
  /** Time to re-probe the next hops in use. */
  probeNextHops(): Promise<void>;
}

export class NetworkFollower {
  private monitor?: ChildProcess;
  private debounce?: NodeJS.Timeout;
  private interval?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly listener: NetworkListener,
    private readonly log: Logger,
  ) {}

  start(): void {
    const monitor = spawn('ip', ['monitor', 'neigh', 'route', 'address', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    monitor.stdout!.on('data', () => this.changed());
    monitor.on('error', (error) =>
      this.log.warn({ event: 'paths.monitor_exited', err: error }, 'ip monitor failed; relying on periodic refresh'),
    );
    monitor.on('exit', (code, signal) => {
      if (this.stopped) return;
      this.log.warn({ event: 'paths.monitor_exited', code, signal }, 'ip monitor exited; relying on periodic refresh');
    });
    this.monitor = monitor;
    this.interval = setInterval(() => {
      this.listener.probeNextHops().catch((error) => this.log.warn({ event: 'paths.probe_failed', err: error }, 'neighbour probe failed'));
      this.changed();
    }, REFRESH_MS);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.debounce);
    clearInterval(this.interval);
    this.monitor?.kill();
  }

  private changed(): void {
    if (this.debounce || this.stopped) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.listener
        .pathsChanged()
        .catch((error) => this.log.error({ event: 'paths.refresh_failed', err: error }, 'network refresh failed'));
    }, DEBOUNCE_MS);
  }
}
