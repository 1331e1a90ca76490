/**
 * The data plane's flow hash and slot choice (bpf/lib/flow.h), so the
 * control plane can tell which Maglev slot a flow lands in without sending
 * a packet (slotHash: VIPs that hash sources only use sourceHash). Inputs are numbers (addresses as big-endian words), as in C.
 */
import { addressBytes } from '../model/address.js';
import { VIP_FLAG_HASH_SOURCE } from './abi.js';

const JHASH_INITVAL = 0xdeadbeef;
export const FLOW_HASH_SEED = 0x4c42;

function rol32(word: number, shift: number): number {
  return ((word << shift) | (word >>> (32 - shift))) >>> 0;
}

export function jhash3Words(a0: number, b0: number, c0: number, initval: number): number {
  const init = (JHASH_INITVAL + (3 << 2) + initval) >>> 0;
  let a = (a0 + init) >>> 0;
  let b = (b0 + init) >>> 0;
  let c = (c0 + init) >>> 0;
  c = ((c ^ b) - rol32(b, 14)) >>> 0;
  a = ((a ^ c) - rol32(c, 11)) >>> 0;
  b = ((b ^ a) - rol32(a, 25)) >>> 0;
  c = ((c ^ b) - rol32(b, 16)) >>> 0;
  a = ((a ^ c) - rol32(c, 4)) >>> 0;
  b = ((b ^ a) - rol32(a, 14)) >>> 0;
  c = ((c ^ b) - rol32(b, 24)) >>> 0;
  return c;
}

/** A flow from client to VIP; addresses of one family. */
export interface Flow {
  readonly saddr: string;
  readonly daddr: string;
  readonly sport: number;
  readonly dport: number;
  readonly proto: number;
}

function words(address: string): number[] {
  const bytes = addressBytes(address.includes(':') ? 6 : 4, address);
  return Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readUInt32BE(i * 4));
}

export function flowHash(flow: Flow): number {
  const ports = ((flow.sport << 16) | flow.dport) >>> 0;
  const seed = (FLOW_HASH_SEED + flow.proto) >>> 0;
  const s = words(flow.saddr);
  const d = words(flow.daddr);
  if (s.length === 1) return jhash3Words(s[0]!, d[0]!, ports, seed);
  let h = jhash3Words(s[0]!, s[1]!, s[2]!, seed);
  h = jhash3Words(s[3]!, d[0]!, d[1]!, h);
  return jhash3Words(d[2]!, d[3]!, ports, h);
}

export const SOURCE_HASH_SEED = 0x5348;

/** The hash of a client's address alone (bpf/lib/flow.h source_hash_v4/v6). */
export function sourceHash(saddr: string): number {
  const s = words(saddr);
  if (s.length === 1) return jhash3Words(s[0]!, 0, 0, SOURCE_HASH_SEED);
  return jhash3Words(s[3]!, 0, 0, jhash3Words(s[0]!, s[1]!, s[2]!, SOURCE_HASH_SEED));
}

/** What picks a new flow's slot in a VIP's Maglev table: its hash, or its client's for a VIP with VIP_FLAG_HASH_SOURCE. */
export function slotHash(flow: Flow, vipFlags: number): number {
  return vipFlags & VIP_FLAG_HASH_SOURCE ? sourceHash(flow.saddr) : flowHash(flow);
}

/** What picks a tunnelled flow's outer source in a range and its outer IPv6 flow label (bpf/lib/flow.h encap_hash). */
export function encapHash(flow: Flow): number {
  const s = words(flow.saddr);
  if (s.length === 1) return flowHash(flow);
  const d = words(flow.daddr);
  const fold = (w: number[]) => (w[0]! ^ w[1]! ^ w[2]! ^ w[3]!) >>> 0;
  return jhash3Words(fold(s), fold(d), ((flow.sport << 16) | flow.dport) >>> 0, (FLOW_HASH_SEED + flow.proto) >>> 0);
}

/** The host part of a flow's outer source within a range (tunnel_src_spread: bpf/lib/forward.h): the low bits of its encapHash. */
export function outerSourceHost(hash: number, spread: number): number {
  return (hash & spread) >>> 0;
}

/** The flow label of a flow's outer IPv6 header (bpf/lib/forward.h): the top 20 bits of its encapHash, 1 for 0. */
export function outerFlowLabel(hash: number): number {
  return hash >>> 12 || 1;
}

export function tableSlot(hash: number, tableSize: number): number {
  return Number((BigInt(hash) * BigInt(tableSize)) >> 32n);
}
