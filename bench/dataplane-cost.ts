/**
 * Per-packet cost of the XDP programs, through BPF_PROG_TEST_RUN with
 * repeat 1 in a loop (../shared/notes/platform.md: repeat N would feed an
 * encapsulating program its own output). Scenarios are interleaved round by
 * round so that host noise hits all of them alike; the figures are the
 * median over rounds of each round's mean, and ratios to the floor program
 * (parse, swap MACs, XDP_TX) and to a bare XDP_PASS.
 */
import { pino } from 'pino';
import { join } from 'node:path';
import { BalancerDataplane } from '../src/dataplane/balancer.js';
import { loadBpfObject } from '../src/dataplane/bpf-object.js';
import { check, native } from '../src/dataplane/libbpf.js';
import { testRun } from '../src/dataplane/xdp.js';
import { Reconciler } from '../src/daemon/reconciler.js';
import { parseVip } from '../src/model/address.js';
import { DesiredState } from '../src/model/desired-state.js';
import { PathTarget, PathResult } from '../src/net/forwarding-paths.js';
import { PROJECT_ROOT, bpfObjectPath } from '../src/paths.js';
import { TCP_FLAGS, ipv4Frame } from '../test/support/packets.js';

export interface CostRow {
  readonly scenario: string;
  readonly ns: number;
  readonly vsFloor: number;
  readonly vsPass: number;
}

const CLIENTS = 65536;
const L2_VIP = '10.100.0.100';
const IPIP_VIP = '10.100.0.101';

function frames(count: number, make: (i: number) => Buffer): Buffer {
  const first = make(0);
  const all = Buffer.alloc(first.length * count);
  for (let i = 0; i < count; i++) {
    const frame = make(i);
    if (frame.length !== first.length) throw new Error('benchmark frames must have one length');
    frame.copy(all, i * first.length);
  }
  return all;
}

function clientAddress(i: number): string {
  return `172.16.${(i >> 8) & 255}.${i & 255}`;
}

function flows(vip: string, count: number, flags: number): Buffer {
  return frames(count, (i) => ipv4Frame({ src: clientAddress(i), dst: vip, srcPort: 1024 + (i % 50000), dstPort: 80, tcpFlags: flags }));
}

function runDurations(programFd: number, packets: Buffer, count: number, iterations: number): Uint32Array {
  const durations = new Uint32Array(iterations);
  check(native.testRunDurations(programFd, packets, packets.length / count, count, iterations, durations), 'BPF_PROG_TEST_RUN loop');
  return durations;
}

function mean(values: Uint32Array): number {
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Ten backends per VIP, written through the reconciler as the daemon would. */
function balancer(): BalancerDataplane {
  const dataplane = BalancerDataplane.load();
  const backends = Array.from({ length: 10 }, (_, i) => ({ address: `10.10.0.${11 + i}`, family: 4 as const, weight: 1 }));
  const desired: DesiredState = {
    vips: [
      { vip: parseVip(`${L2_VIP}:80/tcp`), forward: 'l2dsr', tableSize: 65537, backends },
      { vip: parseVip(`${IPIP_VIP}:80/tcp`), forward: 'ipip', tableSize: 65537, backends },
    ],
  };
  const paths = (t: PathTarget): PathResult => ({
    ok: true,
    path: { dev: 'lo', ifindex: 1, srcMac: '02:00:00:00:00:02', nextHop: t.address, dstMac: '02:00:00:00:00:11', ...(t.forward === 'ipip' ? { tunnelSrc: '10.10.0.2' } : {}) },
  });
  new Reconciler(dataplane, pino({ level: 'silent' })).apply(desired, paths);
  return dataplane;
}

export function measureDataplaneCost(options: { iterations?: number; rounds?: number; log?: (line: string) => void } = {}): CostRow[] {
  const iterations = options.iterations ?? 1_000_000;
  const rounds = options.rounds ?? 5;
  const pass = loadBpfObject(bpfObjectPath('xdp_pass'), 'xdp_pass');
  const floor = loadBpfObject(join(PROJECT_ROOT, 'build', 'bench', 'xdp_floor.bpf.o'), 'xdp_floor');
  const dataplane = balancer();
  try {
    // Established flows: 256 flows the SYNs below have made tracked.
    const established = (vip: string) => {
      const syns = flows(vip, 256, TCP_FLAGS.SYN);
      runDurations(dataplane.programFd, syns, 256, 256);
      return flows(vip, 256, TCP_FLAGS.ACK);
    };
    const nonVip = frames(256, (i) => ipv4Frame({ src: clientAddress(i), dst: '10.10.0.2', srcPort: 1024 + i, dstPort: 22, tcpFlags: TCP_FLAGS.ACK }));
    const scenarios: Array<{ name: string; fd: number; packets: Buffer; count: number; expect: string }> = [
      { name: 'bare XDP_PASS', fd: pass.programFd, packets: nonVip, count: 256, expect: 'pass' },
      { name: 'floor: parse, swap MACs, XDP_TX', fd: floor.programFd, packets: nonVip, count: 256, expect: 'tx' },
      { name: 'balancer: not a VIP', fd: dataplane.programFd, packets: nonVip, count: 256, expect: 'pass' },
      { name: 'balancer l2dsr: new flow (SYN, 64k tuples)', fd: dataplane.programFd, packets: flows(L2_VIP, CLIENTS, TCP_FLAGS.SYN), count: CLIENTS, expect: 'tx' },
      { name: 'balancer l2dsr: established flow', fd: dataplane.programFd, packets: established(L2_VIP), count: 256, expect: 'tx' },
      { name: 'balancer ipip: new flow (SYN, 64k tuples)', fd: dataplane.programFd, packets: flows(IPIP_VIP, CLIENTS, TCP_FLAGS.SYN), count: CLIENTS, expect: 'tx' },
      { name: 'balancer ipip: established flow', fd: dataplane.programFd, packets: established(IPIP_VIP), count: 256, expect: 'tx' },
    ];
    for (const s of scenarios) {
      const action = testRun(s.fd, s.packets.subarray(0, s.packets.length / s.count)).action;
      if (action !== s.expect) throw new Error(`${s.name}: program answered ${action}, expected ${s.expect}`);
    }
    const means = scenarios.map(() => [] as number[]);
    for (let round = 0; round < rounds; round++) {
      scenarios.forEach((s, i) => means[i]!.push(mean(runDurations(s.fd, s.packets, s.count, iterations))));
      options.log?.(`round ${round + 1}/${rounds}: ${scenarios.map((s, i) => `${s.name} ${means[i]!.at(-1)!.toFixed(1)}`).join(', ')}`);
    }
    const results = means.map(median);
    return scenarios.map((s, i) => ({ scenario: s.name, ns: results[i]!, vsFloor: results[i]! / results[1]!, vsPass: results[i]! / results[0]! }));
  } finally {
    dataplane.close();
    floor.close();
    pass.close();
  }
}

export function costTable(rows: readonly CostRow[]): string {
  return [
    '| scenario | ns/packet | × floor | × bare pass |',
    '|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.scenario} | ${r.ns.toFixed(1)} | ${r.vsFloor.toFixed(2)} | ${r.vsPass.toFixed(2)} |`),
  ].join('\n');
}


