/**
 * The health-check engine: probes every (VIP, backend) on its own timer
 * and turns results into states with rise/fall counting.
 *
 *   unknown --success--> up          (the first result decides at once:
 *   unknown --failure--> down         a new backend never proved itself)
 *   up   --`fall` failures in a row--> down
 *   down --`rise` successes in a row--> up
 *
 * `unknown` is what a backend starts in; the daemon treats it as usable so
 * that a restart or an add does not wait for checks. Kind none goes up at
 * once and is never probed. A result is the regular probe and, with
 * settings.dsr, the DSR-path probe run after a successful regular one (its
 * reason wins). Transitions are logged (warn: down, info: up) and reported
 * to onTransition once each; single probes are not logged. A probe the
 * balancer could not run for want of its own resources (file descriptors,
 * memory, local ports) is no verdict: it changes no state and no count, is
 * counted in probesWithoutVerdict and logged at most once a minute.
 */
import type { Logger } from '../log.js';
import { formatVip, type VipAddress } from '../model/address.js';
import { formatCheck, type CheckSettings } from '../model/check.js';
import { runProbe, type ProbeResult } from './probes.js';
import type { DsrPath, DsrProbeTarget } from './dsr-probe.js';

export interface CheckTarget {
  /** Unique per (VIP, backend), e.g. `${vipKey} ${address}`. */
  readonly key: string;
  readonly vip: VipAddress;
  /** The backend. */
  readonly address: string;
  readonly settings: CheckSettings;
  /** How the data plane reaches the backend; needed for settings.dsr (without it the DSR probe is skipped and says so). */
  readonly path?: DsrPath;
  /**
   * Start up rather than unknown, so that `fall` failures are needed to take
   * it out (as HAProxy starts its servers): a backend a restarted daemon
   * found serving, whose flows one slow first probe must not move.
   */
  readonly assumeUp?: boolean;
}

export type HealthState = 'unknown' | 'up' | 'down';

export interface BackendHealth {
  readonly state: HealthState;
  /** ISO time of the last transition (or of the start). */
  readonly since: string;
  /** Reason of the last failed probe. */
  readonly lastError?: string;
  /** ISO time. */
  readonly lastCheck?: string;
  /** Successes while down / failures while up. */
  readonly consecutive: number;
}

export interface Transition {
  readonly key: string;
  readonly vip: VipAddress;
  readonly address: string;
  readonly from: HealthState;
  readonly to: HealthState;
  readonly reason: string;
}

/** At most one health.probe_without_verdict line this often. */
const NO_VERDICT_LOG_MS = 60_000;

/** The first interval after the first probe is this fraction of the interval, give or take: targets added together do not probe in lockstep. */
const FIRST_INTERVAL_JITTER = 0.2;

interface Entry {
  target: CheckTarget;
  state: HealthState;
  since: string;
  lastError?: string;
  lastCheck?: string;
  consecutive: number;
  /** The next result decides at once, as from unknown (a new check after a change of what is probed). */
  decisive: boolean;
  timer?: NodeJS.Timeout;
  /** Date.now() when the last probe started. */
  lastStart?: number;
  /** The probe in flight: aborted when the entry stops or restarts. */
  inFlight?: AbortController;
  /** Bumped on every restart and on removal: results of older probes are dropped. */
  generation: number;
  /** The DSR probe was skipped for lack of a path (said once, until a path appears). */
  dsrSkipNoted: boolean;
}

export class HealthChecker {
  private readonly entries = new Map<string, Entry>();
  private stopped = false;
  /** Probes the balancer could not run (its own resources ran out): no verdict either way. */
  probesWithoutVerdict = 0;
  private noVerdictLoggedAt = -Infinity;
  private noVerdictSinceLog = 0;

  /**
   * dsrProbe: how a DSR-path probe is sent; the real one (an AF_PACKET
   * socket through the native library) is loaded on first use.
   */
  constructor(
    private readonly log: Logger,
    private readonly onTransition: (t: Transition) => void,
    private readonly dsrProbe: (target: DsrProbeTarget) => Promise<ProbeResult> = async (target) =>
      (await import('./dsr-probe.js')).dsrProbe(target),
  ) {}

  /** The full set of backends to check; starts new ones (first probe at once), stops removed ones, restarts changed settings (keeping state when only timings changed). */
  update(targets: readonly CheckTarget[]): void {
    if (this.stopped) return;
    const wanted = new Map<string, CheckTarget>();
    for (const t of targets) wanted.set(t.key, t);
    for (const [key, entry] of this.entries) {
      if (!wanted.has(key)) {
        this.halt(entry);
        this.entries.delete(key);
      }
    }
    for (const [key, target] of wanted) {
      const entry = this.entries.get(key);
      if (!entry) this.start(target);
      else this.change(entry, target);
    }
  }

  health(key: string): BackendHealth | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    return {
      state: e.state,
      since: e.since,
      ...(e.lastError !== undefined ? { lastError: e.lastError } : {}),
      ...(e.lastCheck !== undefined ? { lastCheck: e.lastCheck } : {}),
      consecutive: e.consecutive,
    };
  }

  /** Cancels every timer and probe; no callback fires afterwards. */
  stop(): void {
    this.stopped = true;
    for (const entry of this.entries.values()) this.halt(entry);
    this.entries.clear();
  }

  private start(target: CheckTarget): void {
    const entry: Entry = {
      target,
      state: target.assumeUp ? 'up' : 'unknown',
      since: new Date().toISOString(),
      consecutive: 0,
      decisive: false,
      generation: 0,
      dsrSkipNoted: false,
    };
    this.entries.set(target.key, entry);
    this.begin(entry);
  }

  /** First probe at once, or straight up for kind none. */
  private begin(entry: Entry): void {
    if (entry.target.settings.spec.kind === 'none') {
      entry.consecutive = 0;
      entry.decisive = false;
      if (entry.state !== 'up') this.transition(entry, 'up', 'health checking disabled (check none)');
      return;
    }
    this.schedule(entry, 0, true);
  }

  private change(entry: Entry, target: CheckTarget): void {
    const before = entry.target;
    entry.target = target;
    if (!sameProbe(before, target)) {
      // What is probed changed: the old results say nothing about the new check.
      this.halt(entry);
      entry.consecutive = 0;
      entry.decisive = entry.state !== 'unknown';
      entry.dsrSkipNoted = false;
      this.begin(entry);
      return;
    }
    // Only timings (or the path, used as it is at the next probe): keep state and counts.
    if (before.settings.intervalMs !== target.settings.intervalMs && entry.timer && entry.lastStart !== undefined) {
      this.schedule(entry, entry.lastStart + target.settings.intervalMs - Date.now(), false);
    }
    if (target.path?.source !== undefined) entry.dsrSkipNoted = false;
  }

  /** Stops an entry's timer and in-flight probe; their results are dropped. */
  private halt(entry: Entry): void {
    entry.generation++;
    if (entry.timer) clearTimeout(entry.timer);
    delete entry.timer;
    entry.inFlight?.abort();
    delete entry.inFlight;
  }

  private schedule(entry: Entry, delayMs: number, first: boolean): void {
    if (entry.timer) clearTimeout(entry.timer);
    const generation = entry.generation;
    const timer = setTimeout(
      () => {
        if (this.stopped || entry.generation !== generation) return;
        delete entry.timer;
        void this.probe(entry, first);
      },
      Math.max(0, delayMs),
    );
    timer.unref();
    entry.timer = timer;
  }

  private async probe(entry: Entry, first: boolean): Promise<void> {
    const generation = entry.generation;
    const controller = new AbortController();
    entry.inFlight = controller;
    const started = Date.now();
    entry.lastStart = started;
    const target = entry.target;
    let result: ProbeResult;
    try {
      result = await this.runChecks(entry, target, controller.signal);
    } catch (error) {
      result = { ok: false, reason: `check failed: ${(error as Error).message}` };
    }
    if (this.stopped || entry.generation !== generation) return;
    delete entry.inFlight;
    this.record(entry, result);
    if (this.stopped || entry.generation !== generation) return; // onTransition may have stopped us
    const interval = entry.target.settings.intervalMs;
    const period = first ? interval * (1 - FIRST_INTERVAL_JITTER / 2 + Math.random() * FIRST_INTERVAL_JITTER) : interval;
    this.schedule(entry, started + period - Date.now(), false);
  }

  private async runChecks(entry: Entry, target: CheckTarget, signal: AbortSignal): Promise<ProbeResult> {
    const { vip, address, settings } = target;
    const regular = await runProbe(vip, address, settings, signal);
    if (!regular.ok || !settings.dsr || signal.aborted) return regular;
    const path = target.path;
    // Without a path, or an address of the VIP's family to send from, there is
    // no SYN to send: skipped (and said once), never a reason to take the backend out.
    const skipped = !path
      ? 'no forwarding path to the backend yet'
      : path.source === undefined
        ? `the balancer has no IPv${vip.family} address to send it from`
        : undefined;
    if (skipped || !path) {
      if (!entry.dsrSkipNoted) {
        entry.dsrSkipNoted = true;
        this.log.warn(
          { event: 'health.dsr_check_skipped', vip: formatVip(vip), backend: address, reason: skipped },
          `DSR-path check skipped: ${skipped}`,
        );
      }
      return regular;
    }
    return this.dsrProbe({ ...path, vip, port: settings.port ?? vip.port, backend: address, timeoutMs: settings.timeoutMs });
  }

  private record(entry: Entry, result: ProbeResult): void {
    if (!result.ok && result.local) {
      this.noVerdict(entry, result.reason);
      return;
    }
    const { rise, fall } = entry.target.settings;
    entry.lastCheck = new Date().toISOString();
    if (!result.ok) entry.lastError = result.reason;
    const decide = entry.state === 'unknown' || entry.decisive;
    entry.decisive = false;
    if (decide) {
      entry.consecutive = 0;
      if (result.ok && entry.state !== 'up') this.transition(entry, 'up', 'check passed');
      else if (!result.ok && entry.state !== 'down') this.transition(entry, 'down', result.reason);
      return;
    }
    if (entry.state === 'up') {
      if (result.ok) {
        entry.consecutive = 0;
        return;
      }
      entry.consecutive++;
      if (entry.consecutive >= fall)
        this.transition(entry, 'down', fall === 1 ? result.reason : `${result.reason} (${entry.consecutive} checks in a row)`);
      return;
    }
    // down
    if (!result.ok) {
      entry.consecutive = 0;
      return;
    }
    entry.consecutive++;
    if (entry.consecutive >= rise)
      this.transition(entry, 'up', rise === 1 ? 'check passed' : `${entry.consecutive} checks passed in a row`);
  }

  /** The daemon's own failure (EMFILE...) is not the backend's: counted and logged, the state kept. */
  private noVerdict(entry: Entry, reason: string): void {
    this.probesWithoutVerdict++;
    this.noVerdictSinceLog++;
    const now = Date.now();
    if (now - this.noVerdictLoggedAt < NO_VERDICT_LOG_MS) return;
    this.log.error(
      {
        event: 'health.probe_without_verdict',
        vip: formatVip(entry.target.vip),
        backend: entry.target.address,
        reason,
        probes: this.noVerdictSinceLog,
      },
      `health checks cannot run (${reason}): backends keep their state until they can`,
    );
    this.noVerdictLoggedAt = now;
    this.noVerdictSinceLog = 0;
  }

  private transition(entry: Entry, to: HealthState, reason: string): void {
    const from = entry.state;
    const { key, vip, address, settings } = entry.target;
    entry.state = to;
    entry.since = new Date().toISOString();
    entry.consecutive = 0;
    const fields = {
      event: 'health.transition',
      vip: formatVip(vip),
      backend: address,
      from,
      to,
      reason,
      check: formatCheck(settings.spec),
    };
    if (to === 'down') this.log.warn(fields, `backend ${address} of ${fields.vip} is down: ${reason}`);
    else this.log.info(fields, `backend ${address} of ${fields.vip} is ${to}`);
    try {
      this.onTransition({ key, vip, address, from, to, reason });
    } catch (error) {
      this.log.error({ event: 'health.handler_failed', err: error, vip: fields.vip, backend: address }, 'health transition handler failed');
    }
  }
}

/** Whether two targets probe the same thing (what differs is at most timings and the path). */
function sameProbe(a: CheckTarget, b: CheckTarget): boolean {
  const x = a.settings;
  const y = b.settings;
  return (
    a.address === b.address &&
    formatVip(a.vip) === formatVip(b.vip) &&
    x.spec.kind === y.spec.kind &&
    x.spec.path === y.spec.path &&
    x.spec.name === y.spec.name &&
    x.port === y.port &&
    x.expectStatus === y.expectStatus &&
    x.dsr === y.dsr
  );
}
