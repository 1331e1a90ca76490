/**
 * Layouts of the map keys and values declared in bpf/lib/abi.h, and codecs
 * between them and plain objects. bpf/lib/abi.h is the source of truth:
 * test/abi.test.ts compares every layout here with the BTF of the compiled
 * objects (name, offset and size of each member, size of each struct).
 */
import { endianness } from 'node:os';
import { addressBytes, formatAddressBytes } from '../model/address.js';

const LITTLE = endianness() === 'LE';

type Kind = 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'be32' | 'ipv4' | 'ipv6' | 'mac' | 'bytes16' | 'pad';

interface Field<K extends Kind = Kind> {
  readonly kind: K;
  readonly offset: number;
  readonly size: number;
}

type ValueOf<K extends Kind> = K extends 'u64'
  ? bigint
  : K extends 'ipv4' | 'ipv6' | 'mac'
    ? string
    : K extends 'bytes16'
      ? Buffer
      : number;
type Fields = Record<string, Field>;
type Shape<F extends Fields> = {
  [N in keyof F as F[N]['kind'] extends 'pad' ? never : N]: ValueOf<F[N]['kind']>;
};

const KIND_SIZE: Record<Exclude<Kind, 'pad'>, number> = {
  u8: 1,
  u16: 2,
  u32: 4,
  u64: 8,
  be16: 2,
  be32: 4,
  ipv4: 4,
  ipv6: 16,
  mac: 6,
  bytes16: 16,
};

function field<K extends Exclude<Kind, 'pad'>>(kind: K, offset: number): Field<K> {
  return { kind, offset, size: KIND_SIZE[kind] };
}

function pad(offset: number, size: number): Field<'pad'> {
  return { kind: 'pad', offset, size };
}

export interface StructLayout<F extends Fields = Fields> {
  readonly name: string;
  readonly size: number;
  readonly fields: F;
  encode(value: Shape<F>): Buffer;
  decode(buf: Buffer): Shape<F>;
}

function defineStruct<F extends Fields>(name: string, size: number, fields: F): StructLayout<F> {
  const entries = Object.entries(fields);
  return {
    name,
    size,
    fields,
    encode(value) {
      const buf = Buffer.alloc(size);
      for (const [fieldName, f] of entries) {
        if (f.kind !== 'pad') writeField(buf, f, (value as Record<string, unknown>)[fieldName], `${name}.${fieldName}`);
      }
      return buf;
    },
    decode(buf) {
      const out: Record<string, unknown> = {};
      for (const [fieldName, f] of entries) if (f.kind !== 'pad') out[fieldName] = readField(buf, f);
      return out as Shape<F>;
    },
  };
}

function writeField(buf: Buffer, f: Field, value: unknown, where: string): void {
  if (value === undefined) throw new Error(`${where} is missing`);
  switch (f.kind) {
    case 'u8':
      buf.writeUInt8(value as number, f.offset);
      break;
    case 'u16':
      writeU16(buf, value as number, f.offset);
      break;
    case 'u32':
      writeU32(buf, value as number, f.offset);
      break;
    case 'u64':
      if (LITTLE) buf.writeBigUInt64LE(value as bigint, f.offset);
      else buf.writeBigUInt64BE(value as bigint, f.offset);
      break;
    case 'be16':
      buf.writeUInt16BE(value as number, f.offset);
      break;
    case 'be32':
      buf.writeUInt32BE(value as number, f.offset);
      break;
    case 'ipv4':
      Buffer.from((value as string).split('.').map(Number)).copy(buf, f.offset);
      break;
    case 'ipv6':
      addressBytes(6, value as string).copy(buf, f.offset);
      break;
    case 'mac':
      Buffer.from((value as string).split(':').map((h) => parseInt(h, 16))).copy(buf, f.offset);
      break;
    case 'bytes16':
      (value as Buffer).copy(buf, f.offset, 0, 16);
      break;
    case 'pad':
      break;
  }
}

function readField(buf: Buffer, f: Field): unknown {
  switch (f.kind) {
    case 'u8':
      return buf.readUInt8(f.offset);
    case 'u16':
      return readU16(buf, f.offset);
    case 'u32':
      return readU32(buf, f.offset);
    case 'u64':
      return LITTLE ? buf.readBigUInt64LE(f.offset) : buf.readBigUInt64BE(f.offset);
    case 'be16':
      return buf.readUInt16BE(f.offset);
    case 'be32':
      return buf.readUInt32BE(f.offset);
    case 'ipv4':
      return Array.from(buf.subarray(f.offset, f.offset + 4)).join('.');
    case 'ipv6':
      return formatAddressBytes(6, buf.subarray(f.offset, f.offset + 16));
    case 'mac':
      return Array.from(buf.subarray(f.offset, f.offset + 6), (b) => b.toString(16).padStart(2, '0')).join(':');
    case 'bytes16':
      return Buffer.from(buf.subarray(f.offset, f.offset + 16));
    case 'pad':
      return undefined;
  }
}

/** Host-order integers, as the BPF program sees them. */
export function writeU32(buf: Buffer, value: number, offset = 0): void {
  if (LITTLE) buf.writeUInt32LE(value, offset);
  else buf.writeUInt32BE(value, offset);
}
export function readU32(buf: Buffer, offset = 0): number {
  return LITTLE ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset);
}
export function writeU16(buf: Buffer, value: number, offset = 0): void {
  if (LITTLE) buf.writeUInt16LE(value, offset);
  else buf.writeUInt16BE(value, offset);
}
export function readU16(buf: Buffer, offset = 0): number {
  return LITTLE ? buf.readUInt16LE(offset) : buf.readUInt16BE(offset);
}
export function writeU64(buf: Buffer, value: bigint, offset = 0): void {
  if (LITTLE) buf.writeBigUInt64LE(value, offset);
  else buf.writeBigUInt64BE(value, offset);
}
export function readU64(buf: Buffer, offset = 0): bigint {
  return LITTLE ? buf.readBigUInt64LE(offset) : buf.readBigUInt64BE(offset);
}
export function u32Key(value: number): Buffer {
  const key = Buffer.alloc(4);
  writeU32(key, value);
  return key;
}

// Mirrors of the enums in bpf/lib/abi.h.
export const FORWARD = { l2dsr: 1, ipip: 2 } as const;
export const BACKEND_FLAG_ACTIVE = 1 << 0;
export const BACKEND_FLAG_IPV6 = 1 << 1;
export const REASONS = [
  'not_ip',
  'not_vip',
  'malformed',
  'fragment',
  'l4_truncated',
  'l4_unsupported',
  'ipv6_routing',
  'vlan_stacked',
  'no_backend',
  'encap_failed',
  'kill_switch',
  'icmp_echo_replied',
  'icmp_error_forwarded',
  'too_big_replied',
  'too_big_dropped',
  'not_for_this_host',
] as const;
export type Reason = (typeof REASONS)[number];
/** What happened to the packets counted under a reason (the comments of enum lb_reason). */
export type ReasonFate = 'passed' | 'dropped' | 'answered' | 'forwarded';
export const REASON_INFO: Readonly<Record<Reason, { readonly fate: ReasonFate; readonly meaning: string }>> = {
  not_ip: { fate: 'passed', meaning: 'neither IPv4 nor IPv6 (ARP, LLDP...)' },
  not_vip: { fate: 'passed', meaning: 'not addressed to a VIP' },
  malformed: { fate: 'passed', meaning: 'IP or L4 header inconsistent with the frame' },
  fragment: { fate: 'passed', meaning: 'IPv4 fragment or IPv6 fragment header' },
  l4_truncated: { fate: 'passed', meaning: 'TCP/UDP/ICMP header cut short' },
  l4_unsupported: { fate: 'passed', meaning: 'neither TCP, UDP nor a handled ICMP type' },
  ipv6_routing: { fate: 'passed', meaning: 'IPv6 routing header' },
  vlan_stacked: { fate: 'passed', meaning: 'more than one VLAN tag' },
  no_backend: { fate: 'dropped', meaning: 'VIP without a usable backend' },
  encap_failed: { fate: 'dropped', meaning: 'no room to add the tunnel header' },
  kill_switch: { fate: 'passed', meaning: 'VIP packet while the kill-switch is tripped or engaged' },
  icmp_echo_replied: { fate: 'answered', meaning: 'echo request to a VIP address' },
  icmp_error_forwarded: { fate: 'forwarded', meaning: 'ICMP too-big about a VIP flow, sent to its backend' },
  too_big_replied: { fate: 'answered', meaning: 'too big once encapsulated: ICMP too-big sent to the client' },
  too_big_dropped: { fate: 'dropped', meaning: 'too big once encapsulated, and DF clear or an ICMP error itself' },
  not_for_this_host: { fate: 'passed', meaning: "unicast to another host's MAC (a switch flooding an unknown destination)" },
};
export const IPPROTO = { tcp: 6, udp: 17 } as const;
export const PROTOCOL_BY_NUMBER: Readonly<Record<number, 'tcp' | 'udp'>> = { 6: 'tcp', 17: 'udp' };

export const lbSettings = defineStruct('lb_settings', 24, {
  kill_switch_deadline: field('u64', 0),
  abi_fingerprint: field('u64', 8),
  mac: field('mac', 16),
  flags: field('u16', 22),
});

/** enum lb_settings_flags. */
export const SETTINGS_FLAG_WIDE_TABLES = 1 << 0;
export const SETTINGS_FLAG_ANY_PORT_VIPS = 1 << 1;
/** enum lb_vip_flags: a new flow's slot from the hash of its client's address alone. */
export const VIP_FLAG_HASH_SOURCE = 1 << 0;
/** Backend ids a Maglev table of 16-bit entries can name (the others need wide tables). */
export const NARROW_TABLE_MAX_ID = 0xffff;

export const vipKeyV4 = defineStruct('vip_key_v4', 8, {
  addr: field('ipv4', 0),
  port: field('be16', 4),
  proto: field('u8', 6),
  pad: pad(7, 1),
});

export const vipKeyV6 = defineStruct('vip_key_v6', 20, {
  addr: field('ipv6', 0),
  port: field('be16', 16),
  proto: field('u8', 18),
  pad: pad(19, 1),
});

export const vipInfo = defineStruct('vip_info', 16, {
  vip_id: field('u32', 0),
  table_id: field('u32', 4),
  table_size: field('u32', 8),
  flags: field('u32', 12),
});

export const flowKeyV4 = defineStruct('flow_key_v4', 16, {
  saddr: field('ipv4', 0),
  daddr: field('ipv4', 4),
  sport: field('be16', 8),
  dport: field('be16', 10),
  proto: field('u8', 12),
  pad: pad(13, 3),
});

export const flowKeyV6 = defineStruct('flow_key_v6', 40, {
  saddr: field('ipv6', 0),
  daddr: field('ipv6', 16),
  sport: field('be16', 32),
  dport: field('be16', 34),
  proto: field('u8', 36),
  pad: pad(37, 3),
});

export const FLOW_FLAG_CLOSING = 1 << 0;

export const flowState = defineStruct('flow_state', 16, {
  backend_id: field('u32', 0),
  flags: field('u32', 4),
  last_seen: field('u64', 8),
});

/** Addresses of either family: IPv4 in the first 4 bytes (LB_BACKEND_F_IPV6 says which). */
export const backendInfo = defineStruct('backend_info', 64, {
  dst_mac: field('mac', 0),
  src_mac: field('mac', 6),
  ifindex: field('u32', 12),
  forward: field('u8', 16),
  flags: field('u8', 17),
  mtu: field('u16', 18),
  address: field('bytes16', 20),
  tunnel_src: field('bytes16', 36),
  tunnel_csum_base: field('u32', 52),
  vip_id: field('u32', 56),
  tunnel_src_spread: field('be32', 60),
});

/**
 * tunnel_src_spread for an outer source range of `hostBits` host bits (an
 * IPv4 /(32 - hostBits), or the last hostBits bits of an IPv6 prefix; at
 * most 32): each flow's outer source is the range's first address plus
 * the low hostBits bits of the flow's hash (flow-hash.ts outerSourceHost).
 */
export function tunnelSourceSpread(hostBits: number): number {
  if (!Number.isInteger(hostBits) || hostBits < 0 || hostBits > 32)
    throw new Error(`host bits of an outer source range: 0 to 32, not ${hostBits}`);
  return hostBits === 32 ? 0xffffffff : 2 ** hostBits - 1;
}

export const trafficCounters = defineStruct('traffic_counters', 32, {
  packets: field('u64', 0),
  bytes: field('u64', 8),
  new_flows: field('u64', 16),
  moved_flows: field('u64', 24),
});

/** Every layout shared with bpf/lib/abi.h, for the BTF check. */
export const SHARED_LAYOUTS: readonly StructLayout[] = [
  lbSettings,
  vipKeyV4,
  vipKeyV6,
  vipInfo,
  flowKeyV4,
  flowKeyV6,
  flowState,
  backendInfo,
  trafficCounters,
];

export type LbSettings = ReturnType<typeof lbSettings.decode>;
export type VipKeyV4 = ReturnType<typeof vipKeyV4.decode>;
export type VipInfo = ReturnType<typeof vipInfo.decode>;
export type FlowKeyV4 = ReturnType<typeof flowKeyV4.decode>;
export type FlowKeyV6 = ReturnType<typeof flowKeyV6.decode>;
export type VipKeyV6 = ReturnType<typeof vipKeyV6.decode>;
export type BackendInfo = ReturnType<typeof backendInfo.decode>;
export type TrafficCounters = ReturnType<typeof trafficCounters.decode>;

/** Adds up one per-CPU value per CPU. */
export function sumCounters(perCpu: readonly Buffer[]): TrafficCounters {
  const total = { packets: 0n, bytes: 0n, new_flows: 0n, moved_flows: 0n };
  for (const value of perCpu) {
    const c = trafficCounters.decode(value);
    total.packets += c.packets;
    total.bytes += c.bytes;
    total.new_flows += c.new_flows;
    total.moved_flows += c.moved_flows;
  }
  return total;
}

/** Words of the vip_filter map (bpf/lib/maps.h LB_VIP_FILTER_WORDS): 64 bits each. */
export const VIP_FILTER_WORDS = 1024;

/** The vip_filter bit of a VIP's address, as bpf/lib/vip.h computes it: its 32-bit words mixed by multiplicative hashing, the top 16 bits. */
export function vipFilterBit(family: 4 | 6, address: string): number {
  const bytes = addressBytes(family, address);
  let hash = 0;
  for (let i = 0; i < bytes.length; i += 4) hash = Math.imul(hash ^ bytes.readUInt32BE(i), 0x9e3779b1);
  return hash >>> 16;
}

/**
 * Sum of the outer header's address words as the BPF program loads them
 * (bpf/lib/forward.h adds the per-packet words and folds).
 */
export function tunnelChecksumBase(source: string, destination: string): number {
  const bytes = Buffer.from([...source.split('.'), ...destination.split('.')].map(Number));
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += readU16(bytes, i);
  return sum;
}
