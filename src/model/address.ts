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

/** Six colon-separated hex bytes, as iproute2 prints an Ethernet address. */
export function isMacAddress(text: string): boolean {
  return /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text);
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

/**
 * An outer source of IP-in-IP packets: one address (hostBits 0), or a
 * range whose first address is `address` (host bits zero): each flow's
 * outer source is that address plus the low hostBits bits of the flow's
 * hash (bpf/lib/forward.h tunnel_src_spread).
 */
export interface TunnelSource {
  readonly family: Family;
  readonly address: string;
  readonly hostBits: number;
}

/**
 * Shortest prefix of an outer source range per family. The data plane
 * spreads over the last 32 bits of an address; an IPv4 range is also held
 * to 16 host bits: 65536 sources is far more than any NIC's RSS table
 * (128 to 512 entries) can tell apart, and a bigger range is more likely
 * a typo than a plan.
 */
export const TUNNEL_RANGE_MIN_PREFIX: Record<Family, number> = { 4: 16, 6: 96 };

/** `ADDRESS` (one source) or `ADDRESS/LEN` (a range: ADDRESS its first address). */
export function parseTunnelSource(text: string): TunnelSource {
  const [addressText, lengthText, ...rest] = text.trim().split('/');
  const { family, address } = parseIpAddress(addressText!, 'tunnel source');
  if (lengthText === undefined) return { family, address, hostBits: 0 };
  const bits = family === 4 ? 32 : 128;
  const minimum = TUNNEL_RANGE_MIN_PREFIX[family];
  if (rest.length > 0 || !/^\d{1,3}$/.test(lengthText) || Number(lengthText) > bits)
    throw new InputError(`invalid tunnel source ${quote(text)}: expected ADDRESS or ADDRESS/LEN with LEN from ${minimum} to ${bits}`);
  const length = Number(lengthText);
  if (length < minimum) {
    throw new InputError(
      `invalid tunnel source ${quote(text)}: an IPv${family} range has a prefix length from ${minimum} to ${bits}` +
        (family === 4 ? ' (at most 65536 outer sources)' : ' (the data plane spreads flows over the last 32 bits)'),
    );
  }
  const hostBits = bits - length;
  const first = withLast32Bits(family, address, (low) => low & ~(2 ** hostBits - 1));
  if (first !== address) {
    throw new InputError(
      `invalid tunnel source ${quote(text)}: ${address} is not the first address of its /${length}; the range is ${first}/${length}`,
    );
  }
  const last = withLast32Bits(family, address, (low) => low | (2 ** hostBits - 1));
  const special = specialAddress(family, address) ?? specialAddress(family, last);
  if (special) throw new InputError(`invalid tunnel source ${quote(text)}: the range holds ${special}`);
  return { family, address, hostBits };
}

/** The config file's and the command line's form: `ADDRESS`, or `ADDRESS/LEN` for a range. */
export function formatTunnelSource(source: TunnelSource): string {
  return source.hostBits === 0 ? source.address : `${source.address}/${(source.family === 4 ? 32 : 128) - source.hostBits}`;
}

/** The address with its last 32 bits (all of an IPv4 address) mapped by `change`. */
function withLast32Bits(family: Family, address: string, change: (low: number) => number): string {
  const bytes = addressBytes(family, address);
  bytes.writeUInt32BE(change(bytes.readUInt32BE(bytes.length - 4)) >>> 0, bytes.length - 4);
  return formatAddressBytes(family, bytes);
}

/**
 * Outer sources of IP-in-IP packets, at most one per family, in their
 * canonical text (a /32 or /128 range is its one address), IPv4 first.
 */
export function parseTunnelSources(texts: readonly string[]): string[] {
  const sources = texts.map(parseTunnelSource);
  for (const family of [4, 6] as const) {
    if (sources.filter((s) => s.family === family).length > 1)
      throw new InputError(`more than one IPv${family} tunnel source: give at most one per family`);
  }
  return sources.sort((a, b) => a.family - b.family).map(formatTunnelSource);
}

/** The configured outer source of a family, from parseTunnelSources's texts. */
export function tunnelSourceOf(texts: readonly string[], family: Family): TunnelSource | undefined {
  return texts.map(parseTunnelSource).find((s) => s.family === family);
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
