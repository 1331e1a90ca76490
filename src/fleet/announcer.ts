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
import { DEFAULT_ANNOUNCE_PROTO, DEFAULT_ANNOUNCE_TABLE, validateAnnounceProto, validateAnnounceTable } from '../model/announce.js';
import { InputError } from '../model/errors.js';
import type { SharedDescriptor } from './shared-descriptor.js';
import { isInterfaceName, TunDevice, TunError } from './tun.js';

const run = promisify(execFile);

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

  /** The descriptor as any thread may close it (the watchdog). */
  get shared(): SharedDescriptor {
    return this.tun.shared;
  }

  /** The device is held: neither close() nor another thread has closed its descriptor. */
  get held(): boolean {
    return !this.closed && this.tun.descriptor >= 0;
  }

  /**
   * Creates and brings up the device. A device of that name that exists
   * already (another lbctl on the same interface, or anything else) is
   * refused, never shared: sharing would tie the announcements to the other
   * holder's life.
   */
  static async create(options: AnnouncerOptions): Promise<Announcer> {
    const table = validateAnnounceTable(options.table ?? DEFAULT_ANNOUNCE_TABLE);
    const proto = validateAnnounceProto(options.proto ?? DEFAULT_ANNOUNCE_PROTO);
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

  /**
   * Withdraws and announces many VIPs with one `ip` process (withdrawals
   * first). Each is idempotent; the first failure is thrown once every
   * line has been tried, and the VIPs listed are those that worked.
   */
  update({ announce = [], withdraw = [] }: { announce?: readonly string[]; withdraw?: readonly string[] }): Promise<void> {
    const lines = [
      ...withdraw.map((vip) => ({ op: 'withdraw' as const, ...this.parse(vip) })),
      ...announce.map((vip) => ({ op: 'announce' as const, ...this.parse(vip) })),
    ];
    if (lines.length === 0) return this.serially(async () => undefined);
    return this.serially(async () => {
      const failed = await batch(
        lines.map(({ op, family, address }) => [op === 'announce' ? 'replace' : 'del', ...this.route(family, address)].join(' ')),
      );
      let first: string | undefined;
      for (const [i, line] of lines.entries()) {
        const reason = failed.get(i);
        const harmless = line.op === 'withdraw' && reason !== undefined && /No such process|not found/i.test(reason);
        if (reason !== undefined && !harmless) {
          first ??= `announcer: cannot ${line.op} ${line.address}: ${reason}`;
          continue;
        }
        if (line.op === 'announce') this.announced.add(line.address);
        else this.announced.delete(line.address);
      }
      if (first) throw new Error(first);
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

/**
 * `ip -force -batch -` over `route` commands: which of them (by index)
 * failed, and why. iproute2 prints the kernel's answer, then "Command
 * failed -:LINE", for each line that failed.
 */
function batch(commands: readonly string[]): Promise<Map<number, string>> {
  return new Promise((resolve, reject) => {
    const child = execFile('ip', ['-force', '-batch', '-'], (error, _stdout, stderr) => {
      const failed = new Map<number, string>();
      let reason = '';
      for (const line of stderr.split('\n')) {
        const at = /^Command failed -:(\d+)/.exec(line);
        if (at) {
          failed.set(Number(at[1]) - 1, reason || 'failed');
          reason = '';
        } else if (line.trim() !== '') {
          reason = line.trim().replace(/^(RTNETLINK answers|Error): /, '');
        }
      }
      if (error && failed.size === 0) reject(new Error(`announcer: ip -batch failed: ${firstLine(error)}`));
      else resolve(failed);
    });
    child.stdin!.end(commands.map((c) => `route ${c}\n`).join(''));
  });
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
