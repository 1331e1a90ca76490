/**
 * Where the data plane must send a backend's packets: egress interface,
 * MAC addresses and tunnel source, learnt from the kernel's routes and
 * neighbours so that nothing is hard-coded and changes are followed.
 *
 * Resolving a next hop the kernel does not know yet is the kernel's work:
 * it is asked (a probe) and answered in the background. A refresh reads
 * what the kernel knows and returns; a hop that answers later shows up as
 * a neighbour event (ip monitor), and one that does not is probed again
 * with a growing interval (onRetryDue says when). Entries an operator made
 * static (PERMANENT, NOARP) or another control plane owns (extern_learn)
 * are read, never probed: probing rewrites an entry.
 */
import { type Family, type ForwardMethod, type TunnelSource, isMacAddress, tunnelSourceOf } from '../model/address.js';
import { primaryOf } from './iproute.js';
import { type LinkAnswer, type NeighbourAnswer, links, neighbours, probeNeighbours, routesTo } from './iproute-batch.js';

export interface ForwardingPath {
  readonly dev: string;
  readonly ifindex: number;
  readonly srcMac: string;
  readonly nextHop: string;
  readonly dstMac: string;
  /** Outer source address (ipip only), of the backend's family: the first address of a range. */
  readonly tunnelSrc?: string;
  /** ipip from a range of outer sources: its host bits (each flow gets one address of the range). */
  readonly tunnelSourceBits?: number;
  /** Largest IP packet the path carries: the route's MTU, else the device's. */
  readonly mtu: number;
}

/**
 * A failure is permanent when the request itself cannot work (l2dsr to a
 * backend behind a router) rather than the network not being ready yet.
 */
export type PathResult =
  { readonly ok: true; readonly path: ForwardingPath } | { readonly ok: false; readonly reason: string; readonly permanent: boolean };

export interface PathTarget {
  readonly address: string;
  readonly forward: ForwardMethod;
}

export interface RefreshOptions {
  /** Wait up to this long for next hops asked about for the first time (a start, a backend being added). */
  readonly waitMs?: number;
  /** The targets are every one in use: results of others not refreshed for a while are forgotten. */
  readonly complete?: boolean;
}

const USABLE_STATES = ['REACHABLE', 'STALE', 'DELAY', 'PROBE', 'PERMANENT', 'NOARP'];
/** States only an operator or another program sets: the kernel never probes them, and neither does lbctl. */
const STATIC_STATES = ['PERMANENT', 'NOARP'];
const RESOLVE_POLL_MS = 100;
/** A next hop that does not answer is asked again after this long, doubling up to MAX_PROBE_INTERVAL_MS. */
const FIRST_PROBE_INTERVAL_MS = 1000;
const MAX_PROBE_INTERVAL_MS = 10_000;
/** Results of targets no longer in use are kept this long (a change may be about to use them). */
const FORGET_AFTER_MS = 60_000;

function targetKey(target: PathTarget): string {
  return `${target.forward} ${target.address}`;
}

function hopKey(hop: { dev: string; address: string }): string {
  return `${hop.dev} ${hop.address}`;
}

/** Made by an operator or another control plane: read it, never probe it. */
export function isStaticNeighbour(entry: NeighbourAnswer): boolean {
  return (entry.state ?? []).some((s) => STATIC_STATES.includes(s)) || 'extern_learn' in entry;
}

export class ForwardingPaths {
  private readonly results = new Map<string, { result: PathResult; at: number }>();
  /** Next hops probed and not answering yet: when, and how long until the next probe. */
  private readonly probing = new Map<string, { at: number; intervalMs: number }>();
  private sources: Partial<Record<Family, string>> = {};
  private ownMac: string | null | undefined;
  private retryTimer?: NodeJS.Timeout;
  /** A hop that did not answer is due to be probed again: refresh then. */
  onRetryDue?: () => void;

  private readonly tunnelSources: Partial<Record<Family, TunnelSource>>;

  /**
   * tunnelSources: configured outer sources for ipip (parseTunnelSources),
   * an address or a range, at most one per family; by default the
   * interface's primary address of the backend's family.
   */
  constructor(
    private readonly interfaceName: string,
    tunnelSources: readonly string[] = [],
  ) {
    this.tunnelSources = { 4: tunnelSourceOf(tunnelSources, 4), 6: tunnelSourceOf(tunnelSources, 6) };
  }

  get(target: PathTarget): PathResult {
    return this.results.get(targetKey(target))?.result ?? { ok: false, reason: 'not resolved yet', permanent: false };
  }

  /**
   * The balancer's own address of a family as of the last refresh: the
   * source of DSR-path checks to VIPs of that family, where the backend
   * answers. The configured tunnel source of that family when it is one
   * address, else the interface's primary address (a range of outer
   * sources need not be assigned to this host).
   */
  localAddress(family: Family): string | undefined {
    return this.sources[family];
  }

  /**
   * The MAC of the balancer's interface as of the last refresh: frames to
   * another unicast MAC are not the balancer's to balance. null: it has
   * none (the check is off); undefined: not refreshed yet.
   */
  interfaceMac(): string | null | undefined {
    return this.ownMac;
  }

  /**
   * Resolves the targets again from what the kernel knows, probing next
   * hops it does not know (waiting for them only with waitMs). A next hop
   * that stops answering keeps its last known MAC (the kernel may just
   * have aged the entry out); one that never answered is reported
   * unresolved. Returns whether any of these paths (or the tunnel sources)
   * changed.
   */
  async refresh(targets: readonly PathTarget[], options: RefreshOptions = {}): Promise<boolean> {
    const unique = [...new Map(targets.map((t) => [targetKey(t), t])).values()];
    const [routes, linkList] = await Promise.all([routesTo([...new Set(unique.map((t) => t.address))]), links()]);
    const linkByName = new Map(linkList.map((l) => [l.ifname, l]));
    const ownLink = linkByName.get(this.interfaceName);
    const own = ownLink?.addresses ?? [];
    const ownMac = ownLink ? usableMac(ownLink.address) : this.ownMac;
    const local = (family: Family) => {
      const configured = this.tunnelSources[family];
      return configured?.hostBits === 0 ? configured.address : primaryOf(own, family);
    };
    const source4 = local(4);
    const source6 = local(6);
    const tunnelFor = (address: string): Pick<ForwardingPath, 'tunnelSrc' | 'tunnelSourceBits'> | undefined => {
      const family = address.includes(':') ? 6 : 4;
      const range = this.tunnelSources[family];
      if (range && range.hostBits > 0) return { tunnelSrc: range.address, tunnelSourceBits: range.hostBits };
      const source = family === 6 ? source6 : source4;
      return source ? { tunnelSrc: source } : undefined;
    };

    const next = new Map<string, PathResult>();
    const pending: Array<{ target: PathTarget; dev: string; nextHop: string; link: LinkAnswer; mtu: number }> = [];
    for (const target of unique) {
      const route = routes.get(target.address);
      const fail = (reason: string, permanent = true) => next.set(targetKey(target), { ok: false, reason, permanent });
      if (!route || (route.type !== undefined && route.type !== 'unicast')) {
        if (route?.type === 'local') fail(`${target.address} is an address of this host`);
        else fail(`no route to ${target.address}`, false);
        continue;
      }
      if (target.forward === 'l2dsr' && route.gateway) {
        fail(`${target.address} is behind router ${route.gateway}: l2dsr needs the backend on the balancer's own segment (use ipip)`);
        continue;
      }
      if (target.forward === 'ipip' && !tunnelFor(target.address)) {
        fail(`${this.interfaceName} has no IPv${target.address.includes(':') ? 6 : 4} address to use as the tunnel source`);
        continue;
      }
      const link = linkByName.get(route.dev);
      if (!link?.address) {
        fail(`route to ${target.address} leaves through ${route.dev}, which has no MAC address`);
        continue;
      }
      pending.push({ target, dev: route.dev, nextHop: route.gateway ?? target.address, link, mtu: route.mtu ?? link.mtu });
    }

    const hops = new Map(pending.map((p) => [hopKey({ dev: p.dev, address: p.nextHop }), { address: p.nextHop, dev: p.dev }]));
    if (options.complete) for (const key of this.probing.keys()) if (!hops.has(key)) this.probing.delete(key);
    const macs = await this.resolveMacs([...hops.values()], options.waitMs ?? 0);
    for (const { target, dev, nextHop, link, mtu } of pending) {
      const key = targetKey(target);
      const mac = macs.get(hopKey({ dev, address: nextHop }));
      const previous = this.results.get(key)?.result;
      if (mac) {
        const tunnel = target.forward === 'ipip' ? tunnelFor(target.address)! : {};
        next.set(key, { ok: true, path: { dev, ifindex: link.ifindex, srcMac: link.address!, nextHop, dstMac: mac, mtu, ...tunnel } });
      } else if (previous?.ok && previous.path.nextHop === nextHop && previous.path.dev === dev) {
        next.set(key, previous);
      } else {
        next.set(key, {
          ok: false,
          reason: `next hop ${nextHop} on ${dev} does not answer ${nextHop.includes(':') ? 'neighbour discovery' : 'ARP'}`,
          permanent: false,
        });
      }
    }

    const sources = { ...(source4 ? { 4: source4 } : {}), ...(source6 ? { 6: source6 } : {}) };
    // A changed address changes the DSR-path checks' sources even when no path changes.
    let changed = JSON.stringify(sources) !== JSON.stringify(this.sources) || ownMac !== this.ownMac;
    const now = Date.now();
    for (const [key, result] of next) {
      if (JSON.stringify(result) !== JSON.stringify(this.results.get(key)?.result)) changed = true;
      this.results.set(key, { result, at: now });
    }
    if (options.complete) {
      for (const [key, { at }] of this.results) if (!next.has(key) && now - at > FORGET_AFTER_MS) this.results.delete(key);
    }
    this.sources = sources;
    this.ownMac = ownMac;
    return changed;
  }

  /**
   * MACs of the next hops the kernel knows. The others are probed when
   * due, and waited for (up to waitMs) only when probed for the first time.
   */
  private async resolveMacs(hops: ReadonlyArray<{ address: string; dev: string }>, waitMs: number): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    const statics = new Set<string>();
    const read = (entries: readonly NeighbourAnswer[]) => {
      for (const e of entries) {
        const key = hopKey({ dev: e.dev, address: e.dst });
        if (isStaticNeighbour(e)) statics.add(key);
        if (e.lladdr && (e.state ?? []).some((s) => USABLE_STATES.includes(s))) found.set(key, e.lladdr);
      }
    };
    read(await neighbours());
    const now = Date.now();
    const missing = hops.filter((h) => !found.has(hopKey(h)) && !statics.has(hopKey(h)));
    for (const h of hops) if (found.has(hopKey(h))) this.probing.delete(hopKey(h));
    const due = missing.filter((h) => {
      const state = this.probing.get(hopKey(h));
      return !state || now - state.at >= state.intervalMs;
    });
    const firstTime = due.filter((h) => !this.probing.has(hopKey(h)));
    for (const h of due) {
      const state = this.probing.get(hopKey(h));
      const intervalMs = state ? Math.min(state.intervalMs * 2, MAX_PROBE_INTERVAL_MS) : FIRST_PROBE_INTERVAL_MS;
      this.probing.set(hopKey(h), { at: now, intervalMs });
    }
    if (due.length > 0) await probeNeighbours(due);
    let awaited = waitMs > 0 ? firstTime : [];
    const deadline = Date.now() + waitMs;
    while (awaited.length > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, RESOLVE_POLL_MS));
      read(await neighbours());
      awaited = awaited.filter((h) => !found.has(hopKey(h)));
    }
    for (const h of hops) if (found.has(hopKey(h))) this.probing.delete(hopKey(h));
    this.scheduleRetry();
    return found;
  }

  /** One timer for the next hop due to be probed again. */
  private scheduleRetry(): void {
    clearTimeout(this.retryTimer);
    if (this.probing.size === 0) return;
    const now = Date.now();
    const next = Math.min(...[...this.probing.values()].map((s) => s.at + s.intervalMs));
    this.retryTimer = setTimeout(() => this.onRetryDue?.(), Math.max(0, next - now) + 10);
    this.retryTimer.unref();
  }

  /** Stops probing again (the daemon is stopping). */
  stop(): void {
    clearTimeout(this.retryTimer);
    this.probing.clear();
  }

  /**
   * Keeps the kernel's entries for our next hops fresh (they see no kernel
   * traffic). Entries an operator made static are left alone.
   */
  async probeAll(): Promise<void> {
    const hops = new Map<string, { address: string; dev: string }>();
    for (const { result } of this.results.values()) {
      if (!result.ok) continue;
      const hop = { address: result.path.nextHop, dev: result.path.dev };
      hops.set(hopKey(hop), hop);
    }
    if (hops.size === 0) return;
    for (const entry of await neighbours()) if (isStaticNeighbour(entry)) hops.delete(hopKey({ dev: entry.dev, address: entry.dst }));
    await probeNeighbours([...hops.values()]);
  }
}

/** A link's MAC, or null for a link without one (loopback, tunnels: all zeros or none). */
function usableMac(address: string | undefined): string | null {
  return address && isMacAddress(address) && address !== '00:00:00:00:00:00' ? address.toLowerCase() : null;
}
