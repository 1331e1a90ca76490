import koffi from 'koffi';

/** close(2) itself: node's fs.closeSync would warn about a descriptor it did not open (or that another thread did). */
const close = koffi.load('libc.so.6').func('int close(int fd)') as (fd: number) => number;

const OPEN = 0;
const CLOSED = 1;

/**
 * A descriptor that any thread of the process may close, exactly once: the
 * watchdog's worker closes it when the main thread is stuck (src/fleet/watchdog.ts),
 * and a later close() by the main thread must not close whatever has
 * reused the number since. Its state lives in a SharedArrayBuffer: [fd, open/closed].
 */
export class SharedDescriptor {
  private constructor(private readonly cells: Int32Array) {}

  static wrap(fd: number): SharedDescriptor {
    const cells = new Int32Array(new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT));
    cells[0] = fd;
    cells[1] = OPEN;
    return new SharedDescriptor(cells);
  }

  /** The same descriptor in another thread, from `buffer`. */
  static attach(buffer: SharedArrayBuffer): SharedDescriptor {
    return new SharedDescriptor(new Int32Array(buffer));
  }

  get buffer(): SharedArrayBuffer {
    return this.cells.buffer as SharedArrayBuffer;
  }

  get fd(): number {
    return this.cells[0]!;
  }

  get open(): boolean {
    return Atomics.load(this.cells, 1) === OPEN;
  }

  /** Closes it unless some thread did already; whether this call closed it. */
  closeOnce(): boolean {
    if (Atomics.compareExchange(this.cells, 1, OPEN, CLOSED) !== OPEN) return false;
    close(this.fd);
    return true;
  }
}
