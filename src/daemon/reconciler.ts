/**
 * The only writer of the balancer's maps. Given the desired state and the
 * forwarding paths, it works out what the maps must hold, compares that with
 * what it wrote before, and writes the difference in an order that never
 * lets a packet see a reference to something not yet written: backends,
 * then tables, then VIP entries; removals in the reverse order.
 */
import type { Logger } from 'pino';
import { backendInfo, BACKEND_FLAG_ACTIVE, BACKEND_FLAG_IPV6, FORWARD, readU32, tunnelChecksumBase, vipInfo } from '../dataplane/abi.js';
import { type BalancerDataplane } from '../dataplane/balancer.js';
import { buildMaglevTable, countEntries } from '../maglev/maglev.js';
import { addressBytes, formatAddressBytes, type ForwardMethod, type VipAddress, formatVip } from '../model/address.js';
import { type BackendSpec, type DesiredState, type DrainSpec, effectiveForward } from '../model/desired-state.js';
import { InputError } from '../model/errors.js';
import { type ForwardingPath, type PathResult, type PathTarget } from '../net/forwarding-paths.js';
import { IdPool } from './id-pool.js';
import type { BackendHealth } from '../health/checker.js';
import { deleteFlow, trackedFlows } from './flows.js';

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
  readonly health?: BackendHealth;
  /** Down, but still used: every backend of the VIP is down and its policy is keep. */
  readonly keptWhileAllDown?: boolean;
  readonly reason?: string;
  readonly slots: number;
  readonly path?: ForwardingPath;
}

export type BackendState = 'active' | 'draining' | 'down' | 'unresolved';

/** A backend's health-check state, if it is checked. */
export type HealthLookup = (vipKey: string, address: string) => BackendHealth | undefined;

export interface VipView {
  readonly key: string;
  readonly vip: VipAddress;
  readonly forward: ForwardMethod;
  readonly tableSize: number;
  readonly vipId: number;
  /** Every reachable backend fails its health check. */
  readonly allDown: boolean;
  readonly backends: readonly BackendView[];
}

interface AppliedVip {
  readonly vip: VipAddress;
  readonly vipId: number;
  readonly tableId: number;
  readonly tableSize: number;
  readonly table: Uint32Array | undefined;
  /** The backends (address, weight, id) the table was built from: an unchanged set is not rebuilt. */
  readonly members: string;
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
  readonly vipAddresses: Set<string>;
}

export interface ApplyResult {
  readonly writes: number;
  /** Maglev tables computed (a VIP whose backends did not change keeps its table). */
  readonly tablesBuilt: number;
  /** Maglev tables written to the data plane. */
  readonly tablesWritten: number;
  readonly durationMs: number;
}

/** What the reconciler has done since the daemon started. */
export interface ReconcilerStats {
  applies: number;
  tablesBuilt: number;
  tablesWritten: number;
  lastApplyMs: number;
  applyMsTotal: number;
}

export class Reconciler {
  private readonly vipIds: IdPool;
  private readonly backendIds: IdPool;
  private vips = new Map<string, AppliedVip>();
  private backends = new Map<string, AppliedBackend>();
  /** Addresses written to the vip_addrs maps (the balancer answers pings for them). */
  private vipAddresses = new Set<string>();
  /** Ids of removed backends, free again once no tracked flow names them. */
  private quarantined: number[] = [];
  private views: VipView[] = [];
  readonly stats: ReconcilerStats = { applies: 0, tablesBuilt: 0, tablesWritten: 0, lastApplyMs: 0, applyMsTotal: 0 };
  /** Called after every apply (metrics). */
  onApplied?: (result: ApplyResult) => void;

  constructor(
    private readonly dataplane: BalancerDataplane,
    private readonly log: Logger,
    adopted?: Adopted,
  ) {
    this.vipIds = new IdPool(
      0,
      dataplane.limits.maxVips,
      [...(adopted?.vips.values() ?? [])].map((v) => v.vipId),
    );
    // Backend id 0 is never allocated: an all-zero table entry names no one.
    this.backendIds = new IdPool(
      1,
      dataplane.limits.maxBackends,
      [...(adopted?.backends.values() ?? [])].map((b) => b.id),
    );
    if (adopted) {
      this.vips = adopted.vips;
      this.backends = adopted.backends;
      this.vipAddresses = adopted.vipAddresses;
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
    for (const [vip, info] of dataplane.vipEntries()) {
      vips.set(formatVip(vip), {
        vip,
        vipId: info.vip_id,
        tableId: info.table_id,
        tableSize: info.table_size,
        table: undefined,
        members: '',
        tableKnown: false,
        info: vipInfo.encode(info).toString('hex'),
      });
      keyById.set(info.vip_id, formatVip(vip));
    }
    const backends = new Map<string, AppliedBackend>();
    for (const [rawId, rawInfo] of dataplane.backends.entries()) {
      const info = backendInfo.decode(rawInfo);
      const key = keyById.get(info.vip_id);
      if (!(info.flags & BACKEND_FLAG_ACTIVE) || key === undefined) continue;
      const address = formatAddressBytes(info.flags & BACKEND_FLAG_IPV6 ? 6 : 4, info.address);
      backends.set(`${key} ${address}`, { id: readU32(rawId), info: Buffer.from(rawInfo).toString('hex') });
    }
    const inUse = new Set([...backends.values()].map((b) => b.id));
    let forgotten = 0;
    for (const flow of [...trackedFlows(dataplane)]) {
      if (!inUse.has(flow.backendId) && deleteFlow(dataplane, flow.key)) forgotten++;
    }
    log.info(
      { event: 'dataplane.taken_over', vips: vips.size, backends: backends.size, forgottenFlows: forgotten },
      'took over the data plane of a previous run',
    );
    return new Reconciler(dataplane, log, { vips, backends, vipAddresses: new Set(dataplane.vipAddresses()) });
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
        table:
          usable.length > 0
            ? buildMaglevTable(
                usable.map((b, i) => ({ name: b.address, weight: b.weight, id: i })),
                spec.tableSize,
              )
            : undefined,
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
  apply(desired: DesiredState, paths: (target: PathTarget) => PathResult, health: HealthLookup = () => undefined): ApplyResult {
    this.checkCapacity(desired);
    const started = performance.now();
    let writes = 0;
    let tablesBuilt = 0;
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
      const candidates = spec.backends.map((backend) => {
        const backendKey = `${key} ${backend.address}`;
        const id = this.backends.get(backendKey)?.id ?? this.allocateBackend();
        const forward = effectiveForward(spec, backend);
        return {
          backend,
          backendKey,
          id,
          forward,
          result: paths({ address: backend.address, forward }),
          health: health(key, backend.address),
        };
      });
      // When every reachable backend fails its check, the VIP either drops
      // (onAllDown drop) or keeps the backends it was using (keep).
      const eligible = candidates.filter((c) => c.result.ok && !c.backend.drain);
      const allDown = eligible.length > 0 && eligible.every((c) => c.health?.state === 'down');
      const lastUsed = new Set(applied?.table ?? []);
      const keptWhileDown = new Set(
        allDown && spec.onAllDown === 'keep'
          ? (eligible.some((c) => lastUsed.has(c.id)) ? eligible.filter((c) => lastUsed.has(c.id)) : eligible).map((c) => c.id)
          : [],
      );
      for (const { backend, backendKey, id, forward, result, health: checked } of candidates) {
        wantedBackends.add(backendKey);
        const previous = this.backends.get(backendKey);
        const down = checked?.state === 'down' && !keptWhileDown.has(id);
        const info = result.ok && !down ? encodeBackend(vipId, backend, forward, result.path) : '';
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
        if (info && !backend.drain) members.push({ address: backend.address, weight: backend.weight, id });
        backendViews.push({
          address: backend.address,
          weight: backend.weight,
          forward,
          id,
          state: !result.ok ? 'unresolved' : checked?.state === 'down' ? 'down' : backend.drain ? 'draining' : 'active',
          ...(backend.drain ? { drain: backend.drain } : {}),
          ...(checked ? { health: checked } : {}),
          ...(keptWhileDown.has(id) ? { keptWhileAllDown: true } : {}),
          ...(result.ok ? { path: result.path } : { reason: result.reason }),
        });
      }

      const memberKey = members.map((m) => `${m.address}/${m.weight}/${m.id}`).join(' ');
      let table = applied?.table;
      if (!applied || applied.members !== memberKey || applied.tableSize !== spec.tableSize || (members.length > 0 && !table)) {
        table =
          members.length > 0
            ? buildMaglevTable(
                members.map((m) => ({ name: m.address, weight: m.weight, id: m.id })),
                spec.tableSize,
              )
            : undefined;
        if (table) tablesBuilt++;
      }
      // A new size goes to the VIP's other table slot, switched to by the
      // VIP entry, so no packet indexes a table of the wrong size.
      const maxVips = this.dataplane.limits.maxVips;
      const tableId = !applied
        ? vipId
        : applied.tableSize === spec.tableSize
          ? applied.tableId
          : applied.tableId === vipId
            ? vipId + maxVips
            : vipId;
      if (!applied?.tableKnown || tableId !== applied.tableId || !sameTable(table, applied.table))
        tableWrites.push({ tableId, table: table ?? null });
      if (applied && applied.tableId !== tableId) unusedTables.push(applied.tableId);

      const info = vipInfo.encode({ vip_id: vipId, table_id: tableId, table_size: spec.tableSize, flags: 0 }).toString('hex');
      if (info !== applied?.info) vipWrites.push({ vip: spec.vip, info });
      this.vips.set(key, { vip: spec.vip, vipId, tableId, tableSize: spec.tableSize, table, members: memberKey, tableKnown: true, info });

      const slots = table ? countEntries(table) : new Map<number, number>();
      views.push({
        key,
        vip: spec.vip,
        forward: spec.forward,
        tableSize: spec.tableSize,
        vipId,
        allDown,
        backends: backendViews.map((b) => ({ ...b, slots: slots.get(b.id) ?? 0 })),
      });
    }

    if (tableWrites.length > 0) this.dataplane.putTables(tableWrites);
    for (const { vip, info } of vipWrites) this.dataplane.putVip(vip, vipInfo.decode(Buffer.from(info, 'hex')));
    writes += tableWrites.length + vipWrites.length;
    writes += this.syncVipAddresses(desired);

    for (const [key, applied] of this.vips) {
      if (wantedVips.has(key)) continue;
      this.dataplane.deleteVip(applied.vip);
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
    const result = {
      writes,
      tablesBuilt,
      tablesWritten: tableWrites.filter((t) => t.table).length,
      durationMs: performance.now() - started,
    };
    this.stats.applies++;
    this.stats.tablesBuilt += result.tablesBuilt;
    this.stats.tablesWritten += result.tablesWritten;
    this.stats.lastApplyMs = result.durationMs;
    this.stats.applyMsTotal += result.durationMs;
    if (writes > 0)
      this.log.debug(
        { event: 'dataplane.updated', writes, tablesBuilt, vips: views.length, ms: Math.round(result.durationMs * 10) / 10 },
        'data plane updated',
      );
    this.onApplied?.(result);
    return result;
  }

  /**
   * Deletes tracked flows that still name removed backends, then frees
   * those ids. Until then the data plane re-balances such flows itself (the
   * backend entry is inactive), so this only guards id reuse.
   */
  sweepFlows(): number {
    if (this.quarantined.length === 0) return 0;
    const ids = new Set(this.quarantined);
    const stale = [...trackedFlows(this.dataplane)].filter((flow) => ids.has(flow.backendId));
    for (const flow of stale) deleteFlow(this.dataplane, flow.key);
    for (const id of ids) this.backendIds.release(id);
    this.quarantined = this.quarantined.filter((id) => !ids.has(id));
    return stale.length;
  }

  private checkCapacity(desired: DesiredState): void {
    const newVips = desired.vips.filter((v) => !this.vips.has(formatVip(v.vip))).length;
    if (newVips > this.vipIds.available) {
      throw new InputError(`too many VIPs: this balancer holds at most ${this.dataplane.limits.maxVips} (lbctl start --max-vips)`);
    }
    const newBackends = desired.vips.reduce(
      (n, v) => n + v.backends.filter((b) => !this.backends.has(`${formatVip(v.vip)} ${b.address}`)).length,
      0,
    );
    if (newBackends > this.backendIds.available) {
      throw new InputError(
        `too many backends: this balancer holds at most ${this.dataplane.limits.maxBackends - 1} across all VIPs (lbctl start --max-backends)`,
      );
    }
  }

  /** Addresses with a VIP: new ones answered after their VIPs exist, gone ones forgotten. */
  private syncVipAddresses(desired: DesiredState): number {
    const wanted = new Map(desired.vips.map((v) => [v.vip.address, v.vip.family] as const));
    let writes = 0;
    for (const [address, family] of wanted) {
      if (this.vipAddresses.has(address)) continue;
      this.dataplane.putVipAddress(family, address);
      this.vipAddresses.add(address);
      writes++;
    }
    for (const address of [...this.vipAddresses]) {
      if (wanted.has(address)) continue;
      this.dataplane.deleteVipAddress(address.includes(':') ? 6 : 4, address);
      this.vipAddresses.delete(address);
      writes++;
    }
    return writes;
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

function encodeBackend(vipId: number, backend: BackendSpec, forward: ForwardMethod, path: ForwardingPath): string {
  const tunnelled = forward === 'ipip';
  const v4Tunnel = tunnelled && backend.family === 4;
  return backendInfo
    .encode({
      dst_mac: path.dstMac,
      src_mac: path.srcMac,
      ifindex: path.ifindex,
      forward: FORWARD[forward],
      flags: BACKEND_FLAG_ACTIVE | (backend.family === 6 ? BACKEND_FLAG_IPV6 : 0),
      mtu: Math.min(path.mtu, 0xffff),
      address: padded(addressBytes(backend.family, backend.address)),
      tunnel_src: tunnelled ? padded(addressBytes(backend.family, path.tunnelSrc!)) : Buffer.alloc(16),
      tunnel_csum_base: v4Tunnel ? tunnelChecksumBase(path.tunnelSrc!, backend.address) : 0,
      vip_id: vipId,
      tunnel_src_spread: 0,
    })
    .toString('hex');
}

/** An address in a 16-byte field: IPv4 in the first 4 bytes. */
function padded(bytes: Buffer): Buffer {
  const out = Buffer.alloc(16);
  bytes.copy(out);
  return out;
}

function sameTable(a: Uint32Array | undefined, b: Uint32Array | undefined): boolean {
  if (!a || !b) return a === b;
  return (
    a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
  );
}
