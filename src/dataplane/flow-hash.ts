/**
 * The data plane's flow hash and slot choice (bpf/lib/jhash.h and
 * xdp_balancer.bpf.c), so the control plane can tell which Maglev slot a
 * flow lands in without sending a packet.
 */
import { addressBytes } from '../model/address.js';
import { readU32 } from './abi.js';

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

export interface FlowV4 {
  readonly saddr: string;
  readonly daddr: string;
  readonly sport: number;
  readonly dport: number;
  readonly proto: number;
}

/** Words are taken as the program loads them from the packet (host order). */
export function flowHashV4(flow: FlowV4): number {
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(flow.sport, 0);
  ports.writeUInt16BE(flow.dport, 2);
  return jhash3Words(
    readU32(addressBytes(4, flow.saddr)),
    readU32(addressBytes(4, flow.daddr)),
    readU32(ports),
    (FLOW_HASH_SEED + flow.proto) >>> 0,
  );
}

export function tableSlot(hash: number, tableSize: number): number {
  return Number((BigInt(hash) * BigInt(tableSize)) >> 32n);
}
