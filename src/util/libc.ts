/** The few libc calls Node has no API for, through koffi. */
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
const flockCall = libc.func('int flock(int fd, int operation)');
const ifNameToIndexCall = libc.func('unsigned int if_nametoindex(const char *ifname)');
const fcntlCall = libc.func('int fcntl(int fd, int cmd, ...)');

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/** Takes an exclusive flock(2) on fd without waiting: false when another open file holds it. */
export function tryLockExclusive(fd: number): boolean {
  if ((flockCall(fd, LOCK_EX | LOCK_NB) as number) === 0) return true;
  const errno = koffi.errno();
  if (errno === EWOULDBLOCK) return false;
  throw Object.assign(new Error(`flock failed: errno ${errno}`), { errno });
}

/** The interface's index in this network namespace, or 0 when there is no such interface. */
export function ifNameToIndex(name: string): number {
  return ifNameToIndexCall(name) as number;
}

/** Writes to fd return EAGAIN instead of waiting (a pipe or socket whose reader stopped). */
export function setNonBlocking(fd: number): void {
  const flags = fcntlCall(fd, F_GETFL) as number;
  if (flags < 0 || (fcntlCall(fd, F_SETFL, 'int', flags | O_NONBLOCK) as number) < 0) {
    throw new Error(`fcntl(O_NONBLOCK) on fd ${fd} failed: errno ${koffi.errno()}`);
  }
}
