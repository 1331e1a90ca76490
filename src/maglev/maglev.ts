/**
 * Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
 * Software Network Load Balancer", NSDI 2016, section 3.4), with weights.
 *
 * Each VIP gets a lookup table of M slots (M prime); the XDP program maps a
 * flow hash to a slot and forwards to the backend id stored there. Every
 * backend owns an almost equal share of slots (scaled by its weight), and a
 * change to the backend set moves few slots besides the ones it must.
 */
import { InputError } from '../model/errors.js';

/**
 * Table sizes (M). A larger table follows weights more exactly and moves
 * fewer slots when the backend set changes, at 4 bytes per slot;
 * MAX_TABLE_SIZE is the largest prime below 2^20.
 */
export const DEFAULT_TABLE_SIZE = 65537;
export const MIN_TABLE_SIZE = 251;
export const MAX_TABLE_SIZE = 1048573;

/**
 * Seeds of the two hashes of a backend's name that fix its permutation, with
 * h = murmur3x86_32 of the UTF-8 bytes of the name:
 * offset = h(name, OFFSET_SEED) mod M, skip = h(name, SKIP_SEED) mod (M - 1) + 1.
 * The values are arbitrary, but they are part of the table format and must
 * never change: every balancer serving a VIP (and every lbctl version) has to
 * build the same table, or flows moved between balancers by ECMP change
 * backend. They differ so that a backend's offset and skip are independent.
 */
export const OFFSET_SEED = 0x2f6b1c35;
export const SKIP_SEED = 0x91e37a4d;

export interface MaglevBackend {
  /** Stable identity of the backend, e.g. its address "10.10.0.11"; decides its permutation. */
  readonly name: string;
  /** Integer >= 1; the backend's share of slots is weight / (sum of weights). */
  readonly weight: number;
  /** The value stored in the table (a data-plane backend id, uint32). */
  readonly id: number;
}

export function isPrime(n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let divisor = 3; divisor * divisor <= n; divisor += 2) {
    if (n % divisor === 0) return false;
  }
  return true;
}

/** Throws InputError unless n is a prime in [MIN_TABLE_SIZE, MAX_TABLE_SIZE]. */
export function validateTableSize(n: number): number {
  // Only a prime M makes every skip in 1..M-1 coprime to M, so that each
  // permutation visits every slot.
  if (n >= MIN_TABLE_SIZE && n <= MAX_TABLE_SIZE && isPrime(n)) return n;
  throw new InputError(
    `invalid Maglev table size ${n}: must be a prime from ${MIN_TABLE_SIZE} to ${MAX_TABLE_SIZE}, e.g. ${DEFAULT_TABLE_SIZE}`,
  );
}

const MURMUR_C1 = 0xcc9e2d51;
const MURMUR_C2 = 0x1b873593;

function murmurScramble(k: number): number {
  k = Math.imul(k, MURMUR_C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, MURMUR_C2);
}

/** MurmurHash3_x86_32 (Austin Appleby's reference function), as an unsigned 32-bit integer. */
export function murmur3x86_32(bytes: Uint8Array, seed: number): number {
  const blockEnd = bytes.length & ~3;
  let h = seed | 0;
  for (let i = 0; i < blockEnd; i += 4) {
    const block = bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
    h ^= murmurScramble(block);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tailLength = bytes.length & 3;
  if (tailLength > 0) {
    let tail = bytes[blockEnd];
    if (tailLength >= 2) tail |= bytes[blockEnd + 1] << 8;
    if (tailLength === 3) tail |= bytes[blockEnd + 2] << 16;
    h ^= murmurScramble(tail);
  }
  h ^= bytes.length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The lookup table: tableSize entries, each the id of the backend owning
 * that slot. Depends only on the set of backends (not their order) and the
 * table size.
 */
export function buildMaglevTable(backends: readonly MaglevBackend[], tableSize = DEFAULT_TABLE_SIZE): Uint32Array {
  const size = validateTableSize(tableSize);
  const sorted = sortedAndChecked(backends);
  const count = sorted.length;
  const ids = new Uint32Array(count);
  const weights = new Float64Array(count);
  // position[i] is backend i's next preference (offset + j*skip) mod M,
  // advanced by addition so that j*skip never has to be formed.
  const position = new Uint32Array(count);
  const skip = new Uint32Array(count);
  const encoder = new TextEncoder();
  let maxWeight = 0;
  for (let i = 0; i < count; i++) {
    const backend = sorted[i];
    const name = encoder.encode(backend.name);
    ids[i] = backend.id;
    weights[i] = backend.weight;
    maxWeight = Math.max(maxWeight, backend.weight);
    position[i] = murmur3x86_32(name, OFFSET_SEED) % size;
    skip[i] = (murmur3x86_32(name, SKIP_SEED) % (size - 1)) + 1;
  }

  const table = new Uint32Array(size);
  // Any uint32 is a valid id, so a free slot cannot be marked in the table itself.
  const taken = new Uint8Array(size);
  // Katran's weighted turns: a backend takes a slot whenever its credit
  // reaches the largest weight, i.e. weight/maxWeight slots per round. With
  // equal weights everyone takes one slot per round, as in the paper.
  const credit = new Float64Array(count);
  let filled = 0;
  // Terminates: a heaviest backend takes a slot every round, and every
  // permutation visits all M slots, so each turn finds a free one while
  // filled < M.
  for (;;) {
    for (let i = 0; i < count; i++) {
      credit[i] += weights[i];
      if (credit[i] < maxWeight) continue;
      credit[i] -= maxWeight;
      const backendSkip = skip[i];
      let slot = position[i];
      while (taken[slot]) {
        slot += backendSkip;
        if (slot >= size) slot -= size;
      }
      taken[slot] = 1;
      table[slot] = ids[i];
      slot += backendSkip;
      position[i] = slot >= size ? slot - size : slot;
      filled++;
      if (filled === size) return table;
    }
  }
}

/** Entries per backend id. */
export function countEntries(table: Uint32Array): Map<number, number> {
  const counts = new Map<number, number>();
  for (const id of table) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

/**
 * Sorting by name makes the table independent of input order. Bad entries
 * are programming errors here: the caller validates user input earlier.
 */
function sortedAndChecked(backends: readonly MaglevBackend[]): MaglevBackend[] {
  if (backends.length === 0) throw new Error('Maglev table needs at least one backend');
  // Code-unit order, not localeCompare: it must not depend on the locale.
  const sorted = [...backends].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const ids = new Set<number>();
  let previousName: string | undefined;
  for (const { name, weight, id } of sorted) {
    if (name === previousName) throw new Error(`duplicate Maglev backend name "${name}"`);
    if (!Number.isSafeInteger(weight) || weight < 1) {
      throw new Error(`Maglev backend "${name}": weight ${weight} is not a positive integer`);
    }
    if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) {
      throw new Error(`Maglev backend "${name}": id ${id} is not a uint32`);
    }
    if (ids.has(id)) throw new Error(`duplicate Maglev backend id ${id} (backend "${name}")`);
    ids.add(id);
    previousName = name;
  }
  return sorted;
}
