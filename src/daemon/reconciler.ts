/**
 * The only writer of the balancer's maps. Given the desired state and the
 * forwarding paths, it works out what the maps must hold, compares that with
 * what it wrote before, and writes the difference in an order that never
 * lets a packet see a reference to something not yet written: backends,
 * then tables, then VIP entries; removals in the reverse order.
 */
import type { Logger } from 'pino';
import { backendInfo, BACKEND_FLAG_ACTIVE, FORWARD, IPPROTO, flowState, readU32, tunnelChecksumBase, vipInfo, vipKeyV4 } from '../dataplane/abi.js';
import { BalancerDataplane } from '../dataplane/balancer.js';
import { buildMaglevTable, countEntries } from '../maglev/maglev.js';
import { ForwardMethod, VipAddress, formatVip } from '../model/address.js';
import { BackendSpec, DesiredState, DrainSpec, effectiveForward } from '../model/desired-state.js';
import { InputError } from '../model/errors.js';
import { ForwardingPath, PathResult, PathTarget } from '../net/forwarding-paths.js';
import { IdPool } from './id-pool.js';

export interface BackendView {
  readonly address: string;
  readonly weight: number;
  readonly forward: ForwardMethod;
  readonly id: number;
  /**
   * active: in the Maglev table; draining: out of the table, its tracked
   * flows still forwarded; unresolved: no usable path, reason says why.
   */
  readonly state: BackendState;
  readonly drain?: DrainSpec;
  readonly reason?: string;
  readonly slots: number;
  readonly path?: ForwardingPath;
}

export type BackendState = 'active' | 'draining' | 'unresolved';

export interface VipView {
  readonly key: string;
  readonly vip: VipAddress;
  readonly forward: ForwardMethod;
  readonly tableSize: number;
  readonly vipId: number;
  readonly backends: readonly BackendView[];
}

interface AppliedVip {
  readonly vip: VipAddress;
  readonly vipId: number;
  readonly tableId: number;
  readonly tableSize: number;
  readonly table: Uint32Array | undefined;
  /** False for a table taken over from an earlier daemon: rewritten on the next apply. */
  readonly tableKnown: boolean;
  readonly info: string;
}

interface AppliedBackend {
  readonly id: number;
  /** Encoded entry as written, '' while cleared (no usable path). */
  readonly info: string;
}

export interface PlannedTable {
  readonly tableSize: number;
  readonly owners: readonly string[];
  /** Index into owners per slot; undefined when no backend is usable. */
  readonly table: Uint32Array | undefined;
}

interface Adopted {
  readonly vips: Map<string, AppliedVip>;
  readonly backends: Map<string, AppliedBackend>;
}

export interface ApplyResult {
  readonly writes: number;
}

export class Reconciler {
  private readonly vipIds: IdPool;
  private readonly backendIds: IdPool;
  private vips = new Map<string, AppliedVip>();
  private backends = new Map<string, AppliedBackend>();
  /** Ids of removed backends, free again once no tracked flow names them. */
  private quarantined: number[] = [];
  private views: VipView[] = [];

  constructor(private readonly dataplane: BalancerDataplane, private readonly log: Logger, adopted?: Adopted) {
    this.vipIds = new IdPool(0, dataplane.limits.maxVips, [...(adopted?.vips.values() ?? [])].map((v) => v.vipId));
    // Backend id 0 is never allocated: an all-zero table entry names no one.
    this.backendIds = new IdPool(1, dataplane.limits.maxBackends, [...(adopted?.backends.values() ?? [])].map((b) => b.id));
    if (adopted) {
      this.vips = adopted.vips;
      this.backends = adopted.backends;
    }
  }

  /**
   * Takes over maps an earlier daemon wrote (a restart, an upgrade, a
   * crash): VIP entries, backend entries and tracked flows stay as they
   * are, so established flows keep their backends; tables are rewritten,
   * identically, on the first apply. Tracked flows that name a backend
   * entry no longer in use are forgotten first, so their ids can be reused.
   */
  static adopt(dataplane: BalancerDataplane, log: Logger): Reconciler {
    const vips = new Map<string, AppliedVip>();
    const keyById = new Map<number, string>();
    for (const [rawKey, rawInfo] of dataplane.vips.entries()) {
      const key = vipKeyV4.decode(rawKey);
      const info = vipInfo.decode(rawInfo);
      const protocol = key.proto === IPPROTO.tcp ? 'tcp' : 'udp';
      const vip: VipAddress = { family: 4, address: key.addr, port: key.port, protocol };
      vips.set(formatVip(vip), { vip, vipId: info.vip_id, tableId: info.table_id, tableSize: info.table_size, table: undefined, tableKnown: false, info: Buffer.from(rawInfo).toString('hex') });
      keyById.set(info.vip_id, formatVip(vip));
    }
    const backends = new Map<string, AppliedBackend>();
    for (const [rawId, rawInfo] of dataplane.backends.entries()) {
      const info = backendInfo.decode(rawInfo);
      const key = keyById.get(info.vip_id);
      if (!(info.flags & BACKEND_FLAG_ACTIVE) || key === undefined) continue;
      backends.set(`${key} ${info.address}`, { id: readU32(rawId), info: Buffer.from(rawInfo).toString('hex') });
    }
    const inUse = new Set([...backends.values()].map((b) => b.id));
    let forgotten = 0;
    for (const [rawKey, rawState] of [...dataplane.flows.entries()].map(([k, v]) => [Buffer.from(k), Buffer.from(v)] as const)) {
      if (!inUse.has(flowState.decode(rawState).backend_id) && dataplane.flows.delete(rawKey)) forgotten++;
    }
    log.info({ vips: vips.size, backends: backends.size, forgottenFlows: forgotten }, 'took over the data plane of a previous run');
    return new Reconciler(dataplane, log, { vips, backends });
  }

  get view(): readonly VipView[] {
    return this.views;
  }

  /** The backend id in a slot of a VIP's current table. */
  tableOwner(key: string, slot: number): number | undefined {
    return this.vips.get(key)?.table?.[slot];
  }

  /** Which VIP and address a backend id currently stands for. */
  backendById(id: number): { vip: string; address: string } | undefined {
    for (const view of this.views) {
      const backend = view.backends.find((b) => b.id === id);
      if (backend) return { vip: view.key, address: backend.address };
    }
    return undefined;
  }

  /**
   * The Maglev tables a state would produce, slot by slot as backend
   * addresses (owners[table[slot]]); writes nothing. For previews.
   */
  plan(desired: DesiredState, paths: (target: PathTarget) => PathResult): Map<string, PlannedTable> {
    const plans = new Map<string, PlannedTable>();
    for (const spec of desired.vips) {
      const usable = spec.backends.filter((b) => takesNewFlows(b, paths({ address: b.address, forward: effectiveForward(spec, b) })));
      plans.set(formatVip(spec.vip), {
        tableSize: spec.tableSize,
        owners: usable.map((b) => b.address),
        table: usable.length > 0 ? buildMaglevTable(usable.map((b, i) => ({ name: b.address, weight: b.weight, id: i })), spec.tableSize) : undefined,
      });
    }
    return plans;
  }

  /**
   * Throws InputError, before writing anything, when ids would run out.
   * Writes happen in phases so that no packet meets a reference to
   * something not yet written (or already gone): backends, then every
   * changed table at once, then VIP entries; then what is no longer used.
   */
  apply(desired: DesiredState, paths: (target: PathTarget) => PathResult): ApplyResult {
    this.checkCapacity(desired);
    let writes = 0;
    const wantedVips = new Set<string>();
    const wantedBackends = new Set<string>();
    const views: VipView[] = [];
    const tableWrites: Array<{ tableId: number; table: Uint32Array | null }> = [];
    const vipWrites: Array<{ vip: VipAddress; info: string }> = [];
    const unusedTables: number[] = [];
    const backendsToClear: number[] = [];

    for (const spec of desired.vips) {
      const key = formatVip(spec.vip);
      wantedVips.add(key);
      const applied = this.vips.get(key);
      const vipId = applied?.vipId ?? this.allocateVip();

      const members: Array<{ address: string; weight: number; id: number }> = [];
      const backendViews: Array<Omit<BackendView, 'slots'>> = [];
      for (const backend of spec.backends) {
        const backendKey = `${key} ${backend.address}`;
        wantedBackends.add(backendKey);
        const previous = this.backends.get(backendKey);
        const id = previous?.id ?? this.allocateBackend();
        const forward = effectiveForward(spec, backend);
        const result = paths({ address: backend.address, forward });
        const info = result.ok ? encodeBackend(vipId, backend.address, forward, result.path) : '';
        if (info !== (previous?.info ?? '')) {
          // A backend that lost its path is cleared only once the table no
          // longer names it (last phase), or new flows to its slots would drop.
          if (!info) {
            backendsToClear.push(id);
          } else {
            this.dataplane.putBackend(id, backendInfo.decode(Buffer.from(info, 'hex')));
            writes++;
          }
        }
        this.backends.set(backendKey, { id, info });
        if (takesNewFlows(backend, result)) members.push({ address: backend.address, weight: backend.weight, id });
        backendViews.push({
          address: backend.address, weight: backend.weight, forward, id,
          state: !result.ok ? 'unresolved' : backend.drain ? 'draining' : 'active',
          ...(backend.drain ? { drain: backend.drain } : {}),
          ...(result.ok ? { path: result.path } : { reason: result.reason }),
        });
      }

      const table = members.length > 0
        ? buildMaglevTable(members.map((m) => ({ name: m.address, weight: m.weight, id: m.id })), spec.tableSize)
        : undefined;
      // A new size goes to the VIP's other table slot, switched to by the
      // VIP entry, so no packet indexes a table of the wrong size.
      const maxVips = this.dataplane.limits.maxVips;
      const tableId = !applied ? vipId : applied.tableSize === spec.tableSize ? applied.tableId : (applied.tableId === vipId ? vipId + maxVips : vipId);
      if (!applied?.tableKnown || tableId !== applied.tableId || !sameTable(table, applied.table)) tableWrites.push({ tableId, table: table ?? null });
      if (applied && applied.tableId !== tableId) unusedTables.push(applied.tableId);

      const info = vipInfo.encode({ vip_id: vipId, table_id: tableId, table_size: spec.tableSize, flags: 0 }).toString('hex');
      if (info !== applied?.info) vipWrites.push({ vip: spec.vip, info });
      this.vips.set(key, { vip: spec.vip, vipId, tableId, tableSize: spec.tableSize, table, tableKnown: true, info });

      const slots = table ? countEntries(table) : new Map<number, number>();
      views.push({
        key, vip: spec.vip, forward: spec.forward, tableSize: spec.tableSize, vipId,
        backends: backendViews.map((b) => ({ ...b, slots: slots.get(b.id) ?? 0 })),
      });
    }

    if (tableWrites.length > 0) this.dataplane.putTables(tableWrites);
    for (const { vip, info } of vipWrites) this.dataplane.putVip(vipKey(vip), vipInfo.decode(Buffer.from(info, 'hex')));
    writes += tableWrites.length + vipWrites.length;

    for (const [key, applied] of this.vips) {
      if (wantedVips.has(key)) continue;
      this.dataplane.deleteVip(vipKey(applied.vip));
      unusedTables.push(applied.tableId);
      this.vipIds.release(applied.vipId);
      this.vips.delete(key);
      writes++;
    }
    if (unusedTables.length > 0) {
      this.dataplane.putTables(unusedTables.map((tableId) => ({ tableId, table: null })));
      writes += unusedTables.length;
    }
    for (const [key, applied] of this.backends) {
      if (wantedBackends.has(key)) continue;
      if (applied.info) backendsToClear.push(applied.id);
      this.quarantined.push(applied.id);
      this.backends.delete(key);
    }
    for (const id of backendsToClear) this.dataplane.clearBackend(id);
    writes += backendsToClear.length;

    this.views = views;
    if (writes > 0) this.log.debug({ writes, vips: views.length }, 'data plane updated');
    return { writes };
  }

  /**
   * Deletes tracked flows that still name removed backends, then frees
   * those ids. Until then the data plane re-balances such flows itself (the
   * backend entry is inactive), so this only guards id reuse.
   */
  sweepFlows(): number {
    if (this.quarantined.length === 0) return 0;
    const ids = new Set(this.quarantined);
    const stale: Buffer[] = [];
    for (const [key, value] of this.dataplane.flows.entries()) {
      if (ids.has(flowState.decode(value).backend_id)) stale.push(Buffer.from(key));
    }
    for (const key of stale) this.dataplane.flows.delete(key);
    for (const id of ids) this.backendIds.release(id);
    this.quarantined = this.quarantined.filter((id) => !ids.has(id));
    return stale.length;
  }

  private checkCapacity(desired: DesiredState): void {
    const newVips = desired.vips.filter((v) => !this.vips.has(formatVip(v.vip))).length;
    if (newVips > this.vipIds.available) {
      throw new InputError(`too many VIPs: this balancer holds at most ${this.dataplane.limits.maxVips} (lbctl start --max-vips)`);
    }
    const newBackends = desired.vips.reduce((n, v) => n + v.backends.filter((b) => !this.backends.has(`${formatVip(v.vip)} ${b.address}`)).length, 0);
    if (newBackends > this.backendIds.available) {
      throw new InputError(`too many backends: this balancer holds at most ${this.dataplane.limits.maxBackends - 1} across all VIPs (lbctl start --max-backends)`);
    }
  }

  private allocateVip(): number {
    const id = this.vipIds.allocate()!;
    this.dataplane.resetVipCounters(id);
    return id;
  }

  private allocateBackend(): number {
    const id = this.backendIds.allocate()!;
    this.dataplane.resetBackendCounters(id);
    return id;
  }
}

/** In the Maglev table: reachable and not being drained. */
function takesNewFlows(backend: BackendSpec, path: PathResult): boolean {
  return path.ok && !backend.drain;
}

function encodeBackend(vipId: number, address: string, forward: ForwardMethod, path: ForwardingPath): string {
  const tunnelled = forward === 'ipip';
  return backendInfo.encode({
    dst_mac: path.dstMac,
    src_mac: path.srcMac,
    ifindex: path.ifindex,
    forward: FORWARD[forward],
    flags: BACKEND_FLAG_ACTIVE,
    tunnel_src: tunnelled ? path.tunnelSrc! : '0.0.0.0',
    address,
    tunnel_csum_base: tunnelled ? tunnelChecksumBase(path.tunnelSrc!, address) : 0,
    vip_id: vipId,
  }).toString('hex');
}

function vipKey(vip: VipAddress) {
  return { addr: vip.address, port: vip.port, proto: IPPROTO[vip.protocol] };
}

function sameTable(a: Uint32Array | undefined, b: Uint32Array | undefined): boolean {
  if (!a || !b) return a === b;
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
