/** Building and reading Ethernet/IPv4/TCP/UDP frames for packet tests. */

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

export function ipv4Header(spec: { src: string; dst: string; protocol: number; payloadLength: number; ttl?: number; tos?: number; id?: number; dontFragment?: boolean; fragmentOffset?: number; moreFragments?: boolean }): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip[1] = spec.tos ?? 0;
  ip.writeUInt16BE(20 + spec.payloadLength, 2);
  ip.writeUInt16BE(spec.id ?? 0x1234, 4);
  let frag = (spec.fragmentOffset ?? 0) & 0x1fff;
  if (spec.dontFragment ?? true) frag |= 0x4000;
  if (spec.moreFragments) frag |= 0x2000;
  ip.writeUInt16BE(frag, 6);
  ip[8] = spec.ttl ?? 64;
  ip[9] = spec.protocol;
  ipv4Bytes(spec.src).copy(ip, 12);
  ipv4Bytes(spec.dst).copy(ip, 16);
  ip.writeUInt16BE(internetChecksum(ip), 10);
  return ip;
}

function l4Segment(spec: Ipv4PacketSpec, protocol: number): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  const pseudo = (length: number) => {
    const p = Buffer.alloc(12);
    ipv4Bytes(spec.src).copy(p, 0);
    ipv4Bytes(spec.dst).copy(p, 4);
    p[9] = protocol;
    p.writeUInt16BE(length, 10);
    return p;
  };
  if (protocol === 6) {
    const tcp = Buffer.alloc(20);
    tcp.writeUInt16BE(spec.srcPort ?? 40000, 0);
    tcp.writeUInt16BE(spec.dstPort ?? 80, 2);
    tcp.writeUInt32BE(1000, 4);
    tcp[12] = 5 << 4;
    tcp[13] = spec.tcpFlags ?? TCP_FLAGS.SYN;
    tcp.writeUInt16BE(64240, 14);
    const segment = Buffer.concat([tcp, payload]);
    segment.writeUInt16BE(internetChecksum(pseudo(segment.length), segment), 16);
    return segment;
  }
  if (protocol === 17) {
    const udp = Buffer.alloc(8);
    udp.writeUInt16BE(spec.srcPort ?? 40000, 0);
    udp.writeUInt16BE(spec.dstPort ?? 53, 2);
    udp.writeUInt16BE(8 + payload.length, 4);
    const segment = Buffer.concat([udp, payload]);
    segment.writeUInt16BE(internetChecksum(pseudo(segment.length), segment) || 0xffff, 6);
    return segment;
  }
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
