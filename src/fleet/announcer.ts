/**
 * How lbctl announces a VIP to a fleet's router without speaking BGP: a host
 * route (/32, /128) in a kernel routing table of lbctl's own, through a TUN
 * device this process holds open. The node's routing daemon (BIRD's kernel
 * protocol with `learn`, or FRR) picks the route up and announces it over
 * BGP. No `ip rule` points at the table, so the node's own forwarding never
 * changes. The device, and with it every route, dies with the process: a
 * crashed daemon withdraws in milliseconds (docs/fleet.md).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { parseIpAddress } from '../model/address.js';
import { InputError } from '../model/errors.js';
import { isInterfaceName, TunDevice, TunError } from './tun.js';

const run = promisify(execFile);

export const DEFAULT_ANNOUNCE_TABLE = 100;
export const DEFAULT_ANNOUNCE_PROTO = 201;

/** Tables the kernel itself uses: unspec, default, main, local. */
const RESERVED_TABLES = new Set([0, 253, 254, 255]);
/**
 * Route protocol numbers that the kernel (0-4) or another routing program
 * owns, from iproute2's rt_protos: BIRD (12) and FRR's zebra (11, 186-192)
 * delete routes of their own numbers when they start.
 */
const TAKEN_PROTOS = new Map<number, string>([
  [0, 'unspec'],
  [1, 'redirect'],
  [2, 'kernel'],
  [3, 'boot'],
  [4, 'static'],
  [8, 'gated'],
  [9, 'ra'],
  [10, 'mrt'],
  [11, 'zebra'],
  [12, 'bird'],
  [13, 'dnrouted'],
  [14, 'xorp'],
  [15, 'ntk'],
  [16, 'dhcp'],
  [18, 'keepalived'],
  [42, 'babel'],
  [99, 'openr'],
  [186, 'bgp'],
  [187, 'isis'],
  [188, 'ospf'],
  [189, 'rip'],
  [192, 'eigrp'],
]);

export interface AnnouncerOptions {
  /** The interface the daemon balances on: names the device (announceDevice()) unless `device` is given. */
  readonly interface: string;
  /** The TUN device's name (at most 15 characters). */
  readonly device?: string;
  /** Kernel routing table the routes go to (default 100); no `ip rule` may point at it. */
  readonly table?: number;
  /** The routes' `proto` number (default 201), which the routing daemon filters on. */
  readonly proto?: number;
}

const DEVICE_PREFIX = 'lbv-';

/**
 * The announce device of the daemon on `iface`: "lbv-IFACE", or when that is
 * longer than an interface name may be, the name's start and a hash of all
 * of it (interface names are unique in a namespace, so are these).
 */
export function announceDevice(iface: string): string {
  if (!isInterfaceName(iface)) throw new InputError(`invalid interface "${iface}": not an interface name`);
  const plain = `${DEVICE_PREFIX}${iface}`;
  if (plain.length <= 15) return plain;
  const hash = createHash('sha256').update(iface).digest('hex').slice(0, 4);
  return `${DEVICE_PREFIX}${iface.slice(0, 6)}-${hash}`;
}

export function checkAnnounceTable(table: number): number {
  if (!Number.isInteger(table) || table < 1 || table > 0xffffffff || RESERVED_TABLES.has(table)) {
    throw new InputError(`invalid announce table ${table}: a routing table number 1-4294967295 other than 253, 254, 255 (the kernel's)`);
  }
  return table;
}

export function checkAnnounceProto(proto: number): number {
  if (!Number.isInteger(proto) || proto < 1 || proto > 255) {
    throw new InputError(`invalid announce proto ${proto}: a route protocol number 1-255`);
  }
  const owner = TAKEN_PROTOS.get(proto);
  if (owner)
    throw new InputError(`invalid announce proto ${proto}: it is "${owner}"'s (iproute2 rt_protos); pick an unused one such as 201`);
  return proto;
}

function firstLine(error: unknown): string {
  const text = String((error as { stderr?: string }).stderr || (error as Error).message).trim();
  return text.split('\n')[0]!.replace(/^(RTNETLINK answers|Error): /, '');
}

export class Announcer {
  private readonly announced = new Set<string>();
  /** Route changes run one at a time, in call order: the last call decides. */
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    private readonly tun: TunDevice,
    readonly table: number,
    readonly proto: number,
  ) {}

  get device(): string {
    return this.tun.name;
  }

  /** The descriptor that holds the device (-1 once closed): for diagnostics. */
  get descriptor(): number {
    return this.tun.descriptor;
  }

  /**
   * Creates and brings up the device. A device of that name that exists
   * already (another lbctl on the same interface, or anything else) is
   * refused, never shared: sharing would tie the announcements to the other
   * holder's life.
   */
  static async create(options: AnnouncerOptions): Promise<Announcer> {
    const table = checkAnnounceTable(options.table ?? DEFAULT_ANNOUNCE_TABLE);
    const proto = checkAnnounceProto(options.proto ?? DEFAULT_ANNOUNCE_PROTO);
    const name = options.device ?? announceDevice(options.interface);
    if (!isInterfaceName(name)) throw new InputError(`invalid announce device "${name}": not an interface name (1-15 characters)`);
    let tun: TunDevice;
    try {
      tun = TunDevice.create(name);
    } catch (error) {
      if (error instanceof TunError && error.code === 'EBUSY') throw new InputError(await takenMessage(name));
      throw new Error(`announcer: ${(error as Error).message}`);
    }
    try {
      // No IPv6 link-local address: nothing is ever sent through the device,
      // and without an address the kernel sends no router solicitations into
      // it. (Set before the device goes up: in the same request, the kernel
      // brings it up first and generates the address.)
      if (existsSync('/proc/sys/net/ipv6')) await run('ip', ['link', 'set', 'dev', name, 'addrgenmode', 'none']);
      await run('ip', ['link', 'set', 'dev', name, 'up']);
    } catch (error) {
      tun.close();
      throw new Error(`announcer: cannot bring ${name} up: ${firstLine(error)}`);
    }
    return new Announcer(tun, table, proto);
  }

  /** The VIPs announced, sorted. */
  list(): string[] {
    return [...this.announced].sort();
  }

  /** Puts VIP/32 (VIP/128) in the table. Idempotent. */
  announce(vip: string): Promise<void> {
    const { family, address } = this.parse(vip);
    return this.serially(async () => {
      await this.ip(family, ['route', 'replace', ...this.route(family, address)], `announce ${address}`);
      this.announced.add(address);
    });
  }

  /** Takes VIP's route out of the table. Idempotent: a VIP that is not announced is fine. */
  withdraw(vip: string): Promise<void> {
    const { family, address } = this.parse(vip);
    return this.serially(async () => {
      await this.ip(family, ['route', 'del', ...this.route(family, address)], `withdraw ${address}`, /No such process|not found/i);
      this.announced.delete(address);
    });
  }

  /** Every route through the device, both families, also ones this object did not add. */
  withdrawAll(): Promise<void> {
    this.assertOpen();
    return this.serially(async () => {
      for (const family of [4, 6] as const) {
        // A table nothing was ever put in does not exist yet: nothing to withdraw.
        await this.ip(family, ['route', 'flush', 'table', String(this.table), 'dev', this.device], 'withdraw all', /table does not exist/);
      }
      this.announced.clear();
    });
  }

  /** Deletes the device: the kernel drops its routes with it. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    this.tun.close();
    this.announced.clear();
  }

  private route(family: 4 | 6, address: string): string[] {
    return [`${address}/${family === 4 ? 32 : 128}`, 'dev', this.device, 'table', String(this.table), 'proto', String(this.proto)];
  }

  private parse(vip: string): { family: 4 | 6; address: string } {
    this.assertOpen();
    return parseIpAddress(vip, 'VIP');
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`announcer: ${this.device} is closed`);
  }

  private serially(task: () => Promise<void>): Promise<void> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async ip(family: 4 | 6, args: string[], what: string, harmless?: RegExp): Promise<void> {
    try {
      await run('ip', [`-${family}`, ...args]);
    } catch (error) {
      const reason = firstLine(error);
      if (harmless?.test(reason)) return;
      throw new Error(`announcer: cannot ${what} (ip -${family} ${args.join(' ')}): ${reason}`);
    }
  }
}

/** Why the device name is taken, in one line: what kind of device holds it. */
async function takenMessage(name: string): Promise<string> {
  let what = 'a device of that name';
  try {
    const { stdout } = await run('ip', ['-d', '-j', 'link', 'show', 'dev', name]);
    const [link] = JSON.parse(stdout) as { linkinfo?: { info_kind?: string; info_data?: { persist?: boolean; type?: string } } }[];
    const kind = link?.linkinfo?.info_kind;
    const data = link?.linkinfo?.info_data;
    if (kind === 'tun' && data?.type === 'tun' && data.persist === false) {
      what = 'a TUN device that some process holds open (another lbctl announcing for the same interface?)';
    } else if (kind === 'tun') {
      what = `a ${data?.persist ? 'persistent ' : ''}${data?.type ?? 'tun'} device`;
    } else {
      what = `a${kind ? ` ${kind}` : 'n'} interface`;
    }
  } catch {
    // Gone in the meantime: say what the kernel said.
  }
  return `announcer: the announce device ${name} exists already (${what}); refusing to share it: stop its owner or delete it (ip link del ${name})`;
}
