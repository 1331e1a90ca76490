/**
 * Finishes drains: a draining backend is removed once none of its tracked
 * flows is active (the client sent FIN/RST, or it has been idle for the
 * drain's idle time), or when its timeout has passed.
 */
import type { Logger } from 'pino';
import type { ControlLoop } from '../core/control-loop.js';
import { type FlowClock, type TrackedFlow, isActiveFlow } from '../core/flows.js';

const SCAN_MS = 1_000;

export class DrainWatcher {
  private timer?: NodeJS.Timeout;
  private scanning = false;

  constructor(
    private readonly core: Pick<ControlLoop, 'views' | 'finishDrain'>,
    private readonly flows: { trackedFlows(): Iterable<TrackedFlow> },
    private readonly clock: FlowClock,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.finishDueDrains(), SCAN_MS);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async finishDueDrains(): Promise<void> {
    const draining = this.core.views.flatMap((vip) =>
      vip.backends.filter((b) => b.drain).map((b) => ({ vip: vip.key, backend: b, drain: b.drain! })),
    );
    if (draining.length === 0 || this.scanning) return;
    this.scanning = true;
    try {
      const now = this.clock.now();
      const idleSeconds = new Map(draining.map((d) => [d.backend.id, d.drain.idleSeconds]));
      const active = new Map<number, number>();
      for (const flow of this.flows.trackedFlows()) {
        const idle = idleSeconds.get(flow.backendId);
        if (idle === undefined || !isActiveFlow(flow, idle, this.clock, now)) continue;
        active.set(flow.backendId, (active.get(flow.backendId) ?? 0) + 1);
      }
      for (const { vip, backend, drain } of draining) {
        const flows = active.get(backend.id) ?? 0;
        const elapsed = (Date.now() - Date.parse(drain.since)) / 1000;
        if (flows > 0 && elapsed < drain.timeoutSeconds) continue;
        const why = flows === 0 ? 'its flows have ended' : `timeout after ${drain.timeoutSeconds} s with ${flows} flows still active`;
        this.log.info(
          { event: 'drain.finished', vip, backend: backend.address, flows, elapsedSeconds: Math.round(elapsed) },
          `drain finished: ${why}`,
        );
        await this.core.finishDrain(vip, backend.address, drain.since, why);
      }
    } catch (error) {
      this.log.error({ event: 'drain.check_failed', err: error }, 'drain check failed');
    } finally {
      this.scanning = false;
    }
  }
}
