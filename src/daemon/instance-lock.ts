/**
 * One daemon per interface (of a network namespace), per pin directory
 * and per socket. Each is a lock file under /run/lock/lbctl, held with
 * flock(2) for the daemon's life and naming the holder's pid. The kernel
 * releases a lock when its process dies however it dies (SIGKILL too), so
 * a crashed daemon never keeps the next one out: taking over what it left
 * attached still works. A holder removes its file when it releases it; a
 * process that opened the file meanwhile finds, once it has the lock, that
 * it is no longer the file at that path, and starts again.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InputError } from '../model/errors.js';
import { privateDirectoryProblem } from '../util/atomic-write.js';
import { tryLockExclusive } from '../util/libc.js';

export const DEFAULT_LOCK_DIR = '/run/lock/lbctl';

export interface HeldLock {
  readonly path: string;
  release(): void;
}

/** What a lock stands for: its file name, and how to say what is in use. */
export interface LockSubject {
  readonly file: string;
  readonly what: string;
}

export function interfaceLock(netnsInode: number, interfaceName: string): LockSubject {
  return { file: `interface-${netnsInode}-${interfaceName}.lock`, what: `interface ${interfaceName} (network namespace ${netnsInode})` };
}

export function pinDirLock(pinDir: string): LockSubject {
  return { file: `pins-${digest(resolve(pinDir))}.lock`, what: `pin directory ${resolve(pinDir)}` };
}

export function socketLock(socketPath: string): LockSubject {
  return { file: `socket-${digest(resolve(socketPath))}.lock`, what: `socket ${resolve(socketPath)}` };
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** Takes the lock or throws an InputError naming the daemon that holds it. */
export function acquireLock(dir: string, subject: LockSubject): HeldLock {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  // /run/lock is writable by everyone: a directory someone else made could be used to keep the daemon out.
  const problem = privateDirectoryProblem(dir);
  if (problem) throw new InputError(`refusing the lock directory: ${problem}`);
  const path = join(dir, subject.file);
  for (;;) {
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o644);
    try {
      if (!tryLockExclusive(fd)) {
        throw new InputError(`${subject.what} is in use by the lbctl daemon with pid ${holder(path)} (lock ${path}); stop it first`);
      }
      // Locked the file that is there now, not one replaced meanwhile.
      if (fstatSync(fd).ino !== statSync(path, { throwIfNoEntry: false })?.ino) {
        closeSync(fd);
        continue;
      }
      ftruncateSync(fd, 0);
      writeSync(fd, `${process.pid}\n`, 0);
      return {
        path,
        release: () => {
          if (statSync(path, { throwIfNoEntry: false })?.ino === fstatSync(fd).ino) rmSync(path, { force: true });
          closeSync(fd);
        },
      };
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }
}

/** Releases locks in reverse order. */
export function releaseLocks(locks: readonly HeldLock[]): void {
  for (const lock of [...locks].reverse()) lock.release();
}

/** The pid a lock holder wrote (it writes right after locking: a moment's wait). */
function holder(path: string): string {
  for (let attempt = 0; attempt < 20; attempt++) {
    const pid = readFileSync(path, 'utf8').trim();
    if (/^\d+$/.test(pid)) return pid;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
  }
  return '(unknown)';
}
