/**
 * The lbctl daemon: owns the data plane of one interface, keeps the desired
 * state (config + runtime changes), follows the network, and serves the CLI.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { call } from '../api/client.js';
import { type ChangePreview, type ChangeResult, type StatsResult, type StatusResult } from '../api/protocol.js';
import { BalancerDataplane, type BalancerLimits } from '../dataplane/balancer.js';
import { DataplaneClock } from '../dataplane/clock.js';
import { closeFd, native } from '../dataplane/libbpf.js';
import { attachedProgram, attachXdp, detachXdp, programInfo, type XdpMode } from '../dataplane/xdp.js';
import {
  applyChanges,
  type DesiredState,
  effectiveCheck,
  effectiveForward,
  findVip,
  removeBackend,
  type RuntimeChanges,
  validateDesired,
} from '../model/desired-state.js';
import { type Family, type ForwardMethod, formatListenAddress, formatVip, type ListenAddress, type VipAddress } from '../model/address.js';
import { createMetrics } from '../metrics/prometheus.js';
import { MetricsServer } from '../metrics/server.js';
import { collectStats } from './stats.js';
import { type BackendHealth, type CheckTarget, HealthChecker, type Transition } from '../health/checker.js';
import type { DsrPath } from '../health/dsr-probe.js';
import { InputError } from '../model/errors.js';
import { ForwardingPaths, type PathResult, type PathTarget } from '../net/forwarding-paths.js';
import { getLink, type Link, primaryAddress } from '../net/iproute.js';
import { VERSION } from '../version.js';
import { ApiServer } from './api-server.js';
import { defaultPinDir, ensureBpffs, removePinDir } from './bpffs.js';
import { isActiveFlow, isFlowOf, trackedFlows } from './flows.js';
import { type ChangeOptions, createHandlers, type DaemonControl, DEFAULT_DRAIN_IDLE_SECONDS, type Edit } from './handlers.js';
import { previewChange } from './preview.js';
import { Reconciler } from './reconciler.js';
import { SerialQueue } from './serial-queue.js';
import { loadKillSwitch, loadRuntimeChanges, saveKillSwitch, saveRuntimeChanges } from './state-store.js';
import { KillSwitch, type KillSwitchStatus } from './kill-switch.js';
import { type DaemonSettings, loadConfigFile } from '../model/config.js';

export interface DaemonOptions {
  readonly interface: string;
  readonly xdpMode: XdpMode;
  readonly socketPath: string;
  readonly stateDir: string;
  readonly bpffsRoot: string;
  readonly pinDir?: string;
  /** Outer sources of ipip packets, one per family; default the interface's primary addresses. */
  readonly tunnelSources: readonly string[];
  readonly limits: BalancerLimits;
  readonly killSwitchTimeoutMs: number;
  readonly configPath?: string;
  /** The config file's VIPs and backends (empty without a config file). */
  readonly config: DesiredState;
  /** Where to serve Prometheus metrics and the status page; none without it. */
  readonly metricsAddress?: ListenAddress;
  /** The `lbctl start` arguments, so that `lbctl restart` can start the same way. */
  readonly startArgs: readonly string[];
}

export interface StopOptions {
  /** Leave the program attached and the maps pinned, for the next daemon to take over. */
  readonly keepDataplane: boolean;
}

const NETWORK_REFRESH_MS = 30_000;
const NETWORK_EVENT_DEBOUNCE_MS = 250;
const FLOW_SWEEP_DELAY_MS = 2_000;
const FLOW_SWEEP_INTERVAL_MS = 60_000;
const DRAIN_CHECK_MS = 1_000;

export class Daemon implements DaemonControl {
  private changes: RuntimeChanges;
  private config: DesiredState;
  private readonly queue = new SerialQueue();
  private readonly timers: NodeJS.Timeout[] = [];
  private monitor?: ChildProcess;
  private sweepTimer?: NodeJS.Timeout;
  private networkTimer?: NodeJS.Timeout;
  private api?: ApiServer;
  private metricsServer?: MetricsServer;
  private stopped?: Promise<void>;
  private resolveStopped!: () => void;
  /** Resolves once the daemon has stopped, however it was asked to. */
  readonly whenStopped = new Promise<void>((resolve) => {
    this.resolveStopped = resolve;
  });
  private readonly startedAt = new Date();
  private readonly checker: HealthChecker;
  private readonly healthTransitions = { up: 0, down: 0 };
  /** Health transitions waiting for the one reconcile that applies them all. */
  private readonly pendingTransitions: Transition[] = [];

  private constructor(
    private readonly options: DaemonOptions,
    private readonly log: Logger,
    private readonly link: Link,
    readonly dataplane: BalancerDataplane,
    readonly reconciler: Reconciler,
    readonly clock: DataplaneClock,
    private readonly paths: ForwardingPaths,
    private readonly pinDir: string,
    readonly killSwitch: KillSwitch,
    changes: RuntimeChanges,
  ) {
    this.changes = changes;
    this.config = options.config;
    this.checker = new HealthChecker(log, (t) => this.onHealthTransition(t));
  }

  static async start(options: DaemonOptions, log: Logger): Promise<Daemon> {
    if (process.getuid?.() !== 0)
      throw new InputError('lbctl start must run as root (it loads BPF programs and attaches them to interfaces)');
    if (!existsSync('/sys/kernel/btf/vmlinux'))
      throw new InputError(
        'this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): lbctl needs a kernel built with CONFIG_DEBUG_INFO_BTF',
      );
    await refuseIfRunning(options.socketPath);
    const link = await getLink(options.interface);
    const changes = loadRuntimeChanges(options.stateDir);
    const killSwitchEngaged = loadKillSwitch(options.stateDir);
    const desired = applyChanges(options.config, changes);
    validateDesired(desired);

    ensureBpffs(options.bpffsRoot);
    const pinDir = options.pinDir ?? defaultPinDir(options.bpffsRoot, link.name);
    const present = attachedProgram(link.ifindex);
    if (present && present.name !== 'xdp_balancer') {
      throw new InputError(
        `interface ${link.name} already runs XDP program ${present.name} (id ${present.id}); lbctl will not replace another tool's program`,
      );
    }

    const { dataplane, reconciler } = loadDataplane(options, pinDir, log);
    let clock: DataplaneClock;
    try {
      clock = await DataplaneClock.calibrate(dataplane.clockFd);
    } catch (error) {
      dataplane.close();
      throw error;
    }
    const paths = new ForwardingPaths(link.name, options.tunnelSources);
    const killSwitch = new KillSwitch(dataplane, clock, options.killSwitchTimeoutMs, killSwitchEngaged, log);
    const daemon = new Daemon(options, log, link, dataplane, reconciler, clock, paths, pinDir, killSwitch, changes);
    try {
      await paths.refresh(targetsOf(desired));
      daemon.applyDesired(desired);
      daemon.logUnresolved();
      // The deadline before the program: a new data plane balances nothing until then.
      killSwitch.start();
      dataplane.pin(pinDir);
      daemon.attach(present);
      daemon.api = await ApiServer.listen(options.socketPath, createHandlers(daemon), log);
      if (options.metricsAddress) await daemon.serveMetrics(options.metricsAddress);
      daemon.followNetwork();
      daemon.timers.push(setInterval(() => daemon.sweepFlows(), FLOW_SWEEP_INTERVAL_MS));
      daemon.timers.push(setInterval(() => daemon.watchDrains(), DRAIN_CHECK_MS));
    } catch (error) {
      await daemon.teardown({ keepDataplane: present !== null });
      throw error;
    }
    log.info(
      {
        event: 'daemon.started',
        interface: link.name,
        ifindex: link.ifindex,
        xdpMode: options.xdpMode,
        pinDir,
        socket: options.socketPath,
        vips: desired.vips.length,
        killSwitch: killSwitch.engaged ? 'engaged' : `${options.killSwitchTimeoutMs} ms`,
      },
      'lbctl daemon started',
    );
    return daemon;
  }

  private async serveMetrics(address: ListenAddress): Promise<void> {
    const metrics = createMetrics();
    this.reconciler.onApplied = (result) => metrics.observeReconcile(result.durationMs / 1000);
    this.metricsServer = await MetricsServer.listen(
      address,
      metrics,
      () => ({
        stats: collectStats(this),
        killSwitch: this.killSwitch.status(),
        info: { version: VERSION, interface: this.link.name, xdpMode: this.options.xdpMode },
      }),
      this.log,
    );
  }

  /**
   * Writes a state to the maps (through the reconciler), with the current
   * forwarding paths and health, then points the health checks at it.
   */
  private applyDesired(desired: DesiredState): void {
    this.reconciler.apply(
      desired,
      (t) => this.paths.get(t),
      (key, address) => this.health(key, address),
    );
    this.checker.update(
      desired.vips.flatMap((vip) => {
        const key = formatVip(vip.vip);
        return vip.backends.map((b): CheckTarget => {
          const forward = effectiveForward(vip, b);
          const path = dsrCheckPath(vip.vip, forward, this.paths.get({ address: b.address, forward }), (family) =>
            this.paths.localAddress(family),
          );
          return {
            key: `${key} ${b.address}`,
            vip: vip.vip,
            address: b.address,
            settings: effectiveCheck(vip, b),
            ...(path ? { path } : {}),
          };
        });
      }),
    );
  }

  daemonStats(): StatsResult['daemon'] {
    const r = this.reconciler.stats;
    return {
      startedAt: this.startedAt.toISOString(),
      healthTransitions: { ...this.healthTransitions },
      reconciles: r.applies,
      tablesBuilt: r.tablesBuilt,
      tablesWritten: r.tablesWritten,
      lastReconcileMs: r.lastApplyMs,
      reconcileMsTotal: r.applyMsTotal,
    };
  }

  health(vipKey: string, address: string): BackendHealth | undefined {
    return this.checker.health(`${vipKey} ${address}`);
  }

  /**
   * A backend went down or came back: rebuild the tables, and say what moved.
   * Transitions that arrive together (a start with many backends, a switch
   * failing under many) are applied in one reconcile.
   */
  private onHealthTransition(transition: Transition): void {
    if (this.stopped) return;
    if (transition.to === 'up' || transition.to === 'down') this.healthTransitions[transition.to]++;
    // Only a down backend leaves the table: unknown -> up changes nothing there.
    if (transition.from !== 'down' && transition.to !== 'down') return;
    this.pendingTransitions.push(transition);
    if (this.pendingTransitions.length > 1) return;
    void this.queue
      .run(async () => {
        const transitions = this.pendingTransitions.splice(0);
        if (this.stopped) return;
        const backendOf = (t: Transition) =>
          this.reconciler.view.find((v) => v.key === t.key.split(' ')[0])?.backends.find((b) => b.address === t.address);
        const goingDown = new Map(transitions.filter((t) => t.to === 'down').map((t) => [t, backendOf(t)?.id]));
        const trackedById = new Map<number, { tracked: number; active: number }>();
        if (goingDown.size > 0) {
          const ids = new Set(goingDown.values());
          const now = this.clock.now();
          for (const flow of trackedFlows(this.dataplane)) {
            if (!ids.has(flow.backendId)) continue;
            const count = trackedById.get(flow.backendId) ?? { tracked: 0, active: 0 };
            count.tracked++;
            if (isActiveFlow(flow, DEFAULT_DRAIN_IDLE_SECONDS, this.clock, now)) count.active++;
            trackedById.set(flow.backendId, count);
          }
        }
        this.applyDesired(this.desired());
        for (const [transition, id] of goingDown) {
          const vipKey = transition.key.split(' ')[0]!;
          const after = this.reconciler.view.find((v) => v.key === vipKey);
          const kept = after?.allDown && after.backends.find((b) => b.address === transition.address)?.keptWhileAllDown;
          this.log.warn(
            {
              event: after?.allDown ? 'vip.all_down' : 'backend.removed_from_table',
              vip: vipKey,
              backend: transition.address,
              reason: transition.reason,
              trackedFlowsMoved: kept || id === undefined ? 0 : (trackedById.get(id)?.tracked ?? 0),
              activeFlowsMoved: kept || id === undefined ? 0 : (trackedById.get(id)?.active ?? 0),
            },
            after?.allDown
              ? `every backend of ${vipKey} is down: ${findVip(this.desired(), vipKey)?.onAllDown === 'drop' ? 'dropping its packets' : 'keeping the last healthy ones'}`
              : 'backend taken out of the table',
          );
        }
      })
      .catch((error) => this.log.error({ event: 'health.apply_failed', err: error }, 'applying a health change failed'));
  }

  /** Stops once; later calls wait for the same stop. */
  stop(options: StopOptions = { keepDataplane: false }): Promise<void> {
    this.stopped ??= this.queue
      .run(() => this.teardown(options))
      .then(() => {
        this.log.info(
          { event: 'daemon.stopped', keepDataplane: options.keepDataplane },
          options.keepDataplane
            ? 'lbctl daemon stopped; the data plane keeps running until the kill-switch deadline'
            : 'lbctl daemon stopped',
        );
        this.resolveStopped();
      });
    return this.stopped;
  }

  private attach(present: ReturnType<typeof attachedProgram>): void {
    const { ifindex, name } = this.link;
    if (!present) {
      attachXdp(ifindex, name, this.dataplane.programFd, this.options.xdpMode);
      return;
    }
    // Left behind by a daemon that is gone (a crash): replace it, atomically
    // when the attach mode is the same.
    this.log.warn(
      { event: 'dataplane.replaced', programId: present.id, mode: present.mode },
      'replacing the xdp_balancer a previous run left attached',
    );
    const oldFd = native.progFdById(present.id) as number;
    try {
      if (present.mode === this.options.xdpMode) {
        attachXdp(ifindex, name, this.dataplane.programFd, this.options.xdpMode, oldFd);
      } else {
        detachXdp(ifindex, oldFd, present.mode);
        attachXdp(ifindex, name, this.dataplane.programFd, this.options.xdpMode);
      }
    } finally {
      closeFd(oldFd);
    }
  }

  private async teardown({ keepDataplane }: StopOptions): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.checker.stop();
    clearTimeout(this.sweepTimer);
    clearTimeout(this.networkTimer);
    this.monitor?.kill();
    this.killSwitch.stop();
    await this.api?.close();
    await this.metricsServer?.close();
    if (!keepDataplane) {
      try {
        detachXdp(this.link.ifindex, this.dataplane.programFd, this.options.xdpMode);
      } catch (error) {
        this.log.error({ event: 'dataplane.detach_failed', err: error }, 'detaching XDP failed');
      }
      removePinDir(this.pinDir, this.options.bpffsRoot);
    }
    this.dataplane.close();
  }

  desired(): DesiredState {
    return applyChanges(this.config, this.changes);
  }

  requestStop(options: StopOptions): void {
    // Answer first, then stop (the answer would not get out otherwise).
    setImmediate(() => void this.stop(options));
  }

  /**
   * Reads the config file again and applies it with the runtime changes
   * laid over it, through the same path as any change. A file that does
   * not validate changes nothing.
   */
  reload(): Promise<ChangeResult> {
    return this.queue.run(async () => {
      if (!this.options.configPath) throw new InputError('the daemon was started without --config: there is nothing to reload');
      const loaded = await loadConfigFile(this.options.configPath);
      const desired = applyChanges(loaded.state, this.changes);
      validateDesired(desired);
      await this.paths.refresh([...targetsOf(this.desired()), ...targetsOf(desired)]);
      this.applyDesired(desired);
      this.config = loaded.state;
      this.scheduleSweep();
      const warnings = settingsNeedingRestart(loaded.settings, this.options);
      this.log.info({ event: 'config.reloaded', config: this.options.configPath, vips: desired.vips.length, warnings }, 'config reloaded');
      return { message: `reloaded ${this.options.configPath}: ${desired.vips.length} VIPs`, warnings, applied: true };
    });
  }

  /** Engages or releases the kill-switch; the state is saved before it is acted on. */
  setKillSwitch(engaged: boolean): KillSwitchStatus {
    if (engaged === this.killSwitch.engaged) return this.killSwitch.status();
    const since = engaged ? new Date() : null;
    saveKillSwitch(this.options.stateDir, since?.toISOString() ?? null);
    if (since) this.killSwitch.engage(since);
    else this.killSwitch.release();
    return this.killSwitch.status();
  }

  async status(): Promise<StatusResult> {
    const view = this.reconciler.view;
    const backends = view.flatMap((v) => v.backends);
    return {
      pid: process.pid,
      version: VERSION,
      interface: this.link.name,
      ifindex: this.link.ifindex,
      xdpMode: this.options.xdpMode,
      programId: programInfo(this.dataplane.programFd).id,
      startedAt: this.startedAt.toISOString(),
      socket: this.options.socketPath,
      stateDir: this.options.stateDir,
      pinDir: this.pinDir,
      tunnelSources: await this.tunnelSources(),
      configPath: this.options.configPath ?? null,
      vips: view.length,
      backends: backends.length,
      unresolvedBackends: backends.filter((b) => b.state === 'unresolved').length,
      flowTableSize: this.dataplane.limits.flowTableSize,
      metricsAddress: this.metricsServer ? formatListenAddress(this.metricsServer.address) : null,
      killSwitch: this.killSwitch.status(),
      startArgs: [...this.options.startArgs],
    };
  }

  /** The outer source per family: configured, or the interface's primary address. */
  private async tunnelSources(): Promise<string[]> {
    const sources: string[] = [];
    for (const family of [4, 6] as const) {
      const address =
        this.options.tunnelSources.find((a) => a.includes(':') === (family === 6)) ?? (await primaryAddress(this.link.name, family));
      if (address) sources.push(address);
    }
    return sources;
  }

  /**
   * Applies a runtime change: validate, resolve paths, write the maps, save.
   * If saving fails the maps are put back, so a change is either done and
   * durable or not done at all. A dry run stops before writing and returns
   * what the change would do.
   */
  change(describe: string, edit: Edit, options: ChangeOptions = {}): Promise<ChangeResult> {
    return this.queue.run(() => this.changeNow(describe, edit, options));
  }

  private async changeNow(describe: string, edit: Edit, options: ChangeOptions): Promise<ChangeResult> {
    const next = edit(this.config, this.changes);
    const desired = applyChanges(this.config, next);
    validateDesired(desired);
    const previous = this.desired();
    // Paths for both states: a preview or a revert needs the old ones.
    await this.paths.refresh([...targetsOf(previous), ...targetsOf(desired)]);
    const warnings: string[] = [];
    if (options.check) {
      const result = this.paths.get(options.check);
      if (!result.ok) {
        if (result.permanent) throw new InputError(`cannot add backend ${options.check.address}: ${result.reason}`);
        warnings.push(`backend ${options.check.address} is not usable yet: ${result.reason}`);
      }
    }
    if (options.dryRun) {
      return {
        message: `dry run, nothing changed: ${describe}`,
        warnings,
        applied: false,
        ...(options.vip ? { preview: this.preview(options.vip, previous, desired) } : {}),
      };
    }
    this.applyDesired(desired);
    try {
      saveRuntimeChanges(this.options.stateDir, next);
    } catch (error) {
      this.applyDesired(previous);
      throw new Error(`could not save the change to ${this.options.stateDir} (${(error as Error).message}); nothing was changed`);
    }
    this.changes = next;
    this.scheduleSweep();
    this.log.info({ event: 'change.applied', change: describe, warnings }, 'runtime change applied');
    return { message: describe, warnings, applied: true };
  }

  private preview(key: string, before: DesiredState, after: DesiredState): ChangePreview {
    const paths = (t: PathTarget) => this.paths.get(t);
    const beforeSpec = findVip(before, key);
    const afterSpec = findVip(after, key);
    if (!beforeSpec || !afterSpec) throw new InputError(`unknown VIP ${key}`);
    const flows = [...trackedFlows(this.dataplane)].filter((f) => isFlowOf(f, afterSpec.vip));
    const now = this.clock.now();
    return previewChange(
      key,
      { spec: beforeSpec, table: this.reconciler.plan({ vips: [beforeSpec] }, paths).get(key)! },
      { spec: afterSpec, table: this.reconciler.plan({ vips: [afterSpec] }, paths).get(key)! },
      flows,
      (id) => this.reconciler.backendById(id)?.address,
      (flow) => isActiveFlow(flow, DEFAULT_DRAIN_IDLE_SECONDS, this.clock, now),
    );
  }

  /**
   * Finishes drains: a draining backend is removed once none of its tracked
   * flows is active (the client sent FIN/RST, or it has been idle for the
   * drain's idle time), or when its timeout has passed.
   */
  private watchDrains(): void {
    const draining = this.reconciler.view.flatMap((vip) =>
      vip.backends.filter((b) => b.drain).map((b) => ({ vip: vip.key, backend: b, drain: b.drain! })),
    );
    if (draining.length === 0 || this.stopped) return;
    void this.queue
      .run(async () => {
        const now = this.clock.now();
        const active = new Map<number, number>();
        const idleSeconds = new Map(draining.map((d) => [d.backend.id, d.drain.idleSeconds]));
        for (const flow of trackedFlows(this.dataplane)) {
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
          await this.changeNow(
            `backend remove ${vip} ${backend.address} (drain finished: ${why})`,
            (config, changes) => removeBackend(config, changes, vip, backend.address),
            {},
          );
        }
      })
      .catch((error) => this.log.error({ event: 'drain.check_failed', err: error }, 'drain check failed'));
  }

  /** Routes, neighbours and addresses change: follow them. */
  private followNetwork(): void {
    const monitor = spawn('ip', ['monitor', 'neigh', 'route', 'address', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    monitor.stdout!.on('data', () => this.scheduleNetworkRefresh());
    monitor.on('exit', (code, signal) => {
      if (this.stopped) return;
      this.log.warn({ event: 'paths.monitor_exited', code, signal }, 'ip monitor exited; relying on periodic refresh');
    });
    this.monitor = monitor;
    this.timers.push(
      setInterval(() => {
        void this.paths.probeAll().catch((error) => this.log.warn({ event: 'paths.probe_failed', err: error }, 'neighbour probe failed'));
        this.scheduleNetworkRefresh();
      }, NETWORK_REFRESH_MS),
    );
  }

  private scheduleNetworkRefresh(): void {
    if (this.networkTimer || this.stopped) return;
    this.networkTimer = setTimeout(() => {
      this.networkTimer = undefined;
      void this.queue
        .run(async () => {
          if (this.stopped) return;
          const desired = this.desired();
          if (await this.paths.refresh(targetsOf(desired))) {
            this.applyDesired(desired);
            this.log.info({ event: 'paths.changed' }, 'forwarding paths changed; data plane updated');
            this.logUnresolved();
          }
        })
        .catch((error) => this.log.error({ event: 'paths.refresh_failed', err: error }, 'network refresh failed'));
    }, NETWORK_EVENT_DEBOUNCE_MS);
  }

  private scheduleSweep(): void {
    clearTimeout(this.sweepTimer);
    this.sweepTimer = setTimeout(() => this.sweepFlows(), FLOW_SWEEP_DELAY_MS);
  }

  private sweepFlows(): void {
    void this.queue
      .run(async () => {
        if (this.stopped) return;
        const removed = this.reconciler.sweepFlows();
        if (removed > 0) this.log.info({ event: 'flows.swept', flows: removed }, 'forgot tracked flows of removed backends');
      })
      .catch((error) => this.log.error({ event: 'flows.sweep_failed', err: error }, 'flow sweep failed'));
  }

  private logUnresolved(): void {
    for (const vip of this.reconciler.view) {
      for (const b of vip.backends) {
        if (b.state !== 'active')
          this.log.warn({ event: 'backend.unreachable', vip: vip.key, backend: b.address, reason: b.reason }, 'backend has no usable path');
      }
    }
  }
}

/**
 * Takes over the data plane an earlier daemon left pinned (restart, crash,
 * upgrade), or starts a new one when there is none or it cannot be used.
 */
function loadDataplane(options: DaemonOptions, pinDir: string, log: Logger): { dataplane: BalancerDataplane; reconciler: Reconciler } {
  if (existsSync(pinDir)) {
    const attempt = BalancerDataplane.takeOver(pinDir);
    if ('dataplane' in attempt) {
      const { limits } = attempt.dataplane;
      if (JSON.stringify(limits) !== JSON.stringify(options.limits)) {
        log.warn(
          { event: 'dataplane.limits_kept', running: limits, requested: options.limits },
          'keeping the sizes of the running data plane; stop and start it to change them',
        );
      }
      return { dataplane: attempt.dataplane, reconciler: Reconciler.adopt(attempt.dataplane, log) };
    }
    log.warn(
      { event: 'dataplane.takeover_refused', pinDir, reason: attempt.refused },
      'cannot take over the pinned data plane: starting a new one (tracked flows are lost)',
    );
  }
  const dataplane = BalancerDataplane.load(options.limits);
  return { dataplane, reconciler: new Reconciler(dataplane, log) };
}

/** Settings a running daemon cannot change by reloading. */
function settingsNeedingRestart(settings: DaemonSettings, options: DaemonOptions): string[] {
  const differs: string[] = [];
  if (settings.interface !== undefined && settings.interface !== options.interface) differs.push('interface');
  if (settings.xdpMode !== undefined && settings.xdpMode !== options.xdpMode) differs.push('xdp_mode');
  if (settings.tunnelSources !== undefined && settings.tunnelSources.join(' ') !== options.tunnelSources.join(' '))
    differs.push('tunnel_source');
  if (settings.flowTableSize !== undefined && settings.flowTableSize !== options.limits.flowTableSize) differs.push('flow_table_size');
  if (settings.maxVips !== undefined && settings.maxVips !== options.limits.maxVips) differs.push('max_vips');
  if (settings.maxBackends !== undefined && settings.maxBackends !== options.limits.maxBackends) differs.push('max_backends');
  if (settings.killSwitchTimeoutMs !== undefined && settings.killSwitchTimeoutMs !== options.killSwitchTimeoutMs)
    differs.push('kill_switch_timeout');
  const metrics = options.metricsAddress ? formatListenAddress(options.metricsAddress) : undefined;
  if (settings.metricsAddress !== undefined && settings.metricsAddress !== metrics) differs.push('metrics_address');
  return differs.map((field) => `${field} changed in the config: it takes effect at the next lbctl restart`);
}

/**
 * How the DSR-path check reaches a backend, as the data plane does: the
 * SYN's source is the balancer's address of the VIP's family, and for ipip
 * the outer source is the path's tunnel source, of the backend's family
 * (they differ across families: 4-in-6, 6-in-4). None until the path is
 * resolved; without a balancer address of the VIP's family the path has no
 * source and the check says so.
 */
export function dsrCheckPath(
  vip: VipAddress,
  forward: ForwardMethod,
  result: PathResult,
  localAddress: (family: Family) => string | undefined,
): DsrPath | undefined {
  if (!result.ok) return undefined;
  const { ifindex, srcMac, dstMac, tunnelSrc } = result.path;
  const source = localAddress(vip.family);
  return {
    forward,
    ifindex,
    srcMac,
    dstMac,
    ...(source ? { source } : {}),
    ...(forward === 'ipip' && tunnelSrc ? { tunnelSource: tunnelSrc } : {}),
  };
}

function targetsOf(desired: DesiredState): PathTarget[] {
  return desired.vips.flatMap((vip) => vip.backends.map((b) => ({ address: b.address, forward: effectiveForward(vip, b) })));
}

async function refuseIfRunning(socketPath: string): Promise<void> {
  try {
    const status = await call(socketPath, 'status', {}, 2000);
    throw new InputError(`an lbctl daemon (pid ${status.pid}, interface ${status.interface}) already listens on ${socketPath}`);
  } catch (error) {
    if (error instanceof InputError) throw error;
  }
}
