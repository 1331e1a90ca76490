/**
 * Interfaces, addresses, routes and neighbours of the current network
 * namespace, read through iproute2's JSON output.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parseIpAddress } from '../model/address.js';
import { InputError } from '../model/errors.js';

const run = promisify(execFile);

export interface Link {
  readonly ifindex: number;
  readonly name: string;
  readonly mac: string;
  readonly mtu: number;
  readonly up: boolean;
}

export interface InterfaceAddress {
  readonly family: 4 | 6;
  readonly address: string;
  readonly prefixLength: number;
  readonly scope: string;
  readonly secondary: boolean;
}

async function ipJson<T>(args: string[]): Promise<T> {
  const { stdout } = await run('ip', ['-j', ...args], { maxBuffer: 64 * 1024 * 1024 });
  return (stdout.trim() === '' ? [] : JSON.parse(stdout)) as T;
}

function stderrOf(error: unknown): string {
  return String((error as { stderr?: string }).stderr ?? (error as Error).message).trim();
}

export async function getLink(name: string): Promise<Link> {
  let links: Array<{ ifindex: number; ifname: string; address?: string; mtu: number; flags: string[] }>;
  try {
    links = await ipJson(['link', 'show', 'dev', name]);
  } catch (error) {
    if (/does not exist|Cannot find device/.test(stderrOf(error))) throw new InputError(`no such interface: ${name}`);
    throw error;
  }
  const link = links[0];
  if (!link) throw new InputError(`no such interface: ${name}`);
  return {
    ifindex: link.ifindex,
    name: link.ifname,
    mac: link.address ?? '00:00:00:00:00:00',
    mtu: link.mtu,
    up: link.flags.includes('UP'),
  };
}

/** One address of `ip -j addr show` (addr_info). */
export interface RawAddress {
  readonly family: string;
  readonly local: string;
  readonly prefixlen: number;
  readonly scope: string;
  readonly secondary?: boolean;
}

export function interfaceAddresses(raw: readonly RawAddress[] = []): InterfaceAddress[] {
  return raw.map((a) => ({
    family: a.family === 'inet6' ? 6 : 4,
    address: a.local,
    prefixLength: a.prefixlen,
    scope: a.scope,
    secondary: a.secondary === true,
  }));
}

/** The address an interface uses as source: its first global, primary one. */
export function primaryOf(addresses: readonly InterfaceAddress[], family: 4 | 6): string | undefined {
  return addresses.find((a) => a.family === family && a.scope === 'global' && !a.secondary)?.address;
}

export async function getAddresses(name: string): Promise<InterfaceAddress[]> {
  const links = await ipJson<Array<{ addr_info?: RawAddress[] }>>(['addr', 'show', 'dev', name]);
  return interfaceAddresses(links[0]?.addr_info);
}

/** The address the interface uses as source: its first global, primary one; none when the interface is gone. */
export async function primaryAddress(name: string, family: 4 | 6): Promise<string | undefined> {
  let addresses: InterfaceAddress[];
  try {
    addresses = await getAddresses(name);
  } catch (error) {
    if (/does not exist|Cannot find device/.test(stderrOf(error))) return undefined;
    throw error;
  }
  return primaryOf(addresses, family);
}

/** Every address of this network namespace, with the interface that holds it (canonical spelling). */
export async function hostAddresses(): Promise<Map<string, string>> {
  const links = await ipJson<Array<{ ifname: string; addr_info?: RawAddress[] }>>(['addr', 'show']);
  const found = new Map<string, string>();
  for (const link of links) {
    for (const a of interfaceAddresses(link.addr_info)) found.set(parseIpAddress(a.address).address, link.ifname);
  }
  return found;
}
