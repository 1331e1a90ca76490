import { isIPv4, isIPv6 } from 'node:net';
import { InputError, quote } from './errors.js';

export type Family = 4 | 6;
export type Protocol = 'tcp' | 'udp';
export type ForwardMethod = 'l2dsr' | 'ipip';

export const FORWARD_METHODS: readonly ForwardMethod[] = ['l2dsr', 'ipip'];
/**
 * What picks a new flow's backend: the whole flow (addresses, ports,
 * protocol), or the client's address alone, so that every connection of a
 * client goes to the same backend while the set of backends holds (client
 * stickiness, IPVS's sh scheduler).
 */
export type VipHash = 'flow' | 'source';
export const VIP_HASHES: readonly VipHash[] = ['flow', 'source'];
export const DEFAULT_VIP_HASH: VipHash = 'flow';
export const PROTOCOLS: readonly Protocol[] = ['tcp', 'udp'];

/** A virtual service: what clients connect to. */
export interface VipAddress {
  readonly family: Family;
  readonly address: string;
  readonly port: number;
  readonly protocol: Protocol;
}

export function parseIpAddress(text: string, what = 'address'): { family: Family; address: string } {
  // Node accepts "fe80::1%eth0"; an address here is a global one, and a zone
  // would otherwise be dropped silently (or mangle an embedded IPv4 part).
  if (text.includes('%')) throw new InputError(`invalid ${what} ${quote(text)}: zone IDs (%INTERFACE) are not accepted`);
  if (isIPv4(text)) return { family: 4, address: canonicalIPv4(text) };
  if (isIPv6(text)) return { family: 6, address: canonicalIPv6(text) };
  throw new InputError(`invalid ${what} ${quote(text)}: expected an IPv4 or IPv6 address`);
}

/** Parses `10.0.0.100:80/tcp` or `[2001:db8::10]:80/udp`; port 0 is the VIP of all ports of its address and protocol. */
export function parseVip(text: string): VipAddress {
  const match = /^(?:\[([^\]]+)\]|([^:/[\]]+)):(\d+)\/([a-z]+)$/i.exec(text.trim());
  if (!match) {
    throw new InputError(`invalid VIP ${quote(text)}: expected ADDRESS:PORT/PROTOCOL, e.g. 10.0.0.100:80/tcp or [2001:db8::10]:80/tcp`);
  }
  const [, bracketed, plain, portText, protocolText] = match;
  const host = bracketed ?? plain!;
  if (bracketed !== undefined && !isIPv6(bracketed)) {
    throw new InputError(`invalid VIP ${quote(text)}: only IPv6 addresses go in brackets`);
  }
  if (plain !== undefined && !isIPv4(plain)) {
    throw new InputError(`invalid VIP ${quote(text)}: ${quote(plain)} is not an IPv4 address (write IPv6 as [ADDRESS]:PORT)`);
  }
  const { family, address } = parseIpAddress(host, 'VIP address');
  const special = specialAddress(family, address);
  if (special) throw new InputError(`invalid VIP ${quote(text)}: ${address} is ${special}, not an address clients can be balanced to`);
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InputError(`invalid VIP ${quote(text)}: port must be from 1 to 65535, or 0 for all ports`);
  }
  const protocol = protocolText!.toLowerCase();
  if (!PROTOCOLS.includes(protocol as Protocol)) {
    throw new InputError(`invalid VIP ${quote(text)}: protocol must be tcp or udp`);
  }
  return { family, address, port, protocol: protocol as Protocol };
}

/** What makes an address unfit for a VIP: unspecified, broadcast, multicast, loopback; or undefined. */
function specialAddress(family: Family, address: string): string | undefined {
  if (family === 4) {
    const [a, b, c, d] = address.split('.').map(Number) as [number, number, number, number];
    if (a === 0 && b === 0 && c === 0 && d === 0) return 'the unspecified address';
    if (a === 255 && b === 255 && c === 255 && d === 255) return 'the broadcast address';
    if (a >= 224 && a <= 239) return 'a multicast address';
    if (a === 127) return 'a loopback address';
    return undefined;
  }
  const words = ipv6ToWords(address);
  if (words.every((w) => w === 0)) return 'the unspecified address';
  if (words.slice(0, 7).every((w) => w === 0) && words[7] === 1) return 'the loopback address';
  if (words[0]! >> 8 === 0xff) return 'a multicast address';
  // IPv4-mapped (::ffff:a.b.c.d): the IPv4 rules apply to the embedded address.
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return specialAddress(4, [words[6]! >> 8, words[6]! & 255, words[7]! >> 8, words[7]! & 255].join('.'));
  }
  return undefined;
}

export function formatVip(vip: VipAddress): string {
  const host = vip.family === 6 ? `[${vip.address}]` : vip.address;
  return `${host}:${vip.port}/${vip.protocol}`;
}

export function parseVipHash(text: string): VipHash {
  if (VIP_HASHES.includes(text as VipHash)) return text as VipHash;
  throw new InputError(`invalid hash ${quote(text)}: expected flow (the whole flow) or source (the client's address alone)`);
}

export function parseForward(text: string): ForwardMethod {
  if (FORWARD_METHODS.includes(text as ForwardMethod)) return text as ForwardMethod;
  throw new InputError(`invalid forwarding method ${quote(text)}: expected ${FORWARD_METHODS.join(' or ')}`);
}

/** Weight 0 quiesces a backend: no new flows, its tracked flows continue (HAProxy, IPVS). */
export const MIN_WEIGHT = 0;
export const MAX_WEIGHT = 65535;

export function parseWeight(value: unknown): number {
  const weight = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isInteger(weight) || weight < MIN_WEIGHT || weight > MAX_WEIGHT) {
    throw new InputError(
      `invalid weight ${quote(typeof value === 'string' ? value : JSON.stringify(value))}: must be an integer from ${MIN_WEIGHT} to ${MAX_WEIGHT}`,
    );
  }
  return weight;
}

function canonicalIPv4(text: string): string {
  return text
    .split('.')
    .map((octet) => String(Number(octet)))
    .join('.');
}

/** RFC 5952 form, so that one address has one spelling in state and output. */
function canonicalIPv6(text: string): string {
  const groups = ipv6ToWords(text);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLength).join(':');
  return `${head}::${tail}`;
}

/** The eight 16-bit groups of a valid IPv6 address (embedded IPv4 allowed). */
export function ipv6ToWords(text: string): number[] {
  let body = text.toLowerCase();
  const words: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(body);
  let tailWords: number[] = [];
  if (dotted) {
    const octets = dotted[1]!.split('.').map(Number);
    tailWords = [(octets[0]! << 8) | octets[1]!, (octets[2]! << 8) | octets[3]!];
    body = body.slice(0, -dotted[1]!.length);
    if (body.endsWith(':') && !body.endsWith('::')) body = body.slice(0, -1);
  }
  const [headText, tailText] = body.split('::') as [string, string | undefined];
  const parse = (part: string | undefined) =>
    part
      ? part
          .split(':')
          .filter((p) => p !== '')
          .map((p) => parseInt(p, 16))
      : [];
  const head = parse(headText);
  const tail = [...parse(tailText), ...tailWords];
  const fill = 8 - head.length - tail.length;
  words.push(...head, ...new Array<number>(tailText === undefined ? 0 : fill).fill(0), ...tail);
  return words;
}

/** The address as the kernel stores it: 4 or 16 bytes, network order. */
export function addressBytes(family: Family, address: string): Buffer {
  if (family === 4) return Buffer.from(address.split('.').map(Number));
  const buf = Buffer.alloc(16);
  ipv6ToWords(address).forEach((word, i) => buf.writeUInt16BE(word, i * 2));
  return buf;
}

/** Outer sources of IP-in-IP packets: at most one address per family. */
export function parseTunnelSources(texts: readonly string[]): string[] {
  const sources = texts.map((text) => parseIpAddress(text, 'tunnel source'));
  for (const family of [4, 6] as const) {
    if (sources.filter((s) => s.family === family).length > 1)
      throw new InputError(`more than one IPv${family} tunnel source: give at most one per family`);
  }
  return sources.map((s) => s.address);
}

/** The inverse of addressBytes. */
export function formatAddressBytes(family: Family, bytes: Buffer): string {
  if (family === 4) return Array.from(bytes.subarray(0, 4)).join('.');
  const words = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16));
  return parseIpAddress(words.join(':')).address;
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** "127.0.0.1:9640", "[::1]:9640": where an HTTP endpoint listens. */
export function parseListenAddress(text: string, what = 'listen address'): ListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(text.trim());
  if (!match) throw new InputError(`invalid ${what} ${quote(text)}: expected ADDRESS:PORT, e.g. 127.0.0.1:9640 or [::1]:9640`);
  const { address } = parseIpAddress(match[1] ?? match[2]!, what);
  const port = Number(match[3]);
  if (port < 1 || port > 65535) throw new InputError(`invalid ${what} ${quote(text)}: the port must be from 1 to 65535`);
  return { host: address, port };
}

export function formatListenAddress(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
