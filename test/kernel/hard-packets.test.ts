/**
 * The fate of every awkward packet xdp_balancer can meet, IPv4 and IPv6,
 * one BPF_PROG_TEST_RUN each: the XDP action, the exact bytes that come out
 * (built here independently: the input re-addressed, an outer header or an
 * ICMP answer computed by the test's own builders) and the `reasons`
 * counter that moved. Read the test names as the specification.
 */
import assert from 'node:assert/strict';
import { after, beforeEach, describe, test } from 'node:test';
import { FLOW_FLAG_CLOSING, REASONS, type Reason, VIP_FLAG_HASH_SOURCE, flowKeyV4, flowKeyV6, flowState } from '../../src/dataplane/abi.js';
import { BalancerDataplane, KILL_SWITCH_NEVER } from '../../src/dataplane/balancer.js';
import { type Flow, encapHash, flowHash, outerFlowLabel, sourceHash, tableSlot } from '../../src/dataplane/flow-hash.js';
import { type XdpAction, testRun } from '../../src/dataplane/xdp.js';
import { type VipAddress, parseVip } from '../../src/model/address.js';
import { type SourceRange, backendEntry, clearFlows, clearVips, outerSource } from '../support/dataplane.js';
import { insidePrefix } from '../lab/lab.js';
import {
  ETHERTYPE,
  ICMP,
  ICMPV6,
  IPPROTO_NUMBER as P,
  MAC,
  TCP_FLAGS,
  destinationOptionsHeader,
  ethernet,
  fragmentHeader,
  hopByHopHeader,
  icmpMessage,
  internetChecksum,
  ipv4Frame,
  ipv4Header,
  ipv6Frame,
  ipv6Header,
  macBytes,
  pseudoHeader,
  routingHeader,
  withMacs,
  withVlan,
  editIpv4,
} from '../support/packets.js';

const VIP = '10.100.0.100';
const OTHER_VIP = '10.100.0.101';
const CLIENT = '10.10.0.10';
const BALANCER = '10.10.0.2';
const ROUTER = '10.10.0.1';
const VIP6 = '2001:db8:100::100';
const OTHER_VIP6 = '2001:db8:100::101';
const CLIENT6 = '2001:db8:10::10';
const BALANCER6 = '2001:db8:10::2';
const ROUTER6 = '2001:db8:10::1';
const TABLE_SIZE = 251;
const LOOPBACK_IFINDEX = 1; // BPF_PROG_TEST_RUN's ingress interface: backends there get XDP_TX
const ETH_HLEN = 14;

interface TestBackend {
  readonly address: string;
  readonly forward: 'l2dsr' | 'ipip';
  readonly mac: string;
  readonly mtu?: number;
  /** ipip: an outer source range instead of the balancer's address. */
  readonly range?: SourceRange;
}

const BE = {
  L2: 1,
  L2_B: 2,
  L2_V6: 3,
  L2_V6_B: 4,
  IPIP4: 5,
  IPIP4_MTU: 6,
  IPIP6: 7,
  IPIP6_MTU: 8,
  IPIP6_SMALL_MTU: 9,
  IPIP4_MTU_576: 10,
  IPIP4_RANGE: 11,
  IPIP6_RANGE: 12,
  IPIP4_RANGE_V6: 13,
} as const;

const BACKENDS: Record<number, TestBackend> = {
  [BE.L2]: { address: '10.10.0.11', forward: 'l2dsr', mac: '02:00:00:00:00:11' },
  [BE.L2_B]: { address: '10.10.0.12', forward: 'l2dsr', mac: '02:00:00:00:00:12' },
  [BE.L2_V6]: { address: '2001:db8:10::17', forward: 'l2dsr', mac: '02:00:00:00:00:17' },
  [BE.L2_V6_B]: { address: '2001:db8:10::18', forward: 'l2dsr', mac: '02:00:00:00:00:18' },
  [BE.IPIP4]: { address: '10.20.0.14', forward: 'ipip', mac: MAC.router },
  [BE.IPIP4_MTU]: { address: '10.20.0.15', forward: 'ipip', mac: MAC.router, mtu: 1400 },
  [BE.IPIP6]: { address: '2001:db8:20::14', forward: 'ipip', mac: MAC.router },
  [BE.IPIP6_MTU]: { address: '2001:db8:20::15', forward: 'ipip', mac: MAC.router, mtu: 1400 },
  [BE.IPIP6_SMALL_MTU]: { address: '2001:db8:20::16', forward: 'ipip', mac: MAC.router, mtu: 1300 },
  [BE.IPIP4_MTU_576]: { address: '10.20.0.16', forward: 'ipip', mac: MAC.router, mtu: 576 },
  [BE.IPIP4_RANGE]: { address: '10.20.0.17', forward: 'ipip', mac: MAC.router, range: { base: '10.10.4.0', bits: 8 } },
  [BE.IPIP6_RANGE]: { address: '2001:db8:20::17', forward: 'ipip', mac: MAC.router, range: { base: '2001:db8:10::7:0', bits: 16 } },
  [BE.IPIP4_RANGE_V6]: { address: '10.20.0.18', forward: 'ipip', mac: MAC.router, range: { base: '10.10.5.0', bits: 2 } },
};

const dataplane = BalancerDataplane.load({ maxVips: 32, maxBackends: 64, flowTableSize: 4096 });
dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
dataplane.setInterfaceMac(MAC.balancer);
after(() => dataplane.close());

/** One Maglev table per set of owners, installed once: replacing a table waits for an RCU grace period. */
const tableIds = new Map<string, number>();

beforeEach(() => {
  clearFlows(dataplane);
  clearVips(dataplane);
  for (const [id, b] of Object.entries(BACKENDS)) {
    dataplane.putBackend(
      Number(id),
      backendEntry({
        address: b.address,
        forward: b.forward,
        dstMac: b.mac,
        srcMac: MAC.balancer,
        ifindex: LOOPBACK_IFINDEX,
        mtu: b.mtu,
        ...(b.forward === 'ipip'
          ? { tunnelSource: b.range?.base ?? (b.address.includes(':') ? BALANCER6 : BALANCER), tunnelSourceBits: b.range?.bits ?? 0 }
          : {}),
      }),
    );
  }
});

/**
 * A VIP (`10.100.0.100:80/tcp`, `[2001:db8::1]:80/udp`) whose table cycles
 * through the owners; its address answers pings. Calling it again with
 * other owners changes the VIP's table (tracked flows keep their backend).
 */
function vip(text: string | VipAddress, owners: readonly number[], flags = 0): Uint32Array {
  const table = Uint32Array.from({ length: TABLE_SIZE }, (_, i) => owners[i % owners.length]!);
  let id = tableIds.get(owners.join());
  if (id === undefined) {
    id = tableIds.size;
    tableIds.set(owners.join(), id);
    dataplane.putTables([{ tableId: id, table }]);
  }
  const v = typeof text === 'string' ? parseVip(text) : text;
  dataplane.putVip(v, { vip_id: id, table_id: id, table_size: TABLE_SIZE, flags });
  dataplane.putVipAddress(v.family, v.address);
  return table;
}

/** The VIP of all ports of an address and protocol (port 0; the CLI's syntax for it is not settled yet). */
function allPorts(address: string, protocol: 'tcp' | 'udp' = 'tcp'): VipAddress {
  return { family: address.includes(':') ? 6 : 4, address, port: 0, protocol };
}

// ---------------------------------------------------------------------------
// Running a frame and stating its fate.

type Reasons = Partial<Record<Reason, number>>;

interface Fate {
  readonly action: XdpAction;
  readonly output: Buffer;
  readonly reasons: Reasons;
}

function run(frame: Buffer): Fate {
  const before = dataplane.reasonCounters();
  const { action, output } = testRun(dataplane.programFd, frame);
  const after = dataplane.reasonCounters();
  const reasons: Reasons = {};
  for (const r of REASONS) if (after[r] !== before[r]) reasons[r] = Number(after[r] - before[r]);
  return { action, output: Buffer.from(output), reasons };
}

function expectFate(frame: Buffer, expected: Fate, what = ''): void {
  const got = run(frame);
  const at = what ? `${what}: ` : '';
  assert.equal(got.action, expected.action, `${at}XDP action`);
  assert.deepEqual(got.reasons, expected.reasons, `${at}reason counters that moved`);
  assert.equal(got.output.toString('hex'), expected.output.toString('hex'), `${at}output bytes`);
}

/** To the kernel, not a byte changed, counted under `reason`. */
function passes(frame: Buffer, reason: Reason, what?: string): void {
  expectFate(frame, { action: 'pass', output: frame, reasons: { [reason]: 1 } }, what);
}

/** Dropped, counted under `reason`. */
function drops(frame: Buffer, reason: Reason, what?: string): void {
  expectFate(frame, { action: 'drop', output: frame, reasons: { [reason]: 1 } }, what);
}

/** l2dsr: the same frame, to the backend's MAC from the balancer's. No reason counter moves. */
function balancedL2(frame: Buffer, backend: number, what?: string, reasons: Reasons = {}): void {
  expectFate(frame, { action: 'tx', output: withMacs(frame, BACKENDS[backend]!.mac, MAC.balancer), reasons }, what);
}

/** ipip: the frame's IP packet (and anything after it) behind an outer header to the backend. */
function tunnelled(frame: Buffer, backend: number, what?: string, reasons: Reasons = {}): void {
  const b = BACKENDS[backend]!;
  expectFate(frame, { action: 'tx', output: encapsulated(frame, b.address, b.range), reasons }, what);
}

function l2Length(frame: Buffer): number {
  const type = frame.readUInt16BE(12);
  return type === ETHERTYPE.VLAN || type === ETHERTYPE.QINQ ? 18 : 14;
}

/**
 * The flow a frame belongs to, read from its bytes: TCP or UDP after any
 * IPv6 option headers, or, for an ICMP error, the quoted packet's flow
 * turned around (client -> VIP).
 */
function flowOf(frame: Buffer): Flow {
  const l2 = l2Length(frame);
  const v6 = frame.readUInt16BE(l2 - 2) === ETHERTYPE.IPV6;
  const address = (at: number) => (v6 ? formatIpv6(frame.subarray(at, at + 16)) : Array.from(frame.subarray(at, at + 4)).join('.'));
  let next = v6 ? frame[l2 + 6]! : frame[l2 + 9]!;
  let l4 = l2 + (v6 ? 40 : (frame[l2]! & 0x0f) * 4);
  while (v6 && (next === P.HOPOPTS || next === P.DSTOPTS)) {
    next = frame[l4]!;
    l4 += (frame[l4 + 1]! + 1) * 8;
  }
  const saddr = address(l2 + (v6 ? 8 : 12));
  const daddr = address(l2 + (v6 ? 24 : 16));
  if (next === P.ICMP || next === P.ICMPV6) {
    const quoted = Buffer.concat([frame.subarray(0, l2), frame.subarray(l4 + 8)]);
    const q = flowOf(quoted);
    return { saddr: q.daddr, daddr: q.saddr, sport: q.dport, dport: q.sport, proto: q.proto };
  }
  return { saddr, daddr, sport: frame.readUInt16BE(l4), dport: frame.readUInt16BE(l4 + 2), proto: next };
}

function formatIpv6(bytes: Buffer): string {
  return Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(2 * i).toString(16)).join(':');
}

/**
 * The spec of encapsulation, computed from the input: Ethernet to the next
 * hop (a VLAN tag kept, its EtherType now the outer family's), an outer
 * header from the balancer's tunnel address (or the flow's address of a
 * source range) with TTL / hop limit 64 that copies the inner TOS / traffic
 * class, the IPv4 identification and DF (IPv6 inside: DF set,
 * identification 0; IPv6 outside: the flow's label), then the input's IP
 * packet and whatever followed it, byte for byte.
 */
function encapsulated(frame: Buffer, backendAddress: string, range?: SourceRange): Buffer {
  const l2 = l2Length(frame);
  const innerV6 = frame.readUInt16BE(l2 - 2) === ETHERTYPE.IPV6;
  const tos = innerV6 ? (frame.readUInt32BE(l2) >>> 20) & 0xff : frame[l2 + 1]!;
  const innerLength = innerV6 ? 40 + frame.readUInt16BE(l2 + 4) : frame.readUInt16BE(l2 + 2);
  const protocol = innerV6 ? P.IPV6 : P.IPIP;
  const outerV6 = backendAddress.includes(':');
  const flow = flowOf(frame);
  const src = range ? outerSource(range, flow) : outerV6 ? BALANCER6 : BALANCER;
  const outer = outerV6
    ? ipv6Header({
        src,
        dst: backendAddress,
        nextHeader: protocol,
        payloadLength: innerLength,
        hopLimit: 64,
        trafficClass: tos,
        flowLabel: outerFlowLabel(encapHash(flow)),
      })
    : ipv4Header({
        src,
        dst: backendAddress,
        protocol,
        payloadLength: innerLength,
        ttl: 64,
        tos,
        id: innerV6 ? 0 : frame.readUInt16BE(l2 + 4),
        dontFragment: innerV6 || (frame.readUInt16BE(l2 + 6) & 0x4000) !== 0,
      });
  const head = Buffer.from(frame.subarray(0, l2));
  macBytes(MAC.router).copy(head, 0);
  macBytes(MAC.balancer).copy(head, 6);
  head.writeUInt16BE(outerV6 ? ETHERTYPE.IPV6 : ETHERTYPE.IPV4, l2 - 2);
  return Buffer.concat([head, outer, frame.subarray(l2)]);
}

function flowCount(): number {
  return [...dataplane.flowsV4.keys()].length + [...dataplane.flowsV6.keys()].length;
}

/** The backend the VIP's table gives a flow (what a new flow gets). */
function owner(table: Uint32Array, saddr: string, daddr: string, sport: number, dport: number, proto: number): number {
  return table[tableSlot(flowHash({ saddr, daddr, sport, dport, proto }), TABLE_SIZE)]!;
}

const tcp4 = (srcPort = 40000, extra: Partial<Parameters<typeof ipv4Frame>[0]> = {}) =>
  ipv4Frame({ src: CLIENT, dst: VIP, srcPort, dstPort: 80, tcpFlags: TCP_FLAGS.SYN, ...extra });
const udp4 = (srcPort = 40000, extra: Partial<Parameters<typeof ipv4Frame>[0]> = {}) =>
  ipv4Frame({ src: CLIENT, dst: VIP, srcPort, dstPort: 53, protocol: 'udp', payload: Buffer.from('query'), ...extra });
const tcp6 = (srcPort = 40000, extra: Partial<Parameters<typeof ipv6Frame>[0]> = {}) =>
  ipv6Frame({ src: CLIENT6, dst: VIP6, srcPort, dstPort: 80, tcpFlags: TCP_FLAGS.SYN, ...extra });
const udp6 = (srcPort = 40000, extra: Partial<Parameters<typeof ipv6Frame>[0]> = {}) =>
  ipv6Frame({ src: CLIENT6, dst: VIP6, srcPort, dstPort: 53, protocol: 'udp', payload: Buffer.from('query'), ...extra });

const ARP = Buffer.concat([
  ethernet('ff:ff:ff:ff:ff:ff', MAC.client, ETHERTYPE.ARP),
  Buffer.from('0001080006040001', 'hex'),
  Buffer.alloc(20),
]);

// ---------------------------------------------------------------------------

describe('Ethernet and VLAN tags', () => {
  test('a frame that is not IP (ARP) passes unchanged, counted not_ip', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(ARP, 'not_ip');
  });

  test('an 802.1Q-tagged IPv4 packet to a VIP is balanced with its tag (priority bits included) kept: only the MACs change', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(withVlan(tcp4(), 0xe064), BE.L2);
  });

  test('an 802.1ad-tagged IPv6 packet to a VIP is balanced with its tag kept', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    balancedL2(withVlan(tcp6(), 0x0123, ETHERTYPE.QINQ), BE.L2_V6);
  });

  test('a tagged packet sent through a tunnel keeps its tag, now in front of the outer header', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4]);
    const frame = withVlan(tcp4(40001, { tos: 0x28, id: 0x5151 }), 0x0064);
    const expected = Buffer.concat([
      ethernet(MAC.router, MAC.balancer, ETHERTYPE.VLAN),
      Buffer.from([0x00, 0x64, 0x08, 0x00]),
      ipv4Header({ src: BALANCER, dst: '10.20.0.14', protocol: 4, payloadLength: frame.length - 18, ttl: 64, tos: 0x28, id: 0x5151 }),
      frame.subarray(18),
    ]);
    expectFate(frame, { action: 'tx', output: expected, reasons: {} });
  });

  test('a tagged IPv6 packet through a 6-in-6 tunnel keeps its tag', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP6]);
    tunnelled(withVlan(tcp6(40002, { trafficClass: 0xb8 }), 0x0200, ETHERTYPE.QINQ), BE.IPIP6);
  });

  test('two stacked VLAN tags (QinQ) pass unchanged, counted vlan_stacked', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(withVlan(withVlan(tcp4(), 10), 20, ETHERTYPE.QINQ), 'vlan_stacked', '802.1ad over 802.1Q');
    passes(withVlan(withVlan(tcp4(), 10), 20), 'vlan_stacked', '802.1Q over 802.1Q');
  });

  test('a tagged ARP frame passes unchanged, counted not_ip', () => {
    passes(withVlan(ARP, 5), 'not_ip');
  });

  const OTHER_HOST = '02:00:00:00:00:77';

  test("a frame to another host's MAC (a switch flooding an unknown destination) passes unchanged, counted not_for_this_host", () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP6]);
    passes(withMacs(tcp4(), OTHER_HOST, MAC.client), 'not_for_this_host', 'IPv4 SYN');
    passes(withMacs(tcp6(), OTHER_HOST, MAC.client), 'not_for_this_host', 'IPv6 SYN');
    passes(withVlan(withMacs(tcp4(), OTHER_HOST, MAC.client), 0x0064), 'not_for_this_host', 'tagged');
    passes(withMacs(echoRequest4(), OTHER_HOST, MAC.client), 'not_for_this_host', 'echo request to a VIP');
    passes(withMacs(ARP, OTHER_HOST, MAC.client), 'not_for_this_host', 'unicast ARP');
    assert.equal(flowCount(), 0, 'nothing tracked');
    balancedL2(tcp4(), BE.L2, 'the same SYN to this host');
  });

  test('broadcast and multicast frames are never balanced or answered: IP passes as not_vip, ARP as not_ip', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(withMacs(tcp4(), 'ff:ff:ff:ff:ff:ff', MAC.client), 'not_vip', 'IPv4 to a VIP, broadcast MAC');
    passes(withMacs(tcp4(), '01:00:5e:64:00:64', MAC.client), 'not_vip', 'IPv4 to a VIP, multicast MAC');
    passes(withMacs(tcp6(), '33:33:00:00:01:00', MAC.client), 'not_vip', 'IPv6 to a VIP, multicast MAC');
    passes(withMacs(echoRequest4(), 'ff:ff:ff:ff:ff:ff', MAC.client), 'not_vip', 'echo request to a VIP, broadcast MAC');
    passes(ARP, 'not_ip', 'ARP request');
  });

  test("until the control plane has written this node's MAC, frames to any unicast MAC are balanced", () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    dataplane.setInterfaceMac(null);
    try {
      assert.equal(dataplane.interfaceMac(), null);
      balancedL2(withMacs(tcp4(), OTHER_HOST, MAC.client), BE.L2);
    } finally {
      dataplane.setInterfaceMac(MAC.balancer);
    }
    assert.equal(dataplane.interfaceMac(), MAC.balancer);
    assert.throws(() => dataplane.setInterfaceMac('02:00:00:00:00'), /not a MAC address/);
    assert.throws(() => dataplane.setInterfaceMac('00:00:00:00:00:00'), /pass null/);
  });
});

describe('IPv4 header', () => {
  test('a version other than 4 under the IPv4 EtherType passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(
      editIpv4(tcp4(), (ip) => {
        ip[0] = 0x65;
      }),
      'malformed',
    );
  });

  test('an IHL below 5 passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    for (const ihl of [0, 1, 4])
      passes(
        editIpv4(
          tcp4(),
          (ip) => {
            ip[0] = 0x40 | ihl;
          },
          false,
        ),
        'malformed',
        `IHL ${ihl}`,
      );
  });

  test('a total length shorter than the header passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(
      editIpv4(tcp4(), (ip) => ip.writeUInt16BE(19, 2)),
      'malformed',
      'total length 19, IHL 5',
    );
    const withOptions = tcp4(40000, { options: Buffer.from([148, 4, 0, 0]) });
    passes(
      editIpv4(withOptions, (ip) => ip.writeUInt16BE(22, 2)),
      'malformed',
      'total length 22, IHL 6',
    );
  });

  test('a total length larger than the frame passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    const frame = tcp4();
    passes(
      editIpv4(frame, (ip) => ip.writeUInt16BE(frame.length - ETH_HLEN + 1, 2)),
      'malformed',
      'one byte more',
    );
    passes(
      editIpv4(frame, (ip) => ip.writeUInt16BE(1400, 2)),
      'malformed',
      '1400',
    );
    passes(
      editIpv4(frame, (ip) => ip.writeUInt16BE(0xffff, 2)),
      'malformed',
      '65535',
    );
  });

  test('a frame longer than its total length (Ethernet padding) is balanced; l2dsr forwards the padding as it came', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    const padded = Buffer.concat([tcp4(), Buffer.from([0, 0, 0, 0, 0, 0])]); // a 54-byte SYN padded to the 60-byte minimum
    balancedL2(padded, BE.L2);
  });

  test('a padded frame through a tunnel: the outer length counts the IP packet only, the padding stays behind it', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4]);
    const syn = tcp4(40003);
    const padded = Buffer.concat([syn, Buffer.from([0, 0, 0, 0, 0, 0])]);
    const expected = Buffer.concat([
      ethernet(MAC.router, MAC.balancer, ETHERTYPE.IPV4),
      ipv4Header({ src: BALANCER, dst: '10.20.0.14', protocol: 4, payloadLength: 40, ttl: 64 }),
      syn.subarray(ETH_HLEN),
      Buffer.alloc(6),
    ]);
    expectFate(padded, { action: 'tx', output: expected, reasons: {} });
  });

  test('a wrong header checksum on a packet to a VIP passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(
      editIpv4(
        tcp4(),
        (ip) => {
          ip[10] ^= 0x01;
        },
        false,
      ),
      'malformed',
    );
    vip(`${VIP}:53/udp`, [BE.L2]);
    passes(
      editIpv4(
        udp4(),
        (ip) => {
          ip[8] = 63;
        },
        false,
      ),
      'malformed',
      'TTL changed, checksum not',
    );
  });

  test('a wrong header checksum on a packet to no VIP passes unchanged as not_vip (checked only for VIPs; the kernel checks the rest)', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(
      editIpv4(
        ipv4Frame({ src: CLIENT, dst: OTHER_VIP, dstPort: 80 }),
        (ip) => {
          ip[10] ^= 0x01;
        },
        false,
      ),
      'not_vip',
    );
  });

  test('TTL 1 (and 0) is balanced unchanged: direct server return is not a routing hop', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40004, { ttl: 1 }), BE.L2, 'TTL 1');
    balancedL2(tcp4(40005, { ttl: 0 }), BE.L2, 'TTL 0');
  });

  test('TTL 1 through a tunnel: the outer header gets TTL 64, the inner TTL stays 1', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4]);
    const frame = tcp4(40006, { ttl: 1 });
    const expected = Buffer.concat([
      ethernet(MAC.router, MAC.balancer, ETHERTYPE.IPV4),
      ipv4Header({ src: BALANCER, dst: '10.20.0.14', protocol: 4, payloadLength: frame.length - ETH_HLEN, ttl: 64 }),
      frame.subarray(ETH_HLEN),
    ]);
    expectFate(frame, { action: 'tx', output: expected, reasons: {} });
  });

  test('DF clear on the inner packet stays clear on the outer one; TOS and identification are copied', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4]);
    const frame = tcp4(40007, { dontFragment: false, tos: 0xb8, id: 0xfeed });
    const expected = Buffer.concat([
      ethernet(MAC.router, MAC.balancer, ETHERTYPE.IPV4),
      ipv4Header({
        src: BALANCER,
        dst: '10.20.0.14',
        protocol: 4,
        payloadLength: frame.length - ETH_HLEN,
        ttl: 64,
        tos: 0xb8,
        id: 0xfeed,
        dontFragment: false,
      }),
      frame.subarray(ETH_HLEN),
    ]);
    expectFate(frame, { action: 'tx', output: expected, reasons: {} });
  });
});

describe('IPv4 options', () => {
  const ROUTER_ALERT = Buffer.from([148, 4, 0, 0]);
  const NOP_NOP_TIMESTAMP = Buffer.from([1, 1, 68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // + 2 bytes end of list

  test('IPv4 with a router alert option is balanced; its options are validated and kept (l2dsr)', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40010, { options: ROUTER_ALERT }), BE.L2);
  });

  test('IPv4 with NOP, NOP and a timestamp option is encapsulated with its options intact (ipip)', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4]);
    const frame = tcp4(40011, { options: NOP_NOP_TIMESTAMP, payload: Buffer.from('data') });
    const expected = Buffer.concat([
      ethernet(MAC.router, MAC.balancer, ETHERTYPE.IPV4),
      ipv4Header({ src: BALANCER, dst: '10.20.0.14', protocol: 4, payloadLength: 20 + 16 + 20 + 4, ttl: 64 }),
      frame.subarray(ETH_HLEN),
    ]);
    expectFate(frame, { action: 'tx', output: expected, reasons: {} });
  });

  test('the largest header (IHL 15: 40 bytes of options) is balanced', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40012, { options: Buffer.concat([Buffer.alloc(36, 1), ROUTER_ALERT]) }), BE.L2);
  });

  test('an end-of-list option ends the options: the bytes after it are padding, not parsed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40013, { options: Buffer.from([0, 0xff, 0x07, 0xff]) }), BE.L2);
  });

  test('an option whose length runs past the header passes unchanged, counted malformed, whether for a VIP or not', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    const runsPast = Buffer.from([1, 68, 12, 5]); // a timestamp of 12 bytes in a 4-byte options area
    passes(tcp4(40014, { options: runsPast }), 'malformed', 'to the VIP');
    passes(ipv4Frame({ src: CLIENT, dst: OTHER_VIP, dstPort: 80, options: runsPast }), 'malformed', 'to no VIP');
  });

  test('an option length below 2 passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(tcp4(40015, { options: Buffer.from([7, 1, 0, 0]) }), 'malformed', 'length 1');
    passes(tcp4(40016, { options: Buffer.from([7, 0, 0, 0]) }), 'malformed', 'length 0');
  });

  test('an option type in the last byte, without room for its length, passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(tcp4(40017, { options: Buffer.from([1, 1, 1, 7]) }), 'malformed');
  });

  test('a wrong checksum over a header with options passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(
      editIpv4(
        tcp4(40018, { options: ROUTER_ALERT }),
        (ip) => {
          ip[22] ^= 0x80;
        },
        false,
      ),
      'malformed',
      'an option byte changed',
    );
    passes(
      editIpv4(
        tcp4(40019, { options: NOP_NOP_TIMESTAMP }),
        (ip) => {
          ip[10] ^= 0x01;
        },
        false,
      ),
      'malformed',
      'the checksum changed',
    );
  });
});

describe('IPv4 fragments', () => {
  test('a first fragment (MF set, offset 0) passes unchanged, counted fragment', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(tcp4(40020, { moreFragments: true, dontFragment: false }), 'fragment');
  });

  test('a non-first fragment passes unchanged, counted fragment: a middle one and the last one', () => {
    vip(`${VIP}:53/udp`, [BE.L2]);
    passes(udp4(40021, { moreFragments: true, fragmentOffset: 185, dontFragment: false }), 'fragment', 'middle');
    passes(udp4(40021, { fragmentOffset: 370, dontFragment: false }), 'fragment', 'last');
  });

  test('a fragment to no VIP is counted fragment too (fragments are recognised before the VIP lookup)', () => {
    passes(ipv4Frame({ src: CLIENT, dst: OTHER_VIP, dstPort: 80, moreFragments: true, dontFragment: false }), 'fragment');
  });
});

describe('TCP', () => {
  test('TCP with no flags is balanced like any first packet of a flow, tracked, and keeps its backend', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40030, { tcpFlags: 0 }), BE.L2);
    const key = flowKeyV4.encode({ saddr: CLIENT, daddr: VIP, sport: 40030, dport: 80, proto: 6 });
    assert.equal(flowState.decode(dataplane.flowsV4.lookup(key)!).backend_id, BE.L2, 'tracked');
    vip(`${VIP}:80/tcp`, [BE.L2_B]);
    balancedL2(tcp4(40030, { tcpFlags: 0 }), BE.L2, 'after the table changed');
  });

  test("a RST of an unknown flow goes to the table's backend but is not tracked", () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40031, { tcpFlags: TCP_FLAGS.RST }), BE.L2, 'RST');
    balancedL2(tcp4(40032, { tcpFlags: TCP_FLAGS.RST | TCP_FLAGS.ACK }), BE.L2, 'RST+ACK');
    assert.equal(flowCount(), 0, 'no flow tracked');
  });

  test('a RST of a tracked flow goes to its tracked backend and marks the flow closing', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40033), BE.L2, 'SYN');
    balancedL2(tcp4(40033, { tcpFlags: TCP_FLAGS.ACK }), BE.L2, 'ACK');
    vip(`${VIP}:80/tcp`, [BE.L2_B]);
    balancedL2(tcp4(40033, { tcpFlags: TCP_FLAGS.RST }), BE.L2);
    const key = flowKeyV4.encode({ saddr: CLIENT, daddr: VIP, sport: 40033, dport: 80, proto: 6 });
    assert.equal(flowState.decode(dataplane.flowsV4.lookup(key)!).flags, FLOW_FLAG_CLOSING);
  });

  test('a SYN follows the table even for a tracked 5-tuple; a live connection keeps its backend (a SYN does not take it over), a closed one is replaced', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40034, { tcpFlags: TCP_FLAGS.ACK }), BE.L2);
    vip(`${VIP}:80/tcp`, [BE.L2_B]);
    balancedL2(tcp4(40034), BE.L2_B, 'SYN');
    balancedL2(tcp4(40034, { tcpFlags: TCP_FLAGS.ACK }), BE.L2, 'an ACK of the live connection');
    balancedL2(tcp4(40034, { tcpFlags: TCP_FLAGS.FIN | TCP_FLAGS.ACK }), BE.L2, 'its FIN');
    balancedL2(tcp4(40034), BE.L2_B, 'a SYN reusing the tuple');
    balancedL2(tcp4(40034, { tcpFlags: TCP_FLAGS.ACK }), BE.L2_B, 'the ACK after it: the new connection');
  });

  test('TCP options are balanced unchanged', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40035, { tcpOptions: Buffer.from([2, 4, 0x05, 0xb4, 1, 3, 3, 7]) }), BE.L2);
  });

  test('a data offset below 5 passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    for (const doff of [0, 4]) {
      const frame = tcp4(40036, { payload: Buffer.alloc(8) });
      frame[ETH_HLEN + 20 + 12] = doff << 4;
      passes(frame, 'malformed', `data offset ${doff}`);
    }
  });

  test('a data offset beyond the packet passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    const frame = tcp4(40037, { payload: Buffer.alloc(8) });
    frame[ETH_HLEN + 20 + 12] = 8 << 4; // 32 bytes of header in a 28-byte segment
    passes(frame, 'malformed');
  });

  test('a TCP header cut short by the IP total length passes unchanged, counted l4_truncated (frame cut too, or not)', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    const shortened = editIpv4(tcp4(40038), (ip) => ip.writeUInt16BE(20 + 19, 2));
    passes(shortened.subarray(0, ETH_HLEN + 39), 'l4_truncated', 'frame cut at the total length');
    passes(shortened, 'l4_truncated', 'whole header in the frame, beyond the total length');
  });
});

describe('UDP', () => {
  test('UDP with a zero checksum (none, allowed over IPv4) is balanced unchanged', () => {
    vip(`${VIP}:53/udp`, [BE.L2]);
    const frame = udp4(40040, { udpZeroChecksum: true });
    assert.equal(frame.readUInt16BE(ETH_HLEN + 20 + 6), 0);
    balancedL2(frame, BE.L2);
  });

  test('a UDP length below 8 passes unchanged, counted malformed', () => {
    vip(`${VIP}:53/udp`, [BE.L2]);
    for (const length of [0, 7]) {
      const frame = udp4();
      frame.writeUInt16BE(length, ETH_HLEN + 20 + 4);
      passes(frame, 'malformed', `length ${length}`);
    }
  });

  test('a UDP length beyond the IP packet passes unchanged, counted malformed', () => {
    vip(`${VIP}:53/udp`, [BE.L2]);
    const frame = udp4();
    frame.writeUInt16BE(8 + 5 + 1, ETH_HLEN + 20 + 4);
    passes(frame, 'malformed');
  });

  test("a UDP length shorter than the IP payload is balanced (the datagram ends early; the backend's stack trims it)", () => {
    vip(`${VIP}:53/udp`, [BE.L2]);
    const frame = udp4(40041, { udpZeroChecksum: true });
    frame.writeUInt16BE(8, ETH_HLEN + 20 + 4);
    balancedL2(frame, BE.L2);
  });

  test('a UDP header cut short by the IP total length passes unchanged, counted l4_truncated', () => {
    vip(`${VIP}:53/udp`, [BE.L2]);
    passes(editIpv4(udp4(), (ip) => ip.writeUInt16BE(20 + 7, 2)).subarray(0, ETH_HLEN + 27), 'l4_truncated');
  });
});

describe('packets for no VIP', () => {
  test('another address, port or protocol passes unchanged byte for byte, counted not_vip', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(ipv4Frame({ src: CLIENT, dst: OTHER_VIP, dstPort: 80 }), 'not_vip', 'IPv4 address');
    passes(tcp4(40050, { dstPort: 443 }), 'not_vip', 'IPv4 port');
    passes(udp4(40050, { dstPort: 80 }), 'not_vip', 'IPv4 protocol');
    passes(ipv6Frame({ src: CLIENT6, dst: OTHER_VIP6, dstPort: 80 }), 'not_vip', 'IPv6 address');
    passes(tcp6(40050, { dstPort: 443 }), 'not_vip', 'IPv6 port');
    passes(udp6(40050, { dstPort: 80 }), 'not_vip', 'IPv6 protocol');
  });

  test('IP protocols other than TCP, UDP and ICMP (GRE, SCTP, no next header) to a VIP address pass unchanged, counted l4_unsupported', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(ipv4Frame({ src: CLIENT, dst: VIP, protocol: 47, payload: Buffer.alloc(24) }), 'l4_unsupported', 'GRE');
    passes(ipv4Frame({ src: CLIENT, dst: VIP, protocol: 132, payload: Buffer.alloc(28) }), 'l4_unsupported', 'SCTP');
    passes(ipv6Frame({ src: CLIENT6, dst: VIP6, protocol: P.NONE, payload: Buffer.alloc(0) }), 'l4_unsupported', 'IPv6 no next header');
    passes(ipv6Frame({ src: CLIENT6, dst: VIP6, protocol: 50, payload: Buffer.alloc(24) }), 'l4_unsupported', 'IPv6 ESP');
  });

  test('the same protocols between other hosts (GRE, SCTP, ESP) pass unchanged, counted not_vip: they are not for a VIP', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(ipv4Frame({ src: CLIENT, dst: ROUTER, protocol: 47, payload: Buffer.alloc(24) }), 'not_vip', 'GRE');
    passes(ipv4Frame({ src: CLIENT, dst: OTHER_VIP, protocol: 132, payload: Buffer.alloc(28) }), 'not_vip', 'SCTP');
    passes(ipv6Frame({ src: CLIENT6, dst: ROUTER6, protocol: P.NONE, payload: Buffer.alloc(0) }), 'not_vip', 'IPv6 no next header');
    passes(ipv6Frame({ src: CLIENT6, dst: OTHER_VIP6, protocol: 50, payload: Buffer.alloc(24) }), 'not_vip', 'IPv6 ESP');
    passes(
      ipv6Frame({ src: CLIENT6, dst: OTHER_VIP6, srcPort: 40060, extensions: [1, 2, 3, 4].map(() => destinationOptionsHeader()) }),
      'not_vip',
      'a fourth option header',
    );
  });
});

// ---------------------------------------------------------------------------

const ECHO_REST = 0x4d2a0007; // identifier 0x4d2a, sequence 7
const PING_DATA = Buffer.from('0123456789abcdefghijklmnopqrstuv');

function echoRequest4(extra: Partial<Parameters<typeof ipv4Frame>[0]> = {}, data: Buffer = PING_DATA): Buffer {
  return ipv4Frame({
    src: CLIENT,
    dst: VIP,
    protocol: P.ICMP,
    ttl: 57,
    tos: 0x10,
    id: 0x4242,
    payload: icmpMessage(ICMP.ECHO, 0, ECHO_REST, data),
    ...extra,
  });
}

/** What the balancer answers: back to the sender's MAC, from the VIP, TTL 64, type 0, identification, TOS and DF as the request's. */
function echoReply4(data: Buffer = PING_DATA): Buffer {
  return Buffer.concat([
    ethernet(MAC.client, MAC.balancer, ETHERTYPE.IPV4),
    ipv4Header({ src: VIP, dst: CLIENT, protocol: P.ICMP, payloadLength: 8 + data.length, ttl: 64, tos: 0x10, id: 0x4242 }),
    icmpMessage(ICMP.ECHO_REPLY, 0, ECHO_REST, data),
  ]);
}

function echoRequest6(extra: Partial<Parameters<typeof ipv6Frame>[0]> = {}, data: Buffer = PING_DATA): Buffer {
  return ipv6Frame({
    src: CLIENT6,
    dst: VIP6,
    protocol: 'icmpv6',
    icmp: { type: ICMPV6.ECHO_REQUEST, rest: ECHO_REST },
    payload: data,
    hopLimit: 57,
    trafficClass: 0x20,
    flowLabel: 0xabcde,
    ...extra,
  });
}

function echoReply6(data: Buffer = PING_DATA, extra: Partial<Parameters<typeof ipv6Frame>[0]> = {}): Buffer {
  return ipv6Frame({
    dstMac: MAC.client,
    srcMac: MAC.balancer,
    src: VIP6,
    dst: CLIENT6,
    protocol: 'icmpv6',
    icmp: { type: ICMPV6.ECHO_REPLY, rest: ECHO_REST },
    payload: data,
    hopLimit: 64,
    trafficClass: 0x20,
    flowLabel: 0xabcde,
    ...extra,
  });
}

describe('ICMP echo (ping) to VIP addresses', () => {
  test('an echo request to a VIP address is answered: MACs and addresses swapped, TTL 64, type 0, both checksums valid', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    expectFate(echoRequest4(), { action: 'tx', output: echoReply4(), reasons: { icmp_echo_replied: 1 } });
  });

  test('echo requests with odd-length and empty data are answered', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    for (const data of [Buffer.from('odd'), Buffer.alloc(0), Buffer.alloc(1400, 0xa5)]) {
      expectFate(
        echoRequest4({}, data),
        { action: 'tx', output: echoReply4(data), reasons: { icmp_echo_replied: 1 } },
        `${data.length} bytes`,
      );
    }
  });

  test("an echo request whose other words are all zero (Katran's fixture: id 0, sequence 0, no data) is answered with checksum 0xffff, not 0x0000", () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    const zero = (data: Buffer) =>
      ipv4Frame({ src: CLIENT, dst: VIP, protocol: P.ICMP, ttl: 57, tos: 0x10, id: 0x4242, payload: icmpMessage(ICMP.ECHO, 0, 0, data) });
    const reply = (rest: number, data: Buffer) =>
      Buffer.concat([
        ethernet(MAC.client, MAC.balancer, ETHERTYPE.IPV4),
        ipv4Header({ src: VIP, dst: CLIENT, protocol: P.ICMP, payloadLength: 8 + data.length, ttl: 64, tos: 0x10, id: 0x4242 }),
        icmpMessage(ICMP.ECHO_REPLY, 0, rest, data),
      ]);
    for (const data of [Buffer.alloc(0), Buffer.alloc(56), Buffer.alloc(1472)]) {
      const expected = reply(0, data);
      assert.equal(expected.readUInt16BE(ETH_HLEN + 22), 0xffff, 'the reply built independently carries 0xffff');
      expectFate(zero(data), { action: 'tx', output: expected, reasons: { icmp_echo_replied: 1 } }, `${data.length} zero bytes`);
    }
    // Words that sum to -0 without being zero: 0x0000 is their checksum, and stays.
    const negativeZero = ipv4Frame({
      src: CLIENT,
      dst: VIP,
      protocol: P.ICMP,
      ttl: 57,
      tos: 0x10,
      id: 0x4242,
      payload: icmpMessage(ICMP.ECHO, 0, 0xffff0000, Buffer.alloc(0)),
    });
    const expected = reply(0xffff0000, Buffer.alloc(0));
    assert.equal(expected.readUInt16BE(ETH_HLEN + 22), 0x0000);
    expectFate(negativeZero, { action: 'tx', output: expected, reasons: { icmp_echo_replied: 1 } }, 'identifier 0xffff');
    const lateOnes = Buffer.concat([Buffer.alloc(1400), Buffer.from([0xff, 0xff])]);
    expectFate(zero(lateOnes), { action: 'tx', output: reply(0, lateOnes), reasons: { icmp_echo_replied: 1 } }, 'zeros, then 0xffff');
    for (const data of [Buffer.alloc(0), Buffer.alloc(56)]) {
      const { output } = testRun(dataplane.programFd, zero(data));
      assert.equal(internetChecksum(output.subarray(ETH_HLEN + 20)), 0, 'the ICMP checksum verifies as the kernel verifies it');
    }
  });

  test('a tagged echo request is answered on its VLAN', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    expectFate(withVlan(echoRequest4(), 0x0064), {
      action: 'tx',
      output: withVlan(echoReply4(), 0x0064),
      reasons: { icmp_echo_replied: 1 },
    });
  });

  test('while the kill-switch is tripped an echo request passes unchanged, counted kill_switch: a balancer that is not balancing does not answer for its VIPs', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    dataplane.setKillSwitchDeadline(0n);
    try {
      passes(echoRequest4(), 'kill_switch', 'IPv4');
      passes(echoRequest6(), 'kill_switch', 'IPv6');
    } finally {
      dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
    }
  });

  test('an echo request to an address without a VIP passes unchanged, counted not_vip', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(echoRequest4({ dst: OTHER_VIP }), 'not_vip');
  });

  test('an echo request with IP options passes unchanged, counted malformed (the balancer answers plain 20-byte headers only)', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(echoRequest4({ options: Buffer.from([7, 7, 4, 0, 0, 0, 0, 0]) }), 'malformed', 'record route');
  });

  test('an echo request with a wrong IP header checksum passes unchanged, counted malformed', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(
      editIpv4(
        echoRequest4(),
        (ip) => {
          ip[10] ^= 0x01;
        },
        false,
      ),
      'malformed',
    );
  });

  test('an echo request that is a fragment passes unchanged, counted fragment', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(echoRequest4({ moreFragments: true, dontFragment: false }), 'fragment');
  });

  test('other ICMP types to another address (echo reply, port unreachable, time exceeded) pass unchanged, counted not_vip', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    for (const [type, code] of [
      [0, 0],
      [3, 3],
      [11, 0],
    ] as const) {
      passes(
        ipv4Frame({ src: CLIENT, dst: ROUTER, protocol: P.ICMP, payload: icmpMessage(type, code, 0, Buffer.alloc(28)) }),
        'not_vip',
        `type ${type} code ${code}`,
      );
    }
  });

  test('other ICMP types to a VIP address (echo reply, port unreachable, redirect, timestamp) pass unchanged, counted l4_unsupported', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    for (const [type, code] of [
      [0, 0],
      [3, 3],
      [3, 1],
      [5, 1],
      [13, 0],
      [11, 0],
    ] as const) {
      passes(
        ipv4Frame({ src: CLIENT, dst: VIP, protocol: P.ICMP, payload: icmpMessage(type, code, 0, Buffer.alloc(28)) }),
        'l4_unsupported',
        `type ${type} code ${code}`,
      );
    }
  });

  test('an ICMP header cut short by the IP total length passes unchanged, counted l4_truncated', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(
      editIpv4(echoRequest4(), (ip) => ip.writeUInt16BE(20 + 7, 2)),
      'l4_truncated',
    );
  });

  test('an ICMPv6 echo request to a VIP address is answered: type 129, hop limit 64, traffic class and flow label kept, checksum over the new pseudo-header', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    expectFate(echoRequest6(), { action: 'tx', output: echoReply6(), reasons: { icmp_echo_replied: 1 } });
    expectFate(
      echoRequest6({}, Buffer.from('odd')),
      { action: 'tx', output: echoReply6(Buffer.from('odd')), reasons: { icmp_echo_replied: 1 } },
      'odd length',
    );
  });

  test('an ICMPv6 echo request after a hop-by-hop header is answered, the header kept', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    const extensions = [hopByHopHeader()];
    expectFate(echoRequest6({ extensions }), {
      action: 'tx',
      output: echoReply6(PING_DATA, { extensions }),
      reasons: { icmp_echo_replied: 1 },
    });
  });

  test('a tagged ICMPv6 echo request is answered on its VLAN', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    expectFate(withVlan(echoRequest6(), 7, ETHERTYPE.QINQ), {
      action: 'tx',
      output: withVlan(echoReply6(), 7, ETHERTYPE.QINQ),
      reasons: { icmp_echo_replied: 1 },
    });
  });

  test('an ICMPv6 echo request to an address without a VIP passes unchanged, counted not_vip', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(echoRequest6({ dst: OTHER_VIP6 }), 'not_vip');
  });

  test('neighbour discovery and other ICMPv6 types to a VIP address pass unchanged, counted l4_unsupported', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    for (const type of [ICMPV6.NEIGHBOR_SOLICIT, 136, 133, ICMPV6.ECHO_REPLY, 1, 3]) {
      passes(
        ipv6Frame({ src: CLIENT6, dst: VIP6, protocol: 'icmpv6', icmp: { type }, payload: Buffer.alloc(24), hopLimit: 255 }),
        'l4_unsupported',
        `type ${type}`,
      );
    }
  });

  test('neighbour discovery and other ICMPv6 to other addresses (solicited-node multicast, all nodes, a neighbour) pass unchanged, counted not_vip', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    const cases = [
      { dst: 'ff02::1:ff00:100', dstMac: '33:33:ff:00:01:00', type: ICMPV6.NEIGHBOR_SOLICIT, what: 'solicitation for the VIP' },
      { dst: 'ff02::1', dstMac: '33:33:00:00:00:01', type: 134, what: 'router advertisement' },
      { dst: ROUTER6, dstMac: MAC.balancer, type: 136, what: 'advertisement to a neighbour' },
      { dst: OTHER_VIP6, dstMac: MAC.balancer, type: ICMPV6.ECHO_REPLY, what: 'echo reply' },
    ];
    for (const c of cases)
      passes(
        ipv6Frame({
          dstMac: c.dstMac,
          src: CLIENT6,
          dst: c.dst,
          protocol: 'icmpv6',
          icmp: { type: c.type },
          payload: Buffer.alloc(24),
          hopLimit: 255,
        }),
        'not_vip',
        c.what,
      );
  });

  test('an ICMPv6 header cut short by the payload length passes unchanged, counted l4_truncated', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    const frame = echoRequest6();
    frame.writeUInt16BE(7, ETH_HLEN + 4);
    passes(frame, 'l4_truncated');
  });
});

// ---------------------------------------------------------------------------

/** The first bytes of a packet a backend sent (VIP:port -> client): what an ICMP error about the flow quotes. */
function replyPacket4(clientPort: number, from = VIP, protocol: 'tcp' | 'udp' = 'tcp', vipPort = 80): Buffer {
  return ipv4Frame({
    src: from,
    dst: CLIENT,
    srcPort: vipPort,
    dstPort: clientPort,
    protocol,
    tcpFlags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
    payload: Buffer.alloc(1400, 0x61),
  }).subarray(ETH_HLEN);
}

function replyPacket6(clientPort: number, from = VIP6, vipPort = 80): Buffer {
  return ipv6Frame({
    src: from,
    dst: CLIENT6,
    srcPort: vipPort,
    dstPort: clientPort,
    tcpFlags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
    payload: Buffer.alloc(1400, 0x61),
  }).subarray(ETH_HLEN);
}

/** A router's "fragmentation needed" (type 3 code 4, next-hop MTU) to `to`, quoting `quote` bytes of `packet`. */
function fragNeeded(packet: Buffer, to = VIP, quote = 28, mtu = 1400): Buffer {
  return ipv4Frame({
    srcMac: MAC.router,
    src: ROUTER,
    dst: to,
    protocol: P.ICMP,
    ttl: 62,
    payload: icmpMessage(ICMP.DEST_UNREACH, ICMP.FRAG_NEEDED, mtu, packet.subarray(0, quote)),
  });
}

function packetTooBig(packet: Buffer, to = VIP6, quote = 48, mtu = 1400): Buffer {
  return ipv6Frame({
    srcMac: MAC.router,
    src: ROUTER6,
    dst: to,
    protocol: 'icmpv6',
    icmp: { type: ICMPV6.PACKET_TOO_BIG, rest: mtu },
    payload: packet.subarray(0, quote),
    hopLimit: 62,
  });
}

describe('ICMP errors about VIP flows', () => {
  /** Client ports whose flows the two-backend table gives to different backends. */
  function portsOfEachOwner(table: Uint32Array, client: string, vipAddress: string, a: number, b: number): [number, number] {
    let portA = 0;
    let portB = 0;
    for (let port = 30000; !(portA && portB); port++) {
      const o = owner(table, client, vipAddress, port, 80, 6);
      if (o === a && !portA) portA = port;
      if (o === b && !portB) portB = port;
    }
    return [portA, portB];
  }

  test('fragmentation needed about a VIP flow goes to the backend the table gives that flow, counted icmp_error_forwarded', () => {
    const table = vip(`${VIP}:80/tcp`, [BE.L2, BE.L2_B]);
    const [portA, portB] = portsOfEachOwner(table, CLIENT, VIP, BE.L2, BE.L2_B);
    balancedL2(fragNeeded(replyPacket4(portA)), BE.L2, `flow from port ${portA}`, { icmp_error_forwarded: 1 });
    balancedL2(fragNeeded(replyPacket4(portB)), BE.L2_B, `flow from port ${portB}`, { icmp_error_forwarded: 1 });
    assert.equal(flowCount(), 0, 'an ICMP error tracks nothing');
  });

  test("fragmentation needed about a tracked flow goes to its tracked backend, not the table's, and leaves the flow's state as it was", () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(31000, { tcpFlags: TCP_FLAGS.ACK }), BE.L2);
    vip(`${VIP}:80/tcp`, [BE.L2_B]);
    const key = flowKeyV4.encode({ saddr: CLIENT, daddr: VIP, sport: 31000, dport: 80, proto: 6 });
    const state = dataplane.flowsV4.lookup(key)!;
    balancedL2(fragNeeded(replyPacket4(31000)), BE.L2, 'tracked flow', { icmp_error_forwarded: 1 });
    balancedL2(fragNeeded(replyPacket4(31001)), BE.L2_B, 'untracked flow', { icmp_error_forwarded: 1 });
    assert.deepEqual(dataplane.flowsV4.lookup(key), state);
  });

  test('fragmentation needed quoting more than 8 bytes of the packet is forwarded the same way', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(fragNeeded(replyPacket4(31002), VIP, 548), BE.L2, undefined, { icmp_error_forwarded: 1 });
  });

  test("fragmentation needed about a UDP flow goes to that flow's backend", () => {
    vip(`${VIP}:53/udp`, [BE.L2_B]);
    balancedL2(fragNeeded(replyPacket4(31003, VIP, 'udp', 53)), BE.L2_B, undefined, { icmp_error_forwarded: 1 });
  });

  test("fragmentation needed for an ipip VIP is encapsulated like the flow's own packets", () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4]);
    const frame = fragNeeded(replyPacket4(31004));
    const expected = Buffer.concat([
      ethernet(MAC.router, MAC.balancer, ETHERTYPE.IPV4),
      ipv4Header({ src: BALANCER, dst: '10.20.0.14', protocol: 4, payloadLength: 20 + 8 + 28, ttl: 64 }),
      frame.subarray(ETH_HLEN),
    ]);
    expectFate(frame, { action: 'tx', output: expected, reasons: { icmp_error_forwarded: 1 } });
  });

  test("fragmentation needed too big for the backend's tunnel is dropped, counted too_big_dropped: never answered with an error about an error", () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4_MTU_576]);
    const frame = fragNeeded(replyPacket4(31005), VIP, 548); // 576 bytes, 596 once encapsulated
    drops(frame, 'too_big_dropped');
  });

  test('fragmentation needed about a flow of a VIP without a usable backend is dropped, counted no_backend', () => {
    dataplane.putVip(parseVip(`${VIP}:80/tcp`), { vip_id: 31, table_id: 31, table_size: TABLE_SIZE, flags: 0 }); // table never written
    drops(fragNeeded(replyPacket4(31016)), 'no_backend');
  });

  test('fragmentation needed quoting a packet from another VIP than it is addressed to passes unchanged, counted not_vip', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    vip(`${OTHER_VIP}:80/tcp`, [BE.L2_B]);
    passes(fragNeeded(replyPacket4(31006, OTHER_VIP)), 'not_vip');
  });

  test('fragmentation needed about a flow of no VIP (another port or protocol) passes unchanged, counted not_vip', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(fragNeeded(replyPacket4(31007, VIP, 'tcp', 443)), 'not_vip', 'port');
    passes(fragNeeded(replyPacket4(31007, VIP, 'udp', 80)), 'not_vip', 'protocol');
    passes(fragNeeded(replyPacket4(31007), OTHER_VIP), 'not_vip', 'to another address');
  });

  test('fragmentation needed quoting a header with options, or not IPv4, passes unchanged, counted not_vip', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    const withOptions = ipv4Frame({
      src: VIP,
      dst: CLIENT,
      srcPort: 80,
      dstPort: 31008,
      tcpFlags: TCP_FLAGS.ACK,
      options: Buffer.from([148, 4, 0, 0]),
    }).subarray(ETH_HLEN);
    passes(fragNeeded(withOptions, VIP, 32), 'not_vip', 'options');
    const notV4 = Buffer.from(replyPacket4(31008));
    notV4[0] = 0x65;
    passes(fragNeeded(notV4), 'not_vip', 'version 6');
  });

  test('fragmentation needed quoting fewer than 8 bytes after the header passes unchanged, counted l4_truncated', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    passes(fragNeeded(replyPacket4(31009), VIP, 27), 'l4_truncated');
  });

  test('other destination-unreachable codes about a VIP flow pass unchanged, counted l4_unsupported', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    for (const code of [0, 1, 3, 13]) {
      const frame = ipv4Frame({
        src: ROUTER,
        dst: VIP,
        protocol: P.ICMP,
        payload: icmpMessage(ICMP.DEST_UNREACH, code, 0, replyPacket4(31010).subarray(0, 28)),
      });
      passes(frame, 'l4_unsupported', `code ${code}`);
    }
  });

  test('ICMPv6 packet too big about a VIP flow goes to the backend the table gives that flow, counted icmp_error_forwarded', () => {
    const table = vip(`[${VIP6}]:80/tcp`, [BE.L2_V6, BE.L2_V6_B]);
    const [portA, portB] = portsOfEachOwner(table, CLIENT6, VIP6, BE.L2_V6, BE.L2_V6_B);
    balancedL2(packetTooBig(replyPacket6(portA)), BE.L2_V6, `flow from port ${portA}`, { icmp_error_forwarded: 1 });
    balancedL2(packetTooBig(replyPacket6(portB)), BE.L2_V6_B, `flow from port ${portB}`, { icmp_error_forwarded: 1 });
  });

  test('ICMPv6 packet too big about a tracked flow goes to its tracked backend', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    balancedL2(tcp6(31011, { tcpFlags: TCP_FLAGS.ACK }), BE.L2_V6);
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6_B]);
    balancedL2(packetTooBig(replyPacket6(31011)), BE.L2_V6, undefined, { icmp_error_forwarded: 1 });
  });

  test('ICMPv6 packet too big for an ipip VIP is encapsulated 6-in-6', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP6]);
    tunnelled(packetTooBig(replyPacket6(31012), VIP6, 1232), BE.IPIP6, undefined, { icmp_error_forwarded: 1 });
  });

  test('ICMPv6 packet too big quoting another VIP, or a flow of no VIP, passes unchanged, counted not_vip', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    vip(`[${OTHER_VIP6}]:80/tcp`, [BE.L2_V6_B]);
    passes(packetTooBig(replyPacket6(31013, OTHER_VIP6)), 'not_vip', 'another VIP');
    passes(packetTooBig(replyPacket6(31013, VIP6, 443)), 'not_vip', 'another port');
  });

  test('ICMPv6 packet too big quoting a packet with extension headers passes unchanged, counted l4_unsupported', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    const quoted = ipv6Frame({
      src: VIP6,
      dst: CLIENT6,
      srcPort: 80,
      dstPort: 31014,
      tcpFlags: TCP_FLAGS.ACK,
      extensions: [destinationOptionsHeader()],
    }).subarray(ETH_HLEN);
    passes(packetTooBig(quoted, VIP6, quoted.length), 'l4_unsupported');
  });

  test('ICMPv6 packet too big quoting fewer than 8 bytes after the IPv6 header passes unchanged, counted l4_truncated', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(packetTooBig(replyPacket6(31015), VIP6, 47), 'l4_truncated');
  });
});

// ---------------------------------------------------------------------------

/** The "fragmentation needed" the balancer sends back: from the VIP, TTL 64, quoting the IPv4 header (with its options) + 8 bytes. */
function fragNeededAnswer(packet: Buffer, mtu: number, l2 = ETH_HLEN): Buffer {
  const quote = packet.subarray(l2, l2 + (packet[l2]! & 0x0f) * 4 + 8);
  const ip = ipv4Header({
    src: VIP,
    dst: CLIENT,
    protocol: P.ICMP,
    payloadLength: 8 + quote.length,
    ttl: 64,
    tos: 0,
    id: 0,
    dontFragment: false,
  });
  return Buffer.concat([
    withMacs(packet.subarray(0, l2), MAC.client, MAC.balancer),
    ip,
    icmpMessage(ICMP.DEST_UNREACH, ICMP.FRAG_NEEDED, mtu, quote),
  ]);
}

/** The "packet too big" the balancer sends back: from the VIP, hop limit 64, quoting the IPv6 header + 8 bytes. */
function packetTooBigAnswer(packet: Buffer, mtu: number, l2 = ETH_HLEN): Buffer {
  const quote = packet.subarray(l2, l2 + 48);
  const ip = ipv6Header({ src: VIP6, dst: CLIENT6, nextHeader: P.ICMPV6, payloadLength: 8 + 48, hopLimit: 64 });
  return Buffer.concat([
    withMacs(packet.subarray(0, l2), MAC.client, MAC.balancer),
    ip,
    icmpMessage(ICMPV6.PACKET_TOO_BIG, 0, mtu, quote, { src: VIP6, dst: CLIENT6 }),
  ]);
}

/** A TCP packet to the VIP whose IP packet is `ipLength` bytes. */
const big4 = (ipLength: number, extra: Partial<Parameters<typeof ipv4Frame>[0]> = {}) =>
  tcp4(32000, { tcpFlags: TCP_FLAGS.ACK, payload: Buffer.alloc(ipLength - 40, 0x62), ...extra });
const big6 = (ipLength: number, extra: Partial<Parameters<typeof ipv6Frame>[0]> = {}) =>
  tcp6(32000, { tcpFlags: TCP_FLAGS.ACK, payload: Buffer.alloc(ipLength - 60, 0x62), ...extra });

describe('MTU: path MTU discovery through the balancer', () => {
  test('a DF packet too big for a 4-in-4 tunnel is answered with fragmentation needed carrying the tunnel MTU minus 20, counted too_big_replied', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4_MTU]); // MTU 1400
    const frame = big4(1381);
    expectFate(frame, { action: 'tx', output: fragNeededAnswer(frame, 1380), reasons: { too_big_replied: 1 } });
  });

  test('a packet that fits the tunnel MTU exactly is encapsulated', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4_MTU]);
    tunnelled(big4(1380), BE.IPIP4_MTU);
  });

  test('a packet too big that may be fragmented (DF clear) is dropped, counted too_big_dropped (XDP cannot fragment)', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4_MTU]);
    drops(big4(1381, { dontFragment: false }), 'too_big_dropped');
  });

  test('a DF packet with IP options too big for the tunnel is answered too, quoting the header with its options + 8 bytes', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4_MTU]);
    for (const options of [Buffer.from([148, 4, 0, 0]), Buffer.from([1, ...Array(38).fill(1), 0])]) {
      const frame = big4(1400, { options });
      const answer = fragNeededAnswer(frame, 1380);
      assert.equal(answer.length, ETH_HLEN + 20 + 8 + 20 + options.length + 8, `quote of a ${20 + options.length}-byte header`);
      expectFate(frame, { action: 'tx', output: answer, reasons: { too_big_replied: 1 } });
    }
  });

  test('an IPv4 packet too big for a 4-in-6 tunnel gets the tunnel MTU minus 40', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP6_MTU]); // IPv6 backend, MTU 1400
    const frame = big4(1361);
    expectFate(frame, { action: 'tx', output: fragNeededAnswer(frame, 1360), reasons: { too_big_replied: 1 } });
    tunnelled(big4(1360), BE.IPIP6_MTU, 'at the MTU');
  });

  test('an IPv6 packet too big for a 6-in-6 tunnel is answered with packet too big carrying the tunnel MTU minus 40', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP6_MTU]);
    const frame = big6(1361);
    expectFate(frame, { action: 'tx', output: packetTooBigAnswer(frame, 1360), reasons: { too_big_replied: 1 } });
    tunnelled(big6(1360), BE.IPIP6_MTU, 'at the MTU');
  });

  test('an IPv6 packet too big for a 6-in-4 tunnel gets the tunnel MTU minus 20', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP4_MTU]);
    const frame = big6(1381);
    expectFate(frame, { action: 'tx', output: packetTooBigAnswer(frame, 1380), reasons: { too_big_replied: 1 } });
    tunnelled(big6(1380), BE.IPIP4_MTU, 'at the MTU');
  });

  test('packet too big never announces less than 1280, the IPv6 minimum MTU', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP6_SMALL_MTU]); // MTU 1300: 1260 for the inner packet
    const frame = big6(1261);
    expectFate(frame, { action: 'tx', output: packetTooBigAnswer(frame, 1280), reasons: { too_big_replied: 1 } });
  });

  test('a tagged packet too big is answered on its VLAN', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4_MTU]);
    const frame = withVlan(big4(1381), 0x0064);
    expectFate(frame, { action: 'tx', output: fragNeededAnswer(frame, 1380, 18), reasons: { too_big_replied: 1 } });
    const frame6 = withVlan(big6(1500), 0x0065, ETHERTYPE.QINQ);
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP6_MTU]);
    expectFate(frame6, { action: 'tx', output: packetTooBigAnswer(frame6, 1360, 18), reasons: { too_big_replied: 1 } });
  });

  test('l2dsr backends have no tunnel, so no MTU check: a big packet is forwarded as it is', () => {
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(big4(1500), BE.L2);
  });
});

// ---------------------------------------------------------------------------

describe('outer source ranges (RSS-friendly IP-in-IP)', () => {
  /** The outer header's source (and IPv6 flow label) of what the balancer sent for a frame. */
  function outerOf(frame: Buffer): { src: string; label?: number; checksumValid: boolean } {
    const { action, output } = testRun(dataplane.programFd, frame);
    assert.equal(action, 'tx');
    if (output.readUInt16BE(12) === ETHERTYPE.IPV6)
      return { src: formatIpv6(output.subarray(22, 38)), label: output.readUInt32BE(14) & 0xfffff, checksumValid: true };
    return { src: Array.from(output.subarray(26, 30)).join('.'), checksumValid: internetChecksum(output.subarray(14, 34)) === 0 };
  }

  test("IPv4: a flow's outer source is the range's first address plus the low bits of its hash, the same for each of its packets; flows spread over the range", () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4_RANGE]);
    const sources = new Set<string>();
    for (let port = 41000; port < 41200; port++) {
      tunnelled(tcp4(port), BE.IPIP4_RANGE, `SYN ${port}`);
      const seen = [
        tcp4(port),
        tcp4(port, { tcpFlags: TCP_FLAGS.ACK }),
        tcp4(port, { tcpFlags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, payload: Buffer.from('data') }),
      ].map(outerOf);
      assert.ok(
        seen.every((o) => o.src === seen[0]!.src && o.checksumValid),
        `port ${port}: ${JSON.stringify(seen)}`,
      );
      assert.ok(insidePrefix(seen[0]!.src, '10.10.4.0/24'), seen[0]!.src);
      sources.add(seen[0]!.src);
    }
    assert.ok(sources.size > 100, `200 flows used ${sources.size} of the 256 sources`);
  });

  test("IPv6: the same within the range's last bits, and the outer flow label is the flow's, the same for each of its packets", () => {
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP6_RANGE]);
    const sources = new Set<string>();
    const labels = new Set<number>();
    for (let port = 41000; port < 41100; port++) {
      tunnelled(tcp6(port), BE.IPIP6_RANGE, `SYN ${port}`);
      tunnelled(tcp6(port, { tcpFlags: TCP_FLAGS.ACK }), BE.IPIP6_RANGE, `ACK ${port}`);
      const first = outerOf(tcp6(port, { tcpFlags: TCP_FLAGS.ACK }));
      assert.ok(insidePrefix(first.src, '2001:db8:10::7:0/112'), first.src);
      sources.add(first.src);
      labels.add(first.label!);
    }
    assert.ok(sources.size > 90 && labels.size > 90, `100 flows: ${sources.size} sources, ${labels.size} labels`);
  });

  test('across families too (6-in-4 from an IPv4 range, 4-in-6 with a label), with VLAN tags and ICMP errors about the flow', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP4_RANGE_V6]);
    for (let port = 41300; port < 41320; port++) tunnelled(tcp6(port), BE.IPIP4_RANGE_V6, `6-in-4 ${port}`);
    tunnelled(withVlan(tcp6(41321), 0x0064), BE.IPIP4_RANGE_V6, 'tagged');
    vip(`${VIP}:53/udp`, [BE.IPIP6_RANGE]);
    for (let port = 41300; port < 41320; port++) tunnelled(udp4(port), BE.IPIP6_RANGE, `4-in-6 ${port}`);
    vip(`${VIP}:80/tcp`, [BE.IPIP4_RANGE]);
    tunnelled(fragNeeded(replyPacket4(41330)), BE.IPIP4_RANGE, 'fragmentation needed about a flow', { icmp_error_forwarded: 1 });
  });

  test('without a range every flow leaves from the one tunnel source', () => {
    vip(`${VIP}:80/tcp`, [BE.IPIP4]);
    for (let port = 41400; port < 41420; port++) assert.equal(outerOf(tcp4(port)).src, BALANCER);
  });
});

describe('VIPs of all ports (port 0)', () => {
  test('a packet to a port without a VIP of its own goes to the VIP of all ports of its address and protocol, tracked per 5-tuple', () => {
    const table = vip(allPorts(VIP), [BE.L2, BE.L2_B]);
    for (const port of [22, 443, 8080, 65535]) {
      const owner = table[tableSlot(flowHash({ saddr: CLIENT, daddr: VIP, sport: 40100, dport: port, proto: 6 }), TABLE_SIZE)]!;
      balancedL2(tcp4(40100, { dstPort: port }), owner, `port ${port}`);
      balancedL2(tcp4(40100, { dstPort: port, tcpFlags: TCP_FLAGS.ACK }), owner, `port ${port}, ACK`);
      const key = flowKeyV4.encode({ saddr: CLIENT, daddr: VIP, sport: 40100, dport: port, proto: 6 });
      assert.equal(flowState.decode(dataplane.flowsV4.lookup(key)!).backend_id, owner, `port ${port} tracked`);
    }
    passes(udp4(40100, { dstPort: 443 }), 'not_vip', 'another protocol');
    passes(ipv4Frame({ src: CLIENT, dst: OTHER_VIP, srcPort: 40100, dstPort: 443 }), 'not_vip', 'another address');
  });

  test('a VIP of its own port wins over the VIP of all ports', () => {
    vip(allPorts(VIP), [BE.L2_B]);
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40101), BE.L2, 'port 80: its own VIP');
    balancedL2(tcp4(40101, { dstPort: 81 }), BE.L2_B, 'port 81: all ports');
  });

  test('once the last VIP of all ports is gone, packets to other ports pass as before (the lookup is off again)', () => {
    vip(allPorts(VIP), [BE.L2]);
    vip(`${VIP}:80/tcp`, [BE.L2]);
    balancedL2(tcp4(40102, { dstPort: 443 }), BE.L2);
    dataplane.deleteVip(allPorts(VIP));
    passes(tcp4(40103, { dstPort: 443 }), 'not_vip');
    balancedL2(tcp4(40103), BE.L2, 'the VIP of port 80 stays');
  });

  test('IPv6: a UDP VIP of all ports, encapsulated 6-in-6', () => {
    vip(allPorts(VIP6, 'udp'), [BE.IPIP6]);
    tunnelled(udp6(40104, { dstPort: 5353 }), BE.IPIP6);
    passes(tcp6(40104, { dstPort: 5353 }), 'not_vip', 'TCP to the same address');
  });

  test("ICMP too-big about a flow of a VIP of all ports goes to that flow's backend", () => {
    const table = vip(allPorts(VIP), [BE.L2, BE.L2_B]);
    const owner = table[tableSlot(flowHash({ saddr: CLIENT, daddr: VIP, sport: 31100, dport: 8443, proto: 6 }), TABLE_SIZE)]!;
    balancedL2(fragNeeded(replyPacket4(31100, VIP, 'tcp', 8443)), owner, undefined, { icmp_error_forwarded: 1 });
  });
});

describe('VIPs that hash the source address only (client stickiness)', () => {
  const clients = Array.from({ length: 24 }, (_, i) => `10.10.${i}.${(i * 7) % 250}`);

  test("every flow of a client reaches the backend its address's slot names, whatever its ports", () => {
    const table = vip(`${VIP}:80/tcp`, [BE.L2, BE.L2_B], VIP_FLAG_HASH_SOURCE);
    const seen = new Set<number>();
    for (const client of clients) {
      const owner = table[tableSlot(sourceHash(client), TABLE_SIZE)]!;
      for (const port of [40200, 40201, 51000, 61234])
        balancedL2(ipv4Frame({ src: client, dst: VIP, srcPort: port, dstPort: 80, tcpFlags: TCP_FLAGS.SYN }), owner, `${client}:${port}`);
      seen.add(owner);
    }
    assert.equal(seen.size, 2, 'clients are spread over both backends');
  });

  test('IPv6 too, and a VIP of all ports can hash sources as well', () => {
    const table = vip(allPorts(VIP6), [BE.L2_V6, BE.L2_V6_B], VIP_FLAG_HASH_SOURCE);
    const seen = new Set<number>();
    for (let i = 1; i <= 16; i++) {
      const client = `2001:db8:10::${((i * 4099) & 0xffff).toString(16)}`;
      const owner = table[tableSlot(sourceHash(client), TABLE_SIZE)]!;
      for (const [sport, dport] of [
        [40300, 80],
        [40301, 443],
      ] as const)
        balancedL2(
          ipv6Frame({ src: client, dst: VIP6, srcPort: sport, dstPort: dport, tcpFlags: TCP_FLAGS.SYN }),
          owner,
          `${client} ${sport}->${dport}`,
        );
      seen.add(owner);
    }
    assert.equal(seen.size, 2);
  });

  test('tracking still follows each 5-tuple: a tracked flow keeps its backend when the table changes', () => {
    const table = vip(`${VIP}:80/tcp`, [BE.L2, BE.L2_B], VIP_FLAG_HASH_SOURCE);
    const owner = table[tableSlot(sourceHash(CLIENT), TABLE_SIZE)]!;
    balancedL2(tcp4(40400, { tcpFlags: TCP_FLAGS.ACK }), owner);
    const other = owner === BE.L2 ? BE.L2_B : BE.L2;
    vip(`${VIP}:80/tcp`, [other], VIP_FLAG_HASH_SOURCE);
    balancedL2(tcp4(40400, { tcpFlags: TCP_FLAGS.ACK }), owner, 'the tracked flow');
    balancedL2(tcp4(40401), other, 'a new flow of the same client');
  });

  test('ICMP too-big about a flow of such a VIP goes where the flow went', () => {
    const table = vip(`${VIP}:80/tcp`, [BE.L2, BE.L2_B], VIP_FLAG_HASH_SOURCE);
    balancedL2(fragNeeded(replyPacket4(31101)), table[tableSlot(sourceHash(CLIENT), TABLE_SIZE)]!, undefined, { icmp_error_forwarded: 1 });
  });
});

describe('IPv6 VIPs and backends', () => {
  test('a TCP packet to an IPv6 VIP is balanced with only the MACs rewritten (l2dsr)', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    balancedL2(tcp6(40060, { payload: Buffer.from('GET / HTTP/1.1\r\n\r\n') }), BE.L2_V6);
  });

  test("a UDP packet to an IPv6 VIP is encapsulated 6-in-6: next header 41, hop limit 64, traffic class copied, the flow's label", () => {
    vip(`[${VIP6}]:53/udp`, [BE.IPIP6]);
    const frame = udp6(40061, { trafficClass: 0xb8, flowLabel: 0x12345, hopLimit: 3 });
    const expected = Buffer.concat([
      ethernet(MAC.router, MAC.balancer, ETHERTYPE.IPV6),
      ipv6Header({
        src: BALANCER6,
        dst: '2001:db8:20::14',
        nextHeader: 41,
        payloadLength: frame.length - ETH_HLEN,
        hopLimit: 64,
        trafficClass: 0xb8,
        flowLabel: outerFlowLabel(encapHash({ saddr: CLIENT6, daddr: VIP6, sport: 40061, dport: 53, proto: 17 })),
      }),
      frame.subarray(ETH_HLEN),
    ]);
    expectFate(frame, { action: 'tx', output: expected, reasons: {} });
  });

  test('an IPv6 packet to a VIP with an IPv4 backend is encapsulated 6-in-4: protocol 41, DF set, identification 0, TOS from the traffic class', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.IPIP4]);
    const frame = tcp6(40062, { trafficClass: 0x28 });
    const expected = Buffer.concat([
      ethernet(MAC.router, MAC.balancer, ETHERTYPE.IPV4),
      ipv4Header({
        src: BALANCER,
        dst: '10.20.0.14',
        protocol: 41,
        payloadLength: frame.length - ETH_HLEN,
        ttl: 64,
        tos: 0x28,
        id: 0,
        dontFragment: true,
      }),
      frame.subarray(ETH_HLEN),
    ]);
    expectFate(frame, { action: 'tx', output: expected, reasons: {} });
  });

  test('an IPv4 packet to a VIP with an IPv6 backend is encapsulated 4-in-6: next header 4, traffic class from the TOS', () => {
    vip(`${VIP}:53/udp`, [BE.IPIP6]);
    const frame = udp4(40063, { tos: 0x2e });
    const expected = Buffer.concat([
      ethernet(MAC.router, MAC.balancer, ETHERTYPE.IPV6),
      ipv6Header({
        src: BALANCER6,
        dst: '2001:db8:20::14',
        nextHeader: 4,
        payloadLength: frame.length - ETH_HLEN,
        hopLimit: 64,
        trafficClass: 0x2e,
        flowLabel: outerFlowLabel(encapHash({ saddr: CLIENT, daddr: VIP, sport: 40063, dport: 53, proto: 17 })),
      }),
      frame.subarray(ETH_HLEN),
    ]);
    expectFate(frame, { action: 'tx', output: expected, reasons: {} });
  });

  test('hop limit 1 is balanced unchanged', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    balancedL2(tcp6(40064, { hopLimit: 1 }), BE.L2_V6);
  });

  test("UDP with a zero checksum over IPv6 is balanced unchanged (the balancer checks no L4 checksum; the backend's stack drops it)", () => {
    vip(`[${VIP6}]:53/udp`, [BE.L2_V6]);
    balancedL2(udp6(40065, { udpZeroChecksum: true }), BE.L2_V6);
  });

  test('a tracked IPv6 flow keeps its backend when the table changes; a SYN follows the table; after a RST the tuple is a new connection', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    balancedL2(tcp6(40066), BE.L2_V6, 'SYN');
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6_B]);
    balancedL2(tcp6(40066, { tcpFlags: TCP_FLAGS.ACK }), BE.L2_V6, 'ACK: where its SYN went');
    balancedL2(tcp6(40066, { tcpFlags: TCP_FLAGS.RST }), BE.L2_V6, 'RST');
    balancedL2(tcp6(40066), BE.L2_V6_B, 'SYN');
    balancedL2(tcp6(40066, { tcpFlags: TCP_FLAGS.ACK }), BE.L2_V6_B, 'ACK');
    const key = flowKeyV6.encode({ saddr: CLIENT6, daddr: VIP6, sport: 40066, dport: 80, proto: 6 });
    assert.equal(flowState.decode(dataplane.flowsV6.lookup(key)!).backend_id, BE.L2_V6_B);
  });

  test('a RST of an unknown IPv6 flow is forwarded but not tracked', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    balancedL2(tcp6(40067, { tcpFlags: TCP_FLAGS.RST }), BE.L2_V6);
    assert.equal(flowCount(), 0);
  });

  test('a version other than 6 under the IPv6 EtherType passes unchanged, counted malformed', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    const frame = tcp6();
    frame[ETH_HLEN] = 0x40 | (frame[ETH_HLEN]! & 0x0f);
    passes(frame, 'malformed');
  });

  test('a payload length beyond the frame passes unchanged, counted malformed', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    const frame = tcp6();
    frame.writeUInt16BE(frame.length - ETH_HLEN - 40 + 1, ETH_HLEN + 4);
    passes(frame, 'malformed');
  });

  test('a frame longer than the IPv6 packet (padding) is balanced, the padding forwarded as it came', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    balancedL2(Buffer.concat([tcp6(40068), Buffer.alloc(6)]), BE.L2_V6);
  });
});

describe('IPv6 extension headers', () => {
  test('hop-by-hop options then TCP: balanced, the header kept', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    balancedL2(tcp6(40070, { extensions: [hopByHopHeader()] }), BE.L2_V6);
    balancedL2(tcp6(40071, { extensions: [hopByHopHeader(3)] }), BE.L2_V6, '32-byte header');
  });

  test('destination options then UDP: encapsulated 6-in-6 with the header inside', () => {
    vip(`[${VIP6}]:53/udp`, [BE.IPIP6]);
    tunnelled(udp6(40072, { extensions: [destinationOptionsHeader(1)] }), BE.IPIP6);
  });

  test('three option headers (hop-by-hop and two destination options), the most the balancer skips: balanced', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    balancedL2(tcp6(40073, { extensions: [hopByHopHeader(), destinationOptionsHeader(), destinationOptionsHeader(2)] }), BE.L2_V6);
  });

  test('a fourth option header is not parsed: the packet passes unchanged, counted l4_unsupported', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(
      tcp6(40074, { extensions: [hopByHopHeader(), destinationOptionsHeader(), destinationOptionsHeader(), destinationOptionsHeader()] }),
      'l4_unsupported',
    );
  });

  test('hop-by-hop anywhere but first passes unchanged, counted malformed', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(tcp6(40075, { extensions: [destinationOptionsHeader(), hopByHopHeader()] }), 'malformed', 'after destination options');
    passes(tcp6(40075, { extensions: [hopByHopHeader(), hopByHopHeader()] }), 'malformed', 'twice');
  });

  test('a routing header passes unchanged, counted ipv6_routing: first, after hop-by-hop, with or without segments left', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(tcp6(40076, { extensions: [routingHeader([OTHER_VIP6])] }), 'ipv6_routing', 'segments left 1');
    passes(
      tcp6(40076, { extensions: [hopByHopHeader(), routingHeader([OTHER_VIP6], 0)] }),
      'ipv6_routing',
      'after hop-by-hop, segments left 0',
    );
    passes(tcp6(40076, { extensions: [routingHeader([])] }), 'ipv6_routing', 'no address');
  });

  test('a fragment header passes unchanged, counted fragment: first, later and atomic fragments', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    passes(tcp6(40077, { extensions: [fragmentHeader({ more: true })] }), 'fragment', 'first');
    passes(tcp6(40077, { extensions: [fragmentHeader({ offset: 100 })] }), 'fragment', 'later');
    passes(tcp6(40077, { extensions: [fragmentHeader()] }), 'fragment', 'atomic');
    passes(tcp6(40077, { extensions: [hopByHopHeader(), fragmentHeader({ more: true })] }), 'fragment', 'after hop-by-hop');
  });

  test('an option header whose length runs past the packet passes unchanged, counted malformed', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    const frame = tcp6(40078, { extensions: [hopByHopHeader()] });
    frame[ETH_HLEN + 40 + 1] = 3; // 32 bytes claimed: past the end of the 28 that follow
    passes(frame, 'malformed', 'hop-by-hop');
    const dst = tcp6(40078, { extensions: [hopByHopHeader(), destinationOptionsHeader()] });
    dst[ETH_HLEN + 48 + 1] = 255;
    passes(dst, 'malformed', 'destination options of 2 KB');
  });

  test('an option header that ends the packet leaves no room for TCP: passes unchanged, counted l4_truncated', () => {
    vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]);
    const frame = tcp6(40079, { extensions: [hopByHopHeader()] });
    frame.writeUInt16BE(8, ETH_HLEN + 4);
    passes(frame, 'l4_truncated', 'payload length 8, TCP header in the frame beyond it');
    passes(frame.subarray(0, ETH_HLEN + 48), 'l4_truncated', 'payload length 8, frame cut there');
  });
});

// ---------------------------------------------------------------------------

describe('truncated frames at every length', () => {
  test('frames shorter than an Ethernet header are refused by BPF_PROG_TEST_RUN itself (as by any NIC)', () => {
    for (let length = 0; length < ETH_HLEN; length++) assert.throws(() => testRun(dataplane.programFd, Buffer.alloc(length)), /EINVAL/);
  });

  interface Sweep {
    readonly name: string;
    readonly setup: () => void;
    readonly frame: Buffer;
    readonly l3: number;
    readonly l4: number;
    /** ICMP checksum to recompute in consistent cuts once the ICMP header is whole. */
    readonly icmp?: 4 | 6;
    /** UDP length to rewrite in consistent cuts once the UDP header is whole. */
    readonly udp?: true;
    /** The fate of the frame cut to `length` bytes with its IP length fields saying so. */
    readonly consistent: (length: number, cut: Buffer) => Fate;
  }

  const pass = (cut: Buffer, reason: Reason): Fate => ({ action: 'pass', output: cut, reasons: { [reason]: 1 } });
  const l2dsr = (cut: Buffer, backend: number, reasons: Reasons = {}): Fate => ({
    action: 'tx',
    output: withMacs(cut, BACKENDS[backend]!.mac, MAC.balancer),
    reasons,
  });

  /** The first `length` bytes, the IPv4 total length (and header checksum) or IPv6 payload length rewritten to match. */
  function cutConsistently(s: Sweep, length: number): Buffer {
    const f = Buffer.from(s.frame.subarray(0, length));
    const v6 = s.frame.readUInt16BE(s.l3 - 2) === ETHERTYPE.IPV6;
    if (v6) {
      if (length >= s.l3 + 6) f.writeUInt16BE(Math.max(0, length - s.l3 - 40), s.l3 + 4);
    } else if (length >= s.l3 + 4) {
      f.writeUInt16BE(length - s.l3, s.l3 + 2);
      const ihl = (f[s.l3]! & 0x0f) * 4;
      if (length >= s.l3 + ihl) {
        f.writeUInt16BE(0, s.l3 + 10);
        f.writeUInt16BE(internetChecksum(f.subarray(s.l3, s.l3 + ihl)), s.l3 + 10);
      }
    }
    if (s.udp && length >= s.l4 + 8) f.writeUInt16BE(length - s.l4, s.l4 + 4);
    if (s.icmp && length >= s.l4 + 8) {
      f.writeUInt16BE(0, s.l4 + 2);
      const pseudo = s.icmp === 6 ? pseudoHeader(CLIENT6, VIP6, P.ICMPV6, length - s.l4) : Buffer.alloc(0);
      f.writeUInt16BE(internetChecksum(pseudo, f.subarray(s.l4)), s.l4 + 2);
    }
    return f;
  }

  const TCP_OPTIONS = Buffer.from([2, 4, 0x05, 0xb4, 1, 1, 1, 0]);
  const HTTP = Buffer.from('GET / HTTP/1.1\r\n\r\n');
  const sweeps: Sweep[] = [
    {
      name: 'IPv4 TCP with options',
      setup: () => vip(`${VIP}:80/tcp`, [BE.L2]),
      frame: tcp4(33000, { tcpOptions: TCP_OPTIONS, payload: HTTP }),
      l3: 14,
      l4: 34,
      consistent: (n, cut) =>
        n < 34 ? pass(cut, 'malformed') : n < 54 ? pass(cut, 'l4_truncated') : n < 62 ? pass(cut, 'malformed') : l2dsr(cut, BE.L2),
    },
    {
      name: 'IPv4 UDP',
      setup: () => vip(`${VIP}:53/udp`, [BE.L2]),
      frame: udp4(33001, { payload: Buffer.from('twelve bytes'), udpZeroChecksum: true }),
      l3: 14,
      l4: 34,
      udp: true,
      consistent: (n, cut) => (n < 34 ? pass(cut, 'malformed') : n < 42 ? pass(cut, 'l4_truncated') : l2dsr(cut, BE.L2)),
    },
    {
      name: 'IPv6 TCP with options',
      setup: () => vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]),
      frame: tcp6(33002, { tcpOptions: TCP_OPTIONS, payload: HTTP }),
      l3: 14,
      l4: 54,
      consistent: (n, cut) =>
        n < 54 ? pass(cut, 'malformed') : n < 74 ? pass(cut, 'l4_truncated') : n < 82 ? pass(cut, 'malformed') : l2dsr(cut, BE.L2_V6),
    },
    {
      name: 'IPv6 hop-by-hop TCP',
      setup: () => vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]),
      frame: tcp6(33003, { extensions: [hopByHopHeader()], payload: HTTP }),
      l3: 14,
      l4: 62,
      consistent: (n, cut) => (n < 62 ? pass(cut, 'malformed') : n < 82 ? pass(cut, 'l4_truncated') : l2dsr(cut, BE.L2_V6)),
    },
    {
      name: '802.1Q-tagged IPv4 TCP',
      setup: () => vip(`${VIP}:80/tcp`, [BE.L2]),
      frame: withVlan(tcp4(33004, { payload: HTTP }), 0x0064),
      l3: 18,
      l4: 38,
      consistent: (n, cut) =>
        n < 18 ? pass(cut, 'not_ip') : n < 38 ? pass(cut, 'malformed') : n < 58 ? pass(cut, 'l4_truncated') : l2dsr(cut, BE.L2),
    },
    {
      name: 'ICMP echo request',
      setup: () => vip(`${VIP}:80/tcp`, [BE.L2]),
      frame: echoRequest4(),
      l3: 14,
      l4: 34,
      icmp: 4,
      consistent: (n, cut) =>
        n < 34
          ? pass(cut, 'malformed')
          : n < 42
            ? pass(cut, 'l4_truncated')
            : { action: 'tx', output: echoReply4(cut.subarray(42)), reasons: { icmp_echo_replied: 1 } },
    },
    {
      name: 'ICMPv6 echo request',
      setup: () => vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]),
      frame: echoRequest6(),
      l3: 14,
      l4: 54,
      icmp: 6,
      consistent: (n, cut) =>
        n < 54
          ? pass(cut, 'malformed')
          : n < 62
            ? pass(cut, 'l4_truncated')
            : { action: 'tx', output: echoReply6(cut.subarray(62)), reasons: { icmp_echo_replied: 1 } },
    },
    {
      name: 'ICMP fragmentation needed quoting 48 bytes',
      setup: () => vip(`${VIP}:80/tcp`, [BE.L2]),
      frame: fragNeeded(replyPacket4(33005), VIP, 48),
      l3: 14,
      l4: 34,
      // The error is forwarded once the quoted IPv4 header and 8 bytes after it are whole.
      consistent: (n, cut) =>
        n < 34 ? pass(cut, 'malformed') : n < 70 ? pass(cut, 'l4_truncated') : l2dsr(cut, BE.L2, { icmp_error_forwarded: 1 }),
    },
    {
      name: 'ICMPv6 packet too big quoting 64 bytes',
      setup: () => vip(`[${VIP6}]:80/tcp`, [BE.L2_V6]),
      frame: packetTooBig(replyPacket6(33006), VIP6, 64),
      l3: 14,
      l4: 54,
      consistent: (n, cut) =>
        n < 54 ? pass(cut, 'malformed') : n < 110 ? pass(cut, 'l4_truncated') : l2dsr(cut, BE.L2_V6, { icmp_error_forwarded: 1 }),
    },
  ];

  for (const s of sweeps) {
    test(`${s.name}, cut at every length with its IP length left as it was: passes unchanged, counted malformed${s.l3 > ETH_HLEN ? ' (not_ip while the tag itself is cut)' : ''}`, () => {
      s.setup();
      for (let n = ETH_HLEN; n < s.frame.length; n++) {
        const cut = Buffer.from(s.frame.subarray(0, n));
        expectFate(cut, pass(cut, n < s.l3 ? 'not_ip' : 'malformed'), `cut to ${n} of ${s.frame.length} bytes`);
      }
      assert.equal(flowCount(), 0, 'nothing tracked');
    });

    test(`${s.name}, cut at every length with its length fields saying so: passed unchanged until the headers are whole, then handled as a shorter packet`, () => {
      s.setup();
      let handled = 0;
      for (let n = ETH_HLEN; n < s.frame.length; n++) {
        const cut = cutConsistently(s, n);
        const expected = s.consistent(n, cut);
        if (expected.action !== 'pass') handled++;
        expectFate(cut, expected, `cut to ${n} of ${s.frame.length} bytes`);
      }
      assert.ok(handled > 0, 'the sweep reaches whole headers');
    });
  }
});
