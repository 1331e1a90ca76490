/**
 * Fuzzing xdp_balancer and xdp_decap through BPF_PROG_TEST_RUN (issue 5):
 * seed frames of the kinds the packet tests use (and the kinds the data
 * plane is growing to handle), mutators, an invariant checker that parses
 * the outputs itself (it shares no parsing code with the programs), and a
 * harness that runs batches through both programs. test/fuzz.test.ts
 * drives it; docs/fuzzing.md says what is checked and how to reproduce a
 * failure.
 *
 * Every frame is a function of (seed, index) only, so a failure reproduces
 * from the two numbers printed with it: fuzzFrame(seed, index).
 */
import { IPPROTO } from '../../src/dataplane/abi.js';
import { BalancerDataplane, KILL_SWITCH_NEVER } from '../../src/dataplane/balancer.js';
import { loadDecap } from '../../src/dataplane/decap.js';
import type { LoadedObject } from '../../src/dataplane/bpf-object.js';
import { orThrow } from '../../src/dataplane/libbpf.js';
import { backendEntry } from './dataplane.js';
import { nativeTesting } from './native-testing.js';
import { MAC, TCP_FLAGS, ipv4Frame, macBytes } from './packets.js';

// ---------------------------------------------------------------------------
// Random numbers: mulberry32, one generator per frame, seeded from
// (run seed, frame index) so that any frame can be rebuilt on its own.

export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** Picks by weight: [[weight, value], ...]. */
  weighted<T>(items: ReadonlyArray<readonly [number, T]>): T {
    let total = 0;
    for (const [w] of items) total += w;
    let r = this.int(total);
    for (const [w, v] of items) {
      if (r < w) return v;
      r -= w;
    }
    return items[items.length - 1]![1];
  }

  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

/** The generator of frame `index` of the run with seed `seed`. */
export function frameRng(seed: number, index: number): Rng {
  // murmur3's finaliser over both numbers: neighbouring indexes get unrelated streams.
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return new Rng((h ^ (h >>> 16)) >>> 0);
}

export function randomSeed(): number {
  return (Math.random() * 0x1_0000_0000) >>> 0;
}

// ---------------------------------------------------------------------------
// Bytes and checksums.

function v4(text: string): Buffer {
  return Buffer.from(text.split('.').map(Number));
}

function v6(text: string): Buffer {
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const words = (s: string | undefined) => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const front = words(head);
  const back = words(tail);
  const all = tail === undefined ? front : [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

export function hex(buf: Buffer): string {
  return buf.toString('hex');
}

/** One's-complement sum of buf[start, end) as big-endian words, not folded. */
function sum16(buf: Buffer, start: number, end: number, initial = 0): number {
  let sum = initial;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The checksum to write over buf[start, end) (with the field zeroed). */
function checksum(buf: Buffer, start: number, end: number, initial = 0): number {
  return ~fold(sum16(buf, start, end, initial)) & 0xffff;
}

/** True when buf[start, end), checksum field included, sums to all ones. */
function checksumValid(buf: Buffer, start: number, end: number, initial = 0): boolean {
  return fold(sum16(buf, start, end, initial)) === 0xffff;
}

function pseudoSum(src: Buffer, dst: Buffer, proto: number, length: number): number {
  return sum16(src, 0, src.length) + sum16(dst, 0, dst.length) + proto + (length & 0xffff) + Math.floor(length / 0x10000);
}

function concat(...parts: Buffer[]): Buffer {
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------
// What the harness configures: the checker knows it, the programs get it
// through the maps.

export type Family = 4 | 6;

export interface FuzzBackend {
  readonly id: number;
  readonly forward: 'l2dsr' | 'ipip';
  /** Destination MAC of forwarded frames: the backend (l2dsr) or the next hop (ipip). */
  readonly mac: string;
  readonly ifindex: number;
  /** The backend's address: the outer destination (ipip), of this family. */
  readonly family: Family;
  readonly address: string;
  /** ipip: the outer source, or the first address of the outer source range. */
  readonly tunnelSource: string;
  /** ipip: host bits of the outer source range (each flow's source within it); 0 or absent: tunnelSource alone. */
  readonly tunnelSourceBits?: number;
  /** ipip: the largest packet the path carries once encapsulated (0: unchecked); bigger ones get ICMP too-big. */
  readonly mtu: number;
}

export interface FuzzVip {
  readonly family: Family;
  readonly address: string;
  readonly port: number;
  readonly protocol: 'tcp' | 'udp';
  readonly backends: readonly number[];
}

export interface FuzzConfig {
  readonly balancerMac: string;
  /** BPF_PROG_TEST_RUN's ingress: backends behind it are reached with XDP_TX, others by redirect. */
  readonly ingressIfindex: number;
  readonly backends: readonly FuzzBackend[];
  readonly vips: readonly FuzzVip[];
  readonly decapEndpoints: readonly string[];
}

const LOOPBACK = 1;
const BALANCER_ADDRESS = '10.10.0.2';
const BALANCER_ADDRESS_V6 = '2001:db8:10::2';
const TUNNEL_A = '10.20.0.14';
const TUNNEL_B = '10.20.0.99';
const TUNNEL_V6 = '2001:db8:20::14';

export const FUZZ_CONFIG: FuzzConfig = {
  balancerMac: MAC.balancer,
  ingressIfindex: LOOPBACK,
  backends: [
    { id: 1, forward: 'l2dsr', mac: '02:00:00:00:00:11', ifindex: LOOPBACK, family: 4, address: '10.10.0.11', tunnelSource: '', mtu: 0 },
    { id: 2, forward: 'l2dsr', mac: '02:00:00:00:00:13', ifindex: LOOPBACK, family: 4, address: '10.10.0.13', tunnelSource: '', mtu: 0 },
    { id: 3, forward: 'ipip', mac: MAC.router, ifindex: LOOPBACK, family: 4, address: TUNNEL_A, tunnelSource: BALANCER_ADDRESS, mtu: 0 },
    { id: 4, forward: 'ipip', mac: MAC.router, ifindex: LOOPBACK, family: 4, address: TUNNEL_B, tunnelSource: BALANCER_ADDRESS, mtu: 1400 },
    { id: 5, forward: 'l2dsr', mac: '02:00:00:00:00:99', ifindex: 77, family: 4, address: '10.30.0.5', tunnelSource: '', mtu: 0 },
    {
      id: 6,
      forward: 'ipip',
      mac: MAC.router,
      ifindex: LOOPBACK,
      family: 6,
      address: TUNNEL_V6,
      tunnelSource: BALANCER_ADDRESS_V6,
      mtu: 1500,
    },
    {
      id: 7,
      forward: 'l2dsr',
      mac: '02:00:00:00:00:17',
      ifindex: LOOPBACK,
      family: 6,
      address: '2001:db8:10::17',
      tunnelSource: '',
      mtu: 0,
    },
    // Outer source ranges: each flow's outer source from the range (decapsulated like any other).
    {
      id: 8,
      forward: 'ipip',
      mac: MAC.router,
      ifindex: LOOPBACK,
      family: 4,
      address: TUNNEL_A,
      tunnelSource: '10.10.8.0',
      tunnelSourceBits: 8,
      mtu: 0,
    },
    {
      id: 9,
      forward: 'ipip',
      mac: MAC.router,
      ifindex: LOOPBACK,
      family: 6,
      address: TUNNEL_V6,
      tunnelSource: '2001:db8:10::8:0',
      tunnelSourceBits: 16,
      mtu: 0,
    },
  ],
  vips: [
    { family: 4, address: '10.100.0.100', port: 80, protocol: 'tcp', backends: [1, 2] },
    { family: 4, address: '10.100.0.100', port: 53, protocol: 'udp', backends: [1] },
    { family: 4, address: '10.100.0.101', port: 80, protocol: 'tcp', backends: [3, 4] }, // 4 has an MTU: too-big answers
    { family: 4, address: '10.100.0.101', port: 443, protocol: 'udp', backends: [3, 6, 8, 9] }, // 4-in-4 and 4-in-6, from one source or a range
    { family: 4, address: '10.100.0.102', port: 8080, protocol: 'tcp', backends: [5] }, // another interface: redirect
    { family: 4, address: '10.100.0.103', port: 80, protocol: 'tcp', backends: [] }, // no backend: dropped
    { family: 6, address: '2001:db8:100::100', port: 80, protocol: 'tcp', backends: [7] },
    { family: 6, address: '2001:db8:100::100', port: 53, protocol: 'udp', backends: [6] }, // 6-in-6
    { family: 6, address: '2001:db8:100::101', port: 80, protocol: 'tcp', backends: [3, 6, 8, 9] }, // 6-in-4 and 6-in-6, from one source or a range
    { family: 6, address: '2001:db8:100::101', port: 443, protocol: 'udp', backends: [] },
  ],
  decapEndpoints: [TUNNEL_A, TUNNEL_B, TUNNEL_V6],
};

const TABLE_SIZE = 61;

/** Writes the configuration into a freshly loaded balancer, as the packet tests do. */
export function configureBalancer(dataplane: BalancerDataplane, config: FuzzConfig = FUZZ_CONFIG): void {
  dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
  dataplane.setInterfaceMac(config.balancerMac);
  for (const b of config.backends) {
    dataplane.putBackend(
      b.id,
      backendEntry({
        address: b.address,
        forward: b.forward,
        dstMac: b.mac,
        srcMac: config.balancerMac,
        ifindex: b.ifindex,
        mtu: b.mtu,
        ...(b.forward === 'ipip' ? { tunnelSource: b.tunnelSource, tunnelSourceBits: b.tunnelSourceBits ?? 0 } : {}),
      }),
    );
  }
  config.vips.forEach((vip, id) => {
    let table: Uint32Array | null = null;
    if (vip.backends.length > 0) {
      table = new Uint32Array(TABLE_SIZE);
      for (let i = 0; i < table.length; i++) table[i] = vip.backends[i % vip.backends.length]!;
    }
    dataplane.putTables([{ tableId: id, table }]);
    dataplane.putVip(
      { family: vip.family, address: vip.address, port: vip.port, protocol: vip.protocol },
      { vip_id: id, table_id: id, table_size: TABLE_SIZE, flags: 0 },
    );
    dataplane.putVipAddress(vip.family, vip.address); // echo requests to it are answered
  });
}

// Addresses the seeds use.
const CLIENTS_V4 = ['10.10.0.10', '192.0.2.77', '198.51.100.3', '10.10.0.200'].map(v4);
const OTHER_V4 = ['10.100.0.104', '10.100.1.100', '10.10.0.2', '8.8.8.8', '10.20.0.15', '255.255.255.255', '0.0.0.0'].map(v4);
const ROUTER_V4 = v4('10.10.0.1');
const CLIENTS_V6 = ['2001:db8:10::10', '2001:db8:10::beef'].map(v6);
const VIPS_V6 = [...new Set(FUZZ_CONFIG.vips.filter((v) => v.family === 6).map((v) => v.address))].map(v6);
const OTHER_V6 = ['2001:db8:100::999', 'fe80::1', 'ff02::1', '2001:db8:20::15'].map(v6);
const ENDPOINTS_V6 = FUZZ_CONFIG.decapEndpoints.filter((e) => e.includes(':')).map(v6);
const ROUTER_V6 = v6('2001:db8:10::1');
const MAC_CLIENT = macBytes(MAC.client);
const MAC_BALANCER = macBytes(MAC.balancer);
const MAC_ROUTER = macBytes(MAC.router);

// ---------------------------------------------------------------------------
// Seed frames.

/** Where a seed's headers are, for field-aware mutations. Offsets may go stale after a length change. */
export interface Layout {
  etherType: number; // offset of the EtherType that names L3
  tags: number[]; // offsets of VLAN TCIs
  l3?: number;
  version?: Family;
  ext: number[]; // IPv6 extension headers (offsets)
  l4?: number;
  proto?: number;
  inner?: { l3: number; version: Family; l4?: number; proto?: number };
}

export interface FuzzFrame {
  readonly index: number;
  readonly kind: string;
  readonly mutations: readonly string[];
  readonly frame: Buffer;
}

interface Seed {
  kind: string;
  frame: Buffer;
  layout: Layout;
}

function ethHeader(dst: Buffer, src: Buffer, type: number): Buffer {
  const eth = Buffer.alloc(14);
  dst.copy(eth, 0);
  src.copy(eth, 6);
  eth.writeUInt16BE(type, 12);
  return eth;
}

interface V4Spec {
  src: Buffer;
  dst: Buffer;
  proto: number;
  payload: Buffer;
  options?: Buffer;
  ttl?: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  fragOffset?: number;
}

function ipv4Header(spec: V4Spec): Buffer {
  const options = spec.options ?? Buffer.alloc(0);
  const ip = Buffer.alloc(20 + options.length);
  ip[0] = 0x40 | ((20 + options.length) / 4);
  ip[1] = spec.tos ?? 0;
  ip.writeUInt16BE(ip.length + spec.payload.length, 2);
  ip.writeUInt16BE(spec.id ?? 0x1234, 4);
  ip.writeUInt16BE(((spec.df ?? true) ? 0x4000 : 0) | (spec.mf ? 0x2000 : 0) | ((spec.fragOffset ?? 0) & 0x1fff), 6);
  ip[8] = spec.ttl ?? 64;
  ip[9] = spec.proto;
  spec.src.copy(ip, 12);
  spec.dst.copy(ip, 16);
  options.copy(ip, 20);
  ip.writeUInt16BE(checksum(ip, 0, ip.length), 10);
  return ip;
}

function ipv6Header(src: Buffer, dst: Buffer, nextHeader: number, payloadLength: number, trafficClass = 0): Buffer {
  const ip = Buffer.alloc(40);
  ip.writeUInt32BE(((6 << 28) | (trafficClass << 20) | 0x12345) >>> 0, 0);
  ip.writeUInt16BE(payloadLength, 4);
  ip[6] = nextHeader;
  ip[7] = 64;
  src.copy(ip, 8);
  dst.copy(ip, 24);
  return ip;
}

const TCP_FLAG_CHOICES = [
  TCP_FLAGS.SYN,
  TCP_FLAGS.ACK,
  TCP_FLAGS.FIN | TCP_FLAGS.ACK,
  TCP_FLAGS.RST,
  TCP_FLAGS.RST | TCP_FLAGS.ACK,
  TCP_FLAGS.PSH | TCP_FLAGS.ACK,
  TCP_FLAGS.SYN | TCP_FLAGS.ACK,
  TCP_FLAGS.FIN,
];

function tcpSegment(
  rng: Rng,
  pseudo: (length: number) => number,
  sport: number,
  dport: number,
  payload: Buffer,
  flags = rng.pick(TCP_FLAG_CHOICES),
): Buffer {
  // Options sometimes: MSS, then NOPs and a window scale, padded to 4 bytes.
  const options = rng.chance(0.3) ? Buffer.from([2, 4, 0x05, 0xb4, 1, 3, 3, 7].slice(0, rng.pick([4, 8]))) : Buffer.alloc(0);
  const tcp = Buffer.alloc(20 + options.length);
  tcp.writeUInt16BE(sport, 0);
  tcp.writeUInt16BE(dport, 2);
  tcp.writeUInt32BE(rng.u32(), 4);
  tcp.writeUInt32BE(flags & TCP_FLAGS.ACK ? rng.u32() : 0, 8);
  tcp[12] = (tcp.length / 4) << 4;
  tcp[13] = flags;
  tcp.writeUInt16BE(64240, 14);
  options.copy(tcp, 20);
  const segment = concat(tcp, payload);
  segment.writeUInt16BE(checksum(segment, 0, segment.length, pseudo(segment.length)), 16);
  return segment;
}

function udpDatagram(pseudo: (length: number) => number, sport: number, dport: number, payload: Buffer, zeroChecksum: boolean): Buffer {
  const udp = Buffer.alloc(8 + payload.length);
  udp.writeUInt16BE(sport, 0);
  udp.writeUInt16BE(dport, 2);
  udp.writeUInt16BE(udp.length, 4);
  payload.copy(udp, 8);
  if (!zeroChecksum) udp.writeUInt16BE(checksum(udp, 0, udp.length, pseudo(udp.length)) || 0xffff, 6);
  return udp;
}

function payloadOf(rng: Rng): Buffer {
  return rng.weighted<() => Buffer>([
    [6, () => Buffer.alloc(0)],
    [10, () => rng.bytes(rng.range(1, 64))],
    [3, () => Buffer.from('GET / HTTP/1.1\r\nHost: vip\r\n\r\n')],
    [2, () => rng.bytes(rng.range(200, 700))],
    [1, () => rng.bytes(rng.range(1300, 1480))],
  ])();
}

/** Where a flow goes: a configured VIP (and its port and protocol), or something like one that is not. */
interface Target {
  dst: Buffer;
  port: number;
  proto: 6 | 17;
}

function target4(rng: Rng, config: FuzzConfig, proto?: 6 | 17): Target {
  const vips = config.vips.filter((v) => v.family === 4 && (proto === undefined || IPPROTO[v.protocol] === proto));
  const vip = vips.length > 0 ? rng.pick(vips) : undefined;
  const p = proto ?? (rng.chance(0.7) ? 6 : 17);
  return rng.weighted<() => Target>([
    [vip ? 14 : 0, () => ({ dst: v4(vip!.address), port: vip!.port, proto: IPPROTO[vip!.protocol] as 6 | 17 })],
    [2, () => ({ dst: v4(vip?.address ?? '10.100.0.100'), port: rng.pick([81, 443, 22, 0, 65535, rng.range(1, 65535)]), proto: p })],
    [1, () => ({ dst: v4(vip?.address ?? '10.100.0.100'), port: vip?.port ?? 80, proto: vip?.protocol === 'tcp' ? 17 : 6 })],
    [3, () => ({ dst: rng.pick(OTHER_V4), port: vip?.port ?? 80, proto: p })],
  ])();
}

function target6(rng: Rng, config: FuzzConfig, proto?: 6 | 17): Target {
  const vips = config.vips.filter((v) => v.family === 6 && (proto === undefined || IPPROTO[v.protocol] === proto));
  if (vips.length > 0 && rng.chance(0.7)) {
    const vip = rng.pick(vips);
    return { dst: v6(vip.address), port: vip.port, proto: IPPROTO[vip.protocol] as 6 | 17 };
  }
  return {
    dst: rng.chance(0.5) ? rng.pick(VIPS_V6) : rng.pick(OTHER_V6),
    port: rng.pick([80, 443, 53, rng.range(1, 65535)]),
    proto: proto ?? (rng.chance(0.7) ? 6 : 17),
  };
}

/** TCP or UDP over IPv4, from a client to a target. Returns the IP packet and where its L4 header is. */
function l4Packet4(rng: Rng, src: Buffer, t: Target, extra: Partial<V4Spec> = {}): { ip: Buffer; l4: number } {
  const pseudo = (length: number) => pseudoSum(src, t.dst, t.proto, length);
  const sport = rng.chance(0.1) ? rng.pick([0, 80, 65535]) : rng.range(1024, 65535);
  const payload = payloadOf(rng);
  const segment =
    t.proto === 6 ? tcpSegment(rng, pseudo, sport, t.port, payload) : udpDatagram(pseudo, sport, t.port, payload, rng.chance(0.3));
  const header = ipv4Header({
    src,
    dst: t.dst,
    proto: t.proto,
    payload: segment,
    ttl: rng.range(1, 255),
    tos: rng.chance(0.2) ? rng.int(256) : 0,
    id: rng.int(65536),
    df: rng.chance(0.8),
    ...extra,
  });
  return { ip: concat(header, segment), l4: header.length };
}

/** The first bytes of the IPv4 packet a backend sends back to a client (for ICMP errors to quote). */
function replyQuote4(rng: Rng, vipAddress: Buffer, vipPort: number, proto: 6 | 17, client: Buffer, quoteAll: boolean): Buffer {
  const t: Target = { dst: client, port: rng.range(1024, 65535), proto };
  const pseudo = (length: number) => pseudoSum(vipAddress, client, proto, length);
  const payload = rng.bytes(quoteAll && rng.chance(0.3) ? rng.range(1300, 1450) : rng.range(0, 40));
  const segment =
    proto === 6
      ? tcpSegment(rng, pseudo, vipPort, t.port, payload, TCP_FLAGS.ACK | TCP_FLAGS.PSH)
      : udpDatagram(pseudo, vipPort, t.port, payload, false);
  const packet = concat(ipv4Header({ src: vipAddress, dst: client, proto, payload: segment }), segment);
  return quoteAll ? packet : packet.subarray(0, 28);
}

function l2(rng: Rng, type: number): Buffer {
  return ethHeader(
    rng.chance(0.95) ? MAC_BALANCER : rng.pick([Buffer.alloc(6, 0xff), rng.bytes(6)]),
    rng.chance(0.8) ? MAC_CLIENT : MAC_ROUTER,
    type,
  );
}

function ipv4Seed(kind: string, rng: Rng, ip: Buffer, l4: number | undefined, proto: number): Seed {
  return {
    kind,
    frame: concat(l2(rng, 0x0800), ip),
    layout: { etherType: 12, tags: [], l3: 14, version: 4, ext: [], ...(l4 === undefined ? {} : { l4: 14 + l4 }), proto },
  };
}

/** IPv6 extension headers: hop-by-hop, destination options, routing, fragment. */
function ext6(rng: Rng, type: number, next: number, fragment: boolean): Buffer {
  switch (type) {
    case 0:
    case 60: {
      const units = rng.pick([0, 0, 1, 2]);
      const h = Buffer.alloc((units + 1) * 8);
      h[0] = next;
      h[1] = units;
      h[2] = 1; // PadN over the rest
      h[3] = h.length - 4;
      return h;
    }
    case 43: {
      const addresses = rng.pick([0, 1, 2]);
      const h = Buffer.alloc(8 + addresses * 16);
      h[0] = next;
      h[1] = addresses * 2;
      h[2] = addresses ? rng.pick([0, 2, 4]) : 4;
      h[3] = addresses ? rng.int(addresses + 1) : 0; // segments left: > 0 routes on to another address
      for (let i = 0; i < addresses; i++) rng.pick(VIPS_V6).copy(h, 8 + i * 16);
      return h;
    }
    default: {
      // 44: fragment, atomic or a real first/later piece
      const h = Buffer.alloc(8);
      h[0] = next;
      h.writeUInt16BE(fragment ? (rng.chance(0.5) ? 1 : (rng.range(1, 0x1fff) << 3) | (rng.chance(0.5) ? 1 : 0)) : 0, 2);
      h.writeUInt32BE(rng.u32(), 4);
      return h;
    }
  }
}

/** An IPv6 packet with 0-3 extension headers before TCP/UDP/ICMPv6. */
function ipv6Packet(
  rng: Rng,
  src: Buffer,
  dst: Buffer,
  proto: number,
  l4: (pseudo: (length: number) => number) => Buffer,
): { ip: Buffer; ext: number[]; l4: number } {
  const types: number[] = [];
  const count = rng.weighted([
    [5, 0],
    [3, 1],
    [2, 2],
    [1, 3],
  ] as const);
  for (let i = 0; i < count; i++)
    types.push(
      rng.weighted([
        [i === 0 ? 3 : 0, 0],
        [3, 60],
        [2, 43],
        [2, 44],
      ] as const),
    );
  const fragment = rng.chance(0.5);
  const pseudo = (length: number) => pseudoSum(src, dst, proto, length);
  const upper = l4(pseudo);
  const headers: Buffer[] = [];
  for (let i = types.length - 1; i >= 0; i--)
    headers.unshift(ext6(rng, types[i]!, i === types.length - 1 ? proto : types[i + 1]!, fragment));
  const body = concat(...headers, upper);
  const ext: number[] = [];
  let offset = 40;
  for (const h of headers) {
    ext.push(offset);
    offset += h.length;
  }
  return { ip: concat(ipv6Header(src, dst, types[0] ?? proto, body.length), body), ext, l4: offset };
}

function tcpOrUdp6(
  rng: Rng,
  t: Target,
  sport = rng.range(1024, 65535),
  payload = payloadOf(rng),
): (pseudo: (length: number) => number) => Buffer {
  return (pseudo) => (t.proto === 6 ? tcpSegment(rng, pseudo, sport, t.port, payload) : udpDatagram(pseudo, sport, t.port, payload, false));
}

function icmp4(type: number, code: number, rest: number, body: Buffer): Buffer {
  const msg = Buffer.alloc(8 + body.length);
  msg[0] = type;
  msg[1] = code;
  msg.writeUInt32BE(rest >>> 0, 4);
  body.copy(msg, 8);
  msg.writeUInt16BE(checksum(msg, 0, msg.length), 2);
  return msg;
}

function icmp6(pseudo: (length: number) => number, type: number, code: number, rest: number, body: Buffer): Buffer {
  const msg = Buffer.alloc(8 + body.length);
  msg[0] = type;
  msg[1] = code;
  msg.writeUInt32BE(rest >>> 0, 4);
  body.copy(msg, 8);
  msg.writeUInt16BE(checksum(msg, 0, msg.length, pseudo(msg.length)), 2);
  return msg;
}

/** A packet the balancer might send to a backend: what the tunnel seeds carry. */
function innerPacket(rng: Rng, config: FuzzConfig, version: Family): { ip: Buffer; l4: number; proto: number } {
  if (version === 4) {
    const t = target4(rng, config);
    return { ...l4Packet4(rng, rng.pick(CLIENTS_V4), t), proto: t.proto };
  }
  const t = target6(rng, config);
  const p = ipv6Packet(rng, rng.pick(CLIENTS_V6), t.dst, t.proto, tcpOrUdp6(rng, t));
  return { ip: p.ip, l4: p.l4, proto: t.proto };
}

type SeedMaker = (rng: Rng, config: FuzzConfig) => Seed;

const SEEDS: ReadonlyArray<readonly [number, SeedMaker]> = [
  // TCP of every flag combination the packet tests send, through the packet tests' own builder.
  [
    20,
    (rng, config) => {
      const t = target4(rng, config, 6);
      const frame = ipv4Frame({
        src: rng.pick(['10.10.0.10', '192.0.2.77']),
        dst: Array.from(t.dst).join('.'),
        srcPort: rng.range(1024, 65535),
        dstPort: t.port,
        tcpFlags: rng.pick(TCP_FLAG_CHOICES),
        payload: payloadOf(rng),
        ttl: rng.range(1, 255),
        tos: rng.int(256),
        id: rng.int(65536),
        dontFragment: rng.chance(0.7),
      });
      return { kind: 'tcp4', frame, layout: { etherType: 12, tags: [], l3: 14, version: 4, ext: [], l4: 34, proto: 6 } };
    },
  ],
  [
    8,
    (rng, config) => {
      const t = target4(rng, config);
      const p = l4Packet4(rng, rng.pick(CLIENTS_V4), t);
      return ipv4Seed(t.proto === 6 ? 'tcp4-options' : 'udp4', rng, p.ip, p.l4, t.proto);
    },
  ],
  [
    8,
    (rng, config) => {
      const t = target4(rng, config, 17);
      const p = l4Packet4(rng, rng.pick(CLIENTS_V4), t);
      return ipv4Seed('udp4', rng, p.ip, p.l4, 17);
    },
  ],
  // IPv4 options: NOPs, an end-of-list, record route, timestamp, or junk.
  [
    5,
    (rng, config) => {
      const words = rng.range(1, 10);
      const options = rng.weighted<() => Buffer>([
        [3, () => Buffer.alloc(words * 4, 1)],
        [2, () => Buffer.alloc(words * 4, 0)],
        [
          2,
          () => {
            const o = Buffer.alloc(words * 4);
            o[0] = 7;
            o[1] = Math.min(words * 4, 39);
            o[2] = 4;
            return o;
          },
        ],
        [
          1,
          () => {
            const o = Buffer.alloc(words * 4);
            o[0] = 68;
            o[1] = Math.min(words * 4, 40);
            o[2] = 5;
            return o;
          },
        ],
        [1, () => rng.bytes(words * 4)],
      ])();
      const t = target4(rng, config);
      const p = l4Packet4(rng, rng.pick(CLIENTS_V4), t, { options });
      return ipv4Seed('ipv4-options', rng, p.ip, p.l4, t.proto);
    },
  ],
  // Fragments: a first one (MF, offset 0) with the L4 header, a later one without.
  [
    5,
    (rng, config) => {
      const t = target4(rng, config);
      const first = rng.chance(0.5);
      const p = l4Packet4(
        rng,
        rng.pick(CLIENTS_V4),
        t,
        first ? { mf: true, df: false } : { mf: rng.chance(0.5), df: false, fragOffset: rng.range(1, 0x1fff) },
      );
      return ipv4Seed(first ? 'fragment4-first' : 'fragment4-later', rng, p.ip, p.l4, t.proto);
    },
  ],
  // ICMP echo requests, to VIP addresses and others.
  [
    5,
    (rng, config) => {
      const dst = rng.chance(0.7) ? v4(rng.pick(config.vips.filter((v) => v.family === 4)).address) : rng.pick(OTHER_V4);
      const type = rng.weighted([
        [8, 8],
        [1, 0],
        [1, 13],
      ] as const);
      const msg = icmp4(type, 0, (rng.int(65536) << 16) | rng.int(65536), rng.bytes(rng.pick([0, 8, 56])));
      return ipv4Seed('icmp4-echo', rng, concat(ipv4Header({ src: rng.pick(CLIENTS_V4), dst, proto: 1, payload: msg }), msg), 20, 1);
    },
  ],
  // ICMP errors about a flow: a router tells a VIP (the source of the backends' replies) about it.
  [
    5,
    (rng, config) => {
      const vip = rng.pick(config.vips.filter((v) => v.family === 4));
      const quote = replyQuote4(
        rng,
        rng.chance(0.8) ? v4(vip.address) : rng.pick(OTHER_V4),
        rng.chance(0.8) ? vip.port : 9999,
        IPPROTO[vip.protocol] as 6 | 17,
        rng.pick(CLIENTS_V4),
        rng.chance(0.3),
      );
      const [type, code] = rng.weighted([
        [5, [3, 4]],
        [2, [3, 3]],
        [2, [11, 0]],
        [1, [3, 1]],
        [1, [12, 0]],
      ] as const);
      const msg = icmp4(type, code, type === 3 && code === 4 ? rng.pick([1280, 1400, 1450, 576, 68]) : 0, quote);
      const dst = rng.chance(0.9) ? v4(vip.address) : rng.pick(OTHER_V4);
      return ipv4Seed('icmp4-error', rng, concat(ipv4Header({ src: ROUTER_V4, dst, proto: 1, payload: msg }), msg), 20, 1);
    },
  ],
  // IPv6 TCP/UDP, with and without extension headers.
  [
    10,
    (rng, config) => {
      const t = target6(rng, config);
      const p = ipv6Packet(rng, rng.pick(CLIENTS_V6), t.dst, t.proto, tcpOrUdp6(rng, t));
      const kind = p.ext.length ? 'ipv6-ext' : t.proto === 6 ? 'tcp6' : 'udp6';
      return {
        kind,
        frame: concat(l2(rng, 0x86dd), p.ip),
        layout: { etherType: 12, tags: [], l3: 14, version: 6, ext: p.ext.map((o) => 14 + o), l4: 14 + p.l4, proto: t.proto },
      };
    },
  ],
  // ICMPv6: echo requests, packet too big quoting a flow from a VIP, neighbour solicitations.
  [
    5,
    (rng, config) => {
      const client = rng.pick(CLIENTS_V6);
      const kind = rng.weighted([
        [3, 'echo'],
        [3, 'too-big'],
        [1, 'nd'],
      ] as const);
      const vipEntry = rng.pick(config.vips.filter((v) => v.family === 6));
      const vip = rng.chance(0.9) ? v6(vipEntry.address) : rng.pick(OTHER_V6);
      let src = client;
      let dst = vip;
      let body: (pseudo: (length: number) => number) => Buffer;
      if (kind === 'echo') {
        body = (pseudo) => icmp6(pseudo, 128, 0, rng.u32(), rng.bytes(rng.pick([0, 8, 56])));
      } else if (kind === 'too-big') {
        src = ROUTER_V6;
        const t: Target = {
          dst: client,
          port: rng.range(1024, 65535),
          proto: rng.chance(0.9) ? (IPPROTO[vipEntry.protocol] as 6 | 17) : 6,
        };
        const sport = rng.chance(0.8) ? vipEntry.port : rng.range(1, 65535);
        const quoted = ipv6Packet(
          rng,
          vip,
          client,
          t.proto,
          tcpOrUdp6(rng, t, sport, rng.bytes(rng.chance(0.2) ? rng.range(1300, 1450) : rng.range(0, 40))),
        ).ip;
        const quote = quoted.subarray(0, rng.chance(0.5) ? 48 : quoted.length);
        if (rng.chance(0.1)) dst = rng.pick(OTHER_V6);
        body = (pseudo) => icmp6(pseudo, 2, 0, rng.pick([1280, 1400, 1500]), quote);
      } else {
        dst = v6('ff02::1:ff00:100');
        body = (pseudo) => icmp6(pseudo, 135, 0, 0, concat(vip, Buffer.from([1, 1, ...MAC_CLIENT])));
      }
      const p = ipv6Packet(rng, src, dst, 58, body);
      return {
        kind: `icmp6-${kind}`,
        frame: concat(l2(rng, 0x86dd), p.ip),
        layout: { etherType: 12, tags: [], l3: 14, version: 6, ext: p.ext.map((o) => 14 + o), l4: 14 + p.l4, proto: 58 },
      };
    },
  ],
  // Tunnels for xdp_decap: 4-in-4, 6-in-4, 6-in-6, 4-in-6, to a tunnel endpoint or another address.
  [
    15,
    (rng, config) => {
      const outerV6 = rng.chance(0.35);
      const innerVersion: Family = rng.chance(0.65) ? 4 : 6;
      const inner = innerPacket(rng, config, innerVersion);
      const nh = innerVersion === 4 ? 4 : 41;
      const macs = ethHeader(rng.chance(0.9) ? MAC_BALANCER : rng.bytes(6), MAC_ROUTER, outerV6 ? 0x86dd : 0x0800);
      let outer: Buffer;
      let ext: number[] = [];
      if (outerV6) {
        const dst = rng.chance(0.8) ? rng.pick(ENDPOINTS_V6) : rng.pick(OTHER_V6);
        const p = rng.chance(0.2)
          ? ipv6Packet(rng, ROUTER_V6, dst, nh, () => inner.ip)
          : { ip: concat(ipv6Header(ROUTER_V6, dst, nh, inner.ip.length), inner.ip), ext: [], l4: 40 };
        outer = p.ip.subarray(0, p.l4);
        ext = p.ext;
      } else {
        const dst = rng.chance(0.8) ? v4(rng.pick(config.decapEndpoints)) : rng.pick(OTHER_V4);
        const options = rng.chance(0.1) ? Buffer.alloc(4, 1) : undefined;
        outer = ipv4Header({
          src: v4(BALANCER_ADDRESS),
          dst,
          proto: nh,
          payload: inner.ip,
          id: rng.int(65536),
          ...(options ? { options } : {}),
          ...(rng.chance(0.05) ? { mf: true } : {}),
        });
      }
      const frame = concat(macs, outer, inner.ip);
      const innerL3 = 14 + outer.length;
      return {
        kind: `tunnel-${innerVersion}in${outerV6 ? 6 : 4}`,
        frame,
        layout: {
          etherType: 12,
          tags: [],
          l3: 14,
          version: outerV6 ? 6 : 4,
          ext: ext.map((o) => 14 + o),
          l4: innerL3,
          proto: nh,
          inner: { l3: innerL3, version: innerVersion, l4: innerL3 + inner.l4, proto: inner.proto },
        },
      };
    },
  ],
  [
    3,
    (rng) => {
      // ARP request
      const arp = Buffer.from('0001080006040001', 'hex');
      return {
        kind: 'arp',
        frame: concat(
          ethHeader(Buffer.alloc(6, 0xff), MAC_CLIENT, 0x0806),
          arp,
          MAC_CLIENT,
          rng.pick(CLIENTS_V4),
          Buffer.alloc(6),
          v4('10.100.0.100'),
          Buffer.alloc(rng.pick([0, 18])),
        ),
        layout: { etherType: 12, tags: [], ext: [] },
      };
    },
  ],
  [
    4,
    (rng) => {
      // Anything else: LLDP, MPLS, random EtherTypes, IP EtherTypes over garbage, runts
      const type = rng.pick([0x88cc, 0x8847, 0x88e5, 0x0000, 0xffff, 0x05dc, 0x0800, 0x86dd, rng.int(65536)]);
      return {
        kind: 'garbage',
        frame: concat(ethHeader(MAC_BALANCER, MAC_CLIENT, type), rng.bytes(rng.range(0, 120))),
        layout: { etherType: 12, tags: [], ext: [] },
      };
    },
  ],
];

/** Puts one 802.1Q (or 802.1ad) tag in front of the EtherType, sometimes two. */
function tagged(rng: Rng, seed: Seed): Seed {
  const tags = rng.chance(0.15) ? 2 : 1;
  let frame = seed.frame;
  for (let i = 0; i < tags; i++) {
    const tag = Buffer.alloc(4);
    tag.writeUInt16BE(tags === 2 && i === 1 ? 0x88a8 : rng.chance(0.85) ? 0x8100 : 0x88a8, 0);
    tag.writeUInt16BE(rng.chance(0.1) ? rng.pick([0, 0xfff, 0xffff]) : rng.range(1, 4094), 2);
    frame = concat(frame.subarray(0, 12), tag, frame.subarray(12));
  }
  const shift = tags * 4;
  const move = (o: number | undefined) => (o === undefined ? undefined : o + shift);
  const layout = seed.layout;
  const moved: Layout = {
    etherType: layout.etherType + shift,
    tags: tags === 2 ? [14, 18] : [14],
    ext: layout.ext.map((o) => o + shift),
    ...(layout.l3 !== undefined ? { l3: move(layout.l3)! } : {}),
    ...(layout.version !== undefined ? { version: layout.version } : {}),
    ...(layout.l4 !== undefined ? { l4: move(layout.l4)! } : {}),
    ...(layout.proto !== undefined ? { proto: layout.proto } : {}),
    ...(layout.inner
      ? {
          inner: {
            ...layout.inner,
            l3: layout.inner.l3 + shift,
            ...(layout.inner.l4 !== undefined ? { l4: layout.inner.l4 + shift } : {}),
          },
        }
      : {}),
  };
  return { kind: `vlan${tags === 2 ? '2' : ''}-${seed.kind}`, frame, layout: moved };
}

function makeSeed(rng: Rng, config: FuzzConfig): Seed {
  const seed = rng.weighted(SEEDS)(rng, config);
  return rng.chance(0.1) ? tagged(rng, seed) : seed;
}

// ---------------------------------------------------------------------------
// Mutators.

const MAX_FRAME = 2048;
const INTERESTING = [0x00, 0xff, 0x80, 0x7f, 0x01, 0x40, 0x45, 0x60, 0x06, 0x11, 0x04, 0x29];

function write16(frame: Buffer, offset: number | undefined, value: number): boolean {
  if (offset === undefined || offset < 0 || offset + 2 > frame.length) return false;
  frame.writeUInt16BE(value & 0xffff, offset);
  return true;
}

function write8(frame: Buffer, offset: number | undefined, value: number): boolean {
  if (offset === undefined || offset < 0 || offset >= frame.length) return false;
  frame[offset] = value & 0xff;
  return true;
}

function read16(frame: Buffer, offset: number): number {
  return offset + 2 <= frame.length ? frame.readUInt16BE(offset) : 0;
}

function lengthValue(rng: Rng, actual: number): number {
  return rng.pick([
    actual - 1,
    actual + 1,
    0,
    0xffff,
    actual + rng.range(2, 64),
    Math.max(0, actual - rng.range(2, 64)),
    20,
    19,
    40,
    rng.int(65536),
  ]);
}

/** Field-aware mutations: each returns its name, or null when the frame lacks the field. */
const FIELD_MUTATIONS: ReadonlyArray<(rng: Rng, f: Buffer, l: Layout) => string | null> = [
  (rng, f, l) => (l.version === 4 && write8(f, l.l3, (f[l.l3!]! & 0xf0) | rng.int(16)) ? 'ihl' : null),
  (rng, f, l) => (l.l3 !== undefined && write8(f, l.l3, (rng.pick([4, 6, 0, 5, 15]) << 4) | (f[l.l3]! & 0x0f)) ? 'ip-version' : null),
  (rng, f, l) => (l.version === 4 && write16(f, l.l3! + 2, lengthValue(rng, read16(f, l.l3! + 2))) ? 'total-length' : null),
  (rng, f, l) => (l.version === 6 && write16(f, l.l3! + 4, lengthValue(rng, read16(f, l.l3! + 4))) ? 'payload-length' : null),
  (rng, f, l) => {
    const nh = rng.pick([0, 1, 4, 6, 17, 41, 43, 44, 50, 51, 58, 59, 60, 135, rng.int(256)]);
    if (l.version === 6) {
      const at = rng.chance(0.5) || l.ext.length === 0 ? l.l3! + 6 : rng.pick(l.ext);
      return write8(f, at, nh) ? 'next-header' : null;
    }
    return l.version === 4 && write8(f, l.l3! + 9, nh) ? 'protocol' : null;
  },
  (rng, f, l) => (l.ext.length > 0 && write8(f, rng.pick(l.ext) + 1, rng.pick([0, 1, 2, 255, rng.int(256)])) ? 'ext-length' : null),
  (rng, f, l) =>
    l.version === 4 && write16(f, l.l3! + 6, rng.pick([0x2000, 0x0001, 0x4000, 0x1fff, 0x6000, 0x8000, 0, rng.int(65536)]))
      ? 'fragment'
      : null,
  (rng, f, l) =>
    l.proto === 6 && l.l4 !== undefined && write8(f, l.l4 + 12, (rng.int(16) << 4) | ((f[l.l4 + 12] ?? 0) & 0x0f))
      ? 'tcp-data-offset'
      : null,
  (rng, f, l) =>
    l.proto === 6 && write8(f, (l.l4 ?? -100) + 13, rng.chance(0.5) ? rng.pick(TCP_FLAG_CHOICES) : rng.int(256)) ? 'tcp-flags' : null,
  (rng, f, l) =>
    l.proto === 17 && l.l4 !== undefined && write16(f, l.l4 + 4, lengthValue(rng, read16(f, l.l4 + 4))) ? 'udp-length' : null,
  (rng, f, l) => (l.tags.length > 0 && write16(f, rng.pick(l.tags), rng.pick([0, 0xfff, 0xffff, rng.int(65536)])) ? 'vlan-id' : null),
  (rng, f, l) =>
    write16(
      f,
      rng.chance(0.7) || l.tags.length === 0 ? l.etherType : rng.pick(l.tags) - 2,
      rng.pick([0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806, 0x9100, 0x88cc, rng.int(65536)]),
    )
      ? 'ethertype'
      : null,
  // Steer a frame towards a VIP or a tunnel endpoint: malformed frames that look like they are for one.
  (rng, f, l) => {
    if (l.version === 4 && l.l3 !== undefined && l.l3 + 20 <= f.length) {
      v4(
        rng.chance(0.7)
          ? rng.pick(FUZZ_CONFIG.vips.filter((v) => v.family === 4)).address
          : rng.pick(FUZZ_CONFIG.decapEndpoints.filter((e) => !e.includes(':'))),
      ).copy(f, l.l3 + 16);
      return 'to-vip-address';
    }
    if (l.version === 6 && l.l3 !== undefined && l.l3 + 40 <= f.length) {
      (rng.chance(0.7) ? rng.pick(VIPS_V6) : rng.pick(ENDPOINTS_V6)).copy(f, l.l3 + 24);
      return 'to-vip-address';
    }
    return null;
  },
  (rng, f, l) =>
    (l.proto === 6 || l.proto === 17) && write16(f, (l.l4 ?? -100) + 2, rng.pick(FUZZ_CONFIG.vips).port) ? 'to-vip-port' : null,
  (rng, f, l) => (l.inner && write8(f, l.inner.l3, (rng.pick([4, 6, 0, 5]) << 4) | rng.int(16)) ? 'inner-version-ihl' : null),
  (rng, f, l) =>
    l.inner?.version === 4 && write16(f, l.inner.l3 + 2, lengthValue(rng, read16(f, l.inner.l3 + 2))) ? 'inner-total-length' : null,
];

/** Offsets of header bytes (for byte sets): the first 64 bytes and around each known header. */
function headerOffset(rng: Rng, f: Buffer, l: Layout): number {
  const anchors = [0, 12, l.l3, l.l4, l.inner?.l3, l.inner?.l4, ...l.ext, ...l.tags].filter((o): o is number => o !== undefined);
  const at = rng.chance(0.3) ? rng.int(64) : rng.pick(anchors) + rng.int(24);
  return Math.min(at, Math.max(0, f.length - 1));
}

/** Recomputes IPv4 header checksums where the headers still fit, so that only the mutated field is wrong. */
function fixChecksums(f: Buffer, l: Layout): void {
  for (const at of [l.version === 4 ? l.l3 : undefined, l.inner?.version === 4 ? l.inner.l3 : undefined]) {
    if (at === undefined || at + 20 > f.length) continue;
    const hlen = (f[at]! & 0x0f) * 4;
    if (hlen < 20 || at + hlen > f.length) continue;
    f.writeUInt16BE(0, at + 10);
    f.writeUInt16BE(checksum(f, at, at + hlen), at + 10);
  }
}

function mutate(rng: Rng, seed: Seed): { frame: Buffer; mutations: string[] } {
  let f: Buffer = Buffer.from(seed.frame);
  const l = seed.layout;
  const mutations: string[] = [];
  const rounds = rng.weighted([
    [6, 1],
    [3, 2],
    [1, 3],
  ] as const);
  for (let r = 0; r < rounds; r++) {
    const which = rng.weighted([
      [3, 'flip'],
      [3, 'set'],
      [5, 'field'],
      [2, 'truncate'],
      [1, 'extend'],
      [1, 'shift'],
    ] as const);
    switch (which) {
      case 'flip': {
        const flips = rng.range(1, 3);
        for (let i = 0; i < flips && f.length > 0; i++) {
          const at = rng.chance(0.7) ? headerOffset(rng, f, l) : rng.int(f.length);
          f[at]! ^= 1 << rng.int(8);
        }
        mutations.push('flip');
        break;
      }
      case 'set': {
        if (f.length === 0) break;
        const at = headerOffset(rng, f, l);
        f[at] = rng.chance(0.3) ? (f[at]! + rng.pick([1, -1])) & 0xff : rng.pick(INTERESTING);
        mutations.push(`set@${at}`);
        break;
      }
      case 'field': {
        for (let attempt = 0; attempt < 4; attempt++) {
          const name = rng.pick(FIELD_MUTATIONS)(rng, f, l);
          if (name) {
            mutations.push(name);
            break;
          }
        }
        break;
      }
      case 'truncate': {
        const length = rng.int(f.length);
        f = f.subarray(0, length);
        mutations.push(`truncate:${length}`);
        break;
      }
      case 'extend': {
        const tail = rng.chance(0.5) ? rng.bytes(rng.range(1, 64)) : Buffer.alloc(rng.range(1, 64));
        f = concat(f, tail);
        mutations.push(`extend:${tail.length}`);
        break;
      }
      case 'shift': {
        // insert or remove bytes at a header boundary: every later header moves
        const anchors = [12, l.l3, l.l4, l.inner?.l3, ...l.ext].filter((o): o is number => o !== undefined && o <= f.length);
        const at = rng.pick(anchors);
        const n = rng.range(1, 8);
        f = rng.chance(0.5)
          ? concat(f.subarray(0, at), rng.bytes(n), f.subarray(at))
          : concat(f.subarray(0, at), f.subarray(Math.min(f.length, at + n)));
        mutations.push(`shift@${at}`);
        break;
      }
    }
  }
  if (rng.chance(0.5)) {
    fixChecksums(f, l);
    mutations.push('checksums-fixed');
  }
  return { frame: f.length > MAX_FRAME ? f.subarray(0, MAX_FRAME) : f, mutations };
}

/** Frame `index` of the run with seed `seed`: about a third unmutated seeds, the rest mutated. */
export function fuzzFrame(seed: number, index: number, config: FuzzConfig = FUZZ_CONFIG): FuzzFrame {
  const rng = frameRng(seed, index);
  const s = makeSeed(rng, config);
  if (rng.chance(0.35)) return { index, kind: s.kind, mutations: [], frame: s.frame };
  const { frame, mutations } = mutate(rng, s);
  return { index, kind: s.kind, mutations, frame };
}

// ---------------------------------------------------------------------------
// The checker's own parser. It follows the RFCs, not the programs: it
// decides what "parses", which the programs' outputs are held to.

export interface ParsedL2 {
  tags: Array<{ tpid: number; tci: number }>;
  etherType: number;
  l3: number; // offset of the L3 header
}

const VLAN_TPIDS = new Set([0x8100, 0x88a8]);

function parseL2(f: Buffer): ParsedL2 | string {
  if (f.length < 14) return 'frame shorter than an Ethernet header';
  const tags: ParsedL2['tags'] = [];
  let at = 12;
  let type = f.readUInt16BE(at);
  while (VLAN_TPIDS.has(type)) {
    if (tags.length === 2) return 'more than two VLAN tags';
    if (at + 6 > f.length) return 'VLAN tag cut short';
    tags.push({ tpid: type, tci: f.readUInt16BE(at + 2) });
    at += 4;
    type = f.readUInt16BE(at);
  }
  return { tags, etherType: type, l3: at + 2 };
}

export interface ParsedIp {
  version: Family;
  start: number; // offset of the IP header in the frame
  headerLength: number; // IPv4 header, or IPv6 header + extension headers
  length: number; // the IP packet: total length / 40 + payload length
  proto: number; // the upper-layer protocol
  src: Buffer;
  dst: Buffer;
  fragment: boolean; // a piece of a bigger packet (atomic IPv6 fragments are not)
  checksumValid: boolean; // IPv4 header checksum (IPv6: true)
  optionsValid: boolean; // IPv4 options well-formed (IPv6: true); the reserved flag is ignored, as Linux does
  routed: boolean; // IPv6 routing header with segments left: dst is not the final destination
}

function ipv4OptionsValid(f: Buffer, start: number, end: number): boolean {
  let at = start;
  while (at < end) {
    const type = f[at]!;
    if (type === 0) return true; // end of list: the rest is padding
    if (type === 1) {
      at += 1;
      continue;
    }
    if (at + 1 >= end) return false;
    const length = f[at + 1]!;
    if (length < 2 || at + length > end) return false;
    at += length;
  }
  return true;
}

/**
 * The IP header at `start` (and IPv6 extension headers: hop-by-hop, routing,
 * fragment, destination options, AH), if the frame holds the whole packet.
 */
function parseIp(f: Buffer, start: number, etherType: number): ParsedIp | string {
  if (etherType === 0x0800) {
    if (start + 20 > f.length) return 'IPv4 header cut short';
    const version = f[start]! >> 4;
    const hlen = (f[start]! & 0x0f) * 4;
    const length = f.readUInt16BE(start + 2);
    if (version !== 4) return `IPv4 EtherType, version ${version}`;
    if (hlen < 20) return `IHL ${hlen / 4}`;
    if (length < hlen) return `total length ${length} < header length ${hlen}`;
    if (start + length > f.length) return `total length ${length} beyond the frame (${f.length - start} bytes)`;
    const frag = f.readUInt16BE(start + 6);
    return {
      version: 4,
      start,
      headerLength: hlen,
      length,
      proto: f[start + 9]!,
      src: f.subarray(start + 12, start + 16),
      dst: f.subarray(start + 16, start + 20),
      fragment: (frag & 0x3fff) !== 0,
      checksumValid: checksumValid(f, start, start + hlen),
      optionsValid: ipv4OptionsValid(f, start + 20, start + hlen),
      routed: false,
    };
  }
  if (etherType === 0x86dd) {
    if (start + 40 > f.length) return 'IPv6 header cut short';
    const version = f[start]! >> 4;
    if (version !== 6) return `IPv6 EtherType, version ${version}`;
    const length = 40 + f.readUInt16BE(start + 4);
    if (start + length > f.length) return `payload length ${length - 40} beyond the frame`;
    let next = f[start + 6]!;
    let at = start + 40;
    let fragment = false;
    let routed = false;
    for (let count = 0; ; count++) {
      if (next === 0 && count > 0) return 'hop-by-hop options not first';
      if (next !== 0 && next !== 43 && next !== 44 && next !== 60 && next !== 51) break;
      if (count === 8) return 'more than 8 extension headers';
      if (at + 8 > start + length) return 'extension header beyond the payload';
      const hlen = next === 44 ? 8 : next === 51 ? (f[at + 1]! + 2) * 4 : (f[at + 1]! + 1) * 8;
      if (at + hlen > start + length) return 'extension header beyond the payload';
      if (next === 44 && (f.readUInt16BE(at + 2) & 0xfff9) !== 0) fragment = true;
      if (next === 43 && f[at + 3]! > 0) routed = true;
      next = f[at]!;
      at += hlen;
    }
    return {
      version: 6,
      start,
      headerLength: at - start,
      length,
      proto: next,
      src: f.subarray(start + 8, start + 24),
      dst: f.subarray(start + 24, start + 40),
      fragment,
      checksumValid: true,
      optionsValid: true,
      routed,
    };
  }
  return `EtherType 0x${etherType.toString(16).padStart(4, '0')} is not IP`;
}

export interface ParsedL4 {
  sport: number;
  dport: number;
  /** What a strict parser also checks: TCP data offset, UDP length. */
  strictError: string | null;
}

function parseL4(f: Buffer, ip: ParsedIp): ParsedL4 | string {
  const at = ip.start + ip.headerLength;
  const end = ip.start + ip.length;
  if (ip.proto === 6) {
    if (at + 20 > end) return 'TCP header beyond the IP packet';
    const doff = (f[at + 12]! >> 4) * 4;
    return {
      sport: f.readUInt16BE(at),
      dport: f.readUInt16BE(at + 2),
      strictError: doff < 20 || at + doff > end ? `TCP data offset ${doff / 4} (segment of ${end - at} bytes)` : null,
    };
  }
  if (ip.proto === 17) {
    if (at + 8 > end) return 'UDP header beyond the IP packet';
    const length = f.readUInt16BE(at + 4);
    return {
      sport: f.readUInt16BE(at),
      dport: f.readUInt16BE(at + 2),
      strictError: length < 8 || at + length > end ? `UDP length ${length} (datagram of ${end - at} bytes)` : null,
    };
  }
  return `protocol ${ip.proto} has no ports`;
}

// ---------------------------------------------------------------------------
// Invariants.

export interface Strictness {
  /**
   * Forwarding a packet whose IPv4 header checksum is wrong puts a wrong
   * checksum in the output, and decapsulating one whose outer checksum is
   * wrong trusts a corrupt header. Off: the checker only requires that the
   * programs never make a checksum wrong (outer headers and answers they
   * write, inner packets as valid as they came in); such frames are counted.
   */
  readonly inputChecksums: boolean;
  /** Forwarded packets must also have well-formed IPv4 options, TCP data offset and UDP length. */
  readonly strictHeaders: boolean;
}

export const DEFAULT_STRICTNESS: Strictness = { inputChecksums: true, strictHeaders: true };

export type Outcome =
  'passed' | 'decapsulated' | 'dropped' | 'forwarded-l2dsr' | 'forwarded-ipip' | 'redirected-l2dsr' | 'redirected-ipip' | 'icmp-answer';

export type CheckResult = { ok: true; outcome: Outcome; notes: string[] } | { ok: false; invariant: string; detail: string };

export const XDP_ACTIONS = ['aborted', 'drop', 'pass', 'tx', 'redirect'] as const;
export type ActionName = (typeof XDP_ACTIONS)[number] | 'skipped' | 'not-an-action';

function actionName(code: number): ActionName {
  if (code === 0xff) return 'skipped';
  return XDP_ACTIONS[code] ?? 'not-an-action';
}

const fail = (invariant: string, detail: string): CheckResult => ({ ok: false, invariant, detail });

function vipKey(address: Buffer, port: number, proto: number): string {
  return `${address.toString('hex')}/${port}/${proto}`;
}

/** The configuration, indexed for the checker. */
export class ConfigIndex {
  readonly vips = new Map<string, FuzzVip>();
  readonly vipAddresses = new Set<string>();
  readonly endpoints = new Set<string>();
  readonly backends = new Map<number, FuzzBackend>();

  constructor(readonly config: FuzzConfig) {
    for (const vip of config.vips) {
      const address = vip.family === 4 ? v4(vip.address) : v6(vip.address);
      this.vips.set(vipKey(address, vip.port, IPPROTO[vip.protocol]), vip);
      this.vipAddresses.add(address.toString('hex'));
    }
    for (const e of config.decapEndpoints) this.endpoints.add((e.includes(':') ? v6(e) : v4(e)).toString('hex'));
    for (const b of config.backends) this.backends.set(b.id, b);
  }
}

interface VipPacket {
  l2: ParsedL2;
  ip: ParsedIp;
  vip: FuzzVip;
  /** How the packet names the VIP: its destination, or the flow an ICMP error quotes. */
  via: 'destination' | 'icmp-error';
  /** Parses only loosely: a strict parser would refuse it (says why). */
  strictError: string | null;
}

/**
 * Is the frame a packet for a configured VIP, with a header chain that
 * parses? Either addressed to the VIP's address, port and protocol, or an
 * ICMP error addressed to a VIP address that quotes a packet the VIP sent.
 */
function vipPacket(f: Buffer, index: ConfigIndex): VipPacket | string {
  const l2 = parseL2(f);
  if (typeof l2 === 'string') return l2;
  const ip = parseIp(f, l2.l3, l2.etherType);
  if (typeof ip === 'string') return ip;
  if (ip.fragment) return 'a fragment';
  if (ip.routed) return 'an IPv6 routing header sends it on to another address';
  const strictIp = !ip.checksumValid ? 'IPv4 header checksum wrong' : !ip.optionsValid ? 'IPv4 options malformed' : null;
  if (ip.proto === 1 || ip.proto === 58) return icmpErrorVipPacket(f, l2, ip, strictIp, index);
  const l4 = parseL4(f, ip);
  if (typeof l4 === 'string') return l4;
  const vip = index.vips.get(vipKey(ip.dst, l4.dport, ip.proto));
  if (!vip) return 'not addressed to a VIP';
  return { l2, ip, vip, via: 'destination', strictError: strictIp ?? l4.strictError };
}

function icmpErrorVipPacket(f: Buffer, l2: ParsedL2, ip: ParsedIp, strictIp: string | null, index: ConfigIndex): VipPacket | string {
  const at = ip.start + ip.headerLength;
  const end = ip.start + ip.length;
  if (at + 8 > end) return 'ICMP header beyond the IP packet';
  const type = f[at]!;
  const isError = ip.version === 4 ? type === 3 || type === 11 || type === 12 : type >= 1 && type <= 4;
  if (!isError) return `ICMP type ${type} is not an error`;
  if (!index.vipAddresses.has(ip.dst.toString('hex'))) return 'ICMP error not addressed to a VIP address';
  // The quote: an IP header and at least the 8 bytes that hold the ports.
  const quoteL2: ParsedL2 = { tags: [], etherType: ip.version === 4 ? 0x0800 : 0x86dd, l3: at + 8 };
  const quoted = parseQuote(f.subarray(0, end), quoteL2);
  if (typeof quoted === 'string') return `quote: ${quoted}`;
  const vip = index.vips.get(vipKey(quoted.src, quoted.sport, quoted.proto));
  if (!vip) return 'the quoted packet is not from a VIP';
  if (!quoted.src.equals(ip.dst)) return 'the quoted packet is from another address than the error is sent to';
  return { l2, ip, vip, via: 'icmp-error', strictError: strictIp };
}

/** An ICMP quote: its IP header may say the packet was longer than what is quoted. */
function parseQuote(f: Buffer, l2: ParsedL2): { src: Buffer; sport: number; proto: number } | string {
  const start = l2.l3;
  if (l2.etherType === 0x0800) {
    if (start + 20 > f.length) return 'IPv4 header beyond the ICMP message';
    if (f[start]! >> 4 !== 4) return `IP version ${f[start]! >> 4} in an ICMP error`;
    const hlen = (f[start]! & 0x0f) * 4;
    if (hlen < 20 || start + hlen + 8 > f.length) return 'IPv4 header or ports beyond the ICMP message';
    return { src: f.subarray(start + 12, start + 16), sport: f.readUInt16BE(start + hlen), proto: f[start + 9]! };
  }
  if (start + 40 + 8 > f.length) return 'IPv6 header or ports beyond the ICMPv6 message';
  if (f[start]! >> 4 !== 6) return `IP version ${f[start]! >> 4} in an ICMPv6 error`;
  return { src: f.subarray(start + 8, start + 24), sport: f.readUInt16BE(start + 40), proto: f[start + 6]! };
}

function sameTags(a: ParsedL2, b: ParsedL2): boolean {
  return a.tags.length === b.tags.length && a.tags.every((t, i) => t.tpid === b.tags[i]!.tpid && t.tci === b.tags[i]!.tci);
}

/** A forwarded frame: the input for this backend, by its method. Returns why not, or null. */
function forwardedError(input: Buffer, output: Buffer, p: VipPacket, b: FuzzBackend, balancerMac: Buffer): string | null {
  const mac = macBytes(b.mac);
  if (!output.subarray(0, 6).equals(mac)) return `destination MAC ${hex(output.subarray(0, 6))}, backend ${b.id} has ${hex(mac)}`;
  if (!output.subarray(6, 12).equals(balancerMac)) return `source MAC ${hex(output.subarray(6, 12))} is not the balancer's`;
  if (b.forward === 'l2dsr') {
    if (output.length !== input.length) return `l2dsr output of ${output.length} bytes for an input of ${input.length}`;
    return output.subarray(12).equals(input.subarray(12)) ? null : 'l2dsr output differs from the input beyond the MAC addresses';
  }
  // ipip: L2 (tags kept) + outer header + the input's IP packet, byte for byte.
  const l2 = parseL2(output);
  if (typeof l2 === 'string') return `output: ${l2}`;
  if (!sameTags(l2, p.l2)) return 'VLAN tags not kept as they were';
  const outerType = b.family === 4 ? 0x0800 : 0x86dd;
  if (l2.etherType !== outerType) return `outer EtherType 0x${l2.etherType.toString(16)}, backend is IPv${b.family}`;
  const outer = parseIp(output, l2.l3, l2.etherType);
  if (typeof outer === 'string') return `outer header: ${outer}`;
  const innerProto = p.ip.version === 4 ? 4 : 41;
  if (outer.proto !== innerProto) return `outer protocol ${outer.proto} for an IPv${p.ip.version} packet`;
  if (outer.fragment) return 'outer header says fragment';
  if (!outer.checksumValid) return 'outer IPv4 header checksum wrong';
  if (!inRange(outer.src, b.family === 4 ? v4(b.tunnelSource) : v6(b.tunnelSource), b.tunnelSourceBits ?? 0))
    return `outer source ${hex(outer.src)} is not the tunnel source${b.tunnelSourceBits ? ` nor in its range of ${b.tunnelSourceBits} host bits` : ''}`;
  if (!outer.dst.equals(b.family === 4 ? v4(b.address) : v6(b.address)))
    return `outer destination ${hex(outer.dst)} is not backend ${b.id}`;
  if (outer.length !== outer.headerLength + p.ip.length)
    return `outer length ${outer.length} for ${outer.headerLength} + ${p.ip.length} bytes`;
  const innerStart = l2.l3 + outer.headerLength;
  const inner = output.subarray(innerStart, innerStart + p.ip.length);
  if (!inner.equals(input.subarray(p.ip.start, p.ip.start + p.ip.length))) return 'inner packet differs from the input IP packet';
  // Bytes after the IP packet (Ethernet padding, junk): kept as they came, or trimmed.
  const tail = output.subarray(innerStart + p.ip.length);
  if (tail.length > 0 && !tail.equals(input.subarray(p.ip.start + p.ip.length)))
    return "bytes after the inner packet are neither the input's nor trimmed";
  return null;
}

/** Does address lie in the range of hostBits host bits (at most 32, the last word) starting at base? */
function inRange(address: Buffer, base: Buffer, hostBits: number): boolean {
  const last = address.length - 4;
  const mask = hostBits >= 32 ? 0 : ~(2 ** hostBits - 1) >>> 0;
  return address.subarray(0, last).equals(base.subarray(0, last)) && (address.readUInt32BE(last) & mask) >>> 0 === base.readUInt32BE(last);
}

/**
 * ICMP the balancer sends back itself (being added to the data plane:
 * echo replies for VIP addresses, "fragmentation needed" / "packet too
 * big" for packets too big to encapsulate). Kept small on purpose: allowed
 * only for an echo request to a VIP address or a packet for an ipip VIP,
 * the answer must go back to the sender with valid checksums. Tighten
 * when those features land. Returns why the answer is wrong, or null.
 */
function icmpAnswerError(input: Buffer, output: Buffer, action: ActionName, index: ConfigIndex): string | null {
  if (action !== 'tx') return `ICMP answer with action ${action}`;
  const inL2 = parseL2(input);
  if (typeof inL2 === 'string') return `input: ${inL2}`;
  const inIp = parseIp(input, inL2.l3, inL2.etherType);
  if (typeof inIp === 'string') return `input: ${inIp}`;
  const vp = vipPacket(input, index);
  const inAt = inIp.start + inIp.headerLength;
  const echoRequest = (inIp.proto === 1 && input[inAt] === 8) || (inIp.proto === 58 && input[inAt] === 128);
  const echo = echoRequest && !inIp.fragment && index.vipAddresses.has(inIp.dst.toString('hex'));
  const tooBig =
    typeof vp !== 'string' && vp.via === 'destination' && vp.vip.backends.some((id) => index.backends.get(id)?.forward === 'ipip');
  if (!echo && !tooBig) return 'an answer to neither an echo request to a VIP address nor a packet for an ipip VIP';

  const l2 = parseL2(output);
  if (typeof l2 === 'string') return `answer: ${l2}`;
  if (!output.subarray(0, 6).equals(input.subarray(6, 12))) return "answer not sent to the sender's MAC address";
  const ip = parseIp(output, l2.l3, l2.etherType);
  if (typeof ip === 'string') return `answer: ${ip}`;
  if (ip.version !== inIp.version) return 'answer of another IP version';
  if (!ip.dst.equals(inIp.src) || !ip.src.equals(inIp.dst)) return 'answer not addressed back from the VIP to the sender';
  if (!ip.checksumValid) return "answer's IPv4 header checksum wrong";
  const at = ip.start + ip.headerLength;
  const end = ip.start + ip.length;
  const expectedProto = ip.version === 4 ? 1 : 58;
  if (ip.proto !== expectedProto || at + 8 > end) return 'answer is not ICMP';
  const pseudo = ip.version === 4 ? 0 : pseudoSum(ip.src, ip.dst, 58, end - at);
  const type = output[at]!;
  const icmpValid = checksumValid(output, at, end, pseudo);
  if (echo && (type === 0 || type === 129)) {
    const inPseudo = inIp.version === 4 ? 0 : pseudoSum(inIp.src, inIp.dst, 58, inIp.start + inIp.length - inAt);
    const inputValid = checksumValid(input, inAt, inIp.start + inIp.length, inPseudo);
    if (inputValid && !icmpValid) return "echo reply's ICMP checksum wrong";
    if (!output.subarray(at + 4, end).equals(input.subarray(inAt + 4, inIp.start + inIp.length)))
      return "echo reply does not carry the request's identifier, sequence and data";
    return null;
  }
  if (tooBig && ((ip.version === 4 && type === 3 && output[at + 1] === 4) || (ip.version === 6 && type === 2))) {
    if (!icmpValid) return "too-big answer's ICMP checksum wrong";
    const quote = output.subarray(at + 8, end);
    if (quote.length < 8 || !quote.equals(input.subarray(inIp.start, inIp.start + Math.min(quote.length, inIp.length))))
      return 'too-big answer does not quote the start of the packet';
    return null;
  }
  return `ICMP type ${type} is not the answer expected`;
}

/** The invariants for one frame through xdp_balancer. */
export function checkBalancer(
  input: Buffer,
  actionCode: number,
  output: Buffer,
  index: ConfigIndex,
  strict: Strictness = DEFAULT_STRICTNESS,
): CheckResult {
  const action = actionName(actionCode);
  switch (action) {
    case 'skipped':
      return { ok: true, outcome: 'passed', notes: [] };
    case 'aborted':
      return fail('never aborted', 'XDP_ABORTED');
    case 'not-an-action':
      return fail('a valid XDP action', `return value ${actionCode}`);
    case 'drop':
      return { ok: true, outcome: 'dropped', notes: [] };
    case 'pass':
      return output.equals(input) ? { ok: true, outcome: 'passed', notes: [] } : fail('passes unchanged', 'XDP_PASS with a changed frame');
    case 'tx':
    case 'redirect':
      break;
  }
  if (!input.subarray(0, 6).equals(macBytes(index.config.balancerMac)))
    return fail("transmits only frames addressed to this host's MAC", `${action} of a frame to ${hex(input.subarray(0, 6))}`);
  const p = vipPacket(input, index);
  if (typeof p === 'string') {
    const answer = icmpAnswerError(input, output, action, index);
    if (answer === null) return { ok: true, outcome: 'icmp-answer', notes: [] };
    if (looksLikeAnswer(input, output))
      return fail('ICMP answers only echo requests to a VIP address and packets too big for an ipip VIP', answer);
    return fail('transmits only packets for a VIP whose headers parse', p);
  }
  const notes: string[] = [];
  if (p.strictError) {
    if (p.strictError.includes('checksum') ? strict.inputChecksums : strict.strictHeaders) {
      return fail(
        p.strictError.includes('checksum') ? 'no output with a wrong IP checksum' : 'transmits only packets whose headers parse',
        `forwarded a packet for ${p.vip.address}:${p.vip.port}/${p.vip.protocol}: ${p.strictError}`,
      );
    }
    notes.push(`forwarded although ${p.strictError}`);
  }
  const balancerMac = macBytes(index.config.balancerMac);
  const errors: string[] = [];
  for (const id of p.vip.backends) {
    const b = index.backends.get(id)!;
    const error = forwardedError(input, output, p, b, balancerMac);
    if (error) {
      errors.push(`backend ${id} (${b.forward}): ${error}`);
      continue;
    }
    const expected = b.ifindex === index.config.ingressIfindex ? 'tx' : 'redirect';
    if (action !== expected) return fail('forwards with the right action', `${action} to backend ${id} on ifindex ${b.ifindex}`);
    return { ok: true, outcome: `${action === 'tx' ? 'forwarded' : 'redirected'}-${b.forward}`, notes };
  }
  if (p.vip.backends.length === 0) errors.push('the VIP has no backend');
  // Could it be an ICMP answer instead (an echo to a VIP address, too big for an ipip VIP)?
  const answer = icmpAnswerError(input, output, action, index);
  if (answer === null) return { ok: true, outcome: 'icmp-answer', notes };
  if (looksLikeAnswer(input, output))
    return fail(
      'ICMP answers only echo requests to a VIP address and packets too big for an ipip VIP',
      `${answer} (input ${p.via === 'icmp-error' ? 'an ICMP error about' : 'for'} ${p.vip.address}:${p.vip.port}/${p.vip.protocol})`,
    );
  return fail('a forwarded packet is the input, re-addressed', errors.join('; '));
}

/** Is the output an ICMP message sent back to where the input came from? */
function looksLikeAnswer(input: Buffer, output: Buffer): boolean {
  const inL2 = parseL2(input);
  const outL2 = parseL2(output);
  if (typeof inL2 === 'string' || typeof outL2 === 'string') return false;
  const inIp = parseIp(input, inL2.l3, inL2.etherType);
  const outIp = parseIp(output, outL2.l3, outL2.etherType);
  return typeof inIp !== 'string' && typeof outIp !== 'string' && (outIp.proto === 1 || outIp.proto === 58) && outIp.dst.equals(inIp.src);
}

/** The invariants for one frame through xdp_decap. */
export function checkDecap(
  input: Buffer,
  actionCode: number,
  output: Buffer,
  index: ConfigIndex,
  strict: Strictness = DEFAULT_STRICTNESS,
): CheckResult {
  const action = actionName(actionCode);
  switch (action) {
    case 'skipped':
      return { ok: true, outcome: 'passed', notes: [] };
    case 'aborted':
      return fail('never aborted', 'XDP_ABORTED');
    case 'not-an-action':
      return fail('a valid XDP action', `return value ${actionCode}`);
    case 'drop':
      return { ok: true, outcome: 'dropped', notes: [] };
    // Nothing defines what xdp_decap may transmit yet: every transmit is a finding.
    case 'tx':
    case 'redirect':
      return fail('xdp_decap only passes or drops', `XDP_${action.toUpperCase()}`);
    case 'pass':
      break;
  }
  if (output.equals(input)) return { ok: true, outcome: 'passed', notes: [] };
  const error = decapsulatedError(input, output, index, strict);
  if (error === null) return { ok: true, outcome: 'decapsulated', notes: [] };
  if (typeof error !== 'string') return { ok: true, outcome: 'decapsulated', notes: [error.note] };
  return fail(
    error.startsWith('outer IPv4 header checksum')
      ? 'no output with a wrong IP checksum'
      : 'passes unchanged, or exactly the inner packet of a tunnel to an endpoint',
    error,
  );
}

/**
 * Is output the input without its outer IP header, the input a tunnelled
 * packet to an endpoint? Returns why not, a note when it is only because
 * the strictness allows it, or null.
 */
function decapsulatedError(input: Buffer, output: Buffer, index: ConfigIndex, strict: Strictness): string | { note: string } | null {
  const l2 = parseL2(input);
  if (typeof l2 === 'string') return `changed a frame that is not a tunnel: ${l2}`;
  const outer = parseIp(input, l2.l3, l2.etherType);
  if (typeof outer === 'string') return `changed a frame whose outer header does not parse: ${outer}`;
  if (outer.proto !== 4 && outer.proto !== 41) return `changed an IP packet of protocol ${outer.proto}, not a tunnel`;
  if (outer.fragment) return 'decapsulated a fragment of a tunnelled packet';
  if (outer.routed) return 'decapsulated a packet that a routing header sends on';
  if (!index.endpoints.has(outer.dst.toString('hex'))) return `decapsulated a tunnel to ${hex(outer.dst)}, not an endpoint`;
  const innerStart = l2.l3 + outer.headerLength;
  const innerVersion = innerStart < input.length ? input[innerStart]! >> 4 : -1;
  const expectedVersion = outer.proto === 4 ? 4 : 6;
  if (innerVersion !== expectedVersion) return `decapsulated protocol ${outer.proto} carrying IP version ${innerVersion}`;
  // The Ethernet header (and tags) kept, the EtherType naming the inner packet.
  const head = Buffer.from(input.subarray(0, l2.l3));
  head.writeUInt16BE(expectedVersion === 4 ? 0x0800 : 0x86dd, l2.l3 - 2);
  const expected = concat(head, input.subarray(innerStart));
  // Trimming what follows the inner packet (Ethernet padding) is fine too.
  const innerIp = parseIp(expected, l2.l3, expectedVersion === 4 ? 0x0800 : 0x86dd);
  const trimmed =
    typeof innerIp !== 'string' &&
    output.length >= innerIp.start + innerIp.length &&
    output.length < expected.length &&
    output.equals(expected.subarray(0, output.length));
  if (!output.equals(expected) && !trimmed) return 'the output is not the input with exactly its outer IP header removed';
  // A corrupt outer header (the kernel's tunnel drivers drop those) is no tunnel to trust.
  if (!outer.checksumValid)
    return strict.inputChecksums
      ? 'outer IPv4 header checksum wrong: decapsulated a corrupt packet'
      : { note: 'decapsulated although the outer IPv4 header checksum is wrong' };
  return null;
}

// ---------------------------------------------------------------------------
// The harness: both programs loaded and configured, frames run in batches.

export type Program = 'xdp_balancer' | 'xdp_decap' | 'round trip';

export interface Violation {
  readonly seed: number;
  readonly index: number;
  readonly program: Program;
  readonly kind: string;
  readonly mutations: readonly string[];
  readonly invariant: string;
  readonly detail: string;
  readonly action: ActionName;
  readonly input: string; // hex
  readonly output: string; // hex
}

export function describeViolation(v: Violation): string {
  return [
    `${v.program} broke "${v.invariant}": ${v.detail}`,
    `  seed ${v.seed}, frame ${v.index} (${v.kind}${v.mutations.length ? `, mutated: ${v.mutations.join(' ')}` : ''}), action ${v.action}`,
    `  reproduce: LBCTL_FUZZ_SEED=${v.seed} LBCTL_FUZZ_FRAMES=${v.index + 1} node --test dist/test/kernel/fuzz.test.js  (or fuzzFrame(${v.seed}, ${v.index}))`,
    `  input  (${v.input.length / 2} bytes): ${v.input}`,
    `  output (${v.output.length / 2} bytes): ${v.output}`,
  ].join('\n');
}

export interface FuzzStats {
  frames: number;
  mutated: number;
  skipped: number; // shorter than an Ethernet header: the kernel refuses them
  actions: Record<'xdp_balancer' | 'xdp_decap', Record<string, number>>;
  outcomes: Record<'xdp_balancer' | 'xdp_decap', Record<string, number>>;
  roundTrip: { frames: number; decapsulated: number };
  kinds: Record<string, number>;
  notes: Record<string, number>;
  violations: Record<string, number>;
}

function bump(record: Record<string, number>, key: string, by = 1): void {
  record[key] = (record[key] ?? 0) + by;
}

const OUT_STRIDE = MAX_FRAME + 256;

interface BatchRun {
  actions: Buffer;
  outLengths: Uint32Array;
  outputs: Buffer;
}

/** One BPF_PROG_TEST_RUN (repeat 1) per frame, through the native batch runner. */
export function runBatch(programFd: number, frames: readonly Buffer[]): BatchRun {
  const count = frames.length;
  const offsets = new Uint32Array(count);
  const lengths = new Uint32Array(count);
  let total = 0;
  frames.forEach((f, i) => {
    offsets[i] = total;
    lengths[i] = f.length;
    total += f.length;
  });
  const packed = Buffer.alloc(Math.max(1, total));
  frames.forEach((f, i) => f.copy(packed, offsets[i]!));
  const outputs = Buffer.alloc(count * OUT_STRIDE);
  const outLengths = new Uint32Array(count);
  const actions = Buffer.alloc(count);
  orThrow(
    nativeTesting.testRunBatch(programFd, packed, offsets, lengths, count, outputs, OUT_STRIDE, outLengths, actions) as number,
    'BPF_PROG_TEST_RUN batch',
  );
  for (let i = 0; i < count; i++) {
    if (actions[i] === 0xfe)
      throw new Error(`BPF_PROG_TEST_RUN refused frame ${i} of a batch (errno ${outLengths[i]}): ${hex(frames[i]!)}`);
  }
  return { actions, outLengths, outputs };
}

function outputOf(run: BatchRun, i: number): Buffer {
  return run.outputs.subarray(i * OUT_STRIDE, i * OUT_STRIDE + run.outLengths[i]!);
}

export class FuzzHarness {
  readonly balancer: BalancerDataplane;
  readonly decap: LoadedObject;
  readonly index: ConfigIndex;
  readonly stats: FuzzStats;
  /** The first violation of each invariant, in order of discovery. */
  readonly violations: Violation[] = [];

  constructor(
    readonly seed: number,
    readonly config: FuzzConfig = FUZZ_CONFIG,
    readonly strict: Strictness = DEFAULT_STRICTNESS,
  ) {
    this.index = new ConfigIndex(config);
    this.balancer = BalancerDataplane.load({ maxVips: 16, maxBackends: 64, flowTableSize: 4096 });
    try {
      configureBalancer(this.balancer, config);
      this.decap = loadDecap(config.decapEndpoints);
    } catch (error) {
      this.balancer.close();
      throw error;
    }
    this.stats = {
      frames: 0,
      mutated: 0,
      skipped: 0,
      actions: { xdp_balancer: {}, xdp_decap: {} },
      outcomes: { xdp_balancer: {}, xdp_decap: {} },
      roundTrip: { frames: 0, decapsulated: 0 },
      kinds: {},
      notes: {},
      violations: {},
    };
  }

  close(): void {
    this.decap.close();
    this.balancer.close();
  }

  private record(program: Program, frame: FuzzFrame, result: CheckResult, actionCode: number, input: Buffer, output: Buffer): void {
    if (result.ok) {
      for (const note of result.notes) bump(this.stats.notes, note.replace(/\d+/g, 'N'));
      return;
    }
    const key = `${program}: ${result.invariant}`;
    bump(this.stats.violations, key);
    if (this.stats.violations[key] === 1) {
      this.violations.push({
        seed: this.seed,
        index: frame.index,
        program,
        kind: frame.kind,
        mutations: frame.mutations,
        invariant: result.invariant,
        detail: result.detail,
        action: actionName(actionCode),
        input: hex(input),
        output: hex(output),
      });
    }
  }

  /** Frames [start, start + count) of the run: generated, run through both programs, checked. */
  run(start: number, count: number): void {
    const frames: FuzzFrame[] = [];
    for (let i = 0; i < count; i++) frames.push(fuzzFrame(this.seed, start + i, this.config));
    const inputs = frames.map((f) => f.frame);
    const balanced = runBatch(this.balancer.programFd, inputs);
    const decapped = runBatch(this.decap.programFd, inputs);
    const tunnelled: Array<{ frame: FuzzFrame; encapsulated: Buffer }> = [];

    for (let i = 0; i < count; i++) {
      const frame = frames[i]!;
      const input = frame.frame;
      this.stats.frames++;
      if (frame.mutations.length) this.stats.mutated++;
      bump(this.stats.kinds, frame.kind);
      if (balanced.actions[i] === 0xff) {
        this.stats.skipped++;
        continue;
      }
      const bOut = outputOf(balanced, i);
      bump(this.stats.actions.xdp_balancer, actionName(balanced.actions[i]!));
      const b = checkBalancer(input, balanced.actions[i]!, bOut, this.index, this.strict);
      if (b.ok) {
        bump(this.stats.outcomes.xdp_balancer, b.outcome);
        if (b.outcome === 'forwarded-ipip' || b.outcome === 'redirected-ipip') tunnelled.push({ frame, encapsulated: Buffer.from(bOut) });
      }
      this.record('xdp_balancer', frame, b, balanced.actions[i]!, input, bOut);

      const dOut = outputOf(decapped, i);
      bump(this.stats.actions.xdp_decap, actionName(decapped.actions[i]!));
      const d = checkDecap(input, decapped.actions[i]!, dOut, this.index, this.strict);
      if (d.ok) bump(this.stats.outcomes.xdp_decap, d.outcome);
      this.record('xdp_decap', frame, d, decapped.actions[i]!, input, dOut);
    }

    // Round trip: what the balancer encapsulates to a backend that is a tunnel
    // endpoint, xdp_decap turns back into the client's packet.
    if (tunnelled.length === 0) return;
    const back = runBatch(
      this.decap.programFd,
      tunnelled.map((t) => t.encapsulated),
    );
    tunnelled.forEach(({ frame, encapsulated }, i) => {
      const out = outputOf(back, i);
      this.stats.roundTrip.frames++;
      let result = checkDecap(encapsulated, back.actions[i]!, out, this.index, this.strict);
      if (result.ok) {
        if (result.outcome === 'decapsulated') this.stats.roundTrip.decapsulated++;
        const restored = concat(encapsulated.subarray(0, 12), frame.frame.subarray(12));
        const trimmed = out.length < restored.length && out.equals(restored.subarray(0, out.length));
        if (!(result.outcome === 'decapsulated' && (out.equals(restored) || trimmed))) {
          result = fail(
            'a tunnelled packet comes out of xdp_decap as the client sent it',
            `xdp_decap ${result.outcome} the balancer's output (action ${actionName(back.actions[i]!)})`,
          );
        }
      }
      this.record('round trip', frame, result, back.actions[i]!, encapsulated, out);
    });
  }
}
