/**
 * Ids for VIPs and backends, indexes into data-plane arrays. Freed ids are
 * reused oldest first, so a just-freed id (whose counters an operator may
 * still be reading) is the last to be handed out again. Ids taken over
 * from maps a previous daemon wrote are never handed out until released.
 */
export class IdPool {
  private readonly free: number[] = [];
  private head = 0;
  private nextFresh: number;
  /** Taken-over ids at or above nextFresh, skipped when it reaches them. */
  private readonly takenAhead: Set<number>;

  constructor(
    private readonly first: number,
    private readonly limit: number,
    taken: Iterable<number> = [],
  ) {
    this.nextFresh = first;
    this.takenAhead = new Set([...taken].filter((id) => id >= first && id < limit));
  }

  /** An independent copy: plans allocate from a copy, so the current state stays as it is. */
  clone(): IdPool {
    const copy = new IdPool(this.first, this.limit);
    for (let i = this.head; i < this.free.length; i++) copy.free.push(this.free[i]!);
    copy.nextFresh = this.nextFresh;
    for (const id of this.takenAhead) copy.takenAhead.add(id);
    return copy;
  }

  get available(): number {
    return this.free.length - this.head + (this.limit - this.nextFresh) - this.takenAhead.size;
  }

  allocate(): number | undefined {
    if (this.head < this.free.length) {
      const id = this.free[this.head++]!;
      if (this.head > 1024 && this.head * 2 > this.free.length) {
        this.free.splice(0, this.head);
        this.head = 0;
      }
      return id;
    }
    while (this.nextFresh < this.limit) {
      const id = this.nextFresh++;
      if (!this.takenAhead.delete(id)) return id;
    }
    return undefined;
  }

  release(id: number): void {
    if (id < this.first || id >= this.limit) throw new Error(`id ${id} outside pool [${this.first}, ${this.limit})`);
    // A taken-over id not reached yet becomes an ordinary fresh one.
    if (this.takenAhead.delete(id)) return;
    this.free.push(id);
  }
}
