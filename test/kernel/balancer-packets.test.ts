/**
 * xdp_balancer packet by packet, through BPF_PROG_TEST_RUN: what goes in,
 * what comes out, with the maps written as the reconciler writes them.
 */
import assert from 'node:assert/strict';
import { after, beforeEach, describe, test } from 'node:test';
import { FLOW_FLAG_CLOSING, flowKeyV4, flowState, readU64 } from '../../src/dataplane/abi.js';
import { parseVip } from '../../src/model/address.js';
import { backendEntry, clearFlows as clearFlowMaps, clearVips, putVipWithTable } from '../support/dataplane.js';
import { BalancerDataplane, KILL_SWITCH_NEVER } from '../../src/dataplane/balancer.js';
import { flowHash, tableSlot } from '../../src/dataplane/flow-hash.js';
import { orThrow } from '../../src/dataplane/libbpf.js';
import { nativeTesting } from '../support/native-testing.js';
import { testRun } from '../../src/dataplane/xdp.js';
import { MAC, TCP_FLAGS, ipv4Frame, ipv6Frame, parseEthernet, parseIpv4 } from '../support/packets.js';

const VIP = '10.100.0.100';
const OTHER_VIP = '10.100.0.101';
const CLIENT = '10.10.0.10';
const BALANCER = '10.10.0.2';
const TABLE_SIZE = 251;
const LOOPBACK_IFINDEX = 1; // BPF_PROG_TEST_RUN's ingress interface

const BE_L2 = 1;
const BE_IPIP = 2;
const BE_L2_OTHER = 3;
const BE_OTHER_IFACE = 4;
const BACKEND_MAC: Record<number, string> = {
  [BE_L2]: '02:00:00:00:00:11',
  [BE_L2_OTHER]: '02:00:00:00:00:13',
  [BE_OTHER_IFACE]: '02:00:00:00:00:99',
};

const dataplane = BalancerDataplane.load({ maxVips: 16, maxBackends: 64, flowTableSize: 4096 });
dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
const readJiffies = () => readU64(testRun(dataplane.clockFd, Buffer.alloc(64)).output);
after(() => dataplane.close());

/** A backend entry serving VIP vipId (packets of its tracked flows count for that VIP), in this file's data plane or another. */
function l2Backend(id: number, ifindex = LOOPBACK_IFINDEX, vipId = 0, into: BalancerDataplane = dataplane) {
  into.putBackend(
    id,
    backendEntry({ address: `10.10.0.${10 + id}`, forward: 'l2dsr', dstMac: BACKEND_MAC[id]!, srcMac: MAC.balancer, ifindex, vipId }),
  );
}

function ipipBackend(id: number, address: string) {
  dataplane.putBackend(
    id,
    backendEntry({ address, forward: 'ipip', dstMac: MAC.router, srcMac: MAC.balancer, ifindex: LOOPBACK_IFINDEX, tunnelSource: BALANCER }),
  );
}

function vip(address: string, port: number, protocol: 'tcp' | 'udp', owners: number[], vipId = 0) {
  return putVipWithTable(dataplane, `${address}:${port}/${protocol}`, owners, vipId, TABLE_SIZE);
}

function clearFlows() {
  clearFlowMaps(dataplane);
}

function syn(srcPort = 40000, overrides: Partial<Parameters<typeof ipv4Frame>[0]> = {}) {
  return ipv4Frame({ src: CLIENT, dst: VIP, srcPort, dstPort: 80, tcpFlags: TCP_FLAGS.SYN, ...overrides });
}

beforeEach(() => {
  clearFlows();
  clearVips(dataplane);
  l2Backend(BE_L2);
  ipipBackend(BE_IPIP, '10.20.0.14');
  l2Backend(BE_L2_OTHER);
  l2Backend(BE_OTHER_IFACE, 77);
});

describe('l2dsr', () => {
  test('a SYN to the VIP leaves on the same interface with only the MACs rewritten', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    const input = syn();
    const { action, output } = testRun(dataplane.programFd, input);
    assert.equal(action, 'tx');
    const eth = parseEthernet(output);
    assert.equal(eth.dst, BACKEND_MAC[BE_L2]);
    assert.equal(eth.src, MAC.balancer);
    assert.deepEqual(output.subarray(12), input.subarray(12), 'everything after the MACs is unchanged');
  });

  test('a backend behind another interface is reached by redirect', () => {
    vip(VIP, 80, 'tcp', [BE_OTHER_IFACE]);
    const { action, output } = testRun(dataplane.programFd, syn());
    assert.equal(action, 'redirect');
    assert.equal(parseEthernet(output).dst, BACKEND_MAC[BE_OTHER_IFACE]);
  });
});

describe('ipip', () => {
  test('a SYN to the VIP is encapsulated towards the backend via the next hop', () => {
    vip(VIP, 80, 'tcp', [BE_IPIP]);
    const input = syn(40001, { tos: 0x28, ttl: 61, id: 0xbeef, payload: Buffer.from('hello') });
    const { action, output } = testRun(dataplane.programFd, input);
    assert.equal(action, 'tx');
    assert.equal(output.length, input.length + 20);
    const eth = parseEthernet(output);
    assert.equal(eth.dst, MAC.router);
    assert.equal(eth.src, MAC.balancer);
    assert.equal(eth.etherType, 0x0800);
    const outer = parseIpv4(eth.payload);
    assert.equal(outer.protocol, 4);
    assert.equal(outer.src, BALANCER);
    assert.equal(outer.dst, '10.20.0.14');
    assert.ok(outer.checksumValid, 'outer IPv4 checksum is valid');
    assert.equal(outer.totalLength, input.length - 14 + 20);
    assert.equal(outer.ttl, 64, 'the outer header gets a fresh TTL: the tunnel must reach the backend');
    assert.equal(parseIpv4(eth.payload.subarray(20)).ttl, 61, 'the inner TTL is untouched');
    assert.equal(outer.tos, 0x28);
    assert.equal(outer.id, 0xbeef);
    assert.equal(outer.flags, 0b010, 'DF copied, MF clear');
    assert.deepEqual(eth.payload.subarray(20), input.subarray(14), 'inner packet is byte-identical');
  });

  test('DF clear on the inner packet stays clear on the outer one', () => {
    vip(VIP, 80, 'tcp', [BE_IPIP]);
    const { output } = testRun(dataplane.programFd, syn(40002, { dontFragment: false }));
    const outer = parseIpv4(parseEthernet(output).payload);
    assert.equal(outer.flags, 0);
    assert.ok(outer.checksumValid);
  });

  test('outer checksums are valid across many addresses and lengths', () => {
    for (let i = 0; i < 200; i++) {
      const backend = `10.${i % 256}.${(i * 7) % 256}.${(i * 13) % 256}`;
      ipipBackend(BE_IPIP, backend);
      vip(VIP, 80, 'tcp', [BE_IPIP]);
      const { output } = testRun(
        dataplane.programFd,
        syn(41000 + i, { payload: Buffer.alloc(i * 3), ttl: 1 + (i % 255), tos: i % 256, id: (i * 331) & 0xffff }),
      );
      const outer = parseIpv4(parseEthernet(output).payload);
      assert.ok(outer.checksumValid, `checksum for backend ${backend}`);
      assert.equal(outer.dst, backend);
    }
  });
});

describe('packets that are not balanced', () => {
  test('traffic to anything but a VIP passes unchanged', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    const frames = [
      ipv4Frame({ src: CLIENT, dst: OTHER_VIP, dstPort: 80 }),
      ipv4Frame({ src: CLIENT, dst: VIP, dstPort: 443 }),
      ipv4Frame({ src: CLIENT, dst: VIP, dstPort: 80, protocol: 'udp' }),
      ipv4Frame({ src: CLIENT, dst: VIP, protocol: 1, payload: Buffer.from('0800f7ff00000000', 'hex') }),
      Buffer.concat([Buffer.from('020000000002020000000a0806', 'hex'), Buffer.alloc(28)]), // ARP
    ];
    for (const frame of frames) {
      const { action, output } = testRun(dataplane.programFd, frame);
      assert.equal(action, 'pass');
      assert.deepEqual(output, frame);
    }
  });

  test('a VIP without a table, or with the empty table, drops and counts', () => {
    dataplane.putVip(parseVip(`${VIP}:80/tcp`), { vip_id: 5, table_id: 5, table_size: TABLE_SIZE, flags: 0 });
    const before = dataplane.reasonCounters().no_backend;
    assert.equal(testRun(dataplane.programFd, syn()).action, 'drop', 'slot never written');
    dataplane.putTables([{ tableId: 5, table: null }]);
    assert.equal(testRun(dataplane.programFd, syn()).action, 'drop', 'slot holding the empty table');
    assert.equal(dataplane.reasonCounters().no_backend, before + 2n);
  });

  // BPF_PROG_TEST_RUN (like any NIC) refuses frames shorter than an Ethernet header.
  const ETH_HLEN = 14;

  test('a truncated packet is never forwarded, at any length', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    const full = syn(40003, { payload: Buffer.from('GET / HTTP/1.0\r\n\r\n') });
    for (let length = ETH_HLEN; length < full.length; length++) {
      const { action } = testRun(dataplane.programFd, full.subarray(0, length));
      assert.ok(action === 'pass' || action === 'drop', `length ${length}: ${action}`);
    }
    const udp = ipv4Frame({ src: CLIENT, dst: VIP, srcPort: 5000, dstPort: 80, protocol: 'udp' });
    vip(VIP, 80, 'udp', [BE_L2]);
    for (let length = ETH_HLEN; length < udp.length; length++) {
      const { action } = testRun(dataplane.programFd, udp.subarray(0, length));
      assert.ok(action === 'pass' || action === 'drop', `udp length ${length}: ${action}`);
    }
  });

  test('a total length beyond the frame and fragments pass to the kernel', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    const lying = syn(40004);
    lying.writeUInt16BE(1400, 16);
    const fragment = syn(40006, { moreFragments: true, dontFragment: false });
    const later = syn(40007, { fragmentOffset: 100, dontFragment: false });
    for (const frame of [lying, fragment, later]) {
      const { action, output } = testRun(dataplane.programFd, frame);
      assert.equal(action, 'pass');
      assert.deepEqual(output, frame);
    }
  });
});

describe('kill-switch', () => {
  test('once the deadline passes, VIP packets go to the kernel untouched and are counted', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    const frame = syn(30100);
    try {
      dataplane.setKillSwitchDeadline(readJiffies() - 1n);
      const before = dataplane.reasonCounters().kill_switch;
      const { action, output } = testRun(dataplane.programFd, frame);
      assert.equal(action, 'pass');
      assert.deepEqual(output, frame);
      assert.equal(dataplane.reasonCounters().kill_switch, before + 1n);
      assert.equal(testRun(dataplane.programFd, ipv4Frame({ src: CLIENT, dst: OTHER_VIP })).action, 'pass', 'other traffic as before');

      dataplane.setKillSwitchDeadline(readJiffies() + 1000n);
      assert.equal(testRun(dataplane.programFd, frame).action, 'tx', 'balanced again before the new deadline');
    } finally {
      dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
    }
  });

  test('a fresh data plane balances nothing until the control plane sets a deadline', () => {
    const fresh = BalancerDataplane.load({ maxVips: 4, maxBackends: 16, flowTableSize: 1024 });
    try {
      assert.equal(fresh.killSwitchDeadline(), 0n);
      l2Backend(BE_L2, LOOPBACK_IFINDEX, 0, fresh);
      fresh.putTables([{ tableId: 0, table: new Uint32Array(TABLE_SIZE).fill(BE_L2) }]);
      fresh.putVip(parseVip(`${VIP}:80/tcp`), { vip_id: 0, table_id: 0, table_size: TABLE_SIZE, flags: 0 });
      assert.equal(testRun(fresh.programFd, syn(30101)).action, 'pass');
    } finally {
      fresh.close();
    }
  });
});

function chosenMac(frame: Buffer): string {
  const { action, output } = testRun(dataplane.programFd, frame);
  assert.equal(action, 'tx');
  return parseEthernet(output).dst;
}

describe('backend choice', () => {
  const OWNERS = [BE_L2, BE_L2_OTHER];

  test('a flow always gets the same backend, the one its Maglev slot names', () => {
    const table = vip(VIP, 80, 'tcp', OWNERS);
    const seen = new Set<string>();
    for (let port = 20000; port < 20200; port++) {
      const expected = table[tableSlot(flowHash({ saddr: CLIENT, daddr: VIP, sport: port, dport: 80, proto: 6 }), TABLE_SIZE)]!;
      for (let repeat = 0; repeat < 3; repeat++) {
        if (repeat === 1) clearFlows(); // the table alone decides, not only tracking
        assert.equal(chosenMac(syn(port)), BACKEND_MAC[expected], `port ${port}`);
      }
      seen.add(BACKEND_MAC[expected]!);
    }
    assert.equal(seen.size, 2, 'both backends got flows');
  });

  test('Maglev tables hold 16-bit entries, two to an element, and read back slot for slot; an id above 65535 is refused', () => {
    const table = vip(VIP, 80, 'tcp', [BE_L2, BE_L2_OTHER, BE_OTHER_IFACE]);
    assert.deepEqual(dataplane.readTable(0), table);
    assert.throws(() => dataplane.putTables([{ tableId: 1, table: new Uint32Array(TABLE_SIZE).fill(65536) }]), /does not fit/);
  });

  test('a data plane for more than 65535 backends holds 32-bit table entries and reaches backends with such ids', () => {
    const wide = BalancerDataplane.load({ maxVips: 4, maxBackends: 70_000, flowTableSize: 1024 });
    try {
      wide.setKillSwitchDeadline(KILL_SWITCH_NEVER);
      const high = 69_999;
      wide.putBackend(
        high,
        backendEntry({
          address: '10.10.0.99',
          forward: 'l2dsr',
          dstMac: BACKEND_MAC[BE_OTHER_IFACE]!,
          srcMac: MAC.balancer,
          ifindex: LOOPBACK_IFINDEX,
        }),
      );
      l2Backend(BE_L2, LOOPBACK_IFINDEX, 0, wide);
      const table = putVipWithTable(wide, `${VIP}:80/tcp`, [high, BE_L2], 0, TABLE_SIZE);
      assert.deepEqual(wide.readTable(0), table);
      const macs = new Set<string>();
      for (let port = 20000; port < 20100; port++) {
        const expected = table[tableSlot(flowHash({ saddr: CLIENT, daddr: VIP, sport: port, dport: 80, proto: 6 }), TABLE_SIZE)]!;
        const { action, output } = testRun(wide.programFd, syn(port));
        assert.equal(action, 'tx');
        assert.equal(parseEthernet(output).dst, BACKEND_MAC[expected === high ? BE_OTHER_IFACE : BE_L2], `port ${port}`);
        macs.add(parseEthernet(output).dst);
      }
      assert.equal(macs.size, 2);
    } finally {
      wide.close();
    }
  });

  test('a tracked flow keeps its backend when the table changes', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    assert.equal(chosenMac(syn(30000)), BACKEND_MAC[BE_L2]);
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30000, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2], 'existing flow stays');
    assert.equal(chosenMac(syn(30001)), BACKEND_MAC[BE_L2_OTHER], 'new flow follows the new table');
  });

  test('a SYN starts a new connection: it follows the table even for a tracked 5-tuple', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    assert.equal(chosenMac(syn(30004)), BACKEND_MAC[BE_L2]);
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30004)), BACKEND_MAC[BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30004, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2_OTHER], 'and is tracked there');
  });

  test('a flow whose backend was removed moves to the slot owner', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    assert.equal(chosenMac(syn(30002)), BACKEND_MAC[BE_L2]);
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    dataplane.clearBackend(BE_L2);
    assert.equal(chosenMac(syn(30002, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2_OTHER]);
    const key = flowKeyV4.encode({ saddr: CLIENT, daddr: VIP, sport: 30002, dport: 80, proto: 6 });
    assert.equal(flowState.decode(dataplane.flowsV4.lookup(key)!).backend_id, BE_L2_OTHER, 'and is tracked there');
  });

  test('counters count packets, IP bytes, new flows and moved flows per VIP and per backend', () => {
    l2Backend(BE_L2, LOOPBACK_IFINDEX, 3);
    l2Backend(BE_L2_OTHER, LOOPBACK_IFINDEX, 3);
    vip(VIP, 80, 'tcp', [BE_L2], 3);
    dataplane.resetVipCounters(3);
    dataplane.resetBackendCounters(BE_L2);
    dataplane.resetBackendCounters(BE_L2_OTHER);
    const frame = syn(30003);
    const ack = syn(30003, { tcpFlags: TCP_FLAGS.ACK });
    const bytes = BigInt(frame.length - 14);
    for (let i = 0; i < 2; i++) testRun(dataplane.programFd, frame); // two SYNs: two new flows
    for (let i = 0; i < 3; i++) testRun(dataplane.programFd, ack); // tracked
    assert.deepEqual(dataplane.vipCounters(3), { packets: 5n, bytes: 5n * bytes, new_flows: 2n, moved_flows: 0n });
    assert.deepEqual(dataplane.backendCounters(BE_L2), { packets: 5n, bytes: 5n * bytes, new_flows: 2n, moved_flows: 0n });

    vip(VIP, 80, 'tcp', [BE_L2_OTHER], 3);
    dataplane.clearBackend(BE_L2);
    testRun(dataplane.programFd, ack); // its backend is gone: moved
    testRun(dataplane.programFd, ack); // tracked on the new one
    assert.deepEqual(dataplane.vipCounters(3), { packets: 7n, bytes: 7n * bytes, new_flows: 3n, moved_flows: 1n });
    assert.deepEqual(dataplane.backendCounters(BE_L2_OTHER), { packets: 2n, bytes: 2n * bytes, new_flows: 1n, moved_flows: 1n });
  });

  test('tracked flows record when they were last seen and whether the client is closing', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    const before = readJiffies();
    testRun(dataplane.programFd, syn(30005));
    const key = flowKeyV4.encode({ saddr: CLIENT, daddr: VIP, sport: 30005, dport: 80, proto: 6 });
    assert.equal(dataplane.flowsV4.lookup(key), null, 'a SYN is not tracked');
    testRun(dataplane.programFd, syn(30005, { tcpFlags: TCP_FLAGS.ACK }));
    const opened = flowState.decode(dataplane.flowsV4.lookup(key)!);
    assert.equal(opened.backend_id, BE_L2);
    assert.equal(opened.flags, 0);
    assert.ok(opened.last_seen >= before && opened.last_seen <= readJiffies(), 'last_seen is the data plane clock');
    testRun(dataplane.programFd, syn(30005, { tcpFlags: TCP_FLAGS.FIN | TCP_FLAGS.ACK }));
    assert.equal(flowState.decode(dataplane.flowsV4.lookup(key)!).flags, FLOW_FLAG_CLOSING);
  });

  test("a new connection on the tuple of a closed flow is tracked on its SYN's backend: not closing, seen now", () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    testRun(dataplane.programFd, syn(30006, { tcpFlags: TCP_FLAGS.ACK }));
    const key = flowKeyV4.encode({ saddr: CLIENT, daddr: VIP, sport: 30006, dport: 80, proto: 6 });
    dataplane.flowsV4.update(key, flowState.encode({ backend_id: BE_L2, flags: FLOW_FLAG_CLOSING, last_seen: readJiffies() }));
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    const before = readJiffies();
    assert.equal(chosenMac(syn(30006)), BACKEND_MAC[BE_L2_OTHER], 'the SYN follows the table');
    assert.equal(flowState.decode(dataplane.flowsV4.lookup(key)!).backend_id, BE_L2, 'and leaves the entry alone');
    assert.equal(chosenMac(syn(30006, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2_OTHER], 'the ACK follows the SYN');
    const state = flowState.decode(dataplane.flowsV4.lookup(key)!);
    assert.equal(state.backend_id, BE_L2_OTHER);
    assert.equal(state.flags, 0);
    assert.ok(state.last_seen >= before, 'last_seen is now');
  });
});

describe('connection tracking starts after the SYN', () => {
  const key = (sport: number) => flowKeyV4.encode({ saddr: CLIENT, daddr: VIP, sport, dport: 80, proto: 6 });

  test('a SYN is not tracked; the packet after it follows it to its backend, even when the table changed in between, and is tracked', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    assert.equal(chosenMac(syn(30200)), BACKEND_MAC[BE_L2]);
    assert.equal(dataplane.flowsV4.lookup(key(30200)), null);
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30200, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2], 'the handshake completes where it started');
    assert.equal(flowState.decode(dataplane.flowsV4.lookup(key(30200))!).backend_id, BE_L2);
    assert.equal(chosenMac(syn(30201, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2_OTHER], 'a flow without a SYN takes the table');
  });

  test("a retransmitted SYN after a table change moves the handshake to the table's backend, and the ACK follows it", () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    assert.equal(chosenMac(syn(30202)), BACKEND_MAC[BE_L2]);
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30202)), BACKEND_MAC[BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30202, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2_OTHER]);
  });

  test("a RST after a SYN goes to the SYN's backend and is not tracked", () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    chosenMac(syn(30203));
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30203, { tcpFlags: TCP_FLAGS.RST })), BACKEND_MAC[BE_L2]);
    assert.equal(dataplane.flowsV4.lookup(key(30203)), null);
  });

  test("the SYN's backend gone (removed, its id cleared), the packet after it takes the table's choice", () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    chosenMac(syn(30204));
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    dataplane.clearBackend(BE_L2);
    assert.equal(chosenMac(syn(30204, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2_OTHER]);
  });

  test('UDP has no SYN: its first packet takes the table and is tracked', () => {
    vip(VIP, 53, 'udp', [BE_L2]);
    const datagram = ipv4Frame({ src: CLIENT, dst: VIP, srcPort: 30205, dstPort: 53, protocol: 'udp' });
    assert.equal(chosenMac(datagram), BACKEND_MAC[BE_L2]);
    vip(VIP, 53, 'udp', [BE_L2_OTHER]);
    assert.equal(chosenMac(datagram), BACKEND_MAC[BE_L2], 'tracked from its first packet');
  });

  test('a SYN on the tuple of a live connection (not closing, seen within the last second) does not take it over', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    chosenMac(syn(30206));
    chosenMac(syn(30206, { tcpFlags: TCP_FLAGS.ACK }));
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30206)), BACKEND_MAC[BE_L2_OTHER], 'the SYN itself follows the table');
    assert.equal(chosenMac(syn(30206, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2], 'the connection stays');
  });

  test('a SYN on the tuple of a flow silent for a while (a connection the server reset) starts a new connection there', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    chosenMac(syn(30207, { tcpFlags: TCP_FLAGS.ACK }));
    dataplane.flowsV4.update(key(30207), flowState.encode({ backend_id: BE_L2, flags: 0, last_seen: readJiffies() - 1000n }));
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30207, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2], 'no SYN since: the silent flow keeps its backend');
    dataplane.flowsV4.update(key(30207), flowState.encode({ backend_id: BE_L2, flags: 0, last_seen: readJiffies() - 1000n }));
    assert.equal(chosenMac(syn(30207)), BACKEND_MAC[BE_L2_OTHER]);
    assert.equal(chosenMac(syn(30207, { tcpFlags: TCP_FLAGS.ACK })), BACKEND_MAC[BE_L2_OTHER], 'the new connection follows its SYN');
    assert.equal(flowState.decode(dataplane.flowsV4.lookup(key(30207))!).backend_id, BE_L2_OTHER);
  });

  test('established flows survive a flood of spoofed SYNs of distinct tuples that outnumber the flow table 25 times', () => {
    const flows = 1000;
    const flood = 100_000; // the flow table holds 4096
    vip(VIP, 80, 'tcp', [BE_L2, BE_L2_OTHER]);
    const clientFrame = (i: number, tcpFlags: number) =>
      ipv4Frame({ src: `172.16.${i >> 8}.${i & 255}`, dst: VIP, srcPort: 1024 + (i % 60000), dstPort: 80, tcpFlags });
    const run = (count: number, make: (i: number) => Buffer) => {
      const frames = Array.from({ length: count }, (_, i) => make(i));
      const durations = new Uint32Array(count);
      orThrow(
        nativeTesting.testRunDurations(dataplane.programFd, Buffer.concat(frames), frames[0]!.length, count, count, durations),
        'test run',
      );
    };
    run(flows, (i) => clientFrame(i, TCP_FLAGS.SYN));
    run(flows, (i) => clientFrame(i, TCP_FLAGS.ACK));
    const before = new Map([...dataplane.flowsV4.entries()].map(([k, v]) => [k.toString('hex'), flowState.decode(v).backend_id]));
    assert.equal(before.size, flows, 'every established flow is tracked');
    run(flood, (i) => clientFrame(flows + i, TCP_FLAGS.SYN));
    const after = new Map([...dataplane.flowsV4.entries()].map(([k, v]) => [k.toString('hex'), flowState.decode(v).backend_id]));
    assert.deepEqual(after, before, 'the same flows, on the same backends, and no other');
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    for (let i = 0; i < flows; i += 97) {
      const tracked = before.get(
        flowKeyV4.encode({ saddr: `172.16.${i >> 8}.${i & 255}`, daddr: VIP, sport: 1024 + i, dport: 80, proto: 6 }).toString('hex'),
      )!;
      assert.equal(chosenMac(clientFrame(i, TCP_FLAGS.ACK)), BACKEND_MAC[tracked], `flow ${i} still reaches its backend`);
    }
  });
});

describe('the VIP address filter', () => {
  const filterBits = () => [...dataplane.vipFilterMap.entries()].reduce((n, [, v]) => n + (readU64(v) === 0n ? 0 : 1), 0);

  test('a VIP on any address is balanced (the filter bit the control plane sets is the one the data plane reads), and passes once deleted', () => {
    l2Backend(BE_L2);
    // As many as the data plane holds (16 VIPs).
    const addresses = Array.from({ length: 8 }, (_, i) => [
      `10.${(i * 37) & 255}.${(i * 11) & 255}.${i + 1}`,
      `2001:db8:${(i * 4099).toString(16)}::${(i * 31 + 1).toString(16)}`,
    ]).flat();
    const frame = (address: string) =>
      address.includes(':')
        ? ipv6Frame({ src: '2001:db8:ffff::1', dst: address, srcPort: 30300, dstPort: 80, tcpFlags: TCP_FLAGS.SYN })
        : ipv4Frame({ src: CLIENT, dst: address, srcPort: 30300, dstPort: 80, tcpFlags: TCP_FLAGS.SYN });
    addresses.forEach((address, i) =>
      putVipWithTable(dataplane, address.includes(':') ? `[${address}]:80/tcp` : `${address}:80/tcp`, [BE_L2], i % 8, TABLE_SIZE),
    );
    for (const address of addresses) assert.equal(testRun(dataplane.programFd, frame(address)).action, 'tx', address);
    clearVips(dataplane);
    assert.equal(filterBits(), 0, 'no bit left once every VIP is gone');
    for (const address of addresses) assert.equal(testRun(dataplane.programFd, frame(address)).action, 'pass', address);
  });

  test('deleting one of two VIPs of an address keeps the other balanced', () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    vip(VIP, 443, 'tcp', [BE_L2], 1);
    dataplane.deleteVip(parseVip(`${VIP}:80/tcp`));
    assert.equal(chosenMac(syn(30301, { dstPort: 443 })), BACKEND_MAC[BE_L2]);
    assert.ok(filterBits() > 0);
  });
});
