/**
 * A non-persistent TUN device held open by this process, through libc
 * (koffi): the kernel deletes it, and every route through it, the moment the
 * last descriptor closes, which includes this process dying of SIGKILL. That
 * is what ties lbctl's VIP announcements to the daemon's life (docs/fleet.md).
 */
import koffi from 'koffi';
import { getSystemErrorMap } from 'node:util';
import { SharedDescriptor } from './shared-descriptor.js';

const libc = koffi.load('libc.so.6');
const native = {
  open: libc.func('int open(const char *path, int flags, ...)'),
  ioctl: libc.func('int ioctl(int fd, unsigned long request, ...)'),
  close: libc.func('int close(int fd)'),
};

// <fcntl.h>, <linux/if_tun.h>, <linux/if.h> (x86-64 and arm64 share them).
const O_RDWR = 0o2;
/**
 * Without it every child the daemon spawns (`ip monitor`, health-check
 * helpers) would inherit the descriptor and keep the device, and so the
 * announcements, alive after the daemon died.
 */
const O_CLOEXEC = 0o2000000;
const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
/** Refuse a device that exists already instead of attaching to it. */
const IFF_TUN_EXCL = 0x8000;
const IFNAMSIZ = 16;
/** struct ifreq: the name, then a union whose first member here is short ifr_flags. */
const IFREQ_SIZE = 40;

export const TUN_CLONE_DEVICE = '/dev/net/tun';

/** Why a TUN device could not be had: errno's name (EBUSY: the name is taken) and a one-line message. */
export class TunError extends Error {
  override readonly name = 'TunError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

function errnoText(): { code: string; text: string } {
  const errno = koffi.errno();
  const [code, text] = getSystemErrorMap().get(-errno) ?? [`errno ${errno}`, 'unknown error'];
  return { code, text };
}

/** A valid interface name: 1-15 bytes, no slash, colon, blank or dot-only name (dev_valid_name()). */
export function isInterfaceName(name: string): boolean {
  return /^[^\s/:]{1,15}$/.test(name) && Buffer.byteLength(name) < IFNAMSIZ && name !== '.' && name !== '..';
}

export class TunDevice {
  private constructor(
    readonly name: string,
    readonly shared: SharedDescriptor,
  ) {}

  /**
   * Creates the device NAME in this process's network namespace (IFF_TUN,
   * no packet information, never attached to an existing device). Down until
   * someone sets it up. Needs CAP_NET_ADMIN.
   */
  static create(name: string): TunDevice {
    if (!isInterfaceName(name)) throw new TunError(`"${name}" is not an interface name (1-15 characters, no blank, "/" or ":")`, 'EINVAL');
    const fd = native.open(TUN_CLONE_DEVICE, O_RDWR | O_CLOEXEC) as number;
    if (fd < 0) {
      const { code, text } = errnoText();
      throw new TunError(`cannot open ${TUN_CLONE_DEVICE}: ${text} (${code})`, code);
    }
    const ifreq = Buffer.alloc(IFREQ_SIZE);
    ifreq.write(name, 0, 'utf8');
    ifreq.writeUInt16LE(IFF_TUN | IFF_NO_PI | IFF_TUN_EXCL, IFNAMSIZ);
    if ((native.ioctl(fd, TUNSETIFF, 'void *', ifreq) as number) < 0) {
      const { code, text } = errnoText();
      native.close(fd);
      throw new TunError(`cannot create the TUN device ${name}: ${text} (${code})`, code);
    }
    return new TunDevice(name, SharedDescriptor.wrap(fd));
  }

  /** The descriptor that keeps the device; -1 once closed (by close(), or by another thread). */
  get descriptor(): number {
    return this.shared.open ? this.shared.fd : -1;
  }

  /** Deletes the device with every route through it. Idempotent. */
  close(): void {
    this.shared.closeOnce();
  }
}
