/**
 * The pure half of reconciling: from the desired state, the forwarding
 * paths and the health of each backend, and from what the maps hold now,
 * work out the entries, tables and views the maps must hold next, and the
 * writes that get them there. Nothing here touches the kernel, so all of
 * it is tested without root (test/unit/planner.test.ts); the reconciler
 * carries the writes out, in the order given here.
 */
import {
  BACKEND_FLAG_ACTIVE,
  BACKEND_FLAG_IPV6,
  FORWARD,
  VIP_FLAG_HASH_SOURCE,
  backendInfo,
  tunnelChecksumBase,
  tunnelSourceSpread,
  vipInfo,
} from '../dataplane/abi.js';
import { buildMaglevTable, countEntries } from '../maglev/maglev.js';
import { DEFAULT_VIP_HASH, type Family, type ForwardMethod, type VipAddress, addressBytes, formatVip } from '../model/address.js';
import { type BackendSpec, type DesiredState, type VipSpec, effectiveForward } from '../model/desired-state.js';
import type { AllDownPolicy } from '../model/check.js';
import { InputError } from '../model/errors.js';
import type { ForwardingPath, PathResult, PathTarget } from '../net/forwarding-paths.js';
import { IdPool } from './id-pool.js';
import type { BackendView, HealthLookup, VipView } from './views.js';

/** Sizes the maps were created with. */
export interface MapLimits {
  readonly maxVips: number;
  readonly maxBackends: number;
}

export interface WrittenVip {
  readonly vip: VipAddress;
  readonly vipId: number;
  /** Index into maglev_tables: the VIP's id, or its id + maxVips while a resized table is in use. */
  readonly tableId: number;
  readonly tableSize: number;
  readonly table: Uint32Array | undefined;
  /** The backends (address, weight, id) the table was built from: an unchanged set is not rebuilt. */
  readonly members: string;
  /** False for a table taken over from an earlier daemon: rewritten on the next plan. */
  readonly tableKnown: boolean;
  readonly entry: Buffer;
}

export interface WrittenBackend {
  readonly id: number;
  /** The encoded entry as written; null while cleared (no usable path, or down). */
  readonly entry: Buffer | null;
}

/** What the maps hold, as last written. Plans never modify one: they return the next. */
export interface MapState {
  readonly limits: MapLimits;
  readonly vips: ReadonlyMap<string, WrittenVip>;
  /** By `${vipKey} ${address}`. */
  readonly backends: ReadonlyMap<string, WrittenBackend>;
  /** Addresses in the vip_addrs maps (the balancer answers pings for them). */
  readonly vipAddresses: ReadonlySet<string>;
  readonly vipIds: IdPool;
  readonly backendIds: IdPool;
  /** Ids of removed backends, free again once no tracked flow names them. */
  readonly quarantined: readonly number[];
  /** The MAC frames must be addressed to (lb_settings.mac); null: not checked. */
  readonly interfaceMac: string | null;
}

export interface TableWrite {
  readonly tableId: number;
  /** null: the slot points at the shared empty table (the VIP drops). */
  readonly table: Uint32Array | null;
}

/**
 * The writes of one plan, in the order they must happen so that no packet
 * meets a reference to something not yet written (or already gone):
 * counters of new ids, backends, every changed table at once, VIP entries,
 * VIP addresses; then what is no longer used.
 */
export interface MapWrites {
  readonly resetVipCounters: readonly number[];
  readonly resetBackendCounters: readonly number[];
  readonly backends: ReadonlyArray<{ readonly id: number; readonly entry: Buffer }>;
  readonly tables: readonly TableWrite[];
  readonly vips: ReadonlyArray<{ readonly vip: VipAddress; readonly entry: Buffer }>;
  readonly vipAddressesAdded: ReadonlyArray<{ readonly family: Family; readonly address: string }>;
  readonly vipAddressesRemoved: ReadonlyArray<{ readonly family: Family; readonly address: string }>;
  readonly vipsDeleted: readonly VipAddress[];
  readonly tablesReleased: readonly number[];
  readonly backendsCleared: readonly number[];
  /** The interface's MAC, when it changed. */
  readonly interfaceMac?: string | null;
}

export interface Plan {
  readonly next: MapState;
  readonly writes: MapWrites;
  readonly views: readonly VipView[];
  /** Maglev tables computed (a VIP whose backends did not change keeps its table). */
  readonly tablesBuilt: number;
}

export interface PlanInputs {
  readonly desired: DesiredState;
  readonly paths: (target: PathTarget) => PathResult;
  readonly health: HealthLookup;
  /**
   * Every VIP keeps its last healthy backends when all of them fail, as
   * with on_all_down keep: a fleet node withdraws such a VIP instead, and
   * the packets still on their way keep their backends (docs/fleet.md).
   */
  readonly keepOnAllDown?: boolean;
  /** The MAC of the interface the program is attached to; undefined: not known yet (what the maps hold stays). */
  readonly interfaceMac?: string | null;
}

/** The state of maps nothing has been written to. */
export function emptyMapState(limits: MapLimits): MapState {
  return {
    limits,
    vips: new Map(),
    backends: new Map(),
    vipAddresses: new Set(),
    vipIds: new IdPool(0, limits.maxVips),
    // Backend id 0 is never allocated: an all-zero table entry names no one.
    backendIds: new IdPool(1, limits.maxBackends),
    quarantined: [],
    interfaceMac: null,
  };
}

export function backendKey(vipKey: string, address: string): string {
  return `${vipKey} ${address}`;
}

/** The number of map writes a plan makes (counter resets aside). */
export function countWrites(w: MapWrites): number {
  return (
    w.backends.length +
    w.tables.length +
    w.vips.length +
    w.vipAddressesAdded.length +
    w.vipAddressesRemoved.length +
    w.vipsDeleted.length +
    w.tablesReleased.length +
    w.backendsCleared.length +
    (w.interfaceMac !== undefined ? 1 : 0)
  );
}

/**
 * Throws InputError when ids would run out; otherwise the next state and
 * the writes that reach it.
 */
export function plan(current: MapState, { desired, paths, health, keepOnAllDown = false, interfaceMac }: PlanInputs): Plan {
  refuseOverCapacity(current, desired);
  const vipIds = current.vipIds.clone();
  const backendIds = current.backendIds.clone();
  const vips = new Map<string, WrittenVip>();
  const backends = new Map<string, WrittenBackend>();
  const quarantined = [...current.quarantined];
  const mac = interfaceMac === undefined ? current.interfaceMac : interfaceMac;
  const views: VipView[] = [];
  const resetVipCounters: number[] = [];
  const resetBackendCounters: number[] = [];
  const backendWrites: Array<{ id: number; entry: Buffer }> = [];
  const tableWrites: TableWrite[] = [];
  const vipWrites: Array<{ vip: VipAddress; entry: Buffer }> = [];
  const tablesReleased: number[] = [];
  const backendsCleared: number[] = [];
  let tablesBuilt = 0;

  for (const spec of desired.vips) {
    const key = formatVip(spec.vip);
    const written = current.vips.get(key);
    let vipId = written?.vipId;
    if (vipId === undefined) {
      vipId = vipIds.allocate()!;
      resetVipCounters.push(vipId);
    }

    const candidates = spec.backends.map((backend) => {
      const bkey = backendKey(key, backend.address);
      let id = current.backends.get(bkey)?.id;
      if (id === undefined) {
        id = backendIds.allocate()!;
        resetBackendCounters.push(id);
      }
      const forward = effectiveForward(spec, backend);
      return { backend, bkey, id, forward, path: paths({ address: backend.address, forward }), checked: health(key, backend.address) };
    });
    const keptWhileAllDown = keptBackends(keepOnAllDown ? 'keep' : spec.onAllDown, candidates, written?.table);
    const allDown = keptWhileAllDown !== undefined;

    const members: Array<{ address: string; weight: number; id: number }> = [];
    const backendViews: Array<Omit<BackendView, 'slots'>> = [];
    for (const { backend, bkey, id, forward, path, checked } of candidates) {
      const down = checked?.state === 'down' && !keptWhileAllDown?.has(id);
      const entry = path.ok && !down ? encodeBackend(vipId, backend, forward, path.path) : null;
      const before = current.backends.get(bkey)?.entry ?? null;
      if (!sameBytes(entry, before)) {
        // A backend that lost its path is cleared only once the table no
        // longer names it (last phase), or new flows to its slots would drop.
        if (entry) backendWrites.push({ id, entry });
        else backendsCleared.push(id);
      }
      backends.set(bkey, { id, entry });
      if (entry && takesNewFlows(backend)) members.push({ address: backend.address, weight: backend.weight, id });
      backendViews.push({
        address: backend.address,
        weight: backend.weight,
        forward,
        id,
        state: !path.ok
          ? 'unresolved'
          : checked?.state === 'down'
            ? 'down'
            : backend.drain
              ? 'draining'
              : backend.weight === 0
                ? 'quiesced'
                : 'active',
        ...(backend.drain ? { drain: backend.drain } : {}),
        ...(checked ? { health: checked } : {}),
        ...(keptWhileAllDown?.has(id) ? { keptWhileAllDown: true } : {}),
        ...(path.ok ? { path: path.path } : { reason: path.reason }),
      });
    }

    const memberKey = members.map((m) => `${m.address}/${m.weight}/${m.id}`).join(' ');
    let table = written?.table;
    if (!written || written.members !== memberKey || written.tableSize !== spec.tableSize || (members.length > 0 && !table)) {
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
    const maxVips = current.limits.maxVips;
    const tableId = !written
      ? vipId
      : written.tableSize === spec.tableSize
        ? written.tableId
        : written.tableId === vipId
          ? vipId + maxVips
          : vipId;
    if (!written?.tableKnown || tableId !== written.tableId || !sameTable(table, written.table)) {
      tableWrites.push({ tableId, table: table ?? null });
    }
    if (written && written.tableId !== tableId) tablesReleased.push(written.tableId);

    const hash = spec.hash ?? DEFAULT_VIP_HASH;
    const flags = hash === 'source' ? VIP_FLAG_HASH_SOURCE : 0;
    const entry = vipInfo.encode({ vip_id: vipId, table_id: tableId, table_size: spec.tableSize, flags });
    if (!written || !entry.equals(written.entry)) vipWrites.push({ vip: spec.vip, entry });
    vips.set(key, { vip: spec.vip, vipId, tableId, tableSize: spec.tableSize, table, members: memberKey, tableKnown: true, entry });

    const slots = table ? countEntries(table) : new Map<number, number>();
    views.push({
      key,
      vip: spec.vip,
      forward: spec.forward,
      hash,
      tableSize: spec.tableSize,
      vipId,
      allDown,
      backends: backendViews.map((b) => ({ ...b, slots: slots.get(b.id) ?? 0 })),
    });
  }

  const wantedAddresses = new Map(desired.vips.map((v) => [v.vip.address, v.vip.family] as const));
  const vipAddressesAdded = [...wantedAddresses]
    .filter(([address]) => !current.vipAddresses.has(address))
    .map(([address, family]) => ({ family, address }));
  const vipAddressesRemoved = [...current.vipAddresses]
    .filter((address) => !wantedAddresses.has(address))
    .map((address) => ({ family: familyOf(address), address }));

  const vipsDeleted: VipAddress[] = [];
  for (const [key, written] of current.vips) {
    if (vips.has(key)) continue;
    vipsDeleted.push(written.vip);
    tablesReleased.push(written.tableId);
    vipIds.release(written.vipId);
  }
  for (const [key, written] of current.backends) {
    if (backends.has(key)) continue;
    if (written.entry) backendsCleared.push(written.id);
    quarantined.push(written.id);
  }

  return {
    next: {
      limits: current.limits,
      vips,
      backends,
      vipAddresses: new Set(wantedAddresses.keys()),
      vipIds,
      backendIds,
      quarantined,
      interfaceMac: mac,
    },
    writes: {
      resetVipCounters,
      resetBackendCounters,
      backends: backendWrites,
      tables: tableWrites,
      vips: vipWrites,
      vipAddressesAdded,
      vipAddressesRemoved,
      vipsDeleted,
      tablesReleased,
      backendsCleared,
      ...(mac !== current.interfaceMac ? { interfaceMac: mac } : {}),
    },
    views,
    tablesBuilt,
  };
}

/**
 * When every reachable backend fails its check, the VIP either drops
 * (onAllDown drop: none kept) or keeps the backends it was using (keep).
 * undefined while some backend is healthy.
 */
function keptBackends(
  policy: AllDownPolicy,
  candidates: ReadonlyArray<{ backend: BackendSpec; id: number; path: PathResult; checked: { state: string } | undefined }>,
  lastTable: Uint32Array | undefined,
): Set<number> | undefined {
  const eligible = candidates.filter((c) => c.path.ok && !c.backend.drain);
  if (eligible.length === 0 || !eligible.every((c) => c.checked?.state === 'down')) return undefined;
  if (policy === 'drop') return new Set();
  const lastUsed = new Set(lastTable ?? []);
  const wasUsed = eligible.filter((c) => lastUsed.has(c.id));
  return new Set((wasUsed.length > 0 ? wasUsed : eligible).map((c) => c.id));
}

/**
 * The Maglev table a VIP's spec would get, slot by slot as indexes into
 * owners (backend addresses); for previews, which compare two of them.
 */
export interface PlannedTable {
  readonly tableSize: number;
  readonly owners: readonly string[];
  /** undefined when no backend is usable. */
  readonly table: Uint32Array | undefined;
}

export function plannedTable(spec: VipSpec, paths: (target: PathTarget) => PathResult): PlannedTable {
  const usable = spec.backends.filter((b) => takesNewFlows(b) && paths({ address: b.address, forward: effectiveForward(spec, b) }).ok);
  return {
    tableSize: spec.tableSize,
    owners: usable.map((b) => b.address),
    table:
      usable.length > 0
        ? buildMaglevTable(
            usable.map((b, i) => ({ name: b.address, weight: b.weight, id: i })),
            spec.tableSize,
          )
        : undefined,
  };
}

/** In the Maglev table when its path works: neither draining nor quiesced (weight 0). */
function takesNewFlows(backend: BackendSpec): boolean {
  return !backend.drain && backend.weight > 0;
}

function refuseOverCapacity(current: MapState, desired: DesiredState): void {
  const newVips = desired.vips.filter((v) => !current.vips.has(formatVip(v.vip))).length;
  if (newVips > current.vipIds.available) {
    throw new InputError(`too many VIPs: this balancer holds at most ${current.limits.maxVips} (lbctl start --max-vips)`);
  }
  const newBackends = desired.vips.reduce(
    (n, v) => n + v.backends.filter((b) => !current.backends.has(backendKey(formatVip(v.vip), b.address))).length,
    0,
  );
  if (newBackends > current.backendIds.available) {
    throw new InputError(
      `too many backends: this balancer holds at most ${current.limits.maxBackends - 1} across all VIPs (lbctl start --max-backends)`,
    );
  }
}

function encodeBackend(vipId: number, backend: BackendSpec, forward: ForwardMethod, path: ForwardingPath): Buffer {
  const tunnelled = forward === 'ipip';
  return backendInfo.encode({
    dst_mac: path.dstMac,
    src_mac: path.srcMac,
    ifindex: path.ifindex,
    forward: FORWARD[forward],
    flags: BACKEND_FLAG_ACTIVE | (backend.family === 6 ? BACKEND_FLAG_IPV6 : 0),
    mtu: Math.min(path.mtu, 0xffff),
    address: padded(addressBytes(backend.family, backend.address)),
    tunnel_src: tunnelled ? padded(addressBytes(backend.family, path.tunnelSrc!)) : Buffer.alloc(16),
    tunnel_csum_base: tunnelled && backend.family === 4 ? tunnelChecksumBase(path.tunnelSrc!, backend.address) : 0,
    vip_id: vipId,
    // A range's first address has its host bits zero: the data plane ors each flow's in, and the checksum base holds.
    tunnel_src_spread: tunnelled ? tunnelSourceSpread(path.tunnelSourceBits ?? 0) : 0,
  });
}

/** An address in a 16-byte field: IPv4 in the first 4 bytes. */
function padded(bytes: Buffer): Buffer {
  const out = Buffer.alloc(16);
  bytes.copy(out);
  return out;
}

function familyOf(address: string): Family {
  return address.includes(':') ? 6 : 4;
}

function sameBytes(a: Buffer | null, b: Buffer | null): boolean {
  return a === null || b === null ? a === b : a.equals(b);
}

function sameTable(a: Uint32Array | undefined, b: Uint32Array | undefined): boolean {
  if (!a || !b) return a === b;
  return (
    a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
  );
}
