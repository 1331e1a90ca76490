/**
 * The only writer of the balancer's maps. It asks the planner what the maps
 * must hold, writes the difference through the data-plane interface in the
 * order the plan gives, and keeps what it wrote (encoded, as written) for
 * the next plan.
 */
import type { Logger } from 'pino';
import { BACKEND_FLAG_ACTIVE, BACKEND_FLAG_IPV6, backendInfo, vipInfo } from '../dataplane/abi.js';
import type { Flow } from '../dataplane/flow-hash.js';
import { type Family, type VipAddress, formatAddressBytes, formatVip } from '../model/address.js';
import { IdPool } from './id-pool.js';
import {
  type MapLimits,
  type MapState,
  type Plan,
  type PlanInputs,
  type TableWrite,
  type WrittenBackend,
  type WrittenVip,
  backendKey,
  countWrites,
  emptyMapState,
  plan,
} from './planner.js';
import { type TrackedFlow, isFlowOf } from './flows.js';
import type { VipView } from './views.js';

/** What the reconciler needs of a data plane: its maps, read and written. */
export interface BalancerMaps {
  readonly limits: MapLimits;
  putBackend(id: number, entry: Buffer): void;
  /** Array entries cannot be deleted: zeroing clears the active flag. */
  clearBackend(id: number): void;
  putTables(writes: readonly TableWrite[]): void;
  putVip(vip: VipAddress, entry: Buffer): void;
  deleteVip(vip: VipAddress): void;
  putVipAddress(family: Family, address: string): void;
  deleteVipAddress(family: Family, address: string): void;
  resetVipCounters(vipId: number): void;
  resetBackendCounters(backendId: number): void;
  vipEntries(): Iterable<readonly [VipAddress, Buffer]>;
  backendEntries(): Iterable<readonly [number, Buffer]>;
  vipAddresses(): string[];
  trackedFlows(): Iterable<TrackedFlow>;
  deleteFlow(key: Flow): boolean;
  /** The MAC frames must be addressed to, to be balanced; null: any. */
  setInterfaceMac(mac: string | null): void;
  interfaceMac(): string | null;
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
  private state: MapState;
  private views: readonly VipView[] = [];
  readonly stats: ReconcilerStats = { applies: 0, tablesBuilt: 0, tablesWritten: 0, lastApplyMs: 0, applyMsTotal: 0 };
  /** Called after every apply (metrics). */
  onApplied?: (result: ApplyResult) => void;
  /** Backends (`${vipKey} ${address}`) that were in service in the maps taken over at start. */
  readonly takenOverBackends: ReadonlySet<string>;

  constructor(
    private readonly maps: BalancerMaps,
    private readonly log: Logger,
    state: MapState = emptyMapState(maps.limits),
  ) {
    this.state = state;
    this.takenOverBackends = new Set([...state.backends].filter(([, b]) => b.entry).map(([key]) => key));
  }

  /**
   * Takes over maps an earlier daemon wrote (a restart, an upgrade, a
   * crash): VIP entries, backend entries and tracked flows stay as they
   * are, so established flows keep their backends; tables are rewritten,
   * identically, on the first apply. Tracked flows that name a backend
   * entry no longer in use are forgotten first, so their ids can be reused.
   */
  static adopt(maps: BalancerMaps, log: Logger): Reconciler {
    const vips = new Map<string, WrittenVip>();
    const keyById = new Map<number, string>();
    for (const [vip, entry] of maps.vipEntries()) {
      const info = vipInfo.decode(entry);
      const key = formatVip(vip);
      vips.set(key, {
        vip,
        vipId: info.vip_id,
        tableId: info.table_id,
        tableSize: info.table_size,
        table: undefined,
        members: '',
        tableKnown: false,
        entry: Buffer.from(entry),
      });
      keyById.set(info.vip_id, key);
    }
    const backends = new Map<string, WrittenBackend>();
    for (const [id, entry] of maps.backendEntries()) {
      const info = backendInfo.decode(entry);
      const key = keyById.get(info.vip_id);
      if (!(info.flags & BACKEND_FLAG_ACTIVE) || key === undefined) continue;
      const address = formatAddressBytes(info.flags & BACKEND_FLAG_IPV6 ? 6 : 4, info.address);
      backends.set(backendKey(key, address), { id, entry: Buffer.from(entry) });
    }
    const inUse = new Set([...backends.values()].map((b) => b.id));
    let forgotten = 0;
    for (const flow of [...maps.trackedFlows()]) {
      if (!inUse.has(flow.backendId) && maps.deleteFlow(flow.key)) forgotten++;
    }
    log.info(
      { event: 'dataplane.taken_over', vips: vips.size, backends: backends.size, forgottenFlows: forgotten },
      'took over the data plane of a previous run',
    );
    const { limits } = maps;
    return new Reconciler(maps, log, {
      limits,
      vips,
      backends,
      vipAddresses: new Set(maps.vipAddresses()),
      vipIds: new IdPool(
        0,
        limits.maxVips,
        [...vips.values()].map((v) => v.vipId),
      ),
      backendIds: new IdPool(1, limits.maxBackends, inUse),
      quarantined: [],
      interfaceMac: maps.interfaceMac(),
    });
  }

  get view(): readonly VipView[] {
    return this.views;
  }

  /** The backend id in a slot of a VIP's current table. */
  tableOwner(key: string, slot: number): number | undefined {
    return this.state.vips.get(key)?.table?.[slot];
  }

  /** Which VIP and address a backend id currently stands for. */
  backendById(id: number): { vip: string; address: string } | undefined {
    for (const view of this.views) {
      const backend = view.backends.find((b) => b.id === id);
      if (backend) return { vip: view.key, address: backend.address };
    }
    return undefined;
  }

  /** Plans, then writes; throws InputError (before writing anything) when ids would run out. */
  apply(inputs: PlanInputs): ApplyResult {
    const started = performance.now();
    const planned = plan(this.state, inputs);
    this.write(planned);
    this.state = planned.next;
    this.views = planned.views;
    const result = {
      writes: countWrites(planned.writes),
      tablesBuilt: planned.tablesBuilt,
      tablesWritten: planned.writes.tables.filter((t) => t.table).length,
      durationMs: performance.now() - started,
    };
    this.stats.applies++;
    this.stats.tablesBuilt += result.tablesBuilt;
    this.stats.tablesWritten += result.tablesWritten;
    this.stats.lastApplyMs = result.durationMs;
    this.stats.applyMsTotal += result.durationMs;
    if (result.writes > 0) {
      this.log.debug(
        {
          event: 'dataplane.updated',
          writes: result.writes,
          tablesBuilt: result.tablesBuilt,
          vips: planned.views.length,
          ms: Math.round(result.durationMs * 10) / 10,
        },
        'data plane updated',
      );
    }
    this.onApplied?.(result);
    return result;
  }

  /**
   * Deletes tracked flows that still name removed backends, then frees
   * those ids. Until then the data plane re-balances such flows itself (the
   * backend entry is inactive), so this only guards id reuse.
   */
  sweepFlows(): number {
    const { quarantined } = this.state;
    if (quarantined.length === 0) return 0;
    const ids = new Set(quarantined);
    const stale = [...this.maps.trackedFlows()].filter((flow) => ids.has(flow.backendId));
    for (const flow of stale) this.maps.deleteFlow(flow.key);
    const backendIds = this.state.backendIds.clone();
    for (const id of ids) backendIds.release(id);
    this.state = { ...this.state, backendIds, quarantined: [] };
    return stale.length;
  }

  /** Deletes the tracked flows of these VIPs: their next packets follow the Maglev table. How many. */
  forgetFlows(vips: readonly VipAddress[]): number {
    if (vips.length === 0) return 0;
    const all = [...this.state.vips.values()].map((v) => v.vip);
    const stale = [...this.maps.trackedFlows()].filter((flow) => vips.some((vip) => isFlowOf(flow, vip, all)));
    let forgotten = 0;
    for (const flow of stale) if (this.maps.deleteFlow(flow.key)) forgotten++;
    return forgotten;
  }

  private write({ writes: w }: Plan): void {
    if (w.interfaceMac !== undefined) this.maps.setInterfaceMac(w.interfaceMac);
    for (const id of w.resetVipCounters) this.maps.resetVipCounters(id);
    for (const id of w.resetBackendCounters) this.maps.resetBackendCounters(id);
    for (const { id, entry } of w.backends) this.maps.putBackend(id, entry);
    if (w.tables.length > 0) this.maps.putTables(w.tables);
    for (const { vip, entry } of w.vips) this.maps.putVip(vip, entry);
    for (const { family, address } of w.vipAddressesAdded) this.maps.putVipAddress(family, address);
    for (const { family, address } of w.vipAddressesRemoved) this.maps.deleteVipAddress(family, address);
    for (const vip of w.vipsDeleted) this.maps.deleteVip(vip);
    if (w.tablesReleased.length > 0) this.maps.putTables(w.tablesReleased.map((tableId) => ({ tableId, table: null })));
    for (const id of w.backendsCleared) this.maps.clearBackend(id);
  }
}
