/**
 * The lbctl daemon: owns the data plane of one interface, keeps the desired
 * state (config + runtime changes), follows the network, and serves the CLI.
 */
import { spawn, ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { call } from '../api/client.js';
import { BackendSummary, ChangeResult, StatusResult, VipSummary } from '../api/protocol.js';
import { BalancerDataplane, BalancerLimits } from '../dataplane/balancer.js';
import { closeFd, native } from '../dataplane/libbpf.js';
import { attachedProgram, attachXdp, detachXdp, programInfo, XdpMode } from '../dataplane/xdp.js';
import { DEFAULT_TABLE_SIZE, validateTableSize } from '../maglev/maglev.js';
import { ForwardMethod, formatVip, parseForward, parseIpAddress, parseVip, parseWeight } from '../model/address.js';
import {
  addBackend, addVip, applyChanges, DEFAULT_FORWARD, DEFAULT_WEIGHT, DesiredState, effectiveForward, findVip,
  removeBackend, removeVip, RuntimeChanges,
} from '../model/desired-state.js';
import { InputError } from '../model/errors.js';
import { ForwardingPaths, PathTarget } from '../net/forwarding-paths.js';
import { getLink, Link, primaryAddress } from '../net/iproute.js';
import { ApiServer } from './api-server.js';
import { defaultPinDir, ensureBpffs, removePinDir } from './bpffs.js';
import { Reconciler } from './reconciler.js';
import { loadRuntimeChanges, saveRuntimeChanges } from './state-store.js';
import { SerialQueue } from './serial-queue.js';
import { VERSION } from '../version.js';

export interface DaemonOptions {
  readonly interface: string;
  readonly xdpMode: XdpMode;
  readonly socketPath: string;
  readonly stateDir: string;
  readonly bpffsRoot: string;
  readonly pinDir?: string;
  /** Outer source of ipip packets; default the interface's primary IPv4 address. */
  readonly tunnelSource?: string;
  readonly limits: BalancerLimits;
  readonly configPath?: string;
  /** The config file's VIPs and backends (empty without a config file). */
  readonly config: DesiredState;
}

const NETWORK_REFRESH_MS = 30_000;
const NETWORK_EVENT_DEBOUNCE_MS = 250;
const FLOW_SWEEP_DELAY_MS = 2_000;
const FLOW_SWEEP_INTERVAL_MS = 60_000;

export class Daemon {
  private changes: RuntimeChanges;
  private readonly queue = new SerialQueue();
  private readonly timers: NodeJS.Timeout[] = [];
  private monitor?: ChildProcess;
  private sweepTimer?: NodeJS.Timeout;
  private networkTimer?: NodeJS.Timeout;
  private api?: ApiServer;
  private stopped?: Promise<void>;
  private resolveStopped!: () => void;
  /** Resolves once the daemon has stopped, however it was asked to. */
  readonly whenStopped = new Promise<void>((resolve) => { this.resolveStopped = resolve; });
  private readonly startedAt = new Date();

  private constructor(
    private readonly options: DaemonOptions,
    private readonly log: Logger,
    private readonly link: Link,
    private readonly dataplane: BalancerDataplane,
    private readonly reconciler: Reconciler,
    private readonly paths: ForwardingPaths,
    private readonly pinDir: string,
    changes: RuntimeChanges,
  ) {
    this.changes = changes;
  }

  static async start(options: DaemonOptions, log: Logger): Promise<Daemon> {
    if (process.getuid?.() !== 0) throw new InputError('lbctl start must run as root (it loads BPF programs and attaches them to interfaces)');
    if (!existsSync('/sys/kernel/btf/vmlinux')) throw new InputError('this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): lbctl needs a kernel built with CONFIG_DEBUG_INFO_BTF');
    await refuseIfRunning(options.socketPath);
    const link = await getLink(options.interface);
    const changes = loadRuntimeChanges(options.stateDir);
    const desired = applyChanges(options.config, changes);
    validateDesired(desired);

    ensureBpffs(options.bpffsRoot);
    const pinDir = options.pinDir ?? defaultPinDir(options.bpffsRoot, link.name);
    const present = attachedProgram(link.ifindex);
    if (present && present.name !== 'xdp_balancer') {
      throw new InputError(`interface ${link.name} already runs XDP program ${present.name} (id ${present.id}); lbctl will not replace another tool's program`);
    }

    const dataplane = BalancerDataplane.load(options.limits);
    const reconciler = new Reconciler(dataplane, log);
    const paths = new ForwardingPaths(link.name, options.tunnelSource);
    const daemon = new Daemon(options, log, link, dataplane, reconciler, paths, pinDir, changes);
    try {
      await paths.refresh(targetsOf(desired));
      reconciler.apply(desired, (t) => paths.get(t));
      daemon.logUnresolved();
      dataplane.pin(pinDir);
      daemon.attach(present);
      daemon.api = await ApiServer.listen(options.socketPath, daemon.handlers(), log);
      daemon.followNetwork();
      daemon.timers.push(setInterval(() => daemon.sweepFlows(), FLOW_SWEEP_INTERVAL_MS));
    } catch (error) {
      await daemon.teardown();
      throw error;
    }
    log.info({ interface: link.name, ifindex: link.ifindex, xdpMode: options.xdpMode, pinDir, socket: options.socketPath, vips: desired.vips.length }, 'lbctl daemon started');
    return daemon;
  }

  /** Stops once; later calls wait for the same stop. */
  stop(): Promise<void> {
    this.stopped ??= this.queue.run(() => this.teardown()).then(() => {
      this.log.info('lbctl daemon stopped');
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
    this.log.warn({ programId: present.id, mode: present.mode }, 'replacing the xdp_balancer a previous run left attached');
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

  private async teardown(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    clearTimeout(this.sweepTimer);
    clearTimeout(this.networkTimer);
    this.monitor?.kill();
    await this.api?.close();
    try {
      detachXdp(this.link.ifindex, this.dataplane.programFd, this.options.xdpMode);
    } catch (error) {
      this.log.error({ err: error }, 'detaching XDP failed');
    }
    removePinDir(this.pinDir, this.options.bpffsRoot);
    this.dataplane.close();
  }

  private desired(): DesiredState {
    return applyChanges(this.options.config, this.changes);
  }

  /**
   * Applies a runtime change: validate, resolve paths, write the maps, save.
   * If saving fails the maps are put back, so a change is either done and
   * durable or not done at all.
   */
  private mutate(describe: string, change: (config: DesiredState, changes: RuntimeChanges) => RuntimeChanges, checkTarget?: PathTarget): Promise<ChangeResult> {
    return this.queue.run(async () => {
      const next = change(this.options.config, this.changes);
      const desired = applyChanges(this.options.config, next);
      validateDesired(desired);
      await this.paths.refresh(targetsOf(desired));
      const warnings: string[] = [];
      if (checkTarget) {
        const result = this.paths.get(checkTarget);
        if (!result.ok) {
          if (result.permanent) throw new InputError(`cannot add backend ${checkTarget.address}: ${result.reason}`);
          warnings.push(`backend ${checkTarget.address} is not usable yet: ${result.reason}`);
        }
      }
      const previous = this.desired();
      this.reconciler.apply(desired, (t) => this.paths.get(t));
      try {
        saveRuntimeChanges(this.options.stateDir, next);
      } catch (error) {
        this.reconciler.apply(previous, (t) => this.paths.get(t));
        throw new Error(`could not save the change to ${this.options.stateDir} (${(error as Error).message}); nothing was changed`);
      }
      this.changes = next;
      this.scheduleSweep();
      this.log.info({ change: describe, warnings }, 'runtime change applied');
      return { message: describe, warnings };
    });
  }

  private handlers() {
    return {
      status: async (): Promise<StatusResult> => {
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
          tunnelSource: this.options.tunnelSource ?? (await primaryAddress(this.link.name, 4)) ?? null,
          configPath: this.options.configPath ?? null,
          vips: view.length,
          backends: backends.length,
          unresolvedBackends: backends.filter((b) => b.state !== 'active').length,
          flowTableSize: this.dataplane.limits.flowTableSize,
        };
      },
      stop: async () => {
        // Answer first, then stop (the answer would not get out otherwise).
        setImmediate(() => void this.stop());
        return { stopping: true as const };
      },
      'vip.add': async (p: { vip: string; forward?: ForwardMethod; tableSize?: number }) => {
        const vip = parseVip(requireString(p.vip, 'vip'));
        const forward = p.forward === undefined ? DEFAULT_FORWARD : parseForward(String(p.forward));
        const tableSize = p.tableSize === undefined ? DEFAULT_TABLE_SIZE : validateTableSize(Number(p.tableSize));
        return this.mutate(`vip add ${formatVip(vip)} (${forward})`, (config, changes) => addVip(config, changes, vip, forward, tableSize));
      },
      'vip.remove': async (p: { vip: string }) => {
        const key = formatVip(parseVip(requireString(p.vip, 'vip')));
        return this.mutate(`vip remove ${key}`, (config, changes) => removeVip(config, changes, key));
      },
      'vip.list': async (): Promise<VipSummary[]> => this.reconciler.view.map((v) => {
        const counters = this.dataplane.vipCounters(v.vipId);
        return {
          vip: v.key, forward: v.forward, tableSize: v.tableSize, backends: v.backends.length,
          activeBackends: v.backends.filter((b) => b.state === 'active').length,
          packets: counters.packets.toString(), bytes: counters.bytes.toString(),
        };
      }),
      'backend.add': async (p: { vip: string; address: string; weight?: number; forward?: ForwardMethod }) => {
        const key = formatVip(parseVip(requireString(p.vip, 'vip')));
        const { family, address } = parseIpAddress(requireString(p.address, 'address'), 'backend address');
        const weight = p.weight === undefined ? DEFAULT_WEIGHT : parseWeight(p.weight);
        const forward = p.forward === undefined ? undefined : parseForward(String(p.forward));
        const vip = findVip(this.desired(), key);
        const target = vip && { address, forward: forward ?? vip.forward };
        return this.mutate(
          `backend add ${key} ${address} weight ${weight}${forward ? ` (${forward})` : ''}`,
          (config, changes) => addBackend(config, changes, key, { address, family, weight, ...(forward ? { forward } : {}) }),
          target,
        );
      },
      'backend.remove': async (p: { vip: string; address: string }) => {
        const key = formatVip(parseVip(requireString(p.vip, 'vip')));
        const { address } = parseIpAddress(requireString(p.address, 'address'), 'backend address');
        return this.mutate(`backend remove ${key} ${address}`, (config, changes) => removeBackend(config, changes, key, address));
      },
      'backend.list': async (p: { vip: string }): Promise<BackendSummary[]> => {
        const key = formatVip(parseVip(requireString(p.vip, 'vip')));
        const vip = this.reconciler.view.find((v) => v.key === key);
        if (!vip) throw new InputError(`unknown VIP ${key}`);
        return vip.backends.map((b) => {
          const counters = this.dataplane.backendCounters(b.id);
          return {
            address: b.address, weight: b.weight, forward: b.forward, state: b.state,
            ...(b.reason ? { reason: b.reason } : {}),
            slots: b.slots, share: b.slots / vip.tableSize,
            ...(b.path ? { nextHop: b.path.nextHop, nextHopMac: b.path.dstMac } : {}),
            packets: counters.packets.toString(), bytes: counters.bytes.toString(),
          };
        });
      },
    };
  }

  /** Routes, neighbours and addresses change: follow them. */
  private followNetwork(): void {
    const monitor = spawn('ip', ['monitor', 'neigh', 'route', 'address', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    monitor.stdout!.on('data', () => this.scheduleNetworkRefresh());
    monitor.on('exit', (code, signal) => {
      if (this.stopped) return;
      this.log.warn({ code, signal }, 'ip monitor exited; relying on periodic refresh');
    });
    this.monitor = monitor;
    this.timers.push(setInterval(() => {
      void this.paths.probeAll().catch((error) => this.log.warn({ err: error }, 'neighbour probe failed'));
      this.scheduleNetworkRefresh();
    }, NETWORK_REFRESH_MS));
  }

  private scheduleNetworkRefresh(): void {
    if (this.networkTimer || this.stopped) return;
    this.networkTimer = setTimeout(() => {
      this.networkTimer = undefined;
      void this.queue.run(async () => {
        if (this.stopped) return;
        const desired = this.desired();
        if (await this.paths.refresh(targetsOf(desired))) {
          this.reconciler.apply(desired, (t) => this.paths.get(t));
          this.log.info('forwarding paths changed; data plane updated');
          this.logUnresolved();
        }
      }).catch((error) => this.log.error({ err: error }, 'network refresh failed'));
    }, NETWORK_EVENT_DEBOUNCE_MS);
  }

  private scheduleSweep(): void {
    clearTimeout(this.sweepTimer);
    this.sweepTimer = setTimeout(() => this.sweepFlows(), FLOW_SWEEP_DELAY_MS);
  }

  private sweepFlows(): void {
    void this.queue.run(async () => {
      if (this.stopped) return;
      const removed = this.reconciler.sweepFlows();
      if (removed > 0) this.log.info({ flows: removed }, 'forgot tracked flows of removed backends');
    }).catch((error) => this.log.error({ err: error }, 'flow sweep failed'));
  }

  private logUnresolved(): void {
    for (const vip of this.reconciler.view) {
      for (const b of vip.backends) {
        if (b.state !== 'active') this.log.warn({ vip: vip.key, backend: b.address, reason: b.reason }, 'backend has no usable path');
      }
    }
  }
}

function targetsOf(desired: DesiredState): PathTarget[] {
  return desired.vips.flatMap((vip) => vip.backends.map((b) => ({ address: b.address, forward: effectiveForward(vip, b) })));
}

function validateDesired(desired: DesiredState): void {
  for (const vip of desired.vips) {
    if (vip.vip.family === 6) throw new InputError(`VIP ${formatVip(vip.vip)}: IPv6 VIPs are not supported yet`);
  }
}

function requireString(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new InputError(`${field} is required`);
  return value;
}

async function refuseIfRunning(socketPath: string): Promise<void> {
  try {
    const status = await call(socketPath, 'status', {}, 2000);
    throw new InputError(`an lbctl daemon (pid ${status.pid}, interface ${status.interface}) already listens on ${socketPath}`);
  } catch (error) {
    if (error instanceof InputError) throw error;
  }
}
