/**
 * The lbctl daemon's lifecycle: load the data plane of one interface (or
 * take over the one a previous daemon left), attach it, serve the CLI, and
 * stop. The control core (src/core) owns the state; the daemon wires the
 * event sources that ask it to change: the API, health checks, drains, the
 * network. Only one daemon runs per interface, pin directory and socket
 * (instance-lock.ts).
 */
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { call } from '../api/client.js';
import type { AnnounceView, ChangeResult, ConfigDiff, KillSwitchStatus, StatsResult, StatusResult } from '../api/protocol.js';
import { SerialQueue } from '../core/serial-queue.js';
import { ControlLoop, type ReloadOptions } from '../core/control-loop.js';
import { Reconciler } from '../core/reconciler.js';
import type { BackendHealth } from '../health/checker.js';
import { HealthChecker } from '../health/checker.js';
import { BalancerDataplane } from '../dataplane/balancer.js';
import type { BalancerLimits } from '../model/limits.js';
import { DataplaneClock } from '../dataplane/clock.js';
import { attachedProgram, programInfo, type XdpMode } from '../dataplane/xdp.js';
import { effectiveCheck } from '../model/check.js';
import { type DesiredState, findVip } from '../model/desired-state.js';
import type { HealthLookup } from '../core/views.js';
import { DownSettler } from '../fleet/down-settler.js';
import type { AnnounceSettings } from '../model/announce.js';
import { AnnounceController, announceViewOf, watchdogStallMs } from '../fleet/announce-controller.js';
import { formatListenAddress, formatTunnelSource, type ListenAddress, tunnelSourceOf } from '../model/address.js';
import { type DaemonSettings, loadConfigFile } from '../model/config.js';
import { InputError } from '../model/errors.js';
import { exportConfig } from '../model/config-export.js';
import { diffStates } from '../model/state-diff.js';
import { createMetrics } from '../metrics/prometheus.js';
import { MetricsServer } from '../metrics/server.js';
import { ForwardingPaths } from '../net/forwarding-paths.js';
import { getLink, hostAddresses, primaryAddress } from '../net/iproute.js';
import { type NetnsIdentity, netnsOf } from '../net/netns.js';
import { droppedLogLines } from '../log.js';
import { VERSION } from '../version.js';
import { ApiServer } from './api-server.js';
import { XdpAttachment } from './attachment.js';
import { defaultPinDir, ensureBpffs, removePinDir } from './bpffs.js';
import { DrainWatcher } from './drain-watcher.js';
import { createHandlers, type DaemonApi } from './handlers.js';
import { DEFAULT_LOCK_DIR, type HeldLock, acquireLock, interfaceLock, pinDirLock, releaseLocks, socketLock } from './instance-lock.js';
import { KillSwitch } from './kill-switch.js';
import { NetworkFollower } from './network-follower.js';
import { loadKillSwitch, loadRuntimeChanges, saveKillSwitch, saveRuntimeChanges } from './state-store.js';
import { collectStats } from './stats.js';
import { recordHandover, takeHandover } from './handover.js';

export interface DaemonOptions {
  readonly interface: string;
  readonly xdpMode: XdpMode;
  readonly socketPath: string;
  readonly stateDir: string;
  readonly bpffsRoot: string;
  readonly pinDir?: string;
  /** Outer sources of ipip packets (parseTunnelSources: an address or a range), one per family; default the interface's primary addresses. */
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
  /** Announce the VIPs to a fleet's router (docs/fleet.md); off without it. */
  readonly announce?: AnnounceSettings;
  /** Where the locks that keep a second daemon off the same interface, pins and socket are (default /run/lock/lbctl). */
  readonly lockDir?: string;
}

export interface StopOptions {
  /** Leave the program attached and the maps pinned, for the next daemon to take over. */
  readonly keepDataplane: boolean;
}

const FLOW_SWEEP_INTERVAL_MS = 60_000;
/** How often the daemon looks whether log lines were dropped, and says so in the log once it can. */
const LOG_DROP_CHECK_MS = 10_000;

export class Daemon implements DaemonApi {
  private readonly timers: NodeJS.Timeout[] = [];
  private api?: ApiServer;
  private metricsServer?: MetricsServer;
  private stopped?: Promise<void>;
  private resolveStopped!: () => void;
  /** Resolves once the daemon has stopped, however it was asked to. */
  readonly whenStopped = new Promise<void>((resolve) => {
    this.resolveStopped = resolve;
  });
  private readonly startedAt = new Date();
  private readonly network: NetworkFollower;
  private readonly drains: DrainWatcher;
  private announce?: AnnounceController;
  /** Reloads one at a time: a slow one read earlier never overwrites a later one. */
  private readonly reloads = new SerialQueue();
  private readonly netns: NetnsIdentity = netnsOf();
  private logLinesReported = droppedLogLines().lines;

  private constructor(
    private readonly options: DaemonOptions,
    private readonly log: Logger,
    private readonly interfaceName: string,
    readonly dataplane: BalancerDataplane,
    private readonly reconciler: Reconciler,
    readonly clock: DataplaneClock,
    private readonly paths: ForwardingPaths,
    private readonly pinDir: string,
    private readonly killSwitch: KillSwitch,
    private readonly checker: HealthChecker,
    readonly core: ControlLoop,
    private readonly attachment: XdpAttachment,
    private readonly locks: HeldLock[],
  ) {
    // A restart keeps the backends it found in service up until `fall` checks fail (one slow first probe must not move flows).
    let takenOver: ReadonlySet<string> = reconciler.takenOverBackends;
    core.onCheckTargets = (targets) => {
      checker.update(takenOver.size > 0 ? targets.map((t) => (takenOver.has(t.key) ? { ...t, assumeUp: true } : t)) : targets);
      takenOver = new Set();
    };
    core.onApplied = () => this.announce?.requestEvaluation();
    const pathsChanged = () =>
      this.core.pathsChanged().catch((error) => log.error({ event: 'paths.refresh_failed', err: error }, 'network refresh failed'));
    paths.onRetryDue = () => void pathsChanged();
    attachment.onReattached = () => void pathsChanged();
    this.network = new NetworkFollower({ pathsChanged: () => this.core.pathsChanged(), probeNextHops: () => paths.probeAll() }, log);
    this.drains = new DrainWatcher(this.core, dataplane, clock, log);
  }

  static async start(options: DaemonOptions, log: Logger): Promise<Daemon> {
    if (process.getuid?.() !== 0)
      throw new InputError('lbctl start must run as root (it loads BPF programs and attaches them to interfaces)');
    if (!existsSync('/sys/kernel/btf/vmlinux')) {
      throw new InputError(
        'this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): lbctl needs a kernel built with CONFIG_DEBUG_INFO_BTF',
      );
    }
    await refuseIfRunning(options.socketPath);
    const link = await getLink(options.interface);
    const pinDir = options.pinDir ?? defaultPinDir(options.bpffsRoot, link.name);
    // Before anything is read or touched: a second daemon (or one started at the same moment) stops here.
    const locks = takeLocks(options.lockDir ?? DEFAULT_LOCK_DIR, [
      socketLock(options.socketPath),
      interfaceLock(netnsOf().inode, link.name),
      pinDirLock(pinDir),
    ]);
    try {
      return await Daemon.startLocked(options, log, link, pinDir, locks);
    } catch (error) {
      releaseLocks(locks);
      throw error;
    }
  }

  private static async startLocked(
    options: DaemonOptions,
    log: Logger,
    link: { name: string; ifindex: number },
    pinDir: string,
    locks: HeldLock[],
  ): Promise<Daemon> {
    const changes = loadRuntimeChanges(options.stateDir);
    const killSwitchEngaged = loadKillSwitch(options.stateDir);

    ensureBpffs(options.bpffsRoot);
    const present = attachedProgram(link.ifindex);
    if (present && present.name !== 'xdp_balancer') {
      throw new InputError(
        `interface ${link.name} already runs XDP program ${present.name} (id ${present.id}); lbctl will not replace another tool's program`,
      );
    }

    const { dataplane, reconciler } = loadDataplane(options, pinDir, log);
    const paths = new ForwardingPaths(link.name, options.tunnelSources);
    // The checker reports to the core, and the core asks the checker: each is the other's event source.
    let core: ControlLoop;
    // A fleet node holds a failed backend back from its tables for a check period (src/fleet/down-settler.ts).
    const settler = options.announce
      ? downSettler(
          () => core,
          (vip, address) => checker.health(`${vip} ${address}`),
        )
      : undefined;
    const checker = new HealthChecker(log, (transition) => (settler ? settler.transition(transition) : core.healthChanged(transition)));
    let clock: DataplaneClock;
    try {
      clock = await DataplaneClock.calibrate(dataplane.clockFd);
      // Refuses (InputError) a config and runtime changes that do not make a valid state together.
      core = new ControlLoop(
        {
          reconciler,
          flows: dataplane,
          clock,
          paths,
          health: settler?.health ?? ((vip, address) => checker.health(`${vip} ${address}`)),
          saveChanges: (next) => saveRuntimeChanges(options.stateDir, next),
          log,
          keepOnAllDown: options.announce !== undefined,
          hostAddresses,
        },
        options.config,
        changes,
      );
    } catch (error) {
      dataplane.close();
      throw error;
    }
    const killSwitch = new KillSwitch(dataplane, clock, options.killSwitchTimeoutMs, killSwitchEngaged, log);
    const programId = programInfo(dataplane.programFd).id;
    const attachment = new XdpAttachment(link.name, link.ifindex, dataplane.programFd, programId, options.xdpMode, log);
    const daemon = new Daemon(
      options,
      log,
      link.name,
      dataplane,
      reconciler,
      clock,
      paths,
      pinDir,
      killSwitch,
      checker,
      core,
      attachment,
      locks,
    );
    try {
      await daemon.core.start();
      // The deadline before the program: a new data plane balances nothing until then.
      killSwitch.start();
      dataplane.pin(pinDir);
      attachment.attach(present, takeHandover(options.stateDir));
      attachment.start();
      // Only once the data plane balances: announcing sends traffic here.
      if (options.announce) daemon.announce = await daemon.startAnnouncing(options.announce);
      daemon.api = await ApiServer.listen(options.socketPath, createHandlers(daemon), log);
      if (options.metricsAddress) await daemon.serveMetrics(options.metricsAddress);
      daemon.network.start();
      daemon.drains.start();
      daemon.timers.push(
        setInterval(() => {
          daemon.core.sweepFlows().catch((error) => log.error({ event: 'flows.sweep_failed', err: error }, 'flow sweep failed'));
        }, FLOW_SWEEP_INTERVAL_MS),
        setInterval(() => daemon.reportDroppedLogLines(), LOG_DROP_CHECK_MS).unref(),
      );
    } catch (error) {
      // The locks stay held until the caller releases them, after this teardown.
      await daemon.teardown({ keepDataplane: present !== null }, false);
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
        vips: daemon.core.desired.vips.length,
        killSwitch: killSwitch.engaged ? 'engaged' : `${options.killSwitchTimeoutMs} ms`,
      },
      'lbctl daemon started',
    );
    return daemon;
  }

  private startAnnouncing(settings: AnnounceSettings): Promise<AnnounceController> {
    return AnnounceController.start({
      settings,
      interface: this.interfaceName,
      killSwitchEngaged: this.killSwitch.engaged,
      stallMs: watchdogStallMs(this.options.killSwitchTimeoutMs),
      source: {
        views: () => this.core.views,
        vipNeed: (key) => findVip(this.core.desired, key)?.need,
        health: this.health,
        forgetFlows: (vips) => this.core.forgetFlows(vips),
      },
      log: this.log,
    });
  }

  announceView(vipKey: string): AnnounceView {
    return announceViewOf(this.announce, vipKey, {
      view: this.core.views.find((v) => v.key === vipKey),
      health: this.health,
      need: findVip(this.core.desired, vipKey)?.need ?? this.options.announce?.need ?? 1,
      since: this.startedAt.toISOString(),
    });
  }

  /** The live health-check state of a backend of a VIP, if it is checked. */
  readonly health = (vipKey: string, address: string): BackendHealth | undefined => this.checker.health(`${vipKey} ${address}`);

  stats(): StatsResult {
    const r = this.reconciler.stats;
    return collectStats({
      views: this.core.views,
      dataplane: this.dataplane,
      health: this.health,
      announce: (key) => this.announceView(key),
      daemon: {
        startedAt: this.startedAt.toISOString(),
        healthTransitions: { ...this.core.healthTransitions },
        reconciles: r.applies,
        tablesBuilt: r.tablesBuilt,
        tablesWritten: r.tablesWritten,
        lastReconcileMs: r.lastApplyMs,
        reconcileMsTotal: r.applyMsTotal,
        logLinesDropped: droppedLogLines().lines,
        healthProbesWithoutVerdict: this.checker.probesWithoutVerdict,
        apiConnectionsRefused: this.api?.refusedConnections ?? 0,
      },
    });
  }

  private async serveMetrics(address: ListenAddress): Promise<void> {
    const metrics = createMetrics();
    this.reconciler.onApplied = (result) => metrics.observeReconcile(result.durationMs / 1000);
    this.metricsServer = await MetricsServer.listen(
      address,
      metrics,
      () => ({
        stats: this.stats(),
        killSwitch: this.killSwitch.status(),
        dataplane: this.attachment.current,
        info: { version: VERSION, interface: this.interfaceName, xdpMode: this.options.xdpMode },
      }),
      this.log,
    );
  }

  /** Stops once; later calls wait for the same stop. */
  stop(options: StopOptions = { keepDataplane: false }): Promise<void> {
    // Withdrawn first: the router moves the flows to the other nodes while this one still balances.
    this.stopped ??= (this.announce?.stop(options) ?? Promise.resolve())
      .catch((error) => this.log.error({ event: 'announce.failed', err: error }, 'withdrawing before the stop failed'))
      .then(() => this.core.stop(() => this.teardown(options)))
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

  /** Log lines dropped since the last look: said once the log takes lines again (this one may be dropped too, and counted). */
  private reportDroppedLogLines(): void {
    const { lines, reason } = droppedLogLines();
    if (lines === this.logLinesReported) return;
    this.log.warn(
      { event: 'log.dropped', lines: lines - this.logLinesReported, total: lines, reason },
      `${lines - this.logLinesReported} log lines were dropped (${reason}); balancing went on`,
    );
    this.logLinesReported = lines;
  }

  /** releaseLocks: false when start() failed (it releases them itself, once this is done). */
  private async teardown({ keepDataplane }: StopOptions, releaseLocksAfter = true): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.checker.stop();
    this.network.stop();
    this.paths.stop();
    this.attachment.stop();
    this.drains.stop();
    this.killSwitch.stop();
    await this.announce?.close();
    await this.api?.close();
    await this.metricsServer?.close();
    if (!keepDataplane) {
      try {
        this.attachment.detach();
      } catch (error) {
        this.log.error({ event: 'dataplane.detach_failed', err: error }, 'detaching XDP failed');
      }
      removePinDir(this.pinDir, this.options.bpffsRoot);
    } else if (releaseLocksAfter && this.attachment.current.state === 'attached') {
      try {
        recordHandover(this.options.stateDir, programInfo(this.dataplane.programFd).id);
      } catch (error) {
        this.log.warn(
          { event: 'dataplane.handover_unsaved', err: error },
          'could not note the handover: the next daemon will log its takeover as after a crash',
        );
      }
    }
    this.dataplane.close();
    // Last: until the pins are gone nobody else may start on them.
    if (releaseLocksAfter) releaseLocks(this.locks);
  }

  requestStop(options: StopOptions): void {
    // Answer first, then stop (the answer would not get out otherwise).
    setImmediate(() => void this.stop(options));
  }

  /**
   * Reads the config file again and hands it to the core, which lays the
   * runtime changes over it. A file that does not validate changes nothing.
   */
  async reload(options: ReloadOptions = {}): Promise<ChangeResult> {
    const path = this.configPath('reload');
    return this.reloads.run(async () => {
      // Read and parsed on a thread of its own, paths resolved: only then does it queue behind other changes.
      const loaded = await loadConfigFile(path);
      const { desired, overrides } = await this.core.reload(loaded.state, options);
      const warnings = settingsNeedingRestart(loaded.settings, this.options);
      this.log.info(
        {
          event: 'config.reloaded',
          config: path,
          vips: desired.vips.length,
          warnings,
          runtimeOverrides: overrides.length,
          discardedRuntimeChanges: options.discardRuntimeChanges === true,
        },
        'config reloaded',
      );
      const kept = options.discardRuntimeChanges
        ? '; runtime changes discarded'
        : overrides.length > 0
          ? `; ${overrides.length} runtime changes override it`
          : '';
      return { message: `reloaded ${path}: ${desired.vips.length} VIPs${kept}`, warnings, applied: true, overrides };
    });
  }

  /** The config file as it is now against what runs: what a reload (with or without the runtime changes) would change. */
  async configDiff(): Promise<ConfigDiff> {
    const path = this.configPath('diff');
    const loaded = await loadConfigFile(path);
    return {
      file: path,
      differences: diffStates(loaded.state, this.core.desired),
      settings: settingsNeedingRestart(loaded.settings, this.options),
    };
  }

  /** What runs, as a config file: the daemon's settings and the desired state, runtime changes folded in. */
  configExport(): { text: string } {
    const o = this.options;
    const settings: DaemonSettings = {
      interface: this.interfaceName,
      xdpMode: o.xdpMode,
      ...(o.tunnelSources.length > 0 ? { tunnelSources: [...o.tunnelSources] } : {}),
      killSwitchTimeoutMs: o.killSwitchTimeoutMs,
      flowTableSize: o.limits.flowTableSize,
      maxVips: o.limits.maxVips,
      maxBackends: o.limits.maxBackends,
      ...(o.metricsAddress ? { metricsAddress: formatListenAddress(o.metricsAddress) } : {}),
      ...(o.announce ? { announce: o.announce } : {}),
    };
    const header = `lbctl config export: what the daemon (pid ${process.pid}) on ${this.interfaceName} runs, ${new Date().toISOString()}`;
    return { text: exportConfig(settings, this.core.desired, header) };
  }

  private configPath(what: string): string {
    if (!this.options.configPath) throw new InputError(`the daemon was started without --config: there is nothing to ${what}`);
    return this.options.configPath;
  }

  /** Why changes do not reach any packet right now, if they do not. */
  attachmentProblem(): string | undefined {
    const { state, detail } = this.attachment.current;
    return state === 'attached' ? undefined : detail;
  }

  /**
   * Engages or releases the kill-switch; the state is saved before it is
   * acted on. A fleet node withdraws its VIPs before it stops balancing.
   */
  async setKillSwitch(engaged: boolean): Promise<KillSwitchStatus> {
    if (engaged === this.killSwitch.engaged) return this.killSwitch.status();
    const since = engaged ? new Date() : null;
    saveKillSwitch(this.options.stateDir, since?.toISOString() ?? null);
    if (since) {
      await this.announce?.setKillSwitch(true);
      this.killSwitch.engage(since);
    } else {
      this.killSwitch.release();
      await this.announce?.setKillSwitch(false);
    }
    return this.killSwitch.status();
  }

  killSwitchStatus(): KillSwitchStatus {
    return this.killSwitch.status();
  }

  async status(): Promise<StatusResult> {
    const views = this.core.views;
    const backends = views.flatMap((v) => v.backends);
    return {
      pid: process.pid,
      version: VERSION,
      interface: this.interfaceName,
      ifindex: this.attachment.ifindex,
      xdpMode: this.options.xdpMode,
      programId: programInfo(this.dataplane.programFd).id,
      dataplane: this.attachment.current,
      netns: this.netns,
      startedAt: this.startedAt.toISOString(),
      socket: this.options.socketPath,
      stateDir: this.options.stateDir,
      pinDir: this.pinDir,
      tunnelSources: await this.tunnelSources(),
      configPath: this.options.configPath ?? null,
      vips: views.length,
      backends: backends.length,
      unresolvedBackends: backends.filter((b) => b.state === 'unresolved').length,
      downBackends: views.flatMap((v) =>
        v.backends
          .filter((b) => b.state === 'down')
          .map((b) => ({
            vip: v.key,
            address: b.address,
            since: b.health?.since ?? this.startedAt.toISOString(),
            ...(b.health?.lastError ? { reason: b.health.lastError } : {}),
          })),
      ),
      vipsWithoutHealthyBackend: views.filter((v) => !v.backends.some((b) => b.state === 'active')).map((v) => v.key),
      flowTableSize: this.dataplane.limits.flowTableSize,
      metricsAddress: this.metricsServer ? formatListenAddress(this.metricsServer.address) : null,
      killSwitch: this.killSwitch.status(),
      announce: this.announce?.status() ?? null,
      startArgs: [...this.options.startArgs],
    };
  }

  /** The outer source per family: configured (an address or a range, ADDRESS/LEN), or the interface's primary address. */
  private async tunnelSources(): Promise<string[]> {
    const sources: string[] = [];
    for (const family of [4, 6] as const) {
      const configured = tunnelSourceOf(this.options.tunnelSources, family);
      const source = configured ? formatTunnelSource(configured) : await primaryAddress(this.interfaceName, family);
      if (source) sources.push(source);
    }
    return sources;
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
  if (settings.announce !== undefined && JSON.stringify(settings.announce) !== JSON.stringify(options.announce)) differs.push('announce');
  return differs.map((field) => `${field} changed in the config: it takes effect at the next lbctl restart`);
}

function downSettler(core: () => ControlLoop, live: HealthLookup): DownSettler {
  return new DownSettler({
    live,
    periodMs: (key) => {
      const spec = findVip(core().desired, key);
      if (!spec) return 0;
      return Math.max(...[spec.check, ...spec.backends.map((b) => effectiveCheck(spec, b))].map((c) => c.intervalMs + c.timeoutMs));
    },
    eligible: (key) =>
      core()
        .views.find((v) => v.key === key)
        ?.backends.filter((b) => b.state !== 'unresolved' && !b.drain)
        .map((b) => b.address) ?? [],
    forward: (transition) => core().healthChanged(transition),
  });
}

/** Takes every lock, or none. */
function takeLocks(dir: string, subjects: ReadonlyArray<Parameters<typeof acquireLock>[1]>): HeldLock[] {
  const held: HeldLock[] = [];
  try {
    for (const subject of subjects) held.push(acquireLock(dir, subject));
    return held;
  } catch (error) {
    releaseLocks(held);
    throw error;
  }
}

async function refuseIfRunning(socketPath: string): Promise<void> {
  try {
    const status = await call(socketPath, 'status', {}, 2000);
    throw new InputError(`an lbctl daemon (pid ${status.pid}, interface ${status.interface}) already listens on ${socketPath}`);
  } catch (error) {
    if (error instanceof InputError) throw error;
  }
}
