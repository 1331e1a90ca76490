/**
 * Where the data plane must send a backend's packets: egress interface,
 * MAC addresses and tunnel source, learnt from the kernel's routes and
 * neighbours so that nothing is hard-coded and changes are followed.
 */
import { type Family, type ForwardMethod } from '../model/address.js';
import { primaryAddress } from './iproute.js';
import { type LinkAnswer, type NeighbourAnswer, links, neighbours, probeNeighbours, routesTo } from './iproute-batch.js';

export interface ForwardingPath {
  readonly dev: string;
  readonly ifindex: number;
  readonly srcMac: string;
  readonly nextHop: string;
  readonly dstMac: string;
  /** Outer source address (ipip only), of the backend's family. */
  readonly tunnelSrc?: string;
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

const USABLE_STATES = ['REACHABLE', 'STALE', 'DELAY', 'PROBE', 'PERMANENT', 'NOARP'];
const RESOLVE_TIMEOUT_MS = 1500;
const RESOLVE_POLL_MS = 50;
/**
 * A next hop that did not answer is asked again only after this long:
 * probes change the neighbour table, which triggers a refresh, which would
 * probe again.
 */
const PROBE_BACKOFF_MS = 10_000;

function targetKey(target: PathTarget): string {
  return `${target.forward} ${target.address}`;
}

export class ForwardingPaths {
  private results = new Map<string, PathResult>();
  private readonly lastProbe = new Map<string, number>();
  private sources: Partial<Record<Family, string>> = {};

  /**
   * tunnelSources: fixed outer sources for ipip, at most one per family;
   * by default the interface's primary address of the backend's family.
   */
  constructor(
    private readonly interfaceName: string,
    private readonly tunnelSources: readonly string[] = [],
  ) {}

  get(target: PathTarget): PathResult {
    return this.results.get(targetKey(target)) ?? { ok: false, reason: 'not resolved yet', permanent: false };
  }

  /**
   * The balancer's own address of a family as of the last refresh (the
   * tunnel source of that family: configured, else the interface's primary
   * address): the source of DSR-path checks to VIPs of that family.
   */
  localAddress(family: Family): string | undefined {
    return this.sources[family];
  }

  /**
   * Resolves every target again. A next hop that stops answering keeps its
   * last known MAC (the kernel may just have aged the entry out); one that
   * never answered is reported unresolved. Returns whether anything changed.
   */
  async refresh(targets: readonly PathTarget[]): Promise<boolean> {
    const unique = [...new Map(targets.map((t) => [targetKey(t), t])).values()];
    const configured = (family: 4 | 6) => this.tunnelSources.find((a) => a.includes(':') === (family === 6));
    const [routes, linkList, source4, source6] = await Promise.all([
      routesTo([...new Set(unique.map((t) => t.address))]),
      links(),
      configured(4) ?? primaryAddress(this.interfaceName, 4),
      configured(6) ?? primaryAddress(this.interfaceName, 6),
    ]);
    const tunnelSourceFor = (address: string) => (address.includes(':') ? source6 : source4);
    const linkByName = new Map(linkList.map((l) => [l.ifname, l]));

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
      if (target.forward === 'ipip' && !tunnelSourceFor(target.address)) {
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

    const hops = new Map(pending.map((p) => [`${p.dev} ${p.nextHop}`, { address: p.nextHop, dev: p.dev }]));
    const macs = await this.resolveMacs([...hops.values()]);
    for (const { target, dev, nextHop, link, mtu } of pending) {
      const key = targetKey(target);
      const mac = macs.get(`${dev} ${nextHop}`);
      const previous = this.results.get(key);
      if (mac) {
        const tunnel = target.forward === 'ipip' ? { tunnelSrc: tunnelSourceFor(target.address)! } : {};
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
    const changed =
      JSON.stringify(sources) !== JSON.stringify(this.sources) ||
      next.size !== this.results.size ||
      [...next].some(([key, result]) => JSON.stringify(result) !== JSON.stringify(this.results.get(key)));
    this.results = next;
    this.sources = sources;
    return changed;
  }

  /** MACs of the next hops, probing the ones the kernel does not know yet. */
  private async resolveMacs(hops: ReadonlyArray<{ address: string; dev: string }>): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    const read = (entries: readonly NeighbourAnswer[]) => {
      for (const e of entries) {
        if (e.lladdr && (e.state ?? []).some((s) => USABLE_STATES.includes(s))) found.set(`${e.dev} ${e.dst}`, e.lladdr);
      }
    };
    read(await neighbours());
    const now = Date.now();
    let missing = hops.filter(
      (h) => !found.has(`${h.dev} ${h.address}`) && now - (this.lastProbe.get(`${h.dev} ${h.address}`) ?? 0) >= PROBE_BACKOFF_MS,
    );
    if (missing.length === 0) return found;
    for (const h of missing) this.lastProbe.set(`${h.dev} ${h.address}`, now);
    await probeNeighbours(missing);
    const deadline = Date.now() + RESOLVE_TIMEOUT_MS;
    while (missing.length > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, RESOLVE_POLL_MS));
      read(await neighbours());
      missing = missing.filter((h) => !found.has(`${h.dev} ${h.address}`));
    }
    return found;
  }

  /** Keeps the kernel's entries for our next hops fresh (they see no kernel traffic). */
  async probeAll(): Promise<void> {
    const hops = new Map<string, { address: string; dev: string }>();
    for (const result of this.results.values()) {
      if (result.ok) hops.set(`${result.path.dev} ${result.path.nextHop}`, { address: result.path.nextHop, dev: result.path.dev });
    }
    await probeNeighbours([...hops.values()]);
  }
}
