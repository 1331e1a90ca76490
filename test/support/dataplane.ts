/** Writing a data plane's maps directly, for packet tests (the daemon uses the reconciler). */
import {
  BACKEND_FLAG_ACTIVE,
  BACKEND_FLAG_IPV6,
  type BackendInfo,
  FORWARD,
  tunnelChecksumBase,
  tunnelSourceSpread,
} from '../../src/dataplane/abi.js';
import { type BalancerDataplane } from '../../src/dataplane/balancer.js';
import { type Flow, encapHash, outerSourceHost } from '../../src/dataplane/flow-hash.js';
import { addressBytes, formatAddressBytes, parseVip } from '../../src/model/address.js';

/** An address in a 16-byte field: IPv4 in the first 4 bytes. */
export function field16(address: string): Buffer {
  const out = Buffer.alloc(16);
  addressBytes(address.includes(':') ? 6 : 4, address).copy(out);
  return out;
}

export interface BackendOptions {
  readonly address: string;
  readonly forward: 'l2dsr' | 'ipip';
  readonly dstMac: string;
  readonly srcMac: string;
  readonly ifindex: number;
  readonly tunnelSource?: string;
  /** Host bits of the outer source range starting at tunnelSource (0: that one source). */
  readonly tunnelSourceBits?: number;
  readonly mtu?: number;
  readonly vipId?: number;
  readonly active?: boolean;
}

export function backendEntry(o: BackendOptions): BackendInfo {
  const v6 = o.address.includes(':');
  const tunnelled = o.forward === 'ipip';
  return {
    dst_mac: o.dstMac,
    src_mac: o.srcMac,
    ifindex: o.ifindex,
    forward: FORWARD[o.forward],
    flags: (o.active === false ? 0 : BACKEND_FLAG_ACTIVE) | (v6 ? BACKEND_FLAG_IPV6 : 0),
    mtu: o.mtu ?? 0,
    address: field16(o.address),
    tunnel_src: tunnelled ? field16(o.tunnelSource!) : Buffer.alloc(16),
    tunnel_csum_base: tunnelled && !v6 ? tunnelChecksumBase(o.tunnelSource!, o.address) : 0,
    vip_id: o.vipId ?? 0,
    tunnel_src_spread: tunnelled ? tunnelSourceSpread(o.tunnelSourceBits ?? 0) : 0,
  };
}

/** An outer source range: its first address and host bits (0: one source). */
export interface SourceRange {
  readonly base: string;
  readonly bits: number;
}

/** The outer source of a flow from a range, as bpf/lib/forward.h picks it: its first address plus the low bits of the flow's hash. */
export function outerSource(range: SourceRange, flow: Flow): string {
  const family = range.base.includes(':') ? 6 : 4;
  const bytes = addressBytes(family, range.base);
  const last = bytes.length - 4;
  bytes.writeUInt32BE((bytes.readUInt32BE(last) | outerSourceHost(encapHash(flow), tunnelSourceSpread(range.bits))) >>> 0, last);
  return formatAddressBytes(family, bytes);
}

/** A VIP whose table cycles through the given backend ids. */
export function putVipWithTable(
  dataplane: BalancerDataplane,
  vip: string,
  owners: readonly number[],
  vipId: number,
  tableSize: number,
): Uint32Array {
  const table = new Uint32Array(tableSize);
  for (let i = 0; i < table.length; i++) table[i] = owners[i % owners.length]!;
  dataplane.putTables([{ tableId: vipId, table }]);
  dataplane.putVip(parseVip(vip), { vip_id: vipId, table_id: vipId, table_size: tableSize, flags: 0 });
  return table;
}

export function clearFlows(dataplane: BalancerDataplane): void {
  for (const map of [dataplane.flowsV4, dataplane.flowsV6]) for (const key of [...map.keys()]) map.delete(key);
}

/** Deletes every VIP entry and VIP address through the data plane (which keeps its address filter with the entries). */
export function clearVips(dataplane: BalancerDataplane): void {
  for (const [vip] of [...dataplane.vipEntries()]) dataplane.deleteVip(vip);
  for (const address of dataplane.vipAddresses()) dataplane.deleteVipAddress(address.includes(':') ? 6 : 4, address);
}
