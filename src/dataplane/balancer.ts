/**
 * xdp_balancer loaded into the kernel, with typed access to its maps. Only
 * the reconciler (src/daemon/reconciler.ts) writes through this.
 */
import { bpfObjectPath } from '../paths.js';
import {
  backendInfo, BackendInfo, readU64, REASONS, Reason, TrafficCounters, trafficCounters, u32Key,
  vipInfo, VipInfo, vipKeyV4, VipKeyV4, writeU32,
} from './abi.js';
import { BpfMap, PerCpuBpfMap } from './bpf-map.js';
import { loadBpfObject, LoadedObject } from './bpf-object.js';
import { BPF_F_INNER_MAP, BPF_MAP_TYPE, check, closeFd, native } from './libbpf.js';

export interface BalancerLimits {
  readonly maxVips: number;
  readonly maxBackends: number;
  readonly flowTableSize: number;
}

export const DEFAULT_LIMITS: BalancerLimits = { maxVips: 4096, maxBackends: 65536, flowTableSize: 1_048_576 };

export class BalancerDataplane {
  readonly vips: BpfMap;
  readonly tables: BpfMap;
  readonly backends: BpfMap;
  readonly flows: BpfMap;
  readonly vipStats: PerCpuBpfMap;
  readonly backendStats: PerCpuBpfMap;
  readonly reasons: PerCpuBpfMap;

  private constructor(private readonly object: LoadedObject, readonly limits: BalancerLimits) {
    this.vips = object.map('vips_v4');
    this.tables = object.map('maglev_tables');
    this.backends = object.map('backends');
    this.flows = object.map('flows_v4');
    this.vipStats = object.perCpuMap('vip_stats');
    this.backendStats = object.perCpuMap('backend_stats');
    this.reasons = object.perCpuMap('reasons');
  }

  static load(limits: BalancerLimits = DEFAULT_LIMITS): BalancerDataplane {
    const object = loadBpfObject(bpfObjectPath('xdp_balancer'), 'xdp_balancer', {
      vips_v4: limits.maxVips,
      // Twice the VIPs: a table can be built in a spare slot and switched
      // to in one write of the VIP entry when its size changes.
      maglev_tables: limits.maxVips * 2,
      vip_stats: limits.maxVips,
      backends: limits.maxBackends,
      backend_stats: limits.maxBackends,
      flows_v4: limits.flowTableSize,
    });
    return new BalancerDataplane(object, limits);
  }

  get programFd(): number {
    return this.object.programFd;
  }

  pin(dir: string): void {
    this.object.pin(dir);
  }

  close(): void {
    this.object.close();
  }

  putVip(key: VipKeyV4, info: VipInfo): void {
    this.vips.update(vipKeyV4.encode(key), vipInfo.encode(info));
  }

  deleteVip(key: VipKeyV4): void {
    this.vips.delete(vipKeyV4.encode(key));
  }

  /**
   * Builds the table in a new inner map and swaps it in with one update of
   * the outer map: a packet sees either the old table or the new one.
   */
  putTable(tableId: number, entries: Uint32Array): void {
    const fd = check(native.mapCreate(BPF_MAP_TYPE.ARRAY, 'maglev_table', 4, 4, entries.length, BPF_F_INNER_MAP), 'creating a Maglev table');
    try {
      const keys = new Uint32Array(entries.length);
      for (let i = 0; i < keys.length; i++) keys[i] = i;
      const written = check(native.mapUpdateBatch(fd, keys, entries, entries.length, 0), 'filling a Maglev table');
      if (written !== entries.length) throw new Error(`filled ${written} of ${entries.length} Maglev table entries`);
      const value = Buffer.alloc(4);
      writeU32(value, fd);
      this.tables.update(u32Key(tableId), value);
    } finally {
      closeFd(fd);
    }
  }

  deleteTable(tableId: number): void {
    this.tables.delete(u32Key(tableId));
  }

  putBackend(id: number, info: BackendInfo): void {
    this.backends.update(u32Key(id), backendInfo.encode(info));
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
}

function sumCounters(perCpu: Buffer[]): TrafficCounters {
  return perCpu.map((value) => trafficCounters.decode(value)).reduce(
    (sum, c) => ({ packets: sum.packets + c.packets, bytes: sum.bytes + c.bytes }),
    { packets: 0n, bytes: 0n },
  );
}
