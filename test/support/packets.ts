/** Building and reading Ethernet/IPv4/IPv6/TCP/UDP/ICMP frames for packet tests. */

export const MAC = {
  client: '02:00:00:00:00:0a',
  balancer: '02:00:00:00:00:02',
  backend1: '02:00:00:00:00:11',
  router: '02:00:00:00:00:01',
} as const;

export interface Ipv4PacketSpec {
  srcMac?: string;
  dstMac?: string;
  src: string;
  dst: string;
  protocol?: 'tcp' | 'udp' | number;
  srcPort?: number;
  dstPort?: number;
  tcpFlags?: number;
  payload?: Buffer;
  ttl?: number;
  tos?: number;
  id?: number;
  dontFragment?: boolean;
  fragmentOffset?: number;
  moreFragments?: boolean;
  /** IPv4 options (a multiple of 4 bytes): the IHL grows with them. */
  options?: Buffer;
  /** TCP options (a multiple of 4 bytes): the data offset grows with them. */
  tcpOptions?: Buffer;
  /** UDP: leave the checksum 0 ("none", allowed over IPv4). */
  udpZeroChecksum?: boolean;
}

export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

export function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

export function formatIpv4(bytes: Buffer): string {
  return Array.from(bytes.subarray(0, 4)).join('.');
}

export function formatMac(bytes: Buffer): string {
  return Array.from(bytes.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** RFC 1071 checksum of the given bytes (as written to the header). */
export function internetChecksum(...parts: Buffer[]): number {
  let sum = 0;
  const bytes = Buffer.concat(parts);
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function ipv4Header(spec: {
  src: string;
  dst: string;
  protocol: number;
  payloadLength: number;
  ttl?: number;
  tos?: number;
  id?: number;
  dontFragment?: boolean;
  fragmentOffset?: number;
  moreFragments?: boolean;
  options?: Buffer;
}): Buffer {
  const options = spec.options ?? Buffer.alloc(0);
  if (options.length % 4 !== 0 || options.length > 40)
    throw new Error(`IPv4 options of ${options.length} bytes: a multiple of 4, at most 40`);
  const ip = Buffer.alloc(20 + options.length);
  ip[0] = 0x40 | (ip.length / 4);
  ip[1] = spec.tos ?? 0;
  ip.writeUInt16BE(ip.length + spec.payloadLength, 2);
  ip.writeUInt16BE(spec.id ?? 0x1234, 4);
  let frag = (spec.fragmentOffset ?? 0) & 0x1fff;
  if (spec.dontFragment ?? true) frag |= 0x4000;
  if (spec.moreFragments) frag |= 0x2000;
  ip.writeUInt16BE(frag, 6);
  ip[8] = spec.ttl ?? 64;
  ip[9] = spec.protocol;
  ipv4Bytes(spec.src).copy(ip, 12);
  ipv4Bytes(spec.dst).copy(ip, 16);
  options.copy(ip, 20);
  ip.writeUInt16BE(internetChecksum(ip), 10);
  return ip;
}

export function ipv6Bytes(address: string): Buffer {
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const words = (s: string | undefined) => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const front = words(head);
  const back = words(tail);
  const all = tail === undefined ? front : [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  if (all.length !== 8 || all.some((w) => !(w >= 0 && w <= 0xffff))) throw new Error(`not an IPv6 address: ${address}`);
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

/** The pseudo-header TCP, UDP and ICMPv6 checksums cover (RFC 793, RFC 8200 8.1), of either family. */
export function pseudoHeader(src: string, dst: string, protocol: number, length: number): Buffer {
  if (!src.includes(':')) {
    const p = Buffer.alloc(12);
    ipv4Bytes(src).copy(p, 0);
    ipv4Bytes(dst).copy(p, 4);
    p[9] = protocol;
    p.writeUInt16BE(length, 10);
    return p;
  }
  const p = Buffer.alloc(40);
  ipv6Bytes(src).copy(p, 0);
  ipv6Bytes(dst).copy(p, 16);
  p.writeUInt32BE(length, 32);
  p[39] = protocol;
  return p;
}

export interface SegmentSpec {
  src: string;
  dst: string;
  srcPort?: number;
  dstPort?: number;
  payload?: Buffer;
}

/** A TCP segment with a valid checksum (sequence 1000, window 64240). */
export function tcpSegment(spec: SegmentSpec & { flags?: number; options?: Buffer }): Buffer {
  const options = spec.options ?? Buffer.alloc(0);
  if (options.length % 4 !== 0 || options.length > 40)
    throw new Error(`TCP options of ${options.length} bytes: a multiple of 4, at most 40`);
  const tcp = Buffer.alloc(20 + options.length);
  tcp.writeUInt16BE(spec.srcPort ?? 40000, 0);
  tcp.writeUInt16BE(spec.dstPort ?? 80, 2);
  tcp.writeUInt32BE(1000, 4);
  tcp[12] = (tcp.length / 4) << 4;
  tcp[13] = spec.flags ?? TCP_FLAGS.SYN;
  tcp.writeUInt16BE(64240, 14);
  options.copy(tcp, 20);
  const segment = Buffer.concat([tcp, spec.payload ?? Buffer.alloc(0)]);
  segment.writeUInt16BE(internetChecksum(pseudoHeader(spec.src, spec.dst, 6, segment.length), segment), 16);
  return segment;
}

/** A UDP datagram with a valid checksum, or none (0) when asked. */
export function udpDatagram(spec: SegmentSpec & { zeroChecksum?: boolean }): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(spec.srcPort ?? 40000, 0);
  udp.writeUInt16BE(spec.dstPort ?? 53, 2);
  udp.writeUInt16BE(8 + payload.length, 4);
  const segment = Buffer.concat([udp, payload]);
  if (!spec.zeroChecksum)
    segment.writeUInt16BE(internetChecksum(pseudoHeader(spec.src, spec.dst, 17, segment.length), segment) || 0xffff, 6);
  return segment;
}

/**
 * An ICMP message: type, code, the 4 bytes after the checksum (echo:
 * identifier and sequence; "fragmentation needed": unused and next-hop
 * MTU; "packet too big": the MTU) and the body. ICMPv6 (when src and dst
 * are given) covers the pseudo-header too.
 */
export function icmpMessage(type: number, code: number, rest: number, body: Buffer, v6?: { src: string; dst: string }): Buffer {
  const msg = Buffer.alloc(8 + body.length);
  msg[0] = type;
  msg[1] = code;
  msg.writeUInt32BE(rest >>> 0, 4);
  body.copy(msg, 8);
  const pseudo = v6 ? pseudoHeader(v6.src, v6.dst, 58, msg.length) : Buffer.alloc(0);
  msg.writeUInt16BE(internetChecksum(pseudo, msg), 2);
  return msg;
}

export const ICMP = { ECHO_REPLY: 0, DEST_UNREACH: 3, FRAG_NEEDED: 4, ECHO: 8 } as const;
export const ICMPV6 = { PACKET_TOO_BIG: 2, ECHO_REQUEST: 128, ECHO_REPLY: 129, NEIGHBOR_SOLICIT: 135 } as const;

function l4Segment(spec: Ipv4PacketSpec, protocol: number): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  if (protocol === 6) return tcpSegment({ ...spec, flags: spec.tcpFlags, options: spec.tcpOptions, payload });
  if (protocol === 17) return udpDatagram({ ...spec, payload, zeroChecksum: spec.udpZeroChecksum });
  return payload;
}

/** A complete frame: Ethernet + IPv4 + TCP/UDP (checksums valid). */
export function ipv4Frame(spec: Ipv4PacketSpec): Buffer {
  const protocol = spec.protocol === undefined || spec.protocol === 'tcp' ? 6 : spec.protocol === 'udp' ? 17 : spec.protocol;
  const segment = l4Segment(spec, protocol);
  const ip = ipv4Header({ ...spec, protocol, payloadLength: segment.length });
  return Buffer.concat([ethernet(spec.dstMac ?? MAC.balancer, spec.srcMac ?? MAC.client, 0x0800), ip, segment]);
}

export function ethernet(dst: string, src: string, etherType: number): Buffer {
  const eth = Buffer.alloc(14);
  macBytes(dst).copy(eth, 0);
  macBytes(src).copy(eth, 6);
  eth.writeUInt16BE(etherType, 12);
  return eth;
}

export const ETHERTYPE = { IPV4: 0x0800, ARP: 0x0806, VLAN: 0x8100, QINQ: 0x88a8, IPV6: 0x86dd } as const;

/** The frame with an 802.1Q (or, with tpid 0x88a8, 802.1ad) tag inserted after the MAC addresses. */
export function withVlan(frame: Buffer, tci: number, tpid: number = ETHERTYPE.VLAN): Buffer {
  const tag = Buffer.alloc(4);
  tag.writeUInt16BE(tpid, 0);
  tag.writeUInt16BE(tci, 2);
  return Buffer.concat([frame.subarray(0, 12), tag, frame.subarray(12)]);
}

/** The frame with its MAC addresses replaced, the rest unchanged. */
export function withMacs(frame: Buffer, dst: string, src: string): Buffer {
  return Buffer.concat([macBytes(dst), macBytes(src), frame.subarray(12)]);
}

export const IPPROTO_NUMBER = {
  HOPOPTS: 0,
  ICMP: 1,
  IPIP: 4,
  TCP: 6,
  UDP: 17,
  IPV6: 41,
  ROUTING: 43,
  FRAGMENT: 44,
  ICMPV6: 58,
  NONE: 59,
  DSTOPTS: 60,
} as const;

export function ipv6Header(spec: {
  src: string;
  dst: string;
  nextHeader: number;
  payloadLength: number;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
}): Buffer {
  const ip = Buffer.alloc(40);
  ip.writeUInt32BE(((6 << 28) | ((spec.trafficClass ?? 0) << 20) | ((spec.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  ip.writeUInt16BE(spec.payloadLength, 4);
  ip[6] = spec.nextHeader;
  ip[7] = spec.hopLimit ?? 64;
  ipv6Bytes(spec.src).copy(ip, 8);
  ipv6Bytes(spec.dst).copy(ip, 24);
  return ip;
}

/** An IPv6 extension header: its type, and its bytes (the first, the next header, is filled in by ipv6Frame). */
export interface ExtensionHeader {
  readonly type: number;
  readonly bytes: Buffer;
}

/** Hop-by-hop (type 0) or destination (type 60) options, 8 * (units + 1) bytes of PadN. */
function optionsHeader(type: number, units: number): ExtensionHeader {
  const bytes = Buffer.alloc((units + 1) * 8);
  bytes[1] = units;
  bytes[2] = 1; // PadN over the rest
  bytes[3] = bytes.length - 4;
  return { type, bytes };
}

export function hopByHopHeader(units = 0): ExtensionHeader {
  return optionsHeader(IPPROTO_NUMBER.HOPOPTS, units);
}

export function destinationOptionsHeader(units = 0): ExtensionHeader {
  return optionsHeader(IPPROTO_NUMBER.DSTOPTS, units);
}

/** A segment routing header (type 4, RFC 8754) over the given addresses. */
export function routingHeader(addresses: readonly string[], segmentsLeft = addresses.length): ExtensionHeader {
  const bytes = Buffer.alloc(8 + addresses.length * 16);
  bytes[1] = addresses.length * 2;
  bytes[2] = 4;
  bytes[3] = segmentsLeft;
  bytes[4] = Math.max(0, addresses.length - 1); // last entry
  addresses.forEach((a, i) => ipv6Bytes(a).copy(bytes, 8 + i * 16));
  return { type: IPPROTO_NUMBER.ROUTING, bytes };
}

/** Offset in 8-byte units. Offset 0 without M is an atomic fragment (RFC 6946). */
export function fragmentHeader(spec: { offset?: number; more?: boolean; id?: number } = {}): ExtensionHeader {
  const bytes = Buffer.alloc(8);
  bytes.writeUInt16BE((((spec.offset ?? 0) & 0x1fff) << 3) | (spec.more ? 1 : 0), 2);
  bytes.writeUInt32BE(spec.id ?? 0x1234, 4);
  return { type: IPPROTO_NUMBER.FRAGMENT, bytes };
}

export interface Ipv6PacketSpec {
  srcMac?: string;
  dstMac?: string;
  src: string;
  dst: string;
  protocol?: 'tcp' | 'udp' | 'icmpv6' | number;
  srcPort?: number;
  dstPort?: number;
  tcpFlags?: number;
  tcpOptions?: Buffer;
  udpZeroChecksum?: boolean;
  /** ICMPv6: type, code and the 4 bytes after the checksum; the payload is the body. */
  icmp?: { type: number; code?: number; rest?: number };
  payload?: Buffer;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  extensions?: readonly ExtensionHeader[];
}

/** A complete frame: Ethernet + IPv6 + extension headers + TCP/UDP/ICMPv6 (checksums valid). */
export function ipv6Frame(spec: Ipv6PacketSpec): Buffer {
  const protocol =
    spec.protocol === undefined || spec.protocol === 'tcp'
      ? 6
      : spec.protocol === 'udp'
        ? 17
        : spec.protocol === 'icmpv6'
          ? 58
          : spec.protocol;
  const payload = spec.payload ?? Buffer.alloc(0);
  const upper =
    protocol === 6
      ? tcpSegment({ ...spec, flags: spec.tcpFlags, options: spec.tcpOptions, payload })
      : protocol === 17
        ? udpDatagram({ ...spec, payload, zeroChecksum: spec.udpZeroChecksum })
        : protocol === 58
          ? icmpMessage(spec.icmp?.type ?? ICMPV6.ECHO_REQUEST, spec.icmp?.code ?? 0, spec.icmp?.rest ?? 0, payload, spec)
          : payload;
  const extensions = spec.extensions ?? [];
  const chained = extensions.map((h, i) => {
    const bytes = Buffer.from(h.bytes);
    bytes[0] = i + 1 < extensions.length ? extensions[i + 1]!.type : protocol;
    return bytes;
  });
  const body = Buffer.concat([...chained, upper]);
  const ip = ipv6Header({ ...spec, nextHeader: extensions[0]?.type ?? protocol, payloadLength: body.length });
  return Buffer.concat([ethernet(spec.dstMac ?? MAC.balancer, spec.srcMac ?? MAC.client, ETHERTYPE.IPV6), ip, body]);
}

export interface ParsedIpv4 {
  readonly header: Buffer;
  readonly src: string;
  readonly dst: string;
  readonly protocol: number;
  readonly totalLength: number;
  readonly ttl: number;
  readonly tos: number;
  readonly id: number;
  readonly flags: number;
  readonly checksumValid: boolean;
  readonly payload: Buffer;
}

export function parseEthernet(frame: Buffer): { dst: string; src: string; etherType: number; payload: Buffer } {
  return { dst: formatMac(frame), src: formatMac(frame.subarray(6)), etherType: frame.readUInt16BE(12), payload: frame.subarray(14) };
}

export function parseIpv4(bytes: Buffer): ParsedIpv4 {
  const ihl = (bytes[0]! & 0x0f) * 4;
  const header = bytes.subarray(0, ihl);
  const totalLength = bytes.readUInt16BE(2);
  return {
    header,
    src: formatIpv4(bytes.subarray(12)),
    dst: formatIpv4(bytes.subarray(16)),
    protocol: bytes[9]!,
    totalLength,
    ttl: bytes[8]!,
    tos: bytes[1]!,
    id: bytes.readUInt16BE(4),
    flags: bytes.readUInt16BE(6) >>> 13,
    checksumValid: internetChecksum(header) === 0,
    payload: bytes.subarray(ihl, totalLength),
  };
}

/** A copy of the frame with bytes of its IPv4 header (at `l3`) rewritten, then, unless told not to, its header checksum. */
export function editIpv4(frame: Buffer, edit: (ip: Buffer) => void, fixChecksum = true, l3 = 14): Buffer {
  const out = Buffer.from(frame);
  const ip = out.subarray(l3);
  edit(ip);
  if (fixChecksum) {
    const ihl = Math.max(5, ip[0]! & 0x0f) * 4;
    ip.writeUInt16BE(0, 10);
    ip.writeUInt16BE(internetChecksum(ip.subarray(0, ihl)), 10);
  }
  return out;
}
