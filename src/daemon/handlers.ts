/**
 * The API's methods: parse and validate parameters (never trusting the
 * CLI to have done it), then ask the daemon for a change or read its state.
 */
import { BackendSummary, ChangeResult, ExplainResult, KillSwitchStatus, StatusResult, VipSummary } from '../api/protocol.js';
import { flowKeyV4, IPPROTO } from '../dataplane/abi.js';
import { BalancerDataplane } from '../dataplane/balancer.js';
import { DataplaneClock } from '../dataplane/clock.js';
import { flowHashV4, tableSlot } from '../dataplane/flow-hash.js';
import { DEFAULT_TABLE_SIZE, validateTableSize } from '../maglev/maglev.js';
import { formatVip, parseForward, parseIpAddress, parseVip, parseWeight } from '../model/address.js';
import {
  addBackend, addVip, DEFAULT_FORWARD, DEFAULT_WEIGHT, DesiredState, DrainSpec, findVip, removeBackend, removeVip,
  RuntimeChanges, setBackend,
} from '../model/desired-state.js';
import { InputError } from '../model/errors.js';
import { PathTarget } from '../net/forwarding-paths.js';
import { Handlers } from './api-server.js';
import { lookupFlow } from './flows.js';
import { Reconciler } from './reconciler.js';

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
      const forward = p.forward === undefined ? DEFAULT_FORWARD : parseForward(String(p.forward));
      const tableSize = p.tableSize === undefined ? DEFAULT_TABLE_SIZE : validateTableSize(Number(p.tableSize));
      return daemon.change(`vip add ${formatVip(vip)} (${forward})`, (config, changes) => addVip(config, changes, vip, forward, tableSize));
    },

    'vip.remove': async (p) => {
      const key = vipKey(p.vip);
      return daemon.change(`vip remove ${key}`, (config, changes) => removeVip(config, changes, key));
    },

    'vip.list': async (): Promise<VipSummary[]> => daemon.reconciler.view.map((v) => {
      const counters = daemon.dataplane.vipCounters(v.vipId);
      return {
        vip: v.key, forward: v.forward, tableSize: v.tableSize, backends: v.backends.length,
        activeBackends: v.backends.filter((b) => b.state === 'active').length,
        packets: counters.packets.toString(), bytes: counters.bytes.toString(),
        newFlows: counters.new_flows.toString(), movedFlows: counters.moved_flows.toString(),
      };
    }),

    'backend.add': async (p) => {
      const key = vipKey(p.vip);
      const { family, address } = parseIpAddress(requireString(p.address, 'address'), 'backend address');
      const weight = p.weight === undefined ? DEFAULT_WEIGHT : parseWeight(p.weight);
      const forward = p.forward === undefined ? undefined : parseForward(String(p.forward));
      const vip = findVip(daemon.desired(), key);
      return daemon.change(
        `backend add ${key} ${address} weight ${weight}${forward ? ` (${forward})` : ''}`,
        (config, changes) => addBackend(config, changes, key, { address, family, weight, ...(forward ? { forward } : {}) }),
        { ...(vip ? { check: { address, forward: forward ?? vip.forward } } : {}), dryRun: p.dryRun === true, vip: key },
      );
    },

    'backend.remove': async (p) => {
      const { key, address } = backendOf(p);
      return daemon.change(`backend remove ${key} ${address}`, (config, changes) => removeBackend(config, changes, key, address), { dryRun: p.dryRun === true, vip: key });
    },

    'backend.weight': async (p) => {
      const { key, address } = backendOf(p);
      const weight = parseWeight(p.weight);
      return daemon.change(`backend weight ${key} ${address} ${weight}`, (config, changes) => setBackend(config, changes, key, address, { weight }), { dryRun: p.dryRun === true, vip: key });
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
      return daemon.change(`backend undrain ${key} ${address}`, (config, changes) => setBackend(config, changes, key, address, { drain: null }), { vip: key });
    },

    'backend.list': async (p): Promise<BackendSummary[]> => {
      const key = vipKey(p.vip);
      const vip = daemon.reconciler.view.find((v) => v.key === key);
      if (!vip) throw new InputError(`unknown VIP ${key}`);
      return vip.backends.map((b) => {
        const counters = daemon.dataplane.backendCounters(b.id);
        return {
          address: b.address, weight: b.weight, forward: b.forward, state: b.state,
          ...(b.reason ? { reason: b.reason } : {}),
          slots: b.slots, share: b.slots / vip.tableSize,
          ...(b.path ? { nextHop: b.path.nextHop, nextHopMac: b.path.dstMac } : {}),
          ...(b.drain ? { drain: b.drain } : {}),
          packets: counters.packets.toString(), bytes: counters.bytes.toString(), newFlows: counters.new_flows.toString(),
        };
      });
    },

    explain: async (p) => explain(daemon, requireString(p.client, 'client'), vipKey(p.vip)),
  };
}

/** Which backend a client's flow goes to, and why. */
function explain(daemon: DaemonControl, clientText: string, key: string): ExplainResult {
  const match = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(clientText.trim());
  if (!match) throw new InputError(`invalid client "${clientText}": expected ADDRESS:PORT, e.g. 192.0.2.7:40000`);
  const { address: saddr } = parseIpAddress(match[1]!, 'client address');
  const sport = Number(match[2]);
  if (sport < 1 || sport > 65535) throw new InputError(`invalid client "${clientText}": port must be from 1 to 65535`);
  const view = daemon.reconciler.view.find((v) => v.key === key);
  if (!view) throw new InputError(`unknown VIP ${key}`);

  const flow = { saddr, daddr: view.vip.address, sport, dport: view.vip.port, proto: IPPROTO[view.vip.protocol] };
  const hash = flowHashV4(flow);
  const slot = tableSlot(hash, view.tableSize);
  const ownerId = daemon.reconciler.tableOwner(key, slot);
  const owner = ownerId === undefined ? undefined : view.backends.find((b) => b.id === ownerId);
  const table = {
    hash: `0x${hash.toString(16).padStart(8, '0')}`, slot, tableSize: view.tableSize,
    owner: owner?.address ?? null, ownerShare: owner ? owner.slots / view.tableSize : 0,
  };

  const tracked = lookupFlow(daemon.dataplane, flowKeyV4.decode(flowKeyV4.encode(flow)));
  const trackedBackend = tracked && view.backends.find((b) => b.id === tracked.backendId);
  const result = { vip: key, client: `${saddr}:${sport}`, table };
  if (tracked) {
    const usable = trackedBackend !== undefined && trackedBackend.state !== 'unresolved';
    const trackedView = {
      backend: trackedBackend?.address ?? daemon.reconciler.backendById(tracked.backendId)?.address ?? `#${tracked.backendId}`,
      state: trackedBackend?.state ?? 'removed' as const,
      lastSeenSecondsAgo: Math.max(0, Math.round(daemon.clock.secondsSince(tracked.lastSeen))),
      closing: tracked.closing,
    };
    if (usable) return { ...result, backend: trackedView.backend, decidedBy: 'tracked flow', tracked: trackedView };
    return { ...result, backend: table.owner, decidedBy: table.owner ? 'maglev table' : 'no usable backend', tracked: trackedView };
  }
  return { ...result, backend: table.owner, decidedBy: table.owner ? 'maglev table' : 'no usable backend' };
}

function vipKey(value: unknown): string {
  return formatVip(parseVip(requireString(value, 'vip')));
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

