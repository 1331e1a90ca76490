import { BPF_ANY, orThrow, closeFd, native } from './libbpf.js';

const ENOENT = 2;

/** A BPF map reached through its file descriptor; keys and values are raw bytes. */
export class BpfMap {
  constructor(
    readonly name: string,
    readonly fd: number,
    readonly keySize: number,
    readonly valueSize: number,
    readonly maxEntries: number,
  ) {}

  lookup(key: Buffer): Buffer | null {
    const value = Buffer.alloc(this.valueSize);
    const result = native.mapLookup(this.fd, key, value);
    if (result === -ENOENT) return null;
    orThrow(result, `lookup in map ${this.name}`);
    return value;
  }

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    orThrow(native.mapUpdate(this.fd, key, value, flags), `update of map ${this.name}`);
  }

  /** Returns false when the key was not there. */
  delete(key: Buffer): boolean {
    const result = native.mapDelete(this.fd, key);
    if (result === -ENOENT) return false;
    orThrow(result, `delete from map ${this.name}`);
    return true;
  }

  *keys(): Generator<Buffer> {
    let previous: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const result = native.mapNextKey(this.fd, previous, next);
      if (result === -ENOENT) return;
      orThrow(result, `iteration over map ${this.name}`);
      yield next;
      previous = next;
    }
  }

  /**
   * Every entry, read in batches of one system call each. Entries that
   * change during the walk may be seen in either state, or twice.
   */
  *entries(batchSize = 4096): Generator<[Buffer, Buffer]> {
    // A hash map's batch position is a bucket index (u32).
    let position: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(8);
      const keys = Buffer.alloc(this.keySize * batchSize);
      const values = Buffer.alloc(this.valueSize * batchSize);
      const count = [batchSize];
      const more = orThrow(native.mapLookupBatch(this.fd, position, next, keys, values, count), `reading map ${this.name}`);
      for (let i = 0; i < count[0]!; i++) {
        yield [keys.subarray(i * this.keySize, (i + 1) * this.keySize), values.subarray(i * this.valueSize, (i + 1) * this.valueSize)];
      }
      if (!more) return;
      position = next;
    }
  }

  close(): void {
    closeFd(this.fd);
  }
}

/** Per-CPU maps return one value per possible CPU, each padded to 8 bytes. */
export class PerCpuBpfMap extends BpfMap {
  readonly cpus = orThrow(native.numPossibleCpus(), 'count of possible CPUs');
  readonly slotSize = Math.ceil(this.valueSize / 8) * 8;

  lookupPerCpu(key: Buffer): Buffer[] {
    const all = Buffer.alloc(this.slotSize * this.cpus);
    orThrow(native.mapLookup(this.fd, key, all), `lookup in map ${this.name}`);
    return Array.from({ length: this.cpus }, (_, cpu) => all.subarray(cpu * this.slotSize, cpu * this.slotSize + this.valueSize));
  }

  /** Writes the same value on every CPU (used to zero counters). */
  updateAllCpus(key: Buffer, value: Buffer): void {
    const all = Buffer.alloc(this.slotSize * this.cpus);
    for (let cpu = 0; cpu < this.cpus; cpu++) value.copy(all, cpu * this.slotSize);
    orThrow(native.mapUpdate(this.fd, key, all, BPF_ANY), `update of map ${this.name}`);
  }
}
