/**
 * Per-packet cost of the XDP programs, through BPF_PROG_TEST_RUN with
 * repeat 1 in a loop (../shared/notes/platform.md: repeat N would feed an
 * encapsulating program its own output). Scenarios are interleaved round by
 * round so that host noise hits all of them alike; the figures are the
 * median over rounds of each round's mean, and ratios to the floor program
 * (parse, swap MACs, XDP_TX) and to a bare XDP_PASS.
 *
 * Rows come from FAMILIES: each address family contributes its floor (the
 * floor program on a frame of that family), "not a VIP" and, per forwarding
 * mode, "new flow" and "established flow"; for ipip also a new flow over
 * a million tuples, the first packet after a SYN (the packet that starts
 * tracking a TCP flow), and an established flow among a million tracked
 * ones; CROSSED adds the tunnels that cross families (4in6: an IPv4 VIP
 * with IPv6 backends; 6in4). The maps are written by the daemon's own
 * reconciler, as for a real VIP, and the first packet of every scenario is
 * checked to take the path it is named after (action, backend MAC, outer
 * header) before anything is timed.
 *
 * measureSynFlood then counts the established flows that survive a flood
 * of spoofed SYNs (and, for comparison, of spoofed ACKs).
 */
import { pino } from 'pino';
import { join } from 'node:path';
import { flowKeyV4 } from '../src/dataplane/abi.js';
import { BalancerDataplane, KILL_SWITCH_NEVER } from '../src/dataplane/balancer.js';
import { DEFAULT_LIMITS } from '../src/model/limits.js';
import { loadBpfObject } from '../src/dataplane/bpf-object.js';
import { orThrow } from '../src/dataplane/libbpf.js';
import { testRun } from '../src/dataplane/xdp.js';
import { Reconciler } from '../src/core/reconciler.js';
import { parseVip } from '../src/model/address.js';
import { type BackendSpec, type DesiredState, type VipSpec, vipSettings } from '../src/model/desired-state.js';
import { type PathTarget, type PathResult } from '../src/net/forwarding-paths.js';
import { PROJECT_ROOT, bpfObjectPath } from '../src/paths.js';
import { nativeTesting } from '../test/support/native-testing.js';
import { ETHERTYPE, IPPROTO_NUMBER, TCP_FLAGS, ipv4Frame, ipv6Frame } from '../test/support/packets.js';
import { floodSurvivors } from './flood.js';
import { manyFlows } from './flow-frames.js';

export interface CostRow {
  readonly scenario: string;
  /** null for the reference programs. */
  readonly family: 4 | 6 | null;
  readonly ns: number;
  /** Ratio to the floor program on a frame of the same family (IPv4 for the references). */
  readonly vsFloor: number;
  readonly vsPass: number;
}

export interface CostOptions {
  /** Runs per scenario and round (default 1,000,000). */
  iterations?: number;
  rounds?: number;
  /** Distinct flows of the "million" rows (default 1,000,000). */
  manyFlows?: number;
  log?: (line: string) => void;
}

const CLIENTS = 65536;
const MODES = ['l2dsr', 'ipip'] as const;
type Mode = (typeof MODES)[number];
const BACKEND_MAC = '02:00:00:00:00:11';
const BALANCER_MAC = '02:00:00:00:00:02';

type FrameSpec = { src: string; dst: string; srcPort: number; dstPort: number; tcpFlags: number };

/** What the scenarios of one address family need. */
interface FamilySpec {
  readonly family: 4 | 6;
  readonly label: string;
  /** One VIP per forwarding mode (TCP port 80). */
  readonly vip: Record<Mode, string>;
  /** Backend i (10 per VIP). */
  readonly backend: (i: number) => string;
  /** Client i of 64k (new flows use distinct clients). */
  readonly client: (i: number) => string;
  /** A destination that is not a VIP (the balancer's own address). */
  readonly notVip: string;
  readonly tunnelSource: string;
  readonly frame: (spec: FrameSpec) => Buffer;
}

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
  {
    family: 6,
    label: 'IPv6',
    vip: { l2dsr: 'fd00:100::100', ipip: 'fd00:100::101' },
    backend: (i) => `fd00:10::${(0x11 + i).toString(16)}`,
    client: (i) => `fd00:172:16::${((i >> 8) & 255).toString(16)}:${(i & 255).toString(16)}`,
    notVip: 'fd00:10::2',
    tunnelSource: 'fd00:10::2',
    frame: (spec) => ipv6Frame(spec),
  },
];

/** Tunnels across families: a VIP of one family whose backends are of the other (ipip only). */
const CROSSED = [
  { label: 'IPv4 balancer ipip, IPv6 backends (4in6)', vip: '10.100.0.102', vipFamily: 4 as const, backendFamily: 6 as const },
  { label: 'IPv6 balancer ipip, IPv4 backends (6in4)', vip: 'fd00:100::102', vipFamily: 6 as const, backendFamily: 4 as const },
];

const familyOf = (family: 4 | 6) => FAMILIES.find((f) => f.family === family)!;

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
  orThrow(
    nativeTesting.testRunDurations(programFd, packets, packets.length / count, count, iterations, durations),
    'BPF_PROG_TEST_RUN loop',
  );
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

function vipText(family: 4 | 6, address: string): string {
  return family === 6 ? `[${address}]:80/tcp` : `${address}:80/tcp`;
}

function backendSpecs(f: FamilySpec): BackendSpec[] {
  return Array.from({ length: 10 }, (_, i) => ({ address: f.backend(i), family: f.family, weight: 1 }));
}

function vipSpec(family: 4 | 6, address: string, forward: Mode, backends: readonly BackendSpec[]): VipSpec {
  const vip = parseVip(vipText(family, address));
  return { vip, ...vipSettings(vip, { forward }), backends };
}

/** Ten backends per VIP (table size 65537), written through the reconciler as the daemon would. */
function balancer(): BalancerDataplane {
  const dataplane = BalancerDataplane.load(DEFAULT_LIMITS);
  dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
  dataplane.setInterfaceMac(BALANCER_MAC);
  const desired: DesiredState = {
    vips: [
      ...FAMILIES.flatMap((f) => MODES.map((mode) => vipSpec(f.family, f.vip[mode], mode, backendSpecs(f)))),
      ...CROSSED.map((c) => vipSpec(c.vipFamily, c.vip, 'ipip', backendSpecs(familyOf(c.backendFamily)))),
    ],
  };
  const tunnelSource = new Map(FAMILIES.flatMap((f) => Array.from({ length: 10 }, (_, i) => [f.backend(i), f.tunnelSource] as const)));
  const paths = (t: PathTarget): PathResult => ({
    ok: true,
    path: {
      dev: 'lo',
      ifindex: 1,
      srcMac: BALANCER_MAC,
      nextHop: t.address,
      dstMac: BACKEND_MAC,
      mtu: 0,
      ...(t.forward === 'ipip' ? { tunnelSrc: tunnelSource.get(t.address)! } : {}),
    },
  });
  new Reconciler(dataplane, pino({ level: 'silent' })).apply({ desired, paths, health: () => undefined });
  return dataplane;
}

/** Tracks each flow of the frames: a SYN then an ACK, as a handshake does (which packet starts tracking is the data plane's business). */
function establish(dataplane: { readonly programFd: number }, syns: Buffer, acks: Buffer, count: number): void {
  runDurations(dataplane.programFd, syns, count, count);
  runDurations(dataplane.programFd, acks, count, count);
}

/** What a forwarded frame must look like: to the backend's MAC, as the given outer header. */
interface Forwarded {
  /** Outer family: the backend's. */
  readonly outer: 4 | 6;
  /** Encapsulated: the inner family (4in4 and 6in6 tunnels, 4in6, 6in4); undefined for l2dsr. */
  readonly inner?: 4 | 6;
}

/** Why the program's answer to one packet is not what the scenario measures, or undefined if it is. */
function wrongAnswer(input: Buffer, action: string, output: Buffer, expect: 'pass' | 'tx' | Forwarded): string | undefined {
  const want = typeof expect === 'string' ? expect : 'tx';
  if (action !== want) return `program answered ${action}, expected ${want}`;
  if (typeof expect === 'string') return undefined;
  const dstMac = output
    .subarray(0, 6)
    .toString('hex')
    .replace(/(..)(?!$)/g, '$1:');
  if (dstMac !== BACKEND_MAC) return `forwarded to ${dstMac}, not the backend's MAC ${BACKEND_MAC}`;
  const etherType = output.readUInt16BE(12);
  if (etherType !== (expect.outer === 6 ? ETHERTYPE.IPV6 : ETHERTYPE.IPV4))
    return `outer EtherType 0x${etherType.toString(16)}, expected IPv${expect.outer}`;
  const grow = expect.inner === undefined ? 0 : expect.outer === 6 ? 40 : 20;
  if (output.length !== input.length + grow)
    return `output of ${output.length} bytes for ${input.length} in, expected ${input.length + grow}`;
  if (expect.inner !== undefined) {
    const next = expect.outer === 6 ? output[14 + 6] : output[14 + 9];
    const wanted = expect.inner === 6 ? IPPROTO_NUMBER.IPV6 : IPPROTO_NUMBER.IPIP;
    if (next !== wanted) return `outer header carries protocol ${next}, expected ${wanted} (IPv${expect.inner} inside)`;
  }
  return undefined;
}

interface Scenario {
  readonly name: string;
  readonly family: 4 | 6 | null;
  readonly fd: number;
  /** The frames of a round: the same every round, or fresh ones (flows never seen before). */
  readonly packets: Buffer | ((round: number) => Buffer);
  readonly count: number;
  /** Runs per round, when not the common figure. */
  readonly iterations?: number;
  readonly expect: 'pass' | 'tx' | Forwarded;
  /** Index of the floor scenario this one is compared with. */
  floor: number;
}

/** "1M" for a million, "64k" for 65,536. */
export function countLabel(n: number): string {
  if (n >= 1_000_000 && n % 1_000_000 === 0) return `${n / 1_000_000}M`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024}k`;
  return n.toLocaleString('en-US');
}

export function measureDataplaneCost(options: CostOptions = {}): CostRow[] {
  const iterations = options.iterations ?? 1_000_000;
  const rounds = options.rounds ?? 5;
  const many = options.manyFlows ?? 1_000_000;
  const pass = loadBpfObject(bpfObjectPath('xdp_pass'), 'xdp_pass');
  const floor = loadBpfObject(join(PROJECT_ROOT, 'build', 'bench', 'xdp_floor.bpf.o'), 'xdp_floor');
  // Three data planes, so that no scenario evicts another's tracked flows:
  // the common one, one holding a million tracked flows per family, and one
  // that only ever sees flows it has not tracked yet.
  const dataplane = balancer();
  const million = balancer();
  const fresh = balancer();
  try {
    // Established flows: 256 flows of each VIP, tracked.
    const established = (f: FamilySpec, vip: string) => {
      const acks = flows(f, vip, 256, TCP_FLAGS.ACK);
      establish(dataplane, flows(f, vip, 256, TCP_FLAGS.SYN), acks, 256);
      return acks;
    };
    const nonVip = (f: FamilySpec) =>
      frames(256, (i) => f.frame({ src: f.client(i), dst: f.notVip, srcPort: 1024 + i, dstPort: 22, tcpFlags: TCP_FLAGS.ACK }));
    const modeExpect = (mode: Mode, vipFamily: 4 | 6, backendFamily: 4 | 6): Forwarded =>
      mode === 'l2dsr' ? { outer: backendFamily } : { outer: backendFamily, inner: vipFamily };
    const flowScenarios = (label: string, f: FamilySpec, vip: string, expect: Forwarded): Scenario[] => [
      {
        name: `${label}: new flow (SYN, 64k tuples)`,
        family: f.family,
        fd: dataplane.programFd,
        packets: flows(f, vip, CLIENTS, TCP_FLAGS.SYN),
        count: CLIENTS,
        expect,
        floor: -1,
      },
      {
        name: `${label}: established flow`,
        family: f.family,
        fd: dataplane.programFd,
        packets: established(f, vip),
        count: 256,
        expect,
        floor: -1,
      },
    ];
    // ipip (what Katran does) over many flows: new flows over a million
    // tuples, the first packet after a SYN, established among a million.
    const manyScenarios = (f: FamilySpec): Scenario[] => {
      const vip = f.vip.ipip;
      const expect = modeExpect('ipip', f.family, f.family);
      const label = `${f.label} balancer ipip`;
      const firstCount = Math.min(iterations, 262_144);
      options.log?.(`${label}: tracking ${many.toLocaleString('en-US')} flows`);
      const acks = manyFlows(f.family, vip, TCP_FLAGS.ACK, 0, many);
      establish(million, manyFlows(f.family, vip, TCP_FLAGS.SYN, 0, many), acks, many);
      return [
        {
          name: `${label}: new flow (SYN, ${countLabel(many)} tuples)`,
          family: f.family,
          fd: dataplane.programFd,
          packets: manyFlows(f.family, vip, TCP_FLAGS.SYN, 1 << 24, many),
          count: many,
          expect,
          floor: -1,
        },
        {
          name: `${label}: first packet after the SYN (an ACK of an untracked flow: tracks it)`,
          family: f.family,
          fd: fresh.programFd,
          // Flows never seen: new ones every round (the table fills, then evicts, as a busy balancer's does).
          packets: (round) => manyFlows(f.family, vip, TCP_FLAGS.ACK, (2 << 24) + round * firstCount, firstCount),
          count: firstCount,
          iterations: firstCount,
          expect,
          floor: -1,
        },
        {
          name: `${label}: established flow, ${countLabel(many)} flows tracked`,
          family: f.family,
          fd: million.programFd,
          packets: acks,
          count: many,
          expect,
          floor: -1,
        },
      ];
    };
    const scenarios: Scenario[] = [
      { name: 'bare XDP_PASS', family: null, fd: pass.programFd, packets: nonVip(FAMILIES[0]!), count: 256, expect: 'pass', floor: -1 },
      ...FAMILIES.map((f): Scenario => ({
        name: `${f.label} floor: parse, swap MACs, XDP_TX`,
        family: null,
        fd: floor.programFd,
        packets: nonVip(f),
        count: 256,
        expect: 'tx',
        floor: -1,
      })),
      ...FAMILIES.flatMap((f) => [
        {
          name: `${f.label} balancer: not a VIP`,
          family: f.family,
          fd: dataplane.programFd,
          packets: nonVip(f),
          count: 256,
          expect: 'pass' as const,
          floor: -1,
        },
        ...MODES.flatMap((mode) => flowScenarios(`${f.label} balancer ${mode}`, f, f.vip[mode], modeExpect(mode, f.family, f.family))),
        ...manyScenarios(f),
      ]),
      ...CROSSED.flatMap((c) => flowScenarios(c.label, familyOf(c.vipFamily), c.vip, modeExpect('ipip', c.vipFamily, c.backendFamily))),
    ];
    // Each row is compared with the floor of its (outer, client-side) family; the references with IPv4's.
    for (const s of scenarios) s.floor = scenarios.findIndex((x) => x.name === `IPv${s.family ?? 4} floor: parse, swap MACs, XDP_TX`);
    const packetsOf = (s: Scenario, round: number) => (typeof s.packets === 'function' ? s.packets(round) : s.packets);
    for (const s of scenarios) {
      const packets = packetsOf(s, -1);
      const first = packets.subarray(0, packets.length / s.count);
      const r = testRun(s.fd, first);
      const wrong = wrongAnswer(first, r.action, r.output, s.expect);
      if (wrong) throw new Error(`${s.name}: ${wrong}`);
    }
    const means = scenarios.map(() => [] as number[]);
    for (let round = 0; round < rounds; round++) {
      scenarios.forEach((s, i) => means[i]!.push(mean(runDurations(s.fd, packetsOf(s, round), s.count, s.iterations ?? iterations))));
      options.log?.(`round ${round + 1}/${rounds}: ${scenarios.map((s, i) => `${s.name} ${means[i]!.at(-1)!.toFixed(1)}`).join(', ')}`);
    }
    const results = means.map(median);
    return scenarios.map((s, i) => ({
      scenario: s.name,
      family: s.family,
      ns: results[i]!,
      vsFloor: results[i]! / results[s.floor]!,
      vsPass: results[i]! / results[0]!,
    }));
  } finally {
    fresh.close();
    million.close();
    dataplane.close();
    floor.close();
    pass.close();
  }
}

export interface FloodResult {
  /** Tracked flows, each sending one packet per `touchEvery` packets of the flood. */
  readonly established: number;
  /** Spoofed packets, each of a distinct tuple. */
  readonly flood: number;
  readonly touchEvery: number;
  readonly flowTableSize: number;
  readonly syns: FloodOutcome;
  /** Spoofed ACKs: each starts tracking, like any first packet of a flow met mid-connection. */
  readonly acks: FloodOutcome;
}

export interface FloodOutcome {
  /** Established flows still tracked afterwards. */
  readonly survivors: number;
  /** Entries in the flow table afterwards: the established flows and what the flood left. */
  readonly entries: number;
}

/**
 * How many established flows survive a flood of spoofed packets to their
 * VIP, and what the flood leaves in the flow table: `established` flows are
 * tracked, then `flood` packets of distinct tuples arrive; every
 * established flow sends one packet per `touchEvery` flood packets (by
 * default none until the flood is over: connections quiet meanwhile, the
 * hardest case for an LRU). Survival, not time: each flood runs on a fresh
 * data plane of the default size.
 */
export function measureSynFlood(
  options: { established?: number; flood?: number; touchEvery?: number; log?: (line: string) => void } = {},
): FloodResult {
  const established = options.established ?? 100_000;
  const flood = options.flood ?? 10_000_000;
  const touchEvery = options.touchEvery ?? flood;
  const outcome = (tcpFlags: number): FloodOutcome => {
    const dataplane = balancer();
    try {
      const { survivors } = floodSurvivors(
        (packets, count) => runDurations(dataplane.programFd, packets, count, count),
        (flow) => dataplane.flowsV4.lookup(flowKeyV4.encode(flow)) !== null,
        { vip: FAMILIES[0]!.vip.ipip, established, flood, touchEvery, tcpFlags },
      );
      let entries = 0;
      for (const _ of dataplane.flowsV4.entries()) entries++;
      return { survivors, entries };
    } finally {
      dataplane.close();
    }
  };
  options.log?.(`flood: ${established} established flows, ${flood} spoofed SYNs`);
  const syns = outcome(TCP_FLAGS.SYN);
  options.log?.(`flood: ${established} established flows, ${flood} spoofed ACKs`);
  const acks = outcome(TCP_FLAGS.ACK);
  return { established, flood, touchEvery, flowTableSize: DEFAULT_LIMITS.flowTableSize, syns, acks };
}

/** An IPv6 row's ratio to the same row over IPv4 (the same name with "IPv4"), if there is one. */
export function vsIpv4(rows: readonly CostRow[], row: CostRow): number | undefined {
  if (!row.scenario.startsWith('IPv6 ')) return undefined;
  const twin = rows.find((r) => r.scenario === `IPv4 ${row.scenario.slice(5)}`);
  return twin ? row.ns / twin.ns : undefined;
}

export function costTable(rows: readonly CostRow[]): string {
  return [
    '| scenario | ns/packet | × floor | × bare pass | IPv6 × IPv4 |',
    '|---|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.scenario} | ${r.ns.toFixed(1)} | ${r.vsFloor.toFixed(2)} | ${r.vsPass.toFixed(2)} | ${vsIpv4(rows, r)?.toFixed(2) ?? ''} |`,
    ),
  ].join('\n');
}

export function floodTable(r: FloodResult): string {
  const n = (x: number) => x.toLocaleString('en-US');
  const row = (what: string, o: FloodOutcome) =>
    `| ${n(r.flood)} ${what} | ${n(o.survivors)} of ${n(r.established)} (${((100 * o.survivors) / r.established).toFixed(1)} %) | ${n(o.entries)} |`;
  return [
    '| flood (distinct spoofed tuples, IPv4 VIP) | established flows still tracked | flow table entries afterwards |',
    '|---|---:|---:|',
    row('SYNs', r.syns),
    row('ACKs (each a first packet met mid-connection: tracked)', r.acks),
  ].join('\n');
}
