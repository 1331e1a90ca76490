/**
 * xdp_balancer loaded into the kernel, with typed access to its maps. Only
 * the reconciler (src/core/reconciler.ts) writes through this: it is the
 * BalancerMaps it plans for.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bpfObjectPath } from '../paths.js';
import { type BalancerLimits, DEFAULT_LIMITS } from '../model/limits.js';
import { addressBytes, type Family, formatAddressBytes, formatVip, isMacAddress, type VipAddress } from '../model/address.js';
import {
  backendInfo,
  type BackendInfo,
  lbSettings,
  type LbSettings,
  NARROW_TABLE_MAX_ID,
  SETTINGS_FLAG_ANY_PORT_VIPS,
  SETTINGS_FLAG_WIDE_TABLES,
  readU32,
  SHARED_LAYOUTS,
  readU64,
  REASONS,
  type Reason,
  sumCounters,
  type TrafficCounters,
  trafficCounters,
  u32Key,
  vipInfo,
  type VipInfo,
  vipKeyV4,
  vipKeyV6,
  IPPROTO,
  PROTOCOL_BY_NUMBER,
  flowKeyV4,
  flowKeyV6,
  flowState,
  FLOW_FLAG_CLOSING,
} from './abi.js';
import type { TrackedFlow } from '../core/flows.js';
import type { BalancerMaps } from '../core/reconciler.js';
import type { Flow } from './flow-hash.js';
import { type BpfMap, type PerCpuBpfMap } from './bpf-map.js';
import { VipFilter } from './vip-filter.js';
import { loadBpfObject, type LoadedObject, mapDefinitions } from './bpf-object.js';
import { readBtfStructs } from './btf.js';
import { BPF_F_INNER_MAP, BPF_F_MMAPABLE, BPF_MAP_TYPE, orThrow, closeFd, errnoText, mapInfo, native } from './libbpf.js';

/**
 * Maglev tables are filled through a shared mapping (mmap) before they are
 * swapped in, not element by element; an inner map must have the flags of
 * the template in bpf/lib/maps.h.
 */
const MAGLEV_TABLE_FLAGS = BPF_F_INNER_MAP | BPF_F_MMAPABLE;

const OBJECT = bpfObjectPath('xdp_balancer');

/**
 * Everything that must match for one build's program to use another's maps:
 * each map's type, sizes and flags, the flags of the Maglev tables inside
 * maglev_tables, and the layout of every shared struct.
 */
function abiFingerprint(): bigint {
  const layouts = [
    ...readBtfStructs(
      OBJECT,
      SHARED_LAYOUTS.map((l) => l.name),
    ).values(),
  ];
  const maps = mapDefinitions(OBJECT).map(({ maxEntries: _size, ...rest }) => rest);
  const digest = createHash('sha256')
    .update(JSON.stringify({ maps, maglevTableFlags: MAGLEV_TABLE_FLAGS, layouts }))
    .digest();
  return digest.readBigUInt64BE(0);
}

/**
 * A table of 16-bit entries (bpf/lib/flow.h table_backend): two slots to
 * a 32-bit element, the even one in the low half. A table of odd size ends
 * with half an element, whose other half is 0 (no backend).
 */
function packTable(table: Uint32Array): Uint32Array {
  const packed = new Uint32Array((table.length + 1) >> 1);
  for (let i = 0; i < table.length; i++) {
    if (table[i]! > NARROW_TABLE_MAX_ID) throw new Error(`backend id ${table[i]} does not fit a table of 16-bit entries`);
    packed[i >> 1]! |= table[i]! << ((i & 1) * 16);
  }
  return packed;
}

/** Back to a backend id per slot; the padding of an odd-sized table (a last 0: no backend) is dropped. */
function unpackTable(elements: Uint32Array): Uint32Array {
  const table = new Uint32Array(elements.length * 2);
  elements.forEach((e, i) => {
    table[2 * i] = e & 0xffff;
    table[2 * i + 1] = e >>> 16;
  });
  return table.length > 1 && table[table.length - 1] === 0 ? table.subarray(0, table.length - 1) : table;
}

const NO_MAC = '00:00:00:00:00:00';

/**
 * The kernel hashes an LRU map of E entries into roundup_pow_of_two(E)
 * buckets, so a flow table of a power-of-two size (the default, 2^20), full
 * as an LRU soon is, has a flow per bucket. One entry more gives it twice
 * the buckets (16 bytes each) and chains half as long: an established flow
 * among a million costs ~20% less (docs/connection-tracking.md). Every size
 * gets the one spare, so the size asked for is E - 1, always.
 */
const FLOW_MAP_SPARE = 1;

function flowMapEntries(flowTableSize: number): number {
  return flowTableSize + FLOW_MAP_SPARE;
}

function encodeVipKey(vip: VipAddress): Buffer {
  const proto = IPPROTO[vip.protocol];
  return vip.family === 4
    ? vipKeyV4.encode({ addr: vip.address, port: vip.port, proto })
    : vipKeyV6.encode({ addr: vip.address, port: vip.port, proto });
}

export const KILL_SWITCH_NEVER = 0xffff_ffff_ffff_ffffn;

export class BalancerDataplane implements BalancerMaps {
  readonly vipsV4: BpfMap;
  readonly vipsV6: BpfMap;
  readonly vipAddrsV4: BpfMap;
  readonly vipAddrsV6: BpfMap;
  readonly tables: BpfMap;
  readonly backends: BpfMap;
  readonly flowsV4: BpfMap;
  readonly flowsV6: BpfMap;
  readonly vipStats: PerCpuBpfMap;
  readonly backendStats: PerCpuBpfMap;
  readonly reasons: PerCpuBpfMap;
  readonly settings: BpfMap;
  /** Bits of the addresses that carry VIPs (bpf/lib/vip.h), kept with the VIP entries. */
  readonly vipFilterMap: BpfMap;

  /** Where tables of VIPs without a usable backend (and unused slots) point. */
  private readonly emptyTableFd: number;
  private readonly vipFilter: VipFilter;
  /** VIPs of all ports (port 0), by formatVip. */
  private readonly anyPortVips: Set<string>;

  private constructor(
    private readonly object: LoadedObject,
    readonly limits: BalancerLimits,
    /** What the settings entry holds, written whole whenever a field changes. */
    private current: LbSettings,
  ) {
    this.emptyTableFd = orThrow(
      native.mapCreate(BPF_MAP_TYPE.ARRAY, 'maglev_empty', 4, 4, 1, MAGLEV_TABLE_FLAGS),
      'creating the empty Maglev table',
    );
    this.vipsV4 = object.map('vips_v4');
    this.vipsV6 = object.map('vips_v6');
    this.vipAddrsV4 = object.map('vip_addrs_v4');
    this.vipAddrsV6 = object.map('vip_addrs_v6');
    this.tables = object.map('maglev_tables');
    this.backends = object.map('backends');
    this.flowsV4 = object.map('flows_v4');
    this.flowsV6 = object.map('flows_v6');
    this.vipStats = object.perCpuMap('vip_stats');
    this.backendStats = object.perCpuMap('backend_stats');
    this.reasons = object.perCpuMap('reasons');
    this.settings = object.map('settings');
    this.vipFilterMap = object.map('vip_filter');
    const vips = [...this.vipEntries()].map(([vip]) => vip);
    this.vipFilter = new VipFilter(this.vipFilterMap, vips);
    this.anyPortVips = new Set(vips.filter((v) => v.port === 0).map(formatVip));
    this.writeAnyPortFlag();
    this.writeSettings({});
  }

  /** A new data plane: new, empty maps. */
  static load(limits: BalancerLimits = DEFAULT_LIMITS): BalancerDataplane {
    const object = loadBpfObject(OBJECT, 'xdp_balancer', {
      vips_v4: limits.maxVips,
      vips_v6: limits.maxVips,
      vip_addrs_v4: limits.maxVips,
      vip_addrs_v6: limits.maxVips,
      // Twice the VIPs: a table can be built in a spare slot and switched
      // to in one write of the VIP entry when its size changes.
      maglev_tables: limits.maxVips * 2,
      vip_stats: limits.maxVips,
      backends: limits.maxBackends,
      backend_stats: limits.maxBackends,
      flows_v4: flowMapEntries(limits.flowTableSize),
      flows_v6: flowMapEntries(limits.flowTableSize),
    });
    const dataplane = new BalancerDataplane(object, limits, {
      kill_switch_deadline: 0n,
      abi_fingerprint: abiFingerprint(),
      mac: NO_MAC,
      flags: limits.maxBackends - 1 > NARROW_TABLE_MAX_ID ? SETTINGS_FLAG_WIDE_TABLES : 0,
    });
    return dataplane;
  }

  /**
   * The program loaded over the maps pinned in pinDir by an earlier run, so
   * that tracked flows, tables and counters carry on. Refused (with the
   * reason) when a map is missing or the layouts differ, e.g. after an
   * upgrade that changed them: then only a new data plane will do.
   */
  static takeOver(pinDir: string): { dataplane: BalancerDataplane } | { refused: string } {
    const fingerprint = abiFingerprint();
    const reuse: Record<string, number> = {};
    try {
      for (const definition of mapDefinitions(OBJECT)) {
        const path = join(pinDir, definition.name);
        if (!existsSync(path)) return { refused: `${path} is missing` };
        const fd = native.objGet(path) as number;
        if (fd < 0) return { refused: `cannot open ${path}: ${errnoText(-fd)}` };
        reuse[definition.name] = fd;
        const pinned = mapInfo(fd);
        for (const field of ['type', 'keySize', 'valueSize', 'flags'] as const) {
          if (pinned[field] !== definition[field])
            return { refused: `map ${definition.name} has another ${field} (${pinned[field]}, this version uses ${definition[field]})` };
        }
      }
      const raw = Buffer.alloc(lbSettings.size);
      orThrow(native.mapLookup(reuse.settings!, u32Key(0), raw), 'reading the pinned settings');
      const settings = lbSettings.decode(raw);
      if (settings.abi_fingerprint !== fingerprint) return { refused: 'the pinned maps were written by a version with other data layouts' };
      const limits = {
        maxVips: mapInfo(reuse.vips_v4!).maxEntries,
        maxBackends: mapInfo(reuse.backends!).maxEntries,
        flowTableSize: mapInfo(reuse.flows_v4!).maxEntries - FLOW_MAP_SPARE,
      };
      return { dataplane: new BalancerDataplane(loadBpfObject(OBJECT, 'xdp_balancer', {}, reuse), limits, settings) };
    } finally {
      for (const fd of Object.values(reuse)) closeFd(fd);
    }
  }

  get programFd(): number {
    return this.object.programFd;
  }

  /** lb_clock: reads the data plane's clock (see DataplaneClock). */
  get clockFd(): number {
    return this.object.program('lb_clock');
  }

  pin(dir: string): void {
    this.object.pin(dir);
  }

  close(): void {
    closeFd(this.emptyTableFd);
    this.object.close();
  }

  /**
   * Until when (data-plane clock, jiffies) VIP packets are balanced; after
   * it they pass to the kernel. KILL_SWITCH_NEVER for tests and benchmarks.
   */
  setKillSwitchDeadline(jiffies: bigint): void {
    this.writeSettings({ kill_switch_deadline: jiffies });
  }

  /**
   * This node's MAC on the interface the program is attached to: frames to
   * another unicast MAC are passed, not balanced (a switch floods frames
   * for unknown destinations to every node). null: not checked, what a new
   * data plane starts with. Set it again when the link's MAC changes.
   */
  setInterfaceMac(mac: string | null): void {
    if (mac !== null && !isMacAddress(mac)) throw new Error(`not a MAC address: ${mac}`);
    if (mac === NO_MAC) throw new Error('the MAC 00:00:00:00:00:00 turns the check off: pass null to mean that');
    this.writeSettings({ mac: mac?.toLowerCase() ?? NO_MAC });
  }

  interfaceMac(): string | null {
    return this.current.mac === NO_MAC ? null : this.current.mac;
  }

  /** The data plane is the only reader and this the only writer: the entry is rewritten whole from what was last written. */
  private writeSettings(change: Partial<LbSettings>): void {
    this.current = { ...this.current, ...change };
    this.settings.update(u32Key(0), lbSettings.encode(this.current));
  }

  /** Maglev tables hold 32-bit entries (more than 65535 backends), not 16-bit ones. */
  private get wideTables(): boolean {
    return (this.current.flags & SETTINGS_FLAG_WIDE_TABLES) !== 0;
  }

  killSwitchDeadline(): bigint {
    return lbSettings.decode(this.settings.lookup(u32Key(0))!).kill_switch_deadline;
  }

  /**
   * A VIP's entry, as encoded by the planner or its fields (tests). Port 0
   * makes it the VIP of all ports of its address and protocol, for packets
   * to ports without a VIP of their own (the data plane looks for one only
   * while such a VIP exists).
   */
  putVip(vip: VipAddress, entry: Buffer | VipInfo): void {
    const added = this.vipFilter.add(vip);
    if (vip.port === 0) this.anyPortVips.add(formatVip(vip));
    this.writeAnyPortFlag();
    try {
      this.vipMap(vip.family).update(encodeVipKey(vip), Buffer.isBuffer(entry) ? entry : vipInfo.encode(entry));
    } catch (error) {
      if (added) this.forgetVip(vip);
      throw error;
    }
  }

  deleteVip(vip: VipAddress): void {
    this.vipMap(vip.family).delete(encodeVipKey(vip));
    this.forgetVip(vip);
  }

  private forgetVip(vip: VipAddress): void {
    this.vipFilter.remove(vip);
    this.anyPortVips.delete(formatVip(vip));
    this.writeAnyPortFlag();
  }

  /** LB_SETTINGS_F_ANY_PORT_VIPS while a VIP of all ports exists: set before its entry is written, cleared after the last is gone. */
  private writeAnyPortFlag(): void {
    const flags =
      this.anyPortVips.size > 0 ? this.current.flags | SETTINGS_FLAG_ANY_PORT_VIPS : this.current.flags & ~SETTINGS_FLAG_ANY_PORT_VIPS;
    if (flags !== this.current.flags) this.writeSettings({ flags });
  }

  /** Every VIP entry, both families, encoded. */
  *vipEntries(): Generator<[VipAddress, Buffer]> {
    for (const [key, value] of this.vipsV4.entries()) {
      const k = vipKeyV4.decode(key);
      yield [{ family: 4, address: k.addr, port: k.port, protocol: PROTOCOL_BY_NUMBER[k.proto] ?? 'tcp' }, value];
    }
    for (const [key, value] of this.vipsV6.entries()) {
      const k = vipKeyV6.decode(key);
      yield [{ family: 6, address: k.addr, port: k.port, protocol: PROTOCOL_BY_NUMBER[k.proto] ?? 'tcp' }, value];
    }
  }

  /** Addresses the data plane answers pings for: those carrying a VIP. */
  putVipAddress(family: Family, address: string): void {
    (family === 4 ? this.vipAddrsV4 : this.vipAddrsV6).update(addressBytes(family, address), Buffer.alloc(4));
  }

  deleteVipAddress(family: Family, address: string): void {
    (family === 4 ? this.vipAddrsV4 : this.vipAddrsV6).delete(addressBytes(family, address));
  }

  vipAddresses(): string[] {
    return [
      ...[...this.vipAddrsV4.keys()].map((k) => formatAddressBytes(4, k)),
      ...[...this.vipAddrsV6.keys()].map((k) => formatAddressBytes(6, k)),
    ];
  }

  private vipMap(family: Family): BpfMap {
    return family === 4 ? this.vipsV4 : this.vipsV6;
  }

  /**
   * Installs tables: each in a new inner map, all swapped in with one batch
   * update of the outer map, which packets observe atomically per table.
   * A null table points the slot at a shared one-entry table naming
   * backend 0 (nobody): the VIP drops. Slots are never deleted, because
   * deleting from a map of maps waits for an RCU grace period per slot
   * while a batch waits once.
   */
  putTables(writes: ReadonlyArray<{ tableId: number; table: Uint32Array | null }>): void {
    const created: number[] = [];
    try {
      const fds = writes.map(({ table }) => {
        if (!table) return this.emptyTableFd;
        const packed = this.wideTables ? table : packTable(table);
        const fd = orThrow(
          native.mapCreate(BPF_MAP_TYPE.ARRAY, 'maglev_table', 4, 4, packed.length, MAGLEV_TABLE_FLAGS),
          'creating a Maglev table',
        );
        created.push(fd);
        orThrow(native.arrayFillU32(fd, packed, packed.length), 'filling a Maglev table');
        return fd;
      });
      const ids = Uint32Array.from(writes, (w) => w.tableId);
      const values = Uint32Array.from(fds);
      const written = orThrow(native.mapUpdateBatch(this.tables.fd, ids, values, ids.length, 0), 'installing Maglev tables');
      if (written !== ids.length) throw new Error(`installed ${written} of ${ids.length} Maglev tables`);
    } finally {
      for (const fd of created) closeFd(fd);
    }
  }

  /** The table a VIP's slot holds (backend id per slot), read back from the kernel (tests, checks). */
  readTable(tableId: number): Uint32Array | null {
    const idValue = this.tables.lookup(u32Key(tableId));
    if (!idValue) return null;
    const fd = orThrow(native.mapFdById(readU32(idValue)), 'opening a Maglev table');
    try {
      const info = mapInfo(fd);
      const elements = new Uint32Array(info.maxEntries);
      const value = Buffer.alloc(4);
      for (let i = 0; i < elements.length; i++) {
        orThrow(native.mapLookup(fd, u32Key(i), value), 'reading a Maglev table');
        elements[i] = readU32(value);
      }
      return this.wideTables ? elements : unpackTable(elements);
    } finally {
      closeFd(fd);
    }
  }

  /** An entry as encoded by the planner, or its fields (tests). */
  putBackend(id: number, entry: Buffer | BackendInfo): void {
    this.backends.update(u32Key(id), Buffer.isBuffer(entry) ? entry : backendInfo.encode(entry));
  }

  /** Every backend entry by id, encoded (cleared ones too). */
  *backendEntries(): Generator<[number, Buffer]> {
    for (const [key, value] of this.backends.entries()) yield [readU32(key), value];
  }

  /** Array entries cannot be deleted: zeroing clears the active flag. */
  clearBackend(id: number): void {
    this.backends.update(u32Key(id), Buffer.alloc(this.backends.valueSize));
  }

  resetVipCounters(vipId: number): void {
    this.vipStats.updateAllCpus(u32Key(vipId), Buffer.alloc(trafficCounters.size));
  }

  resetBackendCounters(backendId: number): void {
    this.backendStats.updateAllCpus(u32Key(backendId), Buffer.alloc(trafficCounters.size));
  }

  vipCounters(vipId: number): TrafficCounters {
    return sumCounters(this.vipStats.lookupPerCpu(u32Key(vipId)));
  }

  backendCounters(backendId: number): TrafficCounters {
    return sumCounters(this.backendStats.lookupPerCpu(u32Key(backendId)));
  }

  reasonCounters(): Record<Reason, bigint> {
    const out = {} as Record<Reason, bigint>;
    REASONS.forEach((reason, index) => {
      out[reason] = this.reasons.lookupPerCpu(u32Key(index)).reduce((sum, value) => sum + readU64(value), 0n);
    });
    return out;
  }

  /** Every tracked flow, both families. */
  *trackedFlows(): Generator<TrackedFlow> {
    for (const [key, value] of this.flowsV4.entries()) yield trackedFlow(flowKeyV4.decode(key), value);
    for (const [key, value] of this.flowsV6.entries()) yield trackedFlow(flowKeyV6.decode(key), value);
  }

  lookupFlow(key: Flow): TrackedFlow | undefined {
    const value = this.flowMap(key).lookup(encodeFlowKey(key));
    return value ? trackedFlow(key, value) : undefined;
  }

  deleteFlow(key: Flow): boolean {
    return this.flowMap(key).delete(encodeFlowKey(key));
  }

  private flowMap(key: Flow): BpfMap {
    return key.saddr.includes(':') ? this.flowsV6 : this.flowsV4;
  }
}

function encodeFlowKey(key: Flow): Buffer {
  return key.saddr.includes(':') ? flowKeyV6.encode(key) : flowKeyV4.encode(key);
}

function trackedFlow(key: Flow, value: Buffer): TrackedFlow {
  const state = flowState.decode(value);
  return { key, backendId: state.backend_id, closing: (state.flags & FLOW_FLAG_CLOSING) !== 0, lastSeen: state.last_seen };
}
