/**
 * Ids for VIPs and backends, indexes into data-plane arrays. Freed ids are
 * reused oldest first, so a just-freed id (whose counters an operator may
 * still be reading) is the last to be handed out again.
 */
export class IdPool {
  private readonly free: number[] = [];
  private head = 0;
  private nextFresh: number;

  constructor(private readonly first: number, private readonly limit: number) {
    this.nextFresh = first;
  }

  get available(): number {
    return this.free.length - this.head + (this.limit - this.nextFresh);
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
    return this.nextFresh < this.limit ? this.nextFresh++ : undefined;
  }

  release(id: number): void {
    if (id < this.first || id >= this.limit) throw new Error(`id ${id} outside pool [${this.first}, ${this.limit})`);
    this.free.push(id);
  }
}
