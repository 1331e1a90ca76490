/**
 * The vip_filter map (bpf/lib/vip.h): one bit per hash of a destination
 * address, set while some VIP entry has an address with that bit. Packets
 * to an address whose bit is clear pass without a VIP lookup. Kept by
 * BalancerDataplane with the VIP entries: a bit is set before the first
 * entry of its address is written and cleared after the last one is gone,
 * so no VIP's packets ever meet a clear bit.
 */
import { formatVip, type VipAddress } from '../model/address.js';
import { readU64, u32Key, VIP_FILTER_WORDS, vipFilterBit, writeU64 } from './abi.js';
import { type BpfMap } from './bpf-map.js';

export class VipFilter {
  private readonly keys = new Set<string>();
  private readonly entriesPerBit = new Map<number, number>();

  /** Rewrites the whole filter for the VIP entries the maps hold (a new data plane has none). */
  constructor(
    private readonly map: BpfMap,
    vips: Iterable<VipAddress>,
  ) {
    for (const vip of vips) this.count(vip, 1);
    const words = new BigUint64Array(VIP_FILTER_WORDS);
    for (const bit of this.entriesPerBit.keys()) words[bit >> 6]! |= 1n << BigInt(bit & 63);
    words.forEach((word, i) => this.writeWord(i, word));
  }

  /** Before a VIP entry is written. False when the entry was already counted (a rewrite). */
  add(vip: VipAddress): boolean {
    if (this.keys.has(formatVip(vip))) return false;
    if (this.count(vip, 1) === 1) this.setBit(vipFilterBit(vip.family, vip.address), true);
    return true;
  }

  /** After a VIP entry is deleted. */
  remove(vip: VipAddress): void {
    if (!this.keys.has(formatVip(vip))) return;
    if (this.count(vip, -1) === 0) this.setBit(vipFilterBit(vip.family, vip.address), false);
  }

  /** Counts the entry in or out; returns the entries left with its bit. */
  private count(vip: VipAddress, delta: 1 | -1): number {
    const bit = vipFilterBit(vip.family, vip.address);
    const n = (this.entriesPerBit.get(bit) ?? 0) + delta;
    if (delta > 0) this.keys.add(formatVip(vip));
    else this.keys.delete(formatVip(vip));
    if (n > 0) this.entriesPerBit.set(bit, n);
    else this.entriesPerBit.delete(bit);
    return n;
  }

  private setBit(bit: number, on: boolean): void {
    const word = readU64(this.map.lookup(u32Key(bit >> 6))!);
    const mask = 1n << BigInt(bit & 63);
    this.writeWord(bit >> 6, on ? word | mask : word & ~mask);
  }

  private writeWord(index: number, word: bigint): void {
    const value = Buffer.alloc(8);
    writeU64(value, word);
    this.map.update(u32Key(index), value);
  }
}
