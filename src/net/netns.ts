/**
 * Network namespaces: which one a process runs in (the inode of its
 * /proc/PID/ns/net, and the name `ip netns` gave it, if any), and how to
 * run a command in the namespaces of another process.
 */
import { closeSync, constants, fstatSync, openSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface NetnsIdentity {
  /** Inode of the namespace (what /proc/PID/ns/net links to: net:[INODE]). */
  readonly inode: number;
  /** Its name under /run/netns, or null. */
  readonly name: string | null;
}

const NAMED_NETNS_DIR = '/run/netns';

/** The network namespace of a process (this one by default). */
export function netnsOf(pid: number | 'self' = 'self'): NetnsIdentity {
  const ns = statSync(`/proc/${pid}/ns/net`);
  let name: string | null = null;
  try {
    for (const entry of readdirSync(NAMED_NETNS_DIR)) {
      const named = statSync(join(NAMED_NETNS_DIR, entry), { throwIfNoEntry: false });
      if (named && named.ino === ns.ino && named.dev === ns.dev) {
        name = entry;
        break;
      }
    }
  } catch {
    // no named namespaces
  }
  return { inode: ns.ino, name };
}

/** A hold on another process's namespaces and working directory, so that they outlive it. */
export interface NamespaceHold {
  /** The argv prefix that runs a command there; empty when they are this process's own. */
  readonly prefix: readonly string[];
  release(): void;
}

/**
 * Holds the network and mount namespaces and the working directory of
 * process `pid`, after checking that its network namespace is the expected
 * one (the pid is that of the process meant, seen from here). Returns null
 * when that cannot be checked: the process is not visible from here
 * (another PID namespace), or is another.
 */
export function holdNamespacesOf(pid: number, expectedNetnsInode: number): NamespaceHold | null {
  const fds: number[] = [];
  const release = () => fds.splice(0).forEach((fd) => closeSync(fd));
  try {
    // Opened before anything is compared: the pid cannot change meaning in between.
    fds.push(openSync(`/proc/${pid}/ns/net`, 'r'));
    if (fstatSync(fds[0]!).ino !== expectedNetnsInode) {
      release();
      return null;
    }
    if (fstatSync(fds[0]!).ino === statSync('/proc/self/ns/net').ino) {
      release();
      return { prefix: [], release };
    }
    fds.push(openSync(`/proc/${pid}/ns/mnt`, 'r'), openSync(`/proc/${pid}/cwd`, constants.O_RDONLY | constants.O_DIRECTORY));
  } catch {
    release();
    return null;
  }
  // Usable through /proc/self/fd after the process is gone.
  const [net, mnt, cwd] = fds.map((fd) => `/proc/${process.pid}/fd/${fd}`);
  return { prefix: ['nsenter', `--net=${net}`, `--mount=${mnt}`, `--wd=${cwd}`, '--'], release };
}
