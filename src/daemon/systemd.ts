/**
 * systemd's readiness protocol (sd_notify(3)) for Type=notify units: one
 * datagram to the socket named by $NOTIFY_SOCKET. Node has no Unix
 * datagram sockets, so the three libc calls go through koffi.
 */
import type { KoffiFunction } from 'koffi';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SUN_PATH_MAX = 108;

let libc: { socket: KoffiFunction; sendto: KoffiFunction; close: KoffiFunction } | undefined;

/** Loaded on first use: the CLI imports this module and should not load native code for it. */
async function loadLibc() {
  if (!libc) {
    const { default: koffi } = await import('koffi');
    const lib = koffi.load('libc.so.6');
    libc = {
      socket: lib.func('int socket(int domain, int type, int protocol)'),
      sendto: lib.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
      close: lib.func('int close(int fd)'),
    };
  }
  return libc;
}

/** Started by systemd (a unit's ExecStart): stay in the foreground, log to the journal. */
export function underSystemd(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.NOTIFY_SOCKET || env.INVOCATION_ID);
}

/**
 * Sends "READY=1", "STOPPING=1", "STATUS=..." (lines joined by \n).
 * Returns false when there is no $NOTIFY_SOCKET; throws if sending fails.
 */
export async function notifySystemd(state: string, socketPath = process.env.NOTIFY_SOCKET): Promise<boolean> {
  if (!socketPath) return false;
  if (!socketPath.startsWith('/') && !socketPath.startsWith('@'))
    throw new Error(`NOTIFY_SOCKET "${socketPath}" is neither a path nor an abstract socket`);
  const path = Buffer.from(socketPath.startsWith('@') ? `\0${socketPath.slice(1)}` : socketPath);
  if (path.length >= SUN_PATH_MAX) throw new Error(`NOTIFY_SOCKET "${socketPath}" is too long`);
  const address = Buffer.alloc(2 + SUN_PATH_MAX);
  address.writeUInt16LE(AF_UNIX, 0);
  path.copy(address, 2);
  // A path ends with its NUL; an abstract name is exactly its bytes.
  const addressLength = 2 + path.length + (socketPath.startsWith('@') ? 0 : 1);
  const c = await loadLibc();
  const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new Error('sd_notify: socket() failed');
  try {
    const message = Buffer.from(state);
    const sent = c.sendto(fd, message, message.length, 0, address, addressLength) as number;
    if (sent !== message.length) throw new Error(`sd_notify: sendto ${socketPath} failed`);
  } finally {
    c.close(fd);
  }
  return true;
}
