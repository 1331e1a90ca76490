/**
 * Which VIP addresses a fleet node announces, and why the others are not:
 * pure, from the control core's views, the live health checks and the
 * node's own conditions (tested without root: test/unit/announce-policy.test.ts).
 *
 * A VIP can be announced when the node can balance (not stopping, the
 * kill-switch not engaged, the interface up, the announce device held) and
 * at least `need` of its backends are healthy: in the Maglev table and
 * passing their checks (`unknown`, a check not yet answered, does not
 * count). A route is per address, and an address can carry several VIPs
 * (ports, protocols): it is announced only while every VIP on it can be
 * (as VC5 does), so that no client of any of them is sent to a node that
 * cannot serve it.
 *
 * Withdrawing is immediate. Announcing again waits for a hold-down: every
 * VIP of the address must have been able to serve, with the same healthy
 * backends, for holdDownMs. Backends that come back one by one restart it,
 * so a node rejoins with the same backends, hence the same Maglev table, as
 * its peers: flows that the router moves back to it keep their backend.
 */
import type { NotAnnouncedReason } from '../api/protocol.js';
import type { BackendView, HealthLookup, VipView } from '../core/views.js';

export type NotAnnounced = NotAnnouncedReason;

/** What keeps the whole node from announcing, if anything. */
export interface NodeConditions {
  readonly stopping: boolean;
  readonly killSwitchEngaged: boolean;
  readonly interface: string;
  readonly interfaceUp: boolean;
  /** Why there is no announce device (the watchdog closed it, re-creating it failed); undefined while held. */
  readonly deviceMissing?: string;
}

export interface VipReadiness {
  readonly key: string;
  readonly address: string;
  /** Healthy backends' addresses, sorted. */
  readonly healthy: readonly string[];
  readonly need: number;
}

/** Since when each VIP has been able to serve, and with which backends. Plans never modify one: they return the next. */
export type Readiness = ReadonlyMap<string, { readonly since: number; readonly members: string }>;

export interface VipDecision {
  readonly key: string;
  readonly address: string;
  readonly healthy: number;
  readonly need: number;
  /** Its address is to be announced. */
  readonly announce: boolean;
  /** Why not; null when announced. */
  readonly reason: NotAnnounced | null;
}

export interface AnnouncePlan {
  readonly vips: readonly VipDecision[];
  /** Every address with a VIP: whether it is to be announced. */
  readonly addresses: ReadonlyMap<string, boolean>;
  readonly readiness: Readiness;
  /** When a hold-down ends (same clock as `now`): plan again then. */
  readonly wakeAt?: number;
}

export interface AnnounceInputs {
  readonly vips: readonly VipReadiness[];
  readonly node: NodeConditions;
  readonly holdDownMs: number;
  /** Monotonic ms. */
  readonly now: number;
  /** Addresses announced now. */
  readonly announced: ReadonlySet<string>;
  readonly readiness: Readiness;
}

/** Backends that count towards `need`: taking new flows from the table and passing their check. */
export function healthyBackends(view: VipView, health: HealthLookup): string[] {
  return view.backends
    .filter((b: BackendView) => b.state === 'active' && health(view.key, b.address)?.state === 'up')
    .map((b) => b.address)
    .sort();
}

function nodeReason(node: NodeConditions): NotAnnounced | undefined {
  if (node.stopping) return { code: 'stopping', text: 'stopping' };
  if (node.killSwitchEngaged) return { code: 'kill_switch', text: 'kill-switch engaged' };
  if (!node.interfaceUp) return { code: 'interface_down', text: `interface ${node.interface} is down` };
  if (node.deviceMissing) return { code: 'no_device', text: node.deviceMissing };
  return undefined;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export function planAnnouncements({ vips, node, holdDownMs, now, announced, readiness }: AnnounceInputs): AnnouncePlan {
  const blocked = nodeReason(node);
  const nextReadiness = new Map<string, { since: number; members: string }>();
  const own = new Map<string, NotAnnounced | null>();
  const byAddress = new Map<string, VipReadiness[]>();
  for (const vip of vips) byAddress.set(vip.address, [...(byAddress.get(vip.address) ?? []), vip]);

  for (const vip of vips) {
    if (blocked) {
      own.set(vip.key, blocked);
      continue;
    }
    if (vip.healthy.length < vip.need) {
      own.set(vip.key, { code: 'backends', text: `${plural(vip.healthy.length, 'healthy backend')}, need ${vip.need}` });
      continue;
    }
    const members = vip.healthy.join(' ');
    const before = readiness.get(vip.key);
    // While announced the hold-down is over: a backend joining or leaving changes nothing.
    const since = before && (before.members === members || announced.has(vip.address)) ? before.since : now;
    nextReadiness.set(vip.key, { since, members });
    own.set(vip.key, null);
  }

  const addresses = new Map<string, boolean>();
  const reasons = new Map<string, NotAnnounced | null>();
  let wakeAt: number | undefined;
  for (const [address, group] of byAddress) {
    const holding = group.find((v) => own.get(v.key) !== null);
    if (holding) {
      addresses.set(address, false);
      for (const v of group) {
        const mine = own.get(v.key)!;
        reasons.set(v.key, mine ?? { code: 'address', text: `its address is withdrawn: ${holding.key} ${own.get(holding.key)!.text}` });
      }
      continue;
    }
    if (announced.has(address)) {
      addresses.set(address, true);
      for (const v of group) reasons.set(v.key, null);
      continue;
    }
    const readyAt = Math.max(...group.map((v) => nextReadiness.get(v.key)!.since)) + holdDownMs;
    if (readyAt <= now) {
      addresses.set(address, true);
      for (const v of group) reasons.set(v.key, null);
      continue;
    }
    addresses.set(address, false);
    wakeAt = Math.min(wakeAt ?? readyAt, readyAt);
    const text = `hold-down: ${Math.ceil((readyAt - now) / 1000)} s left`;
    for (const v of group) reasons.set(v.key, { code: 'hold_down', text });
  }

  return {
    vips: vips.map((v) => ({
      key: v.key,
      address: v.address,
      healthy: v.healthy.length,
      need: v.need,
      announce: addresses.get(v.address)!,
      reason: reasons.get(v.key)!,
    })),
    addresses,
    readiness: nextReadiness,
    ...(wakeAt !== undefined ? { wakeAt } : {}),
  };
}
