/**
 * The DSR-path probe in the lab: run from the balancer's namespace (through
 * test/support/dsr-probe-cli.ts), it must tell a backend that accepts the
 * VIP's traffic from one that lacks the VIP on lo, one where nothing
 * listens on the port, and, through the router, one that cannot unwrap
 * IP-in-IP. No lbctl daemon runs: the probe needs none.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LAB, Lab, ROOT } from './lab/lab.js';
import { LBCTL, LabBalancer } from './support/balancer.js';
import { dsrProbe, dsrProbeFrame, internetChecksum, type DsrProbeTarget } from '../src/health/dsr-probe.js';
import type { VipAddress } from '../src/model/address.js';

const CLI = join(ROOT, 'dist', 'test', 'support', 'dsr-probe-cli.js');
const VIP: VipAddress = { family: 4, address: LAB.vips[0]!, port: 80, protocol: 'tcp' };
const TIMEOUT_MS = 1000;

interface ProbeOutput {
  ok: boolean;
  reason?: string;
  ms: number;
}

describe('DSR probe frame (no lab)', () => {
  const base: DsrProbeTarget = {
    vip: VIP, port: 8080, backend: '10.20.0.14', forward: 'l2dsr', ifindex: 1,
    srcMac: '02:00:00:00:00:02', dstMac: '02:00:00:00:00:11', source: '10.10.0.2', timeoutMs: 100,
  };
  const ip = (b: Buffer) => Array.from(b.subarray(0, 4)).join('.');

  function checkInner(inner: Buffer, sourcePort: number): void {
    assert.equal(inner[0], 0x45);
    assert.equal(inner.readUInt16BE(2), inner.length);
    assert.equal(inner.readUInt16BE(6), 0x4000, 'DF');
    assert.equal(inner[9], 6);
    assert.equal(internetChecksum(inner.subarray(0, 20)), 0, 'IPv4 header checksum');
    assert.equal(ip(inner.subarray(12)), '10.10.0.2');
    assert.equal(ip(inner.subarray(16)), VIP.address);
    const tcp = inner.subarray(20);
    assert.equal(tcp.readUInt16BE(0), sourcePort);
    assert.equal(tcp.readUInt16BE(2), 8080);
    assert.equal(tcp[13], 0x02, 'SYN only');
    assert.equal(tcp[12]! >> 4, tcp.length / 4, 'data offset');
    assert.deepEqual([...tcp.subarray(20, 22)], [2, 4], 'MSS option');
    const pseudo = Buffer.concat([inner.subarray(12, 20), Buffer.from([0, 6]), Buffer.from([0, tcp.length])]);
    assert.equal(internetChecksum(pseudo, tcp), 0, 'TCP checksum');
  }

  test('l2dsr: Ethernet to the backend\'s MAC, IPv4 balancer -> VIP, TCP SYN', () => {
    const frame = dsrProbeFrame(base, 40000, 0xdeadbeef);
    assert.equal(frame.subarray(0, 6).toString('hex'), '020000000011');
    assert.equal(frame.subarray(6, 12).toString('hex'), '020000000002');
    assert.equal(frame.readUInt16BE(12), 0x0800);
    checkInner(frame.subarray(14), 40000);
    assert.equal(frame.subarray(14).readUInt32BE(24), 0xdeadbeef, 'sequence');
  });

  test('ipip: an outer IPv4 header tunnel source -> backend, protocol 4, DF, valid checksum', () => {
    const frame = dsrProbeFrame({ ...base, forward: 'ipip' }, 50000, 1);
    const outer = frame.subarray(14);
    assert.equal(outer[0], 0x45);
    assert.equal(outer[9], 4);
    assert.equal(outer.readUInt16BE(6), 0x4000);
    assert.equal(outer.readUInt16BE(2), outer.length);
    assert.equal(internetChecksum(outer.subarray(0, 20)), 0);
    assert.equal(ip(outer.subarray(12)), '10.10.0.2');
    assert.equal(ip(outer.subarray(16)), '10.20.0.14');
    checkInner(outer.subarray(20), 50000);
  });

  test('bad input resolves with a reason, never rejects', async () => {
    assert.deepEqual(await dsrProbe({ ...base, dstMac: 'zz' }), { ok: false, reason: 'DSR probe failed: invalid MAC address "zz"' });
    assert.deepEqual(await dsrProbe({ ...base, ifindex: 0x7ffffff0 }), { ok: false, reason: 'DSR probe failed: ENODEV (errno 19)' });
    assert.deepEqual(await dsrProbe({ ...base, vip: { family: 6, address: '2001:db8::1', port: 80, protocol: 'tcp' } }), { ok: false, reason: 'the DSR-path check supports IPv4 only' });
  });
});

describe('DSR-path probe in the lab', () => {
  let lab: Lab;
  let lb: { ifindex: number; mac: string };
  let be1: { address: string; mac: string };
  let be4: { address: string };
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

  async function probe(target: Partial<DsrProbeTarget> & Pick<DsrProbeTarget, 'backend' | 'forward' | 'dstMac'>): Promise<ProbeOutput> {
    const full: DsrProbeTarget = { vip: VIP, port: 80, ifindex: lb.ifindex, srcMac: lb.mac, source: LAB.balancer, timeoutMs: TIMEOUT_MS, ...target };
    const out = await run('lb', [process.execPath, CLI, JSON.stringify(full)]);
    return JSON.parse(out) as ProbeOutput;
  }

  before(async () => {
    lab = await Lab.up();
    const l = await link('lb');
    lb = { ifindex: l.ifindex, mac: l.address };
    be1 = { address: lab.backend('be1').address, mac: (await link('be1')).address };
    be4 = { address: lab.backend('be4').address };
    routerMac = (await link('router')).address; // eth0: the router's leg on the balancer's segment
  });

  after(async () => {
    await lab?.down();
  });

  test('l2dsr to a backend with the VIP on lo and nginx on the port: ok, at once', async () => {
    const r = await probe({ backend: be1.address, forward: 'l2dsr', dstMac: be1.mac });
    assert.deepEqual({ ok: r.ok, reason: r.reason }, { ok: true, reason: undefined });
    assert.ok(r.ms < TIMEOUT_MS / 2, `answered in ${r.ms} ms`);
  });

  test('l2dsr to a backend without the VIP on lo: "add it to lo"', async () => {
    const vipOnLo = `${VIP.address}/32`;
    await run('be1', ['ip', 'addr', 'del', vipOnLo, 'dev', 'lo']);
    try {
      const r = await probe({ backend: be1.address, forward: 'l2dsr', dstMac: be1.mac });
      assert.equal(r.ok, false);
      assert.equal(r.reason, `backend ${be1.address} does not accept traffic for VIP ${VIP.address}: add it to lo`);
      assert.ok(r.ms >= TIMEOUT_MS - 50, `waited for the timeout (${r.ms} ms)`);
    } finally {
      await run('be1', ['ip', 'addr', 'replace', vipOnLo, 'dev', 'lo']);
    }
    // Restored: ok again (the same backend, so the failure above was the missing VIP).
    assert.equal((await probe({ backend: be1.address, forward: 'l2dsr', dstMac: be1.mac })).ok, true);
  });

  test('l2dsr to a port nothing listens on: the backend resets, "nothing listens"', async () => {
    const r = await probe({ backend: be1.address, forward: 'l2dsr', dstMac: be1.mac, port: 81 });
    assert.equal(r.ok, false);
    assert.equal(r.reason, `backend ${be1.address} holds VIP ${VIP.address} but nothing listens on port 81`);
    assert.ok(r.ms < TIMEOUT_MS / 2, `answered in ${r.ms} ms`);
  });

  test('ipip through the router to a backend that decapsulates: ok', async () => {
    const r = await probe({ backend: be4.address, forward: 'ipip', dstMac: routerMac });
    assert.deepEqual({ ok: r.ok, reason: r.reason }, { ok: true, reason: undefined });
  });

  test('ipip to a backend without decapsulation: "decapsulate IP-in-IP"', async () => {
    await run('be4', [LBCTL, 'decap', 'detach', '--interface', 'eth0']);
    try {
      const r = await probe({ backend: be4.address, forward: 'ipip', dstMac: routerMac });
      assert.equal(r.ok, false);
      assert.equal(r.reason, `backend ${be4.address} does not accept tunnelled traffic for VIP ${VIP.address}: add the VIP to lo and decapsulate IP-in-IP (lbctl decap attach)`);
    } finally {
      await run('be4', [LBCTL, 'decap', 'attach', '--interface', 'eth0']);
    }
    assert.equal((await probe({ backend: be4.address, forward: 'ipip', dstMac: routerMac })).ok, true, 'ok again once re-attached');
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
      assert.match((await probe({ backend: be1.address, forward: 'l2dsr', dstMac: be1.mac, port: 81 })).reason ?? '', /nothing listens on port 81/);
    } finally {
      await balancer.stop();
    }
  });
});
