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
import { testRun } from '../../src/dataplane/xdp.js';
import { MAC, TCP_FLAGS, ipv4Frame, parseEthernet, parseIpv4 } from '../support/packets.js';

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

function l2Backend(id: number, ifindex = LOOPBACK_IFINDEX) {
  dataplane.putBackend(
    id,
    backendEntry({ address: `10.10.0.${10 + id}`, forward: 'l2dsr', dstMac: BACKEND_MAC[id]!, srcMac: MAC.balancer, ifindex }),
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
      fresh.putBackend(
        BE_L2,
        backendEntry({
          address: '10.10.0.11',
          forward: 'l2dsr',
          dstMac: BACKEND_MAC[BE_L2]!,
          srcMac: MAC.balancer,
          ifindex: LOOPBACK_IFINDEX,
        }),
      );
      fresh.putTables([{ tableId: 0, table: new Uint32Array(TABLE_SIZE).fill(BE_L2) }]);
      fresh.putVip(parseVip(`${VIP}:80/tcp`), { vip_id: 0, table_id: 0, table_size: TABLE_SIZE, flags: 0 });
      assert.equal(testRun(fresh.programFd, syn(30101)).action, 'pass');
    } finally {
      fresh.close();
    }
  });
});

describe('backend choice', () => {
  const OWNERS = [BE_L2, BE_L2_OTHER];

  function chosenMac(frame: Buffer): string {
    const { action, output } = testRun(dataplane.programFd, frame);
    assert.equal(action, 'tx');
    return parseEthernet(output).dst;
  }

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
    const opened = flowState.decode(dataplane.flowsV4.lookup(key)!);
    assert.equal(opened.backend_id, BE_L2);
    assert.equal(opened.flags, 0);
    assert.ok(opened.last_seen >= before && opened.last_seen <= readJiffies(), 'last_seen is the data plane clock');
    testRun(dataplane.programFd, syn(30005, { tcpFlags: TCP_FLAGS.FIN | TCP_FLAGS.ACK }));
    assert.equal(flowState.decode(dataplane.flowsV4.lookup(key)!).flags, FLOW_FLAG_CLOSING);
  });

  test("a SYN on the tuple of a tracked flow tracks the new connection: the table's backend, not closing, seen now", () => {
    vip(VIP, 80, 'tcp', [BE_L2]);
    testRun(dataplane.programFd, syn(30006));
    const key = flowKeyV4.encode({ saddr: CLIENT, daddr: VIP, sport: 30006, dport: 80, proto: 6 });
    dataplane.flowsV4.update(key, flowState.encode({ backend_id: BE_L2, flags: FLOW_FLAG_CLOSING, last_seen: 0n }));
    vip(VIP, 80, 'tcp', [BE_L2_OTHER]);
    const before = readJiffies();
    testRun(dataplane.programFd, syn(30006));
    const state = flowState.decode(dataplane.flowsV4.lookup(key)!);
    assert.equal(state.backend_id, BE_L2_OTHER);
    assert.equal(state.flags, 0);
    assert.ok(state.last_seen >= before, 'last_seen is now');
  });
});
