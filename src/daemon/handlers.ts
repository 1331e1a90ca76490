/**
 * The API's methods: parse and validate parameters (never trusting the
 * CLI to have done it), then ask the daemon for a change or read its state.
 */
import {
  type BackendSummary,
  type ChangeResult,
  type ExplainResult,
  type KillSwitchStatus,
  type StatsResult,
  type StatusResult,
  type VipSummary,
} from '../api/protocol.js';
import { IPPROTO } from '../dataplane/abi.js';
import { type BalancerDataplane } from '../dataplane/balancer.js';
import { type DataplaneClock } from '../dataplane/clock.js';
import { flowHash, tableSlot } from '../dataplane/flow-hash.js';
import { validateTableSize } from '../maglev/maglev.js';
import { type CheckSettings, checkOverrides, formatCheck, parseAllDownPolicy } from '../model/check.js';
import { formatDuration } from '../model/duration.js';
import { formatVip, parseForward, parseIpAddress, parseVip, parseWeight } from '../model/address.js';
import {
  addBackend,
  addVip,
  DEFAULT_WEIGHT,
  type DesiredState,
  type DrainSpec,
  findVip,
  removeBackend,
  removeVip,
  type RuntimeChanges,
  setBackend,
  vipSettings,
  effectiveCheck,
} from '../model/desired-state.js';
import { InputError } from '../model/errors.js';
import { type PathTarget } from '../net/forwarding-paths.js';
import type { BackendHealth } from '../health/checker.js';
import { type Handlers } from './api-server.js';
import { lookupFlow } from './flows.js';
import { type Reconciler } from './reconciler.js';
import { collectStats } from './stats.js';

export type Edit = (config: DesiredState, changes: RuntimeChanges) => RuntimeChanges;

export interface ChangeOptions {
  /** A backend being added: refuse it if its path can never work. */
  readonly check?: PathTarget;
  /** Work out and return what the change would do, without doing it. */
  readonly dryRun?: boolean;
  /** The VIP whose table a preview describes. */
  readonly vip?: string;
}

/** What the handlers need from the daemon. */
export interface DaemonControl {
  readonly dataplane: BalancerDataplane;
  readonly reconciler: Reconciler;
  readonly clock: DataplaneClock;
  desired(): DesiredState;
  readonly killSwitch: { status(): KillSwitchStatus };
  status(): Promise<StatusResult>;
  requestStop(options: { keepDataplane: boolean }): void;
  reload(): Promise<ChangeResult>;
  setKillSwitch(engaged: boolean): KillSwitchStatus;
  change(describe: string, edit: Edit, options?: ChangeOptions): Promise<ChangeResult>;
  /** Counts kept by the daemon itself (the data plane's are in its maps). */
  daemonStats(): StatsResult['daemon'];
  /** The live health-check state of a backend of a VIP, if it is checked. */
  health(vipKey: string, address: string): BackendHealth | undefined;
}

export const DEFAULT_DRAIN_TIMEOUT_SECONDS = 300;
export const DEFAULT_DRAIN_IDLE_SECONDS = 30;
const MAX_DRAIN_SECONDS = 7 * 24 * 3600;

export function createHandlers(daemon: DaemonControl): Handlers {
  const backendOf = (p: { vip: unknown; address: unknown }) => {
    const key = vipKey(p.vip);
    const { address } = parseIpAddress(requireString(p.address, 'address'), 'backend address');
    return { key, address };
  };

  return {
    status: () => daemon.status(),

    stop: async (p) => {
      daemon.requestStop({ keepDataplane: p.keepDataplane === true });
      return { stopping: true as const };
    },

    reload: () => daemon.reload(),
    'killswitch.engage': async () => daemon.setKillSwitch(true),
    'killswitch.release': async () => daemon.setKillSwitch(false),
    'killswitch.status': async () => daemon.killSwitch.status(),

    'vip.add': async (p) => {
      const vip = parseVip(requireString(p.vip, 'vip'));
      const settings = vipSettings(vip, {
        ...(p.forward !== undefined ? { forward: parseForward(String(p.forward)) } : {}),
        ...(p.tableSize !== undefined ? { tableSize: validateTableSize(Number(p.tableSize)) } : {}),
        ...(p.check !== undefined ? { check: checkOverrides(requireObject(p.check, 'check')) } : {}),
        ...(p.onAllDown !== undefined ? { onAllDown: parseAllDownPolicy(String(p.onAllDown)) } : {}),
      });
      return daemon.change(
        `vip add ${formatVip(vip)} (${settings.forward}, check ${formatCheck(settings.check.spec)})`,
        (config, changes) => addVip(config, changes, vip, settings),
      );
    },

    'vip.remove': async (p) => {
      const key = vipKey(p.vip);
      return daemon.change(`vip remove ${key}`, (config, changes) => removeVip(config, changes, key));
    },

    'vip.list': async (): Promise<VipSummary[]> =>
      daemon.reconciler.view.map((v) => {
        const counters = daemon.dataplane.vipCounters(v.vipId);
        const spec = findVip(daemon.desired(), v.key);
        return {
          vip: v.key,
          forward: v.forward,
          tableSize: v.tableSize,
          backends: v.backends.length,
          activeBackends: v.backends.filter((b) => b.state === 'active').length,
          check: spec ? describeCheck(spec.check) : '-',
          onAllDown: spec?.onAllDown ?? 'keep',
          allDown: v.allDown,
          packets: counters.packets.toString(),
          bytes: counters.bytes.toString(),
          newFlows: counters.new_flows.toString(),
          movedFlows: counters.moved_flows.toString(),
        };
      }),

    'backend.add': async (p) => {
      const key = vipKey(p.vip);
      const { family, address } = parseIpAddress(requireString(p.address, 'address'), 'backend address');
      const weight = p.weight === undefined ? DEFAULT_WEIGHT : parseWeight(p.weight);
      const forward = p.forward === undefined ? undefined : parseForward(String(p.forward));
      const check = p.check === undefined ? undefined : checkOverrides(requireObject(p.check, 'check'));
      const vip = findVip(daemon.desired(), key);
      return daemon.change(
        `backend add ${key} ${address} weight ${weight}${forward ? ` (${forward})` : ''}`,
        (config, changes) =>
          addBackend(config, changes, key, { address, family, weight, ...(forward ? { forward } : {}), ...(check ? { check } : {}) }),
        { ...(vip ? { check: { address, forward: forward ?? vip.forward } } : {}), dryRun: p.dryRun === true, vip: key },
      );
    },

    'backend.remove': async (p) => {
      const { key, address } = backendOf(p);
      return daemon.change(`backend remove ${key} ${address}`, (config, changes) => removeBackend(config, changes, key, address), {
        dryRun: p.dryRun === true,
        vip: key,
      });
    },

    'backend.weight': async (p) => {
      const { key, address } = backendOf(p);
      const weight = parseWeight(p.weight);
      return daemon.change(
        `backend weight ${key} ${address} ${weight}`,
        (config, changes) => setBackend(config, changes, key, address, { weight }),
        { dryRun: p.dryRun === true, vip: key },
      );
    },

    'backend.drain': async (p) => {
      const { key, address } = backendOf(p);
      const drain: DrainSpec = {
        since: new Date().toISOString(),
        timeoutSeconds: seconds(p.timeoutSeconds, 'drain timeout', DEFAULT_DRAIN_TIMEOUT_SECONDS),
        idleSeconds: seconds(p.idleSeconds, 'drain idle time', DEFAULT_DRAIN_IDLE_SECONDS),
      };
      const current = findVip(daemon.desired(), key)?.backends.find((b) => b.address === address);
      if (current?.drain) throw new InputError(`backend ${address} of VIP ${key} is already draining (since ${current.drain.since})`);
      return daemon.change(
        `backend drain ${key} ${address} (timeout ${drain.timeoutSeconds} s, flows idle for ${drain.idleSeconds} s count as ended)`,
        (config, changes) => setBackend(config, changes, key, address, { drain }),
        { dryRun: p.dryRun === true, vip: key },
      );
    },

    'backend.undrain': async (p) => {
      const { key, address } = backendOf(p);
      const current = findVip(daemon.desired(), key)?.backends.find((b) => b.address === address);
      if (current && !current.drain) throw new InputError(`backend ${address} of VIP ${key} is not draining`);
      return daemon.change(
        `backend undrain ${key} ${address}`,
        (config, changes) => setBackend(config, changes, key, address, { drain: null }),
        { vip: key },
      );
    },

    'backend.list': async (p): Promise<BackendSummary[]> => {
      const key = vipKey(p.vip);
      const vip = daemon.reconciler.view.find((v) => v.key === key);
      if (!vip) throw new InputError(`unknown VIP ${key}`);
      const spec = findVip(daemon.desired(), key);
      return vip.backends.map((b) => {
        const counters = daemon.dataplane.backendCounters(b.id);
        const backendSpec = spec?.backends.find((x) => x.address === b.address);
        const health = daemon.health(key, b.address);
        return {
          check: spec && backendSpec ? describeCheck(effectiveCheck(spec, backendSpec)) : '-',
          ...(health
            ? {
                health: {
                  state: health.state,
                  since: health.since,
                  ...(health.lastError ? { lastError: health.lastError } : {}),
                  ...(health.lastCheck ? { lastCheck: health.lastCheck } : {}),
                },
              }
            : {}),
          ...(b.keptWhileAllDown ? { keptWhileAllDown: true } : {}),
          address: b.address,
          weight: b.weight,
          forward: b.forward,
          state: b.state,
          ...(b.reason ? { reason: b.reason } : {}),
          slots: b.slots,
          share: b.slots / vip.tableSize,
          ...(b.path ? { nextHop: b.path.nextHop, nextHopMac: b.path.dstMac } : {}),
          ...(b.drain ? { drain: b.drain } : {}),
          packets: counters.packets.toString(),
          bytes: counters.bytes.toString(),
          newFlows: counters.new_flows.toString(),
        };
      });
    },

    explain: async (p) => explain(daemon, requireString(p.client, 'client'), vipKey(p.vip)),

    stats: async () => collectStats(daemon),
  };
}

/** Which backend a client's flow goes to, and why. */
function explain(daemon: DaemonControl, clientText: string, key: string): ExplainResult {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(clientText.trim());
  if (!match) throw new InputError(`invalid client "${clientText}": expected ADDRESS:PORT, e.g. 192.0.2.7:40000 or [2001:db8::7]:40000`);
  const { address: saddr, family } = parseIpAddress(match[1] ?? match[2]!, 'client address');
  const sport = Number(match[3]);
  if (sport < 1 || sport > 65535) throw new InputError(`invalid client "${clientText}": port must be from 1 to 65535`);
  const view = daemon.reconciler.view.find((v) => v.key === key);
  if (!view) throw new InputError(`unknown VIP ${key}`);
  if (family !== view.vip.family) throw new InputError(`client ${saddr} is IPv${family} but VIP ${key} is IPv${view.vip.family}`);

  const flow = { saddr, daddr: view.vip.address, sport, dport: view.vip.port, proto: IPPROTO[view.vip.protocol] };
  const hash = flowHash(flow);
  const slot = tableSlot(hash, view.tableSize);
  const ownerId = daemon.reconciler.tableOwner(key, slot);
  const owner = ownerId === undefined ? undefined : view.backends.find((b) => b.id === ownerId);
  const table = {
    hash: `0x${hash.toString(16).padStart(8, '0')}`,
    slot,
    tableSize: view.tableSize,
    owner: owner?.address ?? null,
    ownerShare: owner ? owner.slots / view.tableSize : 0,
  };

  const tracked = lookupFlow(daemon.dataplane, flow);
  const trackedBackend = tracked && view.backends.find((b) => b.id === tracked.backendId);
  const result = { vip: key, client: family === 6 ? `[${saddr}]:${sport}` : `${saddr}:${sport}`, table };
  if (tracked) {
    const usable =
      trackedBackend !== undefined &&
      trackedBackend.state !== 'unresolved' &&
      (trackedBackend.state !== 'down' || trackedBackend.keptWhileAllDown === true);
    const trackedView = {
      backend: trackedBackend?.address ?? daemon.reconciler.backendById(tracked.backendId)?.address ?? `#${tracked.backendId}`,
      state: trackedBackend?.state ?? ('removed' as const),
      lastSeenSecondsAgo: Math.max(0, Math.round(daemon.clock.secondsSince(tracked.lastSeen))),
      closing: tracked.closing,
    };
    if (usable) return { ...result, backend: trackedView.backend, decidedBy: 'tracked flow', tracked: trackedView };
    return { ...result, backend: table.owner, decidedBy: table.owner ? 'maglev table' : 'no usable backend', tracked: trackedView };
  }
  return { ...result, backend: table.owner, decidedBy: table.owner ? 'maglev table' : 'no usable backend' };
}

/** "http:/healthz every 2s, timeout 1s, rise 2, fall 3" */
export function describeCheck(check: CheckSettings): string {
  if (check.spec.kind === 'none') return 'none';
  const port = check.port ? ` port ${check.port}` : '';
  const status = check.expectStatus ? ` expecting ${check.expectStatus}` : '';
  const dsr = check.dsr ? ', also through the VIP path' : '';
  return `${formatCheck(check.spec)}${port}${status} every ${formatDuration(check.intervalMs)}, timeout ${formatDuration(check.timeoutMs)}, rise ${check.rise}, fall ${check.fall}${dsr}`;
}

function vipKey(value: unknown): string {
  return formatVip(parseVip(requireString(value, 'vip')));
}

function requireObject(value: unknown, field: string): Record<string, never> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InputError(`${field} must be an object`);
  return value as Record<string, never>;
}

function requireString(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new InputError(`${field} is required`);
  return value;
}

function seconds(value: unknown, what: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_DRAIN_SECONDS) {
    throw new InputError(`invalid ${what} ${JSON.stringify(value)}: must be more than 0 and at most ${MAX_DRAIN_SECONDS} seconds`);
  }
  return value;
}
