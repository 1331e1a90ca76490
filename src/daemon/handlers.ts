/**
 * The API's methods: parse and validate parameters (never trusting the
 * CLI to have done it) into a change for the control core, or read the
 * core's views and the data plane's counters.
 */
import type {
  AnnounceView,
  BackendSummary,
  ChangeResult,
  ConfigDiff,
  KillSwitchStatus,
  StatsResult,
  StatusResult,
  VipSummary,
} from '../api/protocol.js';
import { type ChangeOptions, type ControlLoop, DEFAULT_DRAIN_IDLE_SECONDS } from '../core/control-loop.js';
import { explainFlow, parseClientEndpoint } from '../core/explain.js';
import type { FlowClock } from '../core/flows.js';
import type { HealthLookup } from '../core/views.js';
import type { BalancerDataplane } from '../dataplane/balancer.js';
import { validateTableSize } from '../maglev/maglev.js';
import { type CheckSettings, checkOverrides, effectiveCheck, formatCheck, parseAllDownPolicy } from '../model/check.js';
import { formatDuration } from '../model/duration.js';
import { formatVip, parseForward, parseIpAddress, parseVip, parseVipHash, parseWeight } from '../model/address.js';
import { type Change, DEFAULT_WEIGHT, type DrainSpec, findVip, vipSettings } from '../model/desired-state.js';
import { InputError, quote } from '../model/errors.js';
import type { Handlers } from './api-server.js';

/** What the handlers need of the daemon. */
export interface DaemonApi {
  readonly core: Pick<ControlLoop, 'change' | 'desired' | 'views' | 'tableOwner' | 'backendById'>;
  readonly dataplane: Pick<BalancerDataplane, 'vipCounters' | 'backendCounters' | 'lookupFlow'>;
  readonly clock: FlowClock;
  readonly health: HealthLookup;
  status(): Promise<StatusResult>;
  stats(): StatsResult;
  requestStop(options: { keepDataplane: boolean }): void;
  reload(options: { discardRuntimeChanges?: boolean }): Promise<ChangeResult>;
  configDiff(): Promise<ConfigDiff>;
  configExport(): { text: string };
  setKillSwitch(engaged: boolean): Promise<KillSwitchStatus>;
  killSwitchStatus(): KillSwitchStatus;
  /** A VIP's announcement to the fleet's router (announcing off: not announced, reason off). */
  announceView(vipKey: string): AnnounceView;
  /** Why nothing reaches the packets right now (the program is not attached), if so. */
  attachmentProblem(): string | undefined;
}

export const DEFAULT_DRAIN_TIMEOUT_SECONDS = 300;
const MAX_DRAIN_SECONDS = 7 * 24 * 3600;

export function createHandlers(daemon: DaemonApi): Handlers {
  const { core } = daemon;
  /** A change is made (or refused) whatever is attached; if no packet will see it, the answer says so. */
  const change = async (what: Change, options: ChangeOptions): Promise<ChangeResult> => {
    const result = await core.change(what, options);
    const problem = daemon.attachmentProblem();
    return problem ? { ...result, warnings: [...result.warnings, problem] } : result;
  };
  const backendOf = (p: { vip: unknown; address: unknown }) => {
    const vip = vipKey(p.vip);
    const { address } = parseIpAddress(requireString(p.address, 'address'), 'backend address');
    return { vip, address };
  };
  const dryRun = (p: { dryRun?: unknown }, signal: AbortSignal) => ({ dryRun: optionalFlag(p.dryRun, 'dryRun'), signal });

  return {
    status: () => daemon.status(),

    stop: async (p) => {
      daemon.requestStop({ keepDataplane: optionalFlag(p.keepDataplane, 'keepDataplane') });
      return { stopping: true as const };
    },

    reload: async (p) => daemon.reload({ discardRuntimeChanges: optionalFlag(p.discardRuntimeChanges, 'discardRuntimeChanges') }),
    'config.diff': () => daemon.configDiff(),
    'config.export': async () => daemon.configExport(),
    'killswitch.engage': () => daemon.setKillSwitch(true),
    'killswitch.release': () => daemon.setKillSwitch(false),
    'killswitch.status': async () => daemon.killSwitchStatus(),

    'vip.add': async (p, signal) => {
      const vip = parseVip(requireString(p.vip, 'vip'));
      const settings = vipSettings(vip, {
        ...(p.forward !== undefined ? { forward: parseForward(requireString(p.forward, 'forward')) } : {}),
        ...(p.tableSize !== undefined ? { tableSize: validateTableSize(requireNumber(p.tableSize, 'tableSize')) } : {}),
        ...(p.check !== undefined ? { check: checkOverrides(requireObject(p.check, 'check')) } : {}),
        ...(p.onAllDown !== undefined ? { onAllDown: parseAllDownPolicy(requireString(p.onAllDown, 'onAllDown')) } : {}),
        ...(p.need !== undefined ? { need: requireNumber(p.need, 'need') } : {}),
        ...(p.hash !== undefined ? { hash: parseVipHash(requireString(p.hash, 'hash')) } : {}),
      });
      return change({ op: 'vip.add', vip, settings }, { signal });
    },

    'vip.remove': async (p, signal) => change({ op: 'vip.remove', vip: vipKey(p.vip) }, { signal }),

    'vip.list': async (): Promise<VipSummary[]> =>
      core.views.map((v) => {
        const counters = daemon.dataplane.vipCounters(v.vipId);
        const spec = findVip(core.desired, v.key);
        return {
          vip: v.key,
          forward: v.forward,
          tableSize: v.tableSize,
          backends: v.backends.length,
          activeBackends: v.backends.filter((b) => b.state === 'active').length,
          check: spec ? describeCheck(spec.check) : '-',
          onAllDown: spec?.onAllDown ?? 'keep',
          allDown: v.allDown,
          ...(spec?.need !== undefined ? { need: spec.need } : {}),
          hash: v.hash,
          announce: daemon.announceView(v.key),
          packets: Number(counters.packets),
          bytes: Number(counters.bytes),
          newFlows: Number(counters.new_flows),
          movedFlows: Number(counters.moved_flows),
        };
      }),

    'backend.add': async (p, signal) => {
      const vip = vipKey(p.vip);
      const { family, address } = parseIpAddress(requireString(p.address, 'address'), 'backend address');
      const weight = p.weight === undefined ? DEFAULT_WEIGHT : parseWeight(p.weight);
      const forward = p.forward === undefined ? undefined : parseForward(requireString(p.forward, 'forward'));
      const check = p.check === undefined ? undefined : checkOverrides(requireObject(p.check, 'check'));
      const backend = { address, family, weight, ...(forward ? { forward } : {}), ...(check ? { check } : {}) };
      return change({ op: 'backend.add', vip, backend }, dryRun(p, signal));
    },

    'backend.remove': async (p, signal) => change({ op: 'backend.remove', ...backendOf(p) }, dryRun(p, signal)),

    'backend.weight': async (p, signal) =>
      change({ op: 'backend.set', ...backendOf(p), patch: { weight: parseWeight(p.weight) } }, dryRun(p, signal)),

    'backend.drain': async (p, signal) => {
      const drain: DrainSpec = {
        since: new Date().toISOString(),
        timeoutSeconds: seconds(p.timeoutSeconds, 'drain timeout', DEFAULT_DRAIN_TIMEOUT_SECONDS),
        idleSeconds: seconds(p.idleSeconds, 'drain idle time', DEFAULT_DRAIN_IDLE_SECONDS),
      };
      return change({ op: 'backend.set', ...backendOf(p), patch: { drain } }, dryRun(p, signal));
    },

    'backend.undrain': async (p, signal) => change({ op: 'backend.set', ...backendOf(p), patch: { drain: null } }, { signal }),

    'backend.list': async (p): Promise<BackendSummary[]> => {
      const key = vipKey(p.vip);
      const vip = core.views.find((v) => v.key === key);
      if (!vip) throw new InputError(`unknown VIP ${key}`);
      const spec = findVip(core.desired, key);
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
          packets: Number(counters.packets),
          bytes: Number(counters.bytes),
          newFlows: Number(counters.new_flows),
        };
      });
    },

    explain: async (p) =>
      explainFlow(
        {
          views: core.views,
          tableOwner: (key, slot) => core.tableOwner(key, slot),
          backendById: (id) => core.backendById(id),
          lookupFlow: (flow) => daemon.dataplane.lookupFlow(flow),
          secondsSince: (jiffies) => daemon.clock.secondsSince(jiffies),
        },
        parseClientEndpoint(requireString(p.client, 'client')),
        vipKey(p.vip),
        p.port !== undefined ? requireNumber(p.port, 'port') : undefined,
      ),

    stats: async () => daemon.stats(),
  };
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
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new InputError(`${field} must be an object, not ${typeName(value)}`);
  return value as Record<string, never>;
}

function requireString(value: unknown, field: string): string {
  if (value === undefined || value === '') throw new InputError(`${field} is required`);
  if (typeof value !== 'string') throw new InputError(`${field} must be a string, not ${typeName(value)}`);
  return value;
}

function requireNumber(value: unknown, field: string): number {
  if (typeof value !== 'number') throw new InputError(`${field} must be a number, not ${typeName(value)}`);
  return value;
}

function optionalFlag(value: unknown, field: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new InputError(`${field} must be true or false, not ${typeName(value)}`);
  return value;
}

function typeName(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

function seconds(value: unknown, what: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_DRAIN_SECONDS) {
    throw new InputError(`invalid ${what} ${quote(JSON.stringify(value))}: must be more than 0 and at most ${MAX_DRAIN_SECONDS} seconds`);
  }
  return value;
}
