/**
 * Fuzzing xdp_balancer and xdp_decap (issue 5): random and mutated frames
 * through BPF_PROG_TEST_RUN, every output checked against the invariants in
 * test/support/fuzz.ts (see docs/fuzzing.md). 50,000 frames by default;
 * LBCTL_FUZZ_FRAMES=1000000 for the long run, LBCTL_FUZZ_SEED=N to replay.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ConfigIndex,
  DEFAULT_STRICTNESS,
  FUZZ_CONFIG,
  FuzzHarness,
  type Strictness,
  checkBalancer,
  checkDecap,
  describeViolation,
  randomSeed,
} from '../support/fuzz.js';
import { MAC, TCP_FLAGS, ethernet, internetChecksum, ipv4Frame, ipv4Header, macBytes } from '../support/packets.js';

function envInteger(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} must be a non-negative integer, not "${text}"`);
  return value;
}

const FUZZ_FRAMES = envInteger('LBCTL_FUZZ_FRAMES') ?? 50_000;
const SEED = (envInteger('LBCTL_FUZZ_SEED') ?? randomSeed()) >>> 0;
/** LBCTL_FUZZ_LENIENT=checksums,headers: accept (and count) forwards of packets with a wrong IPv4 header checksum / a malformed TCP data offset, UDP length or IPv4 options. */
const LENIENT = new Set((process.env.LBCTL_FUZZ_LENIENT ?? '').split(',').filter(Boolean));
for (const word of LENIENT)
  if (word !== 'checksums' && word !== 'headers') throw new Error(`LBCTL_FUZZ_LENIENT takes checksums and headers, not "${word}"`);
const STRICTNESS: Strictness = {
  inputChecksums: DEFAULT_STRICTNESS.inputChecksums && !LENIENT.has('checksums'),
  strictHeaders: DEFAULT_STRICTNESS.strictHeaders && !LENIENT.has('headers'),
};
const BATCH = 2048;
/** The share of frames the balancer must forward to a backend (about 20% are): proof that the run exercises forwarding, not only passing. */
const MIN_FORWARDED_SHARE = 0.05;
/** The share of frames xdp_decap must decapsulate (about 5% are). */
const MIN_DECAPSULATED_SHARE = 0.01;

test(`fuzz: ${FUZZ_FRAMES} frames through xdp_balancer and xdp_decap`, { timeout: Math.max(120_000, FUZZ_FRAMES * 0.5) }, (t) => {
  t.diagnostic(
    `seed ${SEED} (replay: LBCTL_FUZZ_SEED=${SEED} LBCTL_FUZZ_FRAMES=${FUZZ_FRAMES})${LENIENT.size ? `, lenient: ${[...LENIENT].join(',')}` : ''}`,
  );
  const harness = new FuzzHarness(SEED, undefined, STRICTNESS);
  const started = process.hrtime.bigint();
  try {
    for (let start = 0; start < FUZZ_FRAMES; start += BATCH) harness.run(start, Math.min(BATCH, FUZZ_FRAMES - start));
  } finally {
    harness.close();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const s = harness.stats;
  const forwarded = Object.entries(s.outcomes.xdp_balancer).reduce(
    (sum, [outcome, n]) => (/^(forwarded|redirected)-/.test(outcome) ? sum + n : sum),
    0,
  );
  const decapsulated = s.outcomes.xdp_decap.decapsulated ?? 0;
  t.diagnostic(
    `${s.frames} frames (${s.mutated} mutated, ${s.skipped} shorter than an Ethernet header, not run) in ${seconds.toFixed(1)} s, seed ${SEED}`,
  );
  t.diagnostic(`xdp_balancer actions: ${JSON.stringify(s.actions.xdp_balancer)}; outcomes: ${JSON.stringify(s.outcomes.xdp_balancer)}`);
  t.diagnostic(
    `xdp_balancer forwarded ${forwarded} frames to a backend (${((100 * forwarded) / Math.max(1, s.frames)).toFixed(1)}%), answered ${s.outcomes.xdp_balancer['icmp-answer'] ?? 0} with ICMP`,
  );
  t.diagnostic(`xdp_decap actions: ${JSON.stringify(s.actions.xdp_decap)}; outcomes: ${JSON.stringify(s.outcomes.xdp_decap)}`);
  t.diagnostic(`round trip (balancer ipip output into xdp_decap): ${s.roundTrip.decapsulated} of ${s.roundTrip.frames} decapsulated`);
  t.diagnostic(`seed kinds: ${JSON.stringify(s.kinds)}`);
  if (Object.keys(s.notes).length) t.diagnostic(`accepted under the configured strictness: ${JSON.stringify(s.notes)}`);
  if (Object.keys(s.violations).length) t.diagnostic(`violations: ${JSON.stringify(s.violations)}`);

  if (harness.violations.length > 0) {
    const [first, ...others] = harness.violations;
    assert.fail(
      [
        `seed ${SEED}: ${Object.values(s.violations).reduce((a, b) => a + b, 0)} outputs broke an invariant. The first:`,
        describeViolation(first!),
        ...(others.length ? ['The first frame of each other invariant broken:', ...others.map(describeViolation)] : []),
      ].join('\n'),
    );
  }
  assert.ok(forwarded >= s.frames * MIN_FORWARDED_SHARE, `only ${forwarded} of ${s.frames} frames were forwarded (seed ${SEED})`);
  assert.ok(
    decapsulated >= s.frames * MIN_DECAPSULATED_SHARE,
    `only ${decapsulated} of ${s.frames} frames were decapsulated (seed ${SEED})`,
  );
  assert.ok(s.roundTrip.frames > 0 && s.roundTrip.decapsulated === s.roundTrip.frames, 'every encapsulated frame made the round trip');
});

// The checker itself: right outputs pass it, each kind of wrong one is caught.
test('the fuzz checker accepts correct outputs and catches wrong ones', () => {
  const index = new ConfigIndex(FUZZ_CONFIG);
  const TX = 3;
  const REDIRECT = 4;
  const PASS = 2;
  const ok = (r: ReturnType<typeof checkBalancer>, outcome: string) => assert.deepEqual(r.ok ? r.outcome : r, outcome);
  const broken = (r: ReturnType<typeof checkBalancer>, invariant: RegExp) =>
    assert.ok(!r.ok && invariant.test(r.invariant), JSON.stringify(r));
  const macs = (frame: Buffer, dst: string, src: string) => Buffer.concat([macBytes(dst), macBytes(src), frame.subarray(12)]);

  // l2dsr: 10.100.0.100:80/tcp, backends 1 and 2 on the ingress interface.
  const syn = ipv4Frame({
    src: '10.10.0.10',
    dst: '10.100.0.100',
    srcPort: 40000,
    dstPort: 80,
    tcpFlags: TCP_FLAGS.SYN,
    payload: Buffer.from('hi'),
  });
  const l2dsr = macs(syn, '02:00:00:00:00:13', MAC.balancer);
  ok(checkBalancer(syn, TX, l2dsr, index), 'forwarded-l2dsr');
  broken(checkBalancer(syn, REDIRECT, l2dsr, index), /right action/);
  broken(checkBalancer(syn, TX, macs(syn, '02:00:00:00:00:99', MAC.balancer), index), /re-addressed/);
  const changed = Buffer.from(l2dsr);
  changed[changed.length - 1]! ^= 1;
  broken(checkBalancer(syn, TX, changed, index), /re-addressed/);
  broken(checkBalancer(syn, PASS, changed, index), /unchanged/);
  broken(checkBalancer(syn, 0, syn, index), /aborted/);
  const flooded = macs(syn, '02:00:00:00:00:77', MAC.client);
  broken(checkBalancer(flooded, TX, macs(flooded, '02:00:00:00:00:13', MAC.balancer), index), /this host's MAC/);
  ok(checkBalancer(flooded, PASS, flooded, index), 'passed');
  const badChecksum = Buffer.from(syn);
  badChecksum[14 + 8]! ^= 1; // TTL, checksum not updated
  broken(checkBalancer(badChecksum, TX, macs(badChecksum, '02:00:00:00:00:11', MAC.balancer), index), /checksum/);
  const badOffset = Buffer.from(syn);
  badOffset[34 + 12] = 0x40; // TCP data offset 4
  broken(checkBalancer(badOffset, TX, macs(badOffset, '02:00:00:00:00:11', MAC.balancer), index), /headers parse/);
  ok(
    checkBalancer(badOffset, TX, macs(badOffset, '02:00:00:00:00:11', MAC.balancer), index, { inputChecksums: true, strictHeaders: false }),
    'forwarded-l2dsr',
  );
  const notVip = ipv4Frame({ src: '10.10.0.10', dst: '10.100.0.100', srcPort: 40000, dstPort: 81 });
  broken(checkBalancer(notVip, TX, macs(notVip, '02:00:00:00:00:11', MAC.balancer), index), /only packets for a VIP/);
  ok(checkBalancer(notVip, PASS, notVip, index), 'passed');

  // ipip: 10.100.0.101:80/tcp, backends 3 (10.20.0.14) and 4 (10.20.0.99).
  const toIpip = ipv4Frame({ src: '10.10.0.10', dst: '10.100.0.101', srcPort: 40001, dstPort: 80 });
  const inner = toIpip.subarray(14);
  const encapsulated = (outerDst: string) =>
    Buffer.concat([
      ethernet(MAC.router, MAC.balancer, 0x0800),
      ipv4Header({ src: '10.10.0.2', dst: outerDst, protocol: 4, payloadLength: inner.length }),
      inner,
    ]);
  const ipip = encapsulated('10.20.0.99');
  ok(checkBalancer(toIpip, TX, ipip, index), 'forwarded-ipip');
  broken(checkBalancer(toIpip, TX, encapsulated('10.20.0.15'), index), /re-addressed/);
  const outerChecksum = Buffer.from(ipip);
  outerChecksum[14 + 10]! ^= 0x10;
  broken(checkBalancer(toIpip, TX, outerChecksum, index), /re-addressed/);
  const innerChanged = Buffer.from(ipip);
  innerChanged[innerChanged.length - 3]! ^= 1;
  broken(checkBalancer(toIpip, TX, innerChanged, index), /re-addressed/);

  // Echo replies (ICMP answers the balancer is learning to send).
  const echo = (type: number, src: string, dst: string, srcMac: string, dstMac: string) => {
    const msg = Buffer.from('0800000012340001616263646566', 'hex');
    msg[0] = type;
    msg.writeUInt16BE(internetChecksum(msg), 2);
    return ipv4Frame({ src, dst, protocol: 1, payload: msg, srcMac, dstMac, ttl: 64 });
  };
  const request = echo(8, '10.10.0.10', '10.100.0.100', MAC.client, MAC.balancer);
  ok(checkBalancer(request, TX, echo(0, '10.100.0.100', '10.10.0.10', MAC.balancer, MAC.client), index), 'icmp-answer');
  broken(checkBalancer(request, TX, echo(0, '10.100.0.100', '10.10.0.11', MAC.balancer, MAC.client), index), /only packets for a VIP/);
  const elsewhere = echo(8, '10.10.0.10', '10.100.0.200', MAC.client, MAC.balancer);
  broken(checkBalancer(elsewhere, TX, echo(0, '10.100.0.200', '10.10.0.10', MAC.balancer, MAC.client), index), /ICMP answers only/);

  // Too-big answers: to a packet for an ipip VIP, never to an ICMP error.
  const tooBig = (packet: Buffer) => {
    const msg = Buffer.concat([Buffer.from('0304000000000564', 'hex'), packet.subarray(14, 14 + 28)]);
    msg.writeUInt16BE(internetChecksum(msg), 2);
    const from = packet.subarray(30, 34).join('.');
    const to = packet.subarray(26, 30).join('.');
    return ipv4Frame({ src: from, dst: to, protocol: 1, payload: msg, srcMac: MAC.balancer, dstMac: MAC.client });
  };
  const big = ipv4Frame({
    src: '10.10.0.10',
    dst: '10.100.0.101',
    srcPort: 40002,
    dstPort: 80,
    payload: Buffer.alloc(1400),
    srcMac: MAC.client,
  });
  ok(checkBalancer(big, TX, tooBig(big), index), 'icmp-answer');
  const wrongQuote = tooBig(big);
  wrongQuote[wrongQuote.length - 1]! ^= 1;
  broken(checkBalancer(big, TX, wrongQuote, index), /ICMP answers only/);
  const error = Buffer.concat([
    Buffer.from('0304000000000500', 'hex'),
    ipv4Frame({ src: '10.100.0.101', dst: '10.10.0.10', srcPort: 80, dstPort: 40002, payload: Buffer.alloc(1400) }).subarray(14),
  ]);
  error.writeUInt16BE(internetChecksum(error), 2);
  const icmpError = ipv4Frame({ src: '10.10.0.1', dst: '10.100.0.101', protocol: 1, payload: error, srcMac: MAC.router });
  broken(checkBalancer(icmpError, TX, tooBig(icmpError), index), /ICMP answers only/);
  const forwardedError = Buffer.concat([
    ethernet(MAC.router, MAC.balancer, 0x0800),
    ipv4Header({ src: '10.10.0.2', dst: '10.20.0.14', protocol: 4, payloadLength: icmpError.length - 14 }),
    icmpError.subarray(14),
  ]);
  ok(checkBalancer(icmpError, TX, forwardedError, index), 'forwarded-ipip');

  // xdp_decap: the tunnel to 10.20.0.99 loses exactly its outer header.
  const decapped = Buffer.concat([ipip.subarray(0, 14), inner]);
  assert.deepEqual(checkDecap(ipip, PASS, decapped, index), { ok: true, outcome: 'decapsulated', notes: [] });
  assert.ok(!checkDecap(ipip, PASS, Buffer.concat([ipip.subarray(0, 14), inner.subarray(1)]), index).ok, 'one byte too many removed');
  assert.ok(!checkDecap(encapsulated('10.20.0.15'), PASS, decapped, index).ok, 'not an endpoint');
  assert.ok(!checkDecap(ipip, TX, ipip, index).ok, 'xdp_decap transmits');
  assert.deepEqual(checkDecap(syn, PASS, syn, index), { ok: true, outcome: 'passed', notes: [] });
});
