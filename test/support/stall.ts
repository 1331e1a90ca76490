/**
 * Stops one thread of another process, the others running on: ptrace
 * attaches to a single thread, so seizing and interrupting a process's
 * main thread (its tid is its pid) freezes the daemon's event loop exactly
 * as a stuck handler would, while its worker threads (the watchdog) and the
 * kernel's data plane carry on. SIGSTOP would stop every thread.
 *
 *   node stall.js PID MS    (prints { stoppedAt, resumedAt }: wall-clock ms)
 */
import koffi from 'koffi';
import { fileURLToPath } from 'node:url';

const PTRACE_DETACH = 17;
const PTRACE_SEIZE = 0x4206;
const PTRACE_INTERRUPT = 0x4207;
const WALL = 0x40000000;

const libc = koffi.load('libc.so.6');
const ptrace = libc.func('long ptrace(int request, int pid, void *addr, void *data)') as (r: number, p: number, a: null, d: null) => number;
const waitpid = libc.func('int waitpid(int pid, _Out_ int *status, int options)') as (p: number, s: number[], o: number) => number;

const wallClock = (): number => performance.timeOrigin + performance.now();

export interface Stall {
  /** When the thread was stopped (wall clock, ms). */
  readonly stoppedAt: number;
  /** When it runs again. */
  readonly resumed: Promise<number>;
}

/** Stops thread `tid` (a process's main thread: its pid) at once, and lets it go after `ms`. */
export function stallThread(tid: number, ms: number): Stall {
  if (ptrace(PTRACE_SEIZE, tid, null, null) !== 0) throw new Error(`ptrace(SEIZE, ${tid}) failed: errno ${koffi.errno()}`);
  const status = [0];
  if (ptrace(PTRACE_INTERRUPT, tid, null, null) !== 0 || waitpid(tid, status, WALL) !== tid) {
    const errno = koffi.errno();
    ptrace(PTRACE_DETACH, tid, null, null);
    throw new Error(`stopping thread ${tid} failed: errno ${errno}`);
  }
  const stoppedAt = wallClock();
  const resumed = new Promise<number>((resolve) =>
    setTimeout(() => {
      ptrace(PTRACE_DETACH, tid, null, null);
      resolve(wallClock());
    }, ms),
  );
  return { stoppedAt, resumed };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [pid, ms] = process.argv.slice(2).map(Number);
  if (!pid || !ms) {
    process.stderr.write('usage: node stall.js PID MS\n');
    process.exit(2);
  }
  const { stoppedAt, resumed } = stallThread(pid, ms);
  void resumed.then((resumedAt) => process.stdout.write(`${JSON.stringify({ stoppedAt, resumedAt })}\n`));
}
