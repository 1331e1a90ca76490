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
 * mode, "new flow" and "established flow"; CROSSED adds the tunnels that
 * cross families (4in6: an IPv4 VIP with IPv6 backends; 6in4). The maps
 * are written by the daemon's own reconciler, as for a real VIP, and the
 * first packet of every scenario is checked to take the path it is named
 * after (action, backend MAC, outer header) before anything is timed.
 */
import { pino } from 'pino';
import { join } from 'node:path';
import { BalancerDataplane, KILL_SWITCH_NEVER } from '../src/dataplane/balancer.js';
import { loadBpfObject } from '../src/dataplane/bpf-object.js';
import { check } from '../src/dataplane/libbpf.js';
import { testRun } from '../src/dataplane/xdp.js';
import { Reconciler } from '../src/core/reconciler.js';
import { parseVip } from '../src/model/address.js';
import { type BackendSpec, type DesiredState, type VipSpec, vipSettings } from '../src/model/desired-state.js';
import { type PathTarget, type PathResult } from '../src/net/forwarding-paths.js';
import { PROJECT_ROOT, bpfObjectPath } from '../src/paths.js';
import { nativeTesting } from '../test/support/native-testing.js';
import { ETHERTYPE, IPPROTO_NUMBER, TCP_FLAGS, ipv4Frame, ipv6Frame } from '../test/support/packets.js';

export interface CostRow {
  readonly scenario: string;
  /** null for the reference programs. */
  readonly family: 4 | 6 | null;
  readonly ns: number;
  /** Ratio to the floor program on a frame of the same family (IPv4 for the references). */
  readonly vsFloor: number;
  readonly vsPass: number;
}

const CLIENTS = 65536;
const MODES = ['l2dsr', 'ipip'] as const;
type Mode = (typeof MODES)[number];
const BACKEND_MAC = '02:00:00:00:00:11';
const BALANCER_MAC = '02:00:00:00:00:02';

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
  readonly frame: (spec: { src: string; dst: string; srcPort: number; dstPort: number; tcpFlags: number }) => Buffer;
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
  check(nativeTesting.testRunDurations(programFd, packets, packets.length / count, count, iterations, durations), 'BPF_PROG_TEST_RUN loop');
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
  const dataplane = BalancerDataplane.load();
  dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
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
  readonly packets: Buffer;
  readonly count: number;
  readonly expect: 'pass' | 'tx' | Forwarded;
  /** Index of the floor scenario this one is compared with. */
  floor: number;
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
      ]),
      ...CROSSED.flatMap((c) => flowScenarios(c.label, familyOf(c.vipFamily), c.vip, modeExpect('ipip', c.vipFamily, c.backendFamily))),
    ];
    // Each row is compared with the floor of its (outer, client-side) family; the references with IPv4's.
    for (const s of scenarios) s.floor = scenarios.findIndex((x) => x.name === `IPv${s.family ?? 4} floor: parse, swap MACs, XDP_TX`);
    for (const s of scenarios) {
      const first = s.packets.subarray(0, s.packets.length / s.count);
      const r = testRun(s.fd, first);
      const wrong = wrongAnswer(first, r.action, r.output, s.expect);
      if (wrong) throw new Error(`${s.name}: ${wrong}`);
    }
    const means = scenarios.map(() => [] as number[]);
    for (let round = 0; round < rounds; round++) {
      scenarios.forEach((s, i) => means[i]!.push(mean(runDurations(s.fd, s.packets, s.count, iterations))));
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
    dataplane.close();
    floor.close();
    pass.close();
  }
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
