/**
 * xdp_decap packet by packet, through BPF_PROG_TEST_RUN: every tunnel kind
 * (4-in-4, 6-in-4, 4-in-6, 6-in-6, VLAN-tagged) to one of the host's
 * endpoint addresses comes out as exactly the inner frame; anything else,
 * cut short or inconsistent, passes unchanged and uncounted.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { decapCounters, loadDecap } from '../../src/dataplane/decap.js';
import { testRun } from '../../src/dataplane/xdp.js';
import {
  ETHERTYPE,
  MAC,
  TCP_FLAGS,
  ethernet,
  hopByHopHeader,
  internetChecksum,
  ipv4Frame,
  ipv4Header,
  ipv6Frame,
  ipv6Header,
  parseEthernet,
  withVlan,
  editIpv4,
} from '../support/packets.js';

const ENDPOINT = '10.20.0.14';
const decap = loadDecap([ENDPOINT, '10.20.0.99']);
after(() => decap.close());

const inner = ipv4Frame({
  src: '10.10.0.10',
  dst: '10.100.0.100',
  srcPort: 45000,
  dstPort: 80,
  payload: Buffer.from('GET / HTTP/1.1\r\n\r\n'),
}).subarray(14);

function tunnelled(outerDst: string, innerPacket: Buffer = inner): Buffer {
  const outer = ipv4Header({ src: '10.10.0.2', dst: outerDst, protocol: 4, payloadLength: innerPacket.length });
  return Buffer.concat([ethernet(MAC.backend1, MAC.router, 0x0800), outer, innerPacket]);
}

test('an IP-in-IP packet to this host comes out as the inner packet', () => {
  const before = decapCounters(decap);
  const { action, output } = testRun(decap.programFd, tunnelled(ENDPOINT));
  assert.equal(action, 'pass');
  const eth = parseEthernet(output);
  assert.equal(eth.dst, MAC.backend1);
  assert.equal(eth.src, MAC.router);
  assert.equal(eth.etherType, 0x0800);
  assert.deepEqual(eth.payload, inner);
  const afterCount = decapCounters(decap);
  assert.equal(afterCount.packets, before.packets + 1n);
  assert.equal(afterCount.bytes, before.bytes + BigInt(inner.length));
});

test('tunnelled packets to other hosts, other protocols and short frames are left alone', () => {
  const plain = ipv4Frame({ src: '10.10.0.10', dst: ENDPOINT, dstPort: 80 });
  const full = tunnelled(ENDPOINT);
  const frames = [tunnelled('10.20.0.15'), plain];
  for (let length = 14; length < 14 + 20 + 20; length++) frames.push(full.subarray(0, length));
  const notIpv4Inside = tunnelled(ENDPOINT, Buffer.concat([Buffer.from([0x60]), inner.subarray(1)]));
  frames.push(notIpv4Inside);
  for (const frame of frames) {
    const { action, output } = testRun(decap.programFd, frame);
    assert.equal(action, 'pass');
    assert.deepEqual(output, frame, `frame of ${frame.length} bytes is unchanged`);
  }
});

// ---------------------------------------------------------------------------
// Every tunnel kind, and everything that must be left alone. A decapsulated
// frame must be exactly the frame the backend would have got without the
// tunnel: the inner frame is built first, the tunnel around it.

const ENDPOINT6 = '2001:db8:20::14';
const decap6 = loadDecap([ENDPOINT, ENDPOINT6]);
after(() => decap6.close());

const CLIENT = '10.10.0.10';
const VIP = '10.100.0.100';
const CLIENT6 = '2001:db8:10::10';
const VIP6 = '2001:db8:100::100';
const BALANCER = '10.10.0.2';
const BALANCER6 = '2001:db8:10::2';

/** What the backend's stack should receive: the client's packet, in a frame from the router. */
const innerFrame4 = ipv4Frame({
  dstMac: MAC.backend1,
  srcMac: MAC.router,
  src: CLIENT,
  dst: VIP,
  srcPort: 45001,
  dstPort: 80,
  tcpFlags: TCP_FLAGS.ACK,
  payload: Buffer.from('GET / HTTP/1.1\r\n\r\n'),
});
const innerFrame6 = ipv6Frame({
  dstMac: MAC.backend1,
  srcMac: MAC.router,
  src: CLIENT6,
  dst: VIP6,
  srcPort: 45002,
  dstPort: 53,
  protocol: 'udp',
  payload: Buffer.from('query'),
});

interface TunnelSpec {
  /** The outer destination; its family is the outer header's. */
  readonly to?: string;
  /** The outer source: the balancer's address by default, or one of its outer source range. */
  readonly from?: string;
  readonly flowLabel?: number;
  readonly extraOuterPayload?: Buffer;
}

/** The inner frame's IP packet behind an outer header (protocol 4 or 41 from the inner family), as the balancer sends it. */
function tunnel(inner: Buffer, spec: TunnelSpec = {}): Buffer {
  const to = spec.to ?? ENDPOINT;
  const packet = Buffer.concat([inner.subarray(14), spec.extraOuterPayload ?? Buffer.alloc(0)]);
  const protocol = inner.readUInt16BE(12) === ETHERTYPE.IPV6 ? 41 : 4;
  const outer = to.includes(':')
    ? ipv6Header({ src: spec.from ?? BALANCER6, dst: to, nextHeader: protocol, payloadLength: packet.length, flowLabel: spec.flowLabel })
    : ipv4Header({ src: spec.from ?? BALANCER, dst: to, protocol, payloadLength: packet.length });
  return Buffer.concat([ethernet(MAC.backend1, MAC.router, to.includes(':') ? ETHERTYPE.IPV6 : ETHERTYPE.IPV4), outer, packet]);
}

function runDecap(frame: Buffer): { action: string; output: Buffer; packets: bigint; bytes: bigint } {
  const before = decapCounters(decap6);
  const { action, output } = testRun(decap6.programFd, frame);
  const afterCount = decapCounters(decap6);
  return { action, output: Buffer.from(output), packets: afterCount.packets - before.packets, bytes: afterCount.bytes - before.bytes };
}

/** Passed up as `expected` (the inner frame), counted: one packet, the inner IP packet's bytes. */
function decapsulates(frame: Buffer, expected: Buffer, innerLength: number, what = ''): void {
  const got = runDecap(frame);
  assert.equal(got.action, 'pass', `${what} action`);
  assert.equal(got.output.toString('hex'), expected.toString('hex'), `${what} output`);
  assert.deepEqual([got.packets, got.bytes], [1n, BigInt(innerLength)], `${what} decap_stats packets and bytes`);
}

/** Passed up unchanged, not counted. */
function leftAlone(frame: Buffer, what = ''): void {
  const got = runDecap(frame);
  assert.equal(got.action, 'pass', `${what} action`);
  assert.equal(got.output.toString('hex'), frame.toString('hex'), `${what} output is the input`);
  assert.deepEqual([got.packets, got.bytes], [0n, 0n], `${what} decap_stats unchanged`);
}

const innerLength4 = innerFrame4.length - 14;
const innerLength6 = innerFrame6.length - 14;

describe('decapsulated: the outer header removed, the EtherType set to the inner family, the inner packet byte for byte', () => {
  test('4-in-4 (protocol 4) to an IPv4 endpoint', () => {
    decapsulates(tunnel(innerFrame4), innerFrame4, innerLength4);
  });

  test('6-in-4 (protocol 41) to an IPv4 endpoint: the EtherType becomes IPv6', () => {
    decapsulates(tunnel(innerFrame6), innerFrame6, innerLength6);
  });

  test('4-in-6 (next header 4) to an IPv6 endpoint: the EtherType becomes IPv4', () => {
    decapsulates(tunnel(innerFrame4, { to: ENDPOINT6 }), innerFrame4, innerLength4);
  });

  test('6-in-6 (next header 41) to an IPv6 endpoint', () => {
    decapsulates(tunnel(innerFrame6, { to: ENDPOINT6 }), innerFrame6, innerLength6);
  });

  test("an 802.1Q-tagged tunnel keeps its tag, whose EtherType becomes the inner family's", () => {
    decapsulates(withVlan(tunnel(innerFrame4), 0xe064), withVlan(innerFrame4, 0xe064), innerLength4, '4-in-4');
    decapsulates(withVlan(tunnel(innerFrame4, { to: ENDPOINT6 }), 0x0064), withVlan(innerFrame4, 0x0064), innerLength4, '4-in-6');
    decapsulates(withVlan(tunnel(innerFrame6), 0x0064), withVlan(innerFrame6, 0x0064), innerLength6, '6-in-4');
  });

  test('an 802.1ad-tagged 6-in-6 tunnel keeps its tag', () => {
    decapsulates(
      withVlan(tunnel(innerFrame6, { to: ENDPOINT6 }), 0x0123, ETHERTYPE.QINQ),
      withVlan(innerFrame6, 0x0123, ETHERTYPE.QINQ),
      innerLength6,
    );
  });

  test('Ethernet padding after the outer packet stays after the inner packet (the stack trims by the inner length)', () => {
    const padding = Buffer.alloc(6);
    decapsulates(Buffer.concat([tunnel(innerFrame4), padding]), Buffer.concat([innerFrame4, padding]), innerLength4);
  });

  test('an outer length longer than the inner packet: decapsulated, the extra bytes kept behind the inner packet', () => {
    const extra = Buffer.from('junk');
    decapsulates(tunnel(innerFrame4, { extraOuterPayload: extra }), Buffer.concat([innerFrame4, extra]), innerLength4, 'IPv4 outer');
    decapsulates(
      tunnel(innerFrame6, { to: ENDPOINT6, extraOuterPayload: extra }),
      Buffer.concat([innerFrame6, extra]),
      innerLength6,
      'IPv6 outer',
    );
  });

  test("a tunnel to any of the host's endpoint addresses is decapsulated, whatever the outer TTL", () => {
    decapsulates(
      editIpv4(tunnel(innerFrame4), (ip) => {
        ip[8] = 1;
      }),
      innerFrame4,
      innerLength4,
    );
  });

  test("a tunnel from any outer source (a balancer's outer source range: one address per flow), with any flow label, is decapsulated", () => {
    for (let i = 0; i < 64; i++) {
      decapsulates(tunnel(innerFrame4, { from: `10.10.${4 + (i >> 5)}.${(i * 37) & 255}` }), innerFrame4, innerLength4, `from source ${i}`);
      decapsulates(
        tunnel(innerFrame6, {
          to: ENDPOINT6,
          from: `2001:db8:10::7:${(i * 4099) & 0xffff}`.replace(/:(\d+)$/, (_, n: string) => `:${Number(n).toString(16)}`),
          flowLabel: (i * 0x3579b) & 0xfffff,
        }),
        innerFrame6,
        innerLength6,
        `IPv6 source ${i}`,
      );
    }
  });
});

describe('left alone: passed unchanged, not counted', () => {
  test('a tunnel to an address that is not an endpoint', () => {
    leftAlone(tunnel(innerFrame4, { to: '10.20.0.15' }), 'IPv4');
    leftAlone(tunnel(innerFrame6, { to: '2001:db8:20::15' }), 'IPv6');
  });

  test('a wrong outer IPv4 header checksum', () => {
    leftAlone(
      editIpv4(
        tunnel(innerFrame4),
        (ip) => {
          ip[10] ^= 0x01;
        },
        false,
      ),
    );
  });

  test('an outer IPv4 total length beyond the frame, shorter than the inner packet, or shorter than the header', () => {
    const frame = tunnel(innerFrame4);
    leftAlone(
      editIpv4(frame, (ip) => ip.writeUInt16BE(frame.length - 14 + 1, 2)),
      'one byte beyond the frame',
    );
    leftAlone(
      editIpv4(frame, (ip) => ip.writeUInt16BE(frame.length - 14 - 1, 2)),
      'one byte short of the inner packet',
    );
    leftAlone(
      editIpv4(frame, (ip) => ip.writeUInt16BE(12, 2)),
      'total length 12',
    );
  });

  test('an outer IPv6 payload length beyond the frame or shorter than the inner packet', () => {
    const frame = tunnel(innerFrame6, { to: ENDPOINT6 });
    for (const delta of [1, -1]) {
      const edited = Buffer.from(frame);
      edited.writeUInt16BE(innerLength6 + delta, 14 + 4);
      leftAlone(edited, `payload length ${delta > 0 ? 'beyond the frame' : 'short of the inner packet'}`);
    }
  });

  test('an outer IPv4 header with options (IHL above 5), or an IHL below 5', () => {
    const withOptions = Buffer.concat([
      ethernet(MAC.backend1, MAC.router, ETHERTYPE.IPV4),
      ipv4Header({ src: BALANCER, dst: ENDPOINT, protocol: 4, payloadLength: innerLength4, options: Buffer.from([148, 4, 0, 0]) }),
      innerFrame4.subarray(14),
    ]);
    leftAlone(withOptions, 'router alert');
    leftAlone(
      editIpv4(tunnel(innerFrame4), (ip) => {
        ip[0] = 0x44;
      }),
      'IHL 4',
    );
  });

  test('an outer version that disagrees with the EtherType', () => {
    leftAlone(
      editIpv4(tunnel(innerFrame4), (ip) => {
        ip[0] = 0x65;
      }),
      'version 6 under 0x0800',
    );
    const v6 = tunnel(innerFrame6, { to: ENDPOINT6 });
    v6[14] = 0x40 | (v6[14]! & 0x0f);
    leftAlone(v6, 'version 4 under 0x86dd');
  });

  test('an outer IPv4 fragment, first or later: the kernel reassembles it', () => {
    leftAlone(
      editIpv4(tunnel(innerFrame4), (ip) => ip.writeUInt16BE(0x2000, 6)),
      'first',
    );
    leftAlone(
      editIpv4(tunnel(innerFrame4), (ip) => ip.writeUInt16BE(0x0010, 6)),
      'later',
    );
  });

  test('protocols other than 4 and 41 to an endpoint (TCP, UDP, GRE, ICMP, ICMPv6)', () => {
    leftAlone(ipv4Frame({ src: CLIENT, dst: ENDPOINT, dstPort: 80 }), 'TCP');
    leftAlone(ipv4Frame({ src: CLIENT, dst: ENDPOINT, dstPort: 4789, protocol: 'udp' }), 'UDP');
    leftAlone(
      editIpv4(tunnel(innerFrame4), (ip) => {
        ip[9] = 47;
      }),
      'GRE',
    );
    leftAlone(
      editIpv4(tunnel(innerFrame4), (ip) => {
        ip[9] = 1;
      }),
      'ICMP',
    );
    leftAlone(ipv6Frame({ src: CLIENT6, dst: ENDPOINT6, protocol: 'icmpv6', icmp: { type: 128 }, payload: Buffer.alloc(8) }), 'ICMPv6');
  });

  test('a tunnel protocol that disagrees with the inner version (4 carrying IPv6, 41 carrying IPv4)', () => {
    leftAlone(
      editIpv4(tunnel(innerFrame6), (ip) => {
        ip[9] = 4;
      }),
      'IPv4 outer, protocol 4, IPv6 inside',
    );
    leftAlone(
      editIpv4(tunnel(innerFrame4), (ip) => {
        ip[9] = 41;
      }),
      'IPv4 outer, protocol 41, IPv4 inside',
    );
    const v6 = tunnel(innerFrame4, { to: ENDPOINT6 });
    v6[14 + 6] = 41;
    leftAlone(v6, 'IPv6 outer, next header 41, IPv4 inside');
  });

  test('an outer IPv6 header with an extension header before the tunnel', () => {
    const hbh = hopByHopHeader();
    const bytes = Buffer.from(hbh.bytes);
    bytes[0] = 41;
    const packet = Buffer.concat([bytes, innerFrame6.subarray(14)]);
    const frame = Buffer.concat([
      ethernet(MAC.backend1, MAC.router, ETHERTYPE.IPV6),
      ipv6Header({ src: BALANCER6, dst: ENDPOINT6, nextHeader: 0, payloadLength: packet.length }),
      packet,
    ]);
    leftAlone(frame);
  });

  test('two stacked VLAN tags, and frames that are not IP', () => {
    leftAlone(withVlan(withVlan(tunnel(innerFrame4), 10), 20, ETHERTYPE.QINQ), 'QinQ');
    leftAlone(
      Buffer.concat([ethernet('ff:ff:ff:ff:ff:ff', MAC.router, ETHERTYPE.ARP), Buffer.from('0001080006040001', 'hex'), Buffer.alloc(20)]),
      'ARP',
    );
  });
});

describe('truncated tunnels at every length', () => {
  const kinds: Array<{ name: string; frame: Buffer; l3: number; innerAt: number; innerHeader: number }> = [
    { name: '4-in-4', frame: tunnel(innerFrame4), l3: 14, innerAt: 34, innerHeader: 20 },
    { name: '6-in-4', frame: tunnel(innerFrame6), l3: 14, innerAt: 34, innerHeader: 40 },
    { name: '4-in-6', frame: tunnel(innerFrame4, { to: ENDPOINT6 }), l3: 14, innerAt: 54, innerHeader: 20 },
    { name: '6-in-6', frame: tunnel(innerFrame6, { to: ENDPOINT6 }), l3: 14, innerAt: 54, innerHeader: 40 },
    { name: '802.1Q-tagged 4-in-4', frame: withVlan(tunnel(innerFrame4), 0x0064), l3: 18, innerAt: 38, innerHeader: 20 },
  ];

  /** Rewrites the length field of the IP header at `at` (and an IPv4 header's checksum) to end the packet at `end`. */
  function setLength(f: Buffer, at: number, end: number): void {
    if (f[at]! >> 4 === 6) {
      if (f.length >= at + 6) f.writeUInt16BE(Math.max(0, end - at - 40), at + 4);
      return;
    }
    if (f.length >= at + 4) f.writeUInt16BE(Math.max(0, end - at), at + 2);
    if (f.length >= at + 20) {
      f.writeUInt16BE(0, at + 10);
      f.writeUInt16BE(internetChecksum(f.subarray(at, at + 20)), at + 10);
    }
  }

  for (const k of kinds) {
    test(`${k.name}: cut at every length, lengths left as they were, or only the outer length fixed: left alone`, () => {
      for (let n = 14; n < k.frame.length; n++) {
        const cut = Buffer.from(k.frame.subarray(0, n));
        leftAlone(cut, `cut to ${n}`);
        if (n >= k.l3 + 1) {
          const outerFixed = Buffer.from(cut);
          setLength(outerFixed, k.l3, n);
          leftAlone(outerFixed, `cut to ${n}, outer length fixed`);
        }
      }
    });

    test(`${k.name}: cut at every length, outer and inner lengths fixed: left alone until the inner IP header is whole, then decapsulated`, () => {
      let decapsulated = 0;
      for (let n = k.innerAt + 1; n < k.frame.length; n++) {
        const cut = Buffer.from(k.frame.subarray(0, n));
        setLength(cut, k.l3, n);
        setLength(cut, k.innerAt, n);
        if (n < k.innerAt + k.innerHeader) {
          leftAlone(cut, `cut to ${n}`);
          continue;
        }
        const expected = Buffer.from(Buffer.concat([cut.subarray(0, k.l3), cut.subarray(k.innerAt)]));
        expected.writeUInt16BE(cut[k.innerAt]! >> 4 === 6 ? ETHERTYPE.IPV6 : ETHERTYPE.IPV4, k.l3 - 2);
        decapsulates(cut, expected, n - k.innerAt, `cut to ${n}`);
        decapsulated++;
      }
      assert.ok(decapsulated > 0);
    });
  }
});
