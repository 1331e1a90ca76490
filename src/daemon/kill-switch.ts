/**
 * The kill-switch: while the daemon lives it keeps pushing a deadline
 * forward in the data plane; if it dies or hangs, the data plane passes VIP
 * packets to the kernel once the deadline is behind it (fail-open). An
 * operator can also engage it on purpose (lbctl kill-switch engage).
 */
import type { Logger } from 'pino';
import type { KillSwitchStatus } from '../api/protocol.js';
import { type BalancerDataplane } from '../dataplane/balancer.js';
import { type DataplaneClock } from '../dataplane/clock.js';

export const DEFAULT_KILL_SWITCH_TIMEOUT_MS = 30_000;
const MIN_REFRESH_MS = 250;

export class KillSwitch {
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly dataplane: BalancerDataplane,
    private readonly clock: DataplaneClock,
    readonly timeoutMs: number,
    private engagedSince: string | null,
    private readonly log: Logger,
  ) {}

  get engaged(): boolean {
    return this.engagedSince !== null;
  }

  /** Sets the first deadline (the data plane balances nothing before) and keeps refreshing it. */
  start(): void {
    this.apply();
    this.timer = setInterval(() => this.apply(), Math.max(MIN_REFRESH_MS, this.timeoutMs / 4));
    this.timer.unref();
  }

  /** Stops refreshing; the data plane keeps balancing until the deadline. */
  stop(): void {
    clearInterval(this.timer);
  }

  engage(at = new Date()): void {
    this.engagedSince = at.toISOString();
    this.apply();
    this.log.warn({ event: 'killswitch.engaged', since: this.engagedSince }, 'kill-switch engaged: VIP packets go to the kernel untouched');
  }

  release(): void {
    this.engagedSince = null;
    this.apply();
    this.log.warn({ event: 'killswitch.released' }, 'kill-switch released: balancing again');
  }

  status(): KillSwitchStatus {
    const now = this.clock.now();
    const deadline = this.dataplane.killSwitchDeadline();
    return {
      engaged: this.engaged,
      engagedSince: this.engagedSince,
      timeoutMs: this.timeoutMs,
      secondsLeft: deadline > now ? Number(deadline - now) / this.clock.hz : -this.clock.secondsSince(deadline, now),
      passedPackets: Number(this.dataplane.reasonCounters().kill_switch),
    };
  }

  private apply(): void {
    const deadline = this.engaged ? 0n : this.clock.now() + this.clock.jiffiesFromSeconds(this.timeoutMs / 1000);
    this.dataplane.setKillSwitchDeadline(deadline);
  }
}
