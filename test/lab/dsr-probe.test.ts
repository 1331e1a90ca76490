/**
 * The DSR-path probe in the lab: run from the balancer's namespace (through
 * test/support/dsr-probe-cli.ts), it must tell a backend that accepts the
 * VIP's traffic from one that lacks the VIP on lo, one where nothing
 * listens on the port, and, through the router, one that cannot unwrap
 * IP-in-IP, for IPv4 and IPv6 VIPs and across families (4-in-6, 6-in-4).
 * No lbctl daemon runs: the probe needs none. Before the lab: the frames
 * field by field, and the sources the daemon gives the probe.
 */
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LAB, Lab, ROOT } from './lab.js';
import { LBCTL, LabBalancer } from '../support/balancer.js';
import { ETHERTYPE, IPPROTO_NUMBER, internetChecksum, ipv4Bytes, ipv6Bytes, pseudoHeader } from '../support/packets.js';
import { dsrProbe, dsrProbeFrame, type DsrProbeTarget } from '../../src/health/dsr-probe.js';
import { dsrCheckPath } from '../../src/core/check-targets.js';
import type { VipAddress } from '../../src/model/address.js';
import type { PathResult } from '../../src/net/forwarding-paths.js';

const CLI = join(ROOT, 'dist', 'test', 'support', 'dsr-probe-cli.js');
const VIP: VipAddress = { family: 4, address: LAB.vips[0]!, port: 80, protocol: 'tcp' };
const VIP6: VipAddress = { family: 6, address: LAB.vips6[0]!, port: 80, protocol: 'tcp' };
const TIMEOUT_MS = 1000;

interface ProbeOutput {
  ok: boolean;
  reason?: string;
  ms: number;
}

describe('DSR probe frame (no lab)', () => {
  const BALANCER = '10.10.0.2';
  const BALANCER6 = 'fd00:10::2';
  const BACKEND = '10.20.0.14';
  const BACKEND6 = 'fd00:20::14';
  const base: DsrProbeTarget = {
    vip: VIP,
    port: 8080,
    backend: '10.10.0.11',
    forward: 'l2dsr',
    ifindex: 1,
    srcMac: '02:00:00:00:00:02',
    dstMac: '02:00:00:00:00:11',
    source: BALANCER,
    timeoutMs: 100,
  };
  const base6: DsrProbeTarget = { ...base, vip: VIP6, backend: 'fd00:10::11', source: BALANCER6 };

  /** Ethernet balancer -> dstMac of the given type; returns the IP packet. */
  function checkEthernet(frame: Buffer, etherType: number): Buffer {
    assert.equal(frame.subarray(0, 6).toString('hex'), '020000000011');
    assert.equal(frame.subarray(6, 12).toString('hex'), '020000000002');
    assert.equal(frame.readUInt16BE(12), etherType);
    return frame.subarray(14);
  }

  /** Every field of an option-less IPv4 header; returns its payload. */
  function checkIpv4(ip: Buffer, src: string, dst: string, protocol: number): Buffer {
    assert.equal(ip[0], 0x45, 'version 4, IHL 5');
    assert.equal(ip[1], 0, 'TOS');
    assert.equal(ip.readUInt16BE(2), ip.length, 'total length');
    assert.equal(ip.readUInt16BE(6), 0x4000, 'DF, not a fragment');
    assert.equal(ip[8], 64, 'TTL');
    assert.equal(ip[9], protocol, 'protocol');
    assert.equal(internetChecksum(ip.subarray(0, 20)), 0, 'IPv4 header checksum');
    assert.deepEqual(ip.subarray(12, 16), ipv4Bytes(src), 'source');
    assert.deepEqual(ip.subarray(16, 20), ipv4Bytes(dst), 'destination');
    return ip.subarray(20);
  }

  /** Every field of an IPv6 header; returns its payload. */
  function checkIpv6(ip: Buffer, src: string, dst: string, nextHeader: number): Buffer {
    assert.equal(ip.readUInt32BE(0), 0x6000_0000, 'version 6, traffic class 0, flow label 0');
    assert.equal(ip.readUInt16BE(4), ip.length - 40, 'payload length');
    assert.equal(ip[6], nextHeader, 'next header');
    assert.equal(ip[7], 64, 'hop limit');
    assert.deepEqual(ip.subarray(8, 24), ipv6Bytes(src), 'source');
    assert.deepEqual(ip.subarray(24, 40), ipv6Bytes(dst), 'destination');
    return ip.subarray(40);
  }

  /** A bare SYN src:sourcePort -> dst:8080 with an MSS option and a checksum over the pseudo-header of the addresses' family. */
  function checkSyn(tcp: Buffer, src: string, dst: string, sourcePort: number, sequence: number): void {
    assert.equal(tcp.length, 24);
    assert.equal(tcp.readUInt16BE(0), sourcePort);
    assert.equal(tcp.readUInt16BE(2), 8080);
    assert.equal(tcp.readUInt32BE(4), sequence, 'sequence');
    assert.equal(tcp.readUInt32BE(8), 0, 'acknowledgment');
    assert.equal(tcp[12]! >> 4, tcp.length / 4, 'data offset');
    assert.equal(tcp[13], 0x02, 'SYN only');
    assert.ok(tcp.readUInt16BE(14) > 0, 'window');
    assert.equal(tcp.readUInt16BE(18), 0, 'urgent pointer');
    assert.deepEqual([...tcp.subarray(20, 24)], [2, 4, 1400 >> 8, 1400 & 0xff], 'MSS option');
    assert.equal(internetChecksum(pseudoHeader(src, dst, IPPROTO_NUMBER.TCP, tcp.length), tcp), 0, 'TCP checksum');
  }

  function checkInner4(ip: Buffer, sourcePort: number, sequence: number): void {
    checkSyn(checkIpv4(ip, BALANCER, VIP.address, IPPROTO_NUMBER.TCP), BALANCER, VIP.address, sourcePort, sequence);
  }

  function checkInner6(ip: Buffer, sourcePort: number, sequence: number): void {
    checkSyn(checkIpv6(ip, BALANCER6, VIP6.address, IPPROTO_NUMBER.TCP), BALANCER6, VIP6.address, sourcePort, sequence);
  }

  test("l2dsr: Ethernet to the backend's MAC, IPv4 balancer -> VIP, TCP SYN", () => {
    checkInner4(checkEthernet(dsrProbeFrame(base, 40000, 0xdeadbeef), ETHERTYPE.IPV4), 40000, 0xdeadbeef);
  });

  test('ipip (4-in-4): an outer IPv4 header tunnel source -> backend, protocol 4, DF, valid checksum', () => {
    const frame = dsrProbeFrame({ ...base, forward: 'ipip', backend: BACKEND, tunnelSource: BALANCER }, 50000, 1);
    checkInner4(checkIpv4(checkEthernet(frame, ETHERTYPE.IPV4), BALANCER, BACKEND, IPPROTO_NUMBER.IPIP), 50000, 1);
  });

  test("l2dsr, IPv6: Ethernet to the backend's MAC, IPv6 balancer -> VIP, TCP SYN with the IPv6 pseudo-header's checksum", () => {
    checkInner6(checkEthernet(dsrProbeFrame(base6, 40001, 0xfedcba98), ETHERTYPE.IPV6), 40001, 0xfedcba98);
  });

  test('6-in-6: an outer IPv6 header tunnel source -> backend, next header 41', () => {
    const frame = dsrProbeFrame({ ...base6, forward: 'ipip', backend: BACKEND6, tunnelSource: BALANCER6 }, 50001, 2);
    checkInner6(checkIpv6(checkEthernet(frame, ETHERTYPE.IPV6), BALANCER6, BACKEND6, IPPROTO_NUMBER.IPV6), 50001, 2);
  });

  test("4-in-6: IPv4 VIP, IPv6 backend: an outer IPv6 header (next header 4) around the IPv4 SYN from the balancer's IPv4 address", () => {
    const frame = dsrProbeFrame({ ...base, forward: 'ipip', backend: BACKEND6, tunnelSource: BALANCER6 }, 50002, 3);
    checkInner4(checkIpv6(checkEthernet(frame, ETHERTYPE.IPV6), BALANCER6, BACKEND6, IPPROTO_NUMBER.IPIP), 50002, 3);
  });

  test("6-in-4: IPv6 VIP, IPv4 backend: an outer IPv4 header (protocol 41, DF) around the IPv6 SYN from the balancer's IPv6 address", () => {
    const frame = dsrProbeFrame({ ...base6, forward: 'ipip', backend: BACKEND, tunnelSource: BALANCER }, 50003, 4);
    checkInner6(checkIpv4(checkEthernet(frame, ETHERTYPE.IPV4), BALANCER, BACKEND, IPPROTO_NUMBER.IPV6), 50003, 4);
  });

  test('addresses of the wrong family are refused, not sent', () => {
    assert.throws(() => dsrProbeFrame({ ...base6, source: BALANCER }, 1, 1), /source 10\.10\.0\.2 is not an IPv6 address/);
    assert.throws(
      () => dsrProbeFrame({ ...base, forward: 'ipip', backend: BACKEND6, tunnelSource: BALANCER }, 1, 1),
      /tunnel source 10\.10\.0\.2 is not an IPv6 address/,
    );
    assert.throws(
      () => dsrProbeFrame({ ...base, forward: 'ipip', backend: BACKEND }, 1, 1),
      /tunnel source \(none\) is not an IPv4 address/,
    );
  });

  test('bad input resolves with a reason, never rejects', async () => {
    assert.deepEqual(await dsrProbe({ ...base, dstMac: 'zz' }), { ok: false, reason: 'DSR probe failed: invalid MAC address "zz"' });
    assert.deepEqual(await dsrProbe({ ...base, ifindex: 0x7ffffff0 }), { ok: false, reason: 'DSR probe failed: ENODEV (errno 19)' });
    assert.deepEqual(
      await dsrProbe({ ...base6, ifindex: 0x7ffffff0 }),
      { ok: false, reason: 'DSR probe failed: ENODEV (errno 19)' },
      'IPv6 reaches the native call',
    );
    const { source: _, ...noSource } = base6;
    assert.deepEqual(await dsrProbe(noSource), {
      ok: false,
      reason: `the balancer has no IPv6 address to send the DSR-path check to VIP ${VIP6.address} from`,
    });
  });
});

describe("the daemon's DSR-path check targets (dsrCheckPath)", () => {
  const resolved = (tunnelSrc?: string): PathResult => ({
    ok: true,
    path: {
      dev: 'eth0',
      ifindex: 7,
      srcMac: '02:00:00:00:00:02',
      nextHop: 'x',
      dstMac: '02:00:00:00:00:01',
      mtu: 1500,
      ...(tunnelSrc ? { tunnelSrc } : {}),
    },
  });
  const both = (family: 4 | 6) => (family === 4 ? '10.10.0.2' : 'fd00:10::2');
  const mac = { ifindex: 7, srcMac: '02:00:00:00:00:02', dstMac: '02:00:00:00:00:01' };

  test("l2dsr: the source is the balancer's address of the VIP's family", () => {
    assert.deepEqual(dsrCheckPath(VIP, 'l2dsr', resolved(), both), { forward: 'l2dsr', ...mac, source: '10.10.0.2' });
    assert.deepEqual(dsrCheckPath(VIP6, 'l2dsr', resolved(), both), { forward: 'l2dsr', ...mac, source: 'fd00:10::2' });
  });

  test("ipip: inner source of the VIP's family, outer source the path's tunnel source (the backend's family)", () => {
    assert.deepEqual(
      dsrCheckPath(VIP, 'ipip', resolved('10.10.0.2'), both),
      { forward: 'ipip', ...mac, source: '10.10.0.2', tunnelSource: '10.10.0.2' },
      '4-in-4',
    );
    assert.deepEqual(
      dsrCheckPath(VIP6, 'ipip', resolved('fd00:10::2'), both),
      { forward: 'ipip', ...mac, source: 'fd00:10::2', tunnelSource: 'fd00:10::2' },
      '6-in-6',
    );
    assert.deepEqual(
      dsrCheckPath(VIP, 'ipip', resolved('fd00:10::2'), both),
      { forward: 'ipip', ...mac, source: '10.10.0.2', tunnelSource: 'fd00:10::2' },
      '4-in-6',
    );
    assert.deepEqual(
      dsrCheckPath(VIP6, 'ipip', resolved('10.10.0.2'), both),
      { forward: 'ipip', ...mac, source: 'fd00:10::2', tunnelSource: '10.10.0.2' },
      '6-in-4',
    );
  });

  test("no balancer address of the VIP's family: no source (the probe says so); no resolved path: no target", () => {
    const only4 = (family: 4 | 6) => (family === 4 ? '10.10.0.2' : undefined);
    assert.deepEqual(dsrCheckPath(VIP6, 'ipip', resolved('10.10.0.2'), only4), { forward: 'ipip', ...mac, tunnelSource: '10.10.0.2' });
    assert.equal(dsrCheckPath(VIP, 'l2dsr', { ok: false, reason: 'not resolved yet', permanent: false }, both), undefined);
  });
});

describe('DSR-path probe in the lab', () => {
  let lab: Lab;
  let lb: { ifindex: number; mac: string };
  let be1: { address: string; address6: string; mac: string };
  let be4: { address: string; address6: string };
  let routerMac: string;

  async function run(role: string, argv: string[]): Promise<string> {
    const r = await lab.exec(role, argv);
    if (r.code !== 0) throw new Error(`${argv.join(' ')} in ${role} failed (${r.code}): ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  async function link(role: string): Promise<{ ifindex: number; address: string }> {
    const [l] = JSON.parse(await run(role, ['ip', '-j', 'link', 'show', 'eth0'])) as { ifindex: number; address: string }[];
    assert.ok(l, `eth0 of ${role}`);
    return l;
  }

  /** The balancer's lab address of an address's family. */
  const balancerFor = (address: string) => (isIP(address) === 6 ? LAB.balancer6 : LAB.balancer);

  /** Sources as the daemon picks them: the inner one of the VIP's family, the outer one of the backend's. */
  async function probe(target: Partial<DsrProbeTarget> & Pick<DsrProbeTarget, 'backend' | 'forward' | 'dstMac'>): Promise<ProbeOutput> {
    const vip = target.vip ?? VIP;
    const sources = {
      source: balancerFor(vip.address),
      ...(target.forward === 'ipip' ? { tunnelSource: balancerFor(target.backend) } : {}),
    };
    const full: DsrProbeTarget = { vip, port: 80, ifindex: lb.ifindex, srcMac: lb.mac, timeoutMs: TIMEOUT_MS, ...sources, ...target };
    const out = await run('lb', [process.execPath, CLI, JSON.stringify(full)]);
    return JSON.parse(out) as ProbeOutput;
  }

  const pick = (r: ProbeOutput) => ({ ok: r.ok, reason: r.reason });

  before(async () => {
    lab = await Lab.up();
    const l = await link('lb');
    lb = { ifindex: l.ifindex, mac: l.address };
    be1 = { ...lab.backend('be1'), mac: (await link('be1')).address };
    be4 = lab.backend('be4');
    routerMac = (await link('router')).address; // eth0: the router's leg on the balancer's segment
  });

  after(async () => {
    await lab?.down();
  });

  // The same l2dsr checks in both families: be1 holds both VIPs on lo.
  for (const { label, vip, backend, prefix } of [
    { label: '', vip: VIP, backend: () => be1.address, prefix: 32 },
    { label: 'IPv6 ', vip: VIP6, backend: () => be1.address6, prefix: 128 },
  ]) {
    const l2dsr = (port = 80) => probe({ vip, backend: backend(), forward: 'l2dsr', dstMac: be1.mac, port });

    test(`${label}l2dsr to a backend with the VIP on lo and nginx on the port: ok, at once`, async () => {
      const r = await l2dsr();
      assert.deepEqual(pick(r), { ok: true, reason: undefined });
      assert.ok(r.ms < TIMEOUT_MS / 2, `answered in ${r.ms} ms`);
    });

    test(`${label}l2dsr to a backend without the VIP on lo: "add it to lo"`, async () => {
      const vipOnLo = `${vip.address}/${prefix}`;
      await run('be1', ['ip', 'addr', 'del', vipOnLo, 'dev', 'lo']);
      try {
        const r = await l2dsr();
        assert.equal(r.ok, false);
        assert.equal(r.reason, `backend ${backend()} does not accept traffic for VIP ${vip.address}: add it to lo`);
        assert.ok(r.ms >= TIMEOUT_MS - 50, `waited for the timeout (${r.ms} ms)`);
      } finally {
        await run('be1', ['ip', 'addr', 'replace', vipOnLo, 'dev', 'lo']);
      }
      // Restored: ok again (the same backend, so the failure above was the missing VIP).
      assert.equal((await l2dsr()).ok, true, 'ok again once restored');
    });

    test(`${label}l2dsr to a port nothing listens on: the backend resets, "nothing listens"`, async () => {
      const r = await l2dsr(81);
      assert.equal(r.ok, false);
      assert.equal(r.reason, `backend ${backend()} holds VIP ${vip.address} but nothing listens on port 81`);
      assert.ok(r.ms < TIMEOUT_MS / 2, `answered in ${r.ms} ms`);
    });
  }

  test('ipip through the router to a backend that decapsulates: ok', async () => {
    const r = await probe({ backend: be4.address, forward: 'ipip', dstMac: routerMac });
    assert.deepEqual({ ok: r.ok, reason: r.reason }, { ok: true, reason: undefined });
  });

  test('ipip to a backend without decapsulation: "decapsulate IP-in-IP"', async () => {
    await run('be4', [LBCTL, 'decap', 'detach', '--interface', 'eth0']);
    try {
      const r = await probe({ backend: be4.address, forward: 'ipip', dstMac: routerMac });
      assert.equal(r.ok, false);
      assert.equal(
        r.reason,
        `backend ${be4.address} does not accept tunnelled traffic for VIP ${VIP.address}: add the VIP to lo and decapsulate IP-in-IP (lbctl decap attach)`,
      );
    } finally {
      await run('be4', [LBCTL, 'decap', 'attach', '--interface', 'eth0']);
    }
    assert.equal((await probe({ backend: be4.address, forward: 'ipip', dstMac: routerMac })).ok, true, 'ok again once re-attached');
  });

  test('6-in-6 through the router: ok to a backend that decapsulates, "decapsulate" once it does not', async () => {
    const target = { vip: VIP6, backend: be4.address6, forward: 'ipip', dstMac: routerMac } as const;
    assert.deepEqual(pick(await probe(target)), { ok: true, reason: undefined });
    await run('be4', [LBCTL, 'decap', 'detach', '--interface', 'eth0']);
    try {
      const r = await probe(target);
      assert.equal(r.ok, false);
      assert.equal(
        r.reason,
        `backend ${be4.address6} does not accept tunnelled traffic for VIP ${VIP6.address}: add the VIP to lo and decapsulate IP-in-IP (lbctl decap attach)`,
      );
    } finally {
      await run('be4', [LBCTL, 'decap', 'attach', '--interface', 'eth0']);
    }
    assert.equal((await probe(target)).ok, true, 'ok again once re-attached');
  });

  test('across families through the router: 4-in-6 (IPv4 VIP, IPv6 backend) and 6-in-4 (IPv6 VIP, IPv4 backend) are ok', async () => {
    assert.deepEqual(
      pick(await probe({ vip: VIP, backend: be4.address6, forward: 'ipip', dstMac: routerMac })),
      { ok: true, reason: undefined },
      '4-in-6',
    );
    assert.deepEqual(
      pick(await probe({ vip: VIP6, backend: be4.address, forward: 'ipip', dstMac: routerMac })),
      { ok: true, reason: undefined },
      '6-in-4',
    );
  });

  test("6-in-4 to a backend without the IPv6 VIP on lo: the tunnelled reason (the ok above was the VIP's own answer)", async () => {
    const vipOnLo = `${VIP6.address}/128`;
    await run('be4', ['ip', 'addr', 'del', vipOnLo, 'dev', 'lo']);
    try {
      const r = await probe({ vip: VIP6, backend: be4.address, forward: 'ipip', dstMac: routerMac });
      assert.equal(
        r.reason,
        `backend ${be4.address} does not accept tunnelled traffic for VIP ${VIP6.address}: add the VIP to lo and decapsulate IP-in-IP (lbctl decap attach)`,
      );
    } finally {
      await run('be4', ['ip', 'addr', 'replace', vipOnLo, 'dev', 'lo']);
    }
  });

  test('l2dsr straight to the backend behind the router does not reach it: a timeout, not a false ok', async () => {
    // The frame is addressed to the router's MAC but not encapsulated: the router forwards it by
    // its inner destination (the VIP), which it has no route for (or sends back to the balancer).
    const r = await probe({ backend: be4.address, forward: 'l2dsr', dstMac: routerMac });
    assert.equal(r.ok, false);
  });

  test('with the balancer attached to the interface (and balancing the VIP), the answers still reach the probe', async () => {
    const balancer = new LabBalancer(lab);
    const vip = `${VIP.address}:80/tcp`;
    try {
      await balancer.start();
      await balancer.ok(['vip', 'add', vip, '--forward', 'l2dsr']);
      await balancer.ok(['backend', 'add', vip, be1.address]);
      await balancer.ok(['backend', 'add', vip, be4.address, '--forward', 'ipip']);
      assert.equal((await probe({ backend: be1.address, forward: 'l2dsr', dstMac: be1.mac })).ok, true);
      assert.equal((await probe({ backend: be4.address, forward: 'ipip', dstMac: routerMac })).ok, true);
      assert.match(
        (await probe({ backend: be1.address, forward: 'l2dsr', dstMac: be1.mac, port: 81 })).reason ?? '',
        /nothing listens on port 81/,
      );
    } finally {
      await balancer.stop();
    }
  });
});
