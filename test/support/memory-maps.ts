/**
 * The balancer's maps in memory, for testing the control core without a
 * kernel: it keeps what is written and logs each write in order.
 */
import type { TrackedFlow } from '../../src/core/flows.js';
import type { TableWrite } from '../../src/core/planner.js';
import type { BalancerMaps } from '../../src/core/reconciler.js';
import type { Flow } from '../../src/dataplane/flow-hash.js';
import { type Family, type VipAddress, formatVip } from '../../src/model/address.js';
import type { ForwardingPath, PathResult, PathTarget } from '../../src/net/forwarding-paths.js';

export class MemoryMaps implements BalancerMaps {
  readonly vips = new Map<string, { vip: VipAddress; entry: Buffer }>();
  readonly backends = new Map<number, Buffer>();
  readonly tables = new Map<number, Uint32Array | null>();
  readonly addresses = new Set<string>();
  readonly flows = new Map<string, TrackedFlow>();
  /** Every write, in order: "backend 1", "tables 0,8", "vip 10.0.0.1:80/tcp", ... */
  readonly log: string[] = [];
  mac: string | null = null;

  constructor(readonly limits: { maxVips: number; maxBackends: number; flowTableSize: number }) {}

  putBackend(id: number, entry: Buffer): void {
    this.backends.set(id, Buffer.from(entry));
    this.log.push(`backend ${id}`);
  }

  clearBackend(id: number): void {
    this.backends.delete(id);
    this.log.push(`clear backend ${id}`);
  }

  putTables(writes: readonly TableWrite[]): void {
    for (const { tableId, table } of writes) this.tables.set(tableId, table && Uint32Array.from(table));
    this.log.push(`tables ${writes.map((w) => `${w.tableId}${w.table ? '' : ':empty'}`).join(',')}`);
  }

  putVip(vip: VipAddress, entry: Buffer): void {
    this.vips.set(formatVip(vip), { vip, entry: Buffer.from(entry) });
    this.log.push(`vip ${formatVip(vip)}`);
  }

  deleteVip(vip: VipAddress): void {
    this.vips.delete(formatVip(vip));
    this.log.push(`delete vip ${formatVip(vip)}`);
  }

  putVipAddress(_family: Family, address: string): void {
    this.addresses.add(address);
    this.log.push(`address ${address}`);
  }

  deleteVipAddress(_family: Family, address: string): void {
    this.addresses.delete(address);
    this.log.push(`delete address ${address}`);
  }

  resetVipCounters(vipId: number): void {
    this.log.push(`reset vip counters ${vipId}`);
  }

  resetBackendCounters(backendId: number): void {
    this.log.push(`reset backend counters ${backendId}`);
  }

  *vipEntries(): Generator<[VipAddress, Buffer]> {
    for (const { vip, entry } of this.vips.values()) yield [vip, entry];
  }

  *backendEntries(): Generator<[number, Buffer]> {
    yield* this.backends;
  }

  vipAddresses(): string[] {
    return [...this.addresses];
  }

  trackedFlows(): Iterable<TrackedFlow> {
    return [...this.flows.values()];
  }

  deleteFlow(key: Flow): boolean {
    return this.flows.delete(flowId(key));
  }

  setInterfaceMac(mac: string | null): void {
    this.mac = mac;
    this.log.push(`mac ${mac}`);
  }

  interfaceMac(): string | null {
    return this.mac;
  }

  addFlow(flow: TrackedFlow): void {
    this.flows.set(flowId(flow.key), flow);
  }

  /** The writes since the last call. */
  takeLog(): string[] {
    return this.log.splice(0);
  }
}

function flowId(key: Flow): string {
  return `${key.saddr} ${key.sport} ${key.daddr} ${key.dport} ${key.proto}`;
}

export const LB_MAC = '02:00:00:00:00:02';
export const BACKEND_MAC = '02:00:00:00:00:11';
export const TUNNEL_SOURCE = '10.10.0.2';

/**
 * Forwarding paths as a test wants them: every address resolves (l2dsr on
 * ifindex 1, ipip from TUNNEL_SOURCE) except those given a failure.
 */
export class TestPaths {
  readonly failures = new Map<string, { reason: string; permanent: boolean }>();
  /** Addresses whose resolution never ends (a next hop the kernel is still asking for): a refresh naming one never returns. */
  readonly hanging = new Set<string>();
  refreshes = 0;
  /** The balancer interface's MAC, as a refresh found it. */
  mac: string | null | undefined = LB_MAC;
  /** ipip paths from this range of outer sources instead of TUNNEL_SOURCE. */
  tunnelRange?: { readonly address: string; readonly bits: number };

  get(target: PathTarget): PathResult {
    const failure = this.failures.get(target.address);
    if (failure) return { ok: false, ...failure };
    return {
      ok: true,
      path: {
        dev: 'eth0',
        ifindex: 1,
        srcMac: LB_MAC,
        nextHop: target.address,
        dstMac: BACKEND_MAC,
        mtu: 1500,
        ...(target.forward === 'ipip' ? this.tunnel() : {}),
      },
    };
  }

  private tunnel(): Pick<ForwardingPath, 'tunnelSrc' | 'tunnelSourceBits'> {
    return this.tunnelRange
      ? { tunnelSrc: this.tunnelRange.address, tunnelSourceBits: this.tunnelRange.bits }
      : { tunnelSrc: TUNNEL_SOURCE };
  }

  async refresh(targets: readonly PathTarget[] = []): Promise<boolean> {
    this.refreshes++;
    if (targets.some((t) => this.hanging.has(t.address))) await new Promise(() => undefined);
    return false;
  }

  interfaceMac(): string | null | undefined {
    return this.mac;
  }

  localAddress(family: Family): string | undefined {
    return family === 4 ? TUNNEL_SOURCE : undefined;
  }
}
