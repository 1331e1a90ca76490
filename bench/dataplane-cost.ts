/**
 * Per-packet cost of the XDP programs, through BPF_PROG_TEST_RUN with
 * repeat 1 in a loop (../shared/notes/platform.md: repeat N would feed an
 * encapsulating program its own output). Scenarios are interleaved round by
 * round so that host noise hits all of them alike; the figures are the
 * median over rounds of each round's mean, and ratios to the floor program
 * (parse, swap MACs, XDP_TX) and to a bare XDP_PASS.
 *
 * Rows come from FAMILIES: each address family contributes "not a VIP" and,
 * per forwarding mode, "new flow" and "established flow". IPv6 rows appear
 * by adding an IPv6 entry to FAMILIES once the data plane has IPv6 VIPs.
 */
import { pino } from 'pino';
import { join } from 'node:path';
import { BalancerDataplane, KILL_SWITCH_NEVER } from '../src/dataplane/balancer.js';
import { loadBpfObject } from '../src/dataplane/bpf-object.js';
import { check, native } from '../src/dataplane/libbpf.js';
import { testRun } from '../src/dataplane/xdp.js';
import { Reconciler } from '../src/daemon/reconciler.js';
import { parseVip } from '../src/model/address.js';
import { DesiredState, vipSettings } from '../src/model/desired-state.js';
import { PathTarget, PathResult } from '../src/net/forwarding-paths.js';
import { PROJECT_ROOT, bpfObjectPath } from '../src/paths.js';
import { TCP_FLAGS, ipv4Frame } from '../test/support/packets.js';

export interface CostRow {
  readonly scenario: string;
  /** null for the reference programs. */
  readonly family: 4 | 6 | null;
  readonly ns: number;
  readonly vsFloor: number;
  readonly vsPass: number;
}

const CLIENTS = 65536;
const MODES = ['l2dsr', 'ipip'] as const;

/** What the scenarios of one address family need. */
interface FamilySpec {
  readonly family: 4 | 6;
  readonly label: string;
  /** One VIP per forwarding mode (TCP port 80). */
  readonly vip: Record<(typeof MODES)[number], string>;
  /** Backend i (10 per VIP). */
  readonly backend: (i: number) => string;
  /** Client i of 64k (new flows use distinct clients). */
  readonly client: (i: number) => string;
  /** A destination that is not a VIP (the balancer's own address). */
  readonly notVip: string;
  readonly tunnelSource: string;
  readonly frame: (spec: { src: string; dst: string; srcPort: number; dstPort: number; tcpFlags: number }) => Buffer;
}

/**
 * IPv4 only: the data plane has no IPv6 VIPs yet. When it does, add an IPv6
 * entry (VIPs, addresses, a frame builder) and its rows follow.
 */
export const FAMILIES: readonly FamilySpec[] = [
  {
    family: 4,
    label: 'IPv4',
    vip: { l2dsr: '10.100.0.100', ipip: '10.100.0.101' },
    backend: (i) => `10.10.0.${11 + i}`,
    client: (i) => `172.16.${(i >> 8) & 255}.${i & 255}`,
    notVip: '10.10.0.2',
    tunnelSource: '10.10.0.2',
    frame: (spec) => ipv4Frame(spec),
  },
];

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

function flows(f: FamilySpec, vip: string, count: number, flags: number): Buffer {
  return frames(count, (i) => f.frame({ src: f.client(i), dst: vip, srcPort: 1024 + (i % 50000), dstPort: 80, tcpFlags: flags }));
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

function vipText(f: FamilySpec, address: string): string {
  return f.family === 6 ? `[${address}]:80/tcp` : `${address}:80/tcp`;
}

/** Ten backends per VIP, written through the reconciler as the daemon would. */
function balancer(): BalancerDataplane {
  const dataplane = BalancerDataplane.load();
  dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
  const desired: DesiredState = {
    vips: FAMILIES.flatMap((f) => {
      const backends = Array.from({ length: 10 }, (_, i) => ({ address: f.backend(i), family: f.family, weight: 1 }));
      return MODES.map((mode) => {
        const vip = parseVip(vipText(f, f.vip[mode]));
        return { vip, ...vipSettings(vip, { forward: mode }), backends };
      });
    }),
  };
  const tunnelSource = new Map(FAMILIES.flatMap((f) => Array.from({ length: 10 }, (_, i) => [f.backend(i), f.tunnelSource] as const)));
  const paths = (t: PathTarget): PathResult => ({
    ok: true,
    path: { dev: 'lo', ifindex: 1, srcMac: '02:00:00:00:00:02', nextHop: t.address, dstMac: '02:00:00:00:00:11', mtu: 0, ...(t.forward === 'ipip' ? { tunnelSrc: tunnelSource.get(t.address)! } : {}) },
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
    const established = (f: FamilySpec, vip: string) => {
      const syns = flows(f, vip, 256, TCP_FLAGS.SYN);
      runDurations(dataplane.programFd, syns, 256, 256);
      return flows(f, vip, 256, TCP_FLAGS.ACK);
    };
    const nonVip = (f: FamilySpec) => frames(256, (i) => f.frame({ src: f.client(i), dst: f.notVip, srcPort: 1024 + i, dstPort: 22, tcpFlags: TCP_FLAGS.ACK }));
    const reference = nonVip(FAMILIES[0]!);
    const scenarios: Array<{ name: string; family: 4 | 6 | null; fd: number; packets: Buffer; count: number; expect: string }> = [
      { name: 'bare XDP_PASS', family: null, fd: pass.programFd, packets: reference, count: 256, expect: 'pass' },
      { name: 'floor: parse, swap MACs, XDP_TX', family: null, fd: floor.programFd, packets: reference, count: 256, expect: 'tx' },
      ...FAMILIES.flatMap((f) => [
        { name: `${f.label} balancer: not a VIP`, family: f.family, fd: dataplane.programFd, packets: nonVip(f), count: 256, expect: 'pass' },
        ...MODES.flatMap((mode) => [
          { name: `${f.label} balancer ${mode}: new flow (SYN, 64k tuples)`, family: f.family, fd: dataplane.programFd, packets: flows(f, f.vip[mode], CLIENTS, TCP_FLAGS.SYN), count: CLIENTS, expect: 'tx' },
          { name: `${f.label} balancer ${mode}: established flow`, family: f.family, fd: dataplane.programFd, packets: established(f, f.vip[mode]), count: 256, expect: 'tx' },
        ]),
      ]),
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
    return scenarios.map((s, i) => ({ scenario: s.name, family: s.family, ns: results[i]!, vsFloor: results[i]! / results[1]!, vsPass: results[i]! / results[0]! }));
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


