/**
 * Part 2: packet rate through the balancer in the lab.
 *
 * bench/traffic-gen.ts in the client namespace sends 60-byte UDP packets
 * (256 flows: source ports 1024-1279) to port 9 of a VIP; bench/xdp_count.bpf.c
 * counts them where they leave the balancer (on the switch port `lb`, passing
 * them on) and where they reach the backends be1..be3 (on their eth0, dropping
 * them: nothing answers). Systems, interleaved round by round:
 *
 *   direct          the same traffic straight to be1 (no balancer on the path)
 *   xdp-fwd         plain XDP on the balancer: rewrite MACs, XDP_TX (bench/xdp_l2fwd.bpf.c)
 *   lbctl-l2dsr     lbctl, a UDP VIP with be1..be3, l2dsr
 *   lbctl-ipip      lbctl, a UDP VIP with be1..be3, ipip
 *   kernel-fwd      no XDP: kernel IPv4 forwarding, ECMP route over be1..be3 (L4 hash)
 *   iptables-dnat   no XDP: iptables DNAT with `-m statistic --mode nth` + conntrack
 *
 * Every system takes the same path client -> switch -> lb -> switch -> backend
 * except `direct` (client -> switch -> backend). The switch is the lab's
 * Linux bridge in a namespace of its own; by default bench/xdp_switch.bpf.c
 * on its ports forwards the benchmark hosts' frames as XDP frames instead
 * (as a NIC's driver hands frames to XDP), since the bridge's skb path costs
 * several times what any balancer does. The balancer's eth0 then always runs
 * an XDP program (xdp_pass for the kernel's systems: the driver-to-stack path
 * of a NIC with XDP).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, LAB } from '../test/lab/lab.js';
import { LabBalancer } from '../test/support/balancer.js';
import { Counter, XdpSwitch, attachBench, attachPass } from './lab-xdp.js';
import { type Log, macOf, median, nowNs, sh, sleep, startGenerator } from './common.js';

export const RATE_SYSTEMS = ['direct', 'xdp-fwd', 'lbctl-l2dsr', 'lbctl-ipip', 'kernel-fwd', 'iptables-dnat'] as const;
export type RateSystem = (typeof RATE_SYSTEMS)[number];

export interface RateOptions {
  /** Rounds; each runs every system once (default 3). */
  rounds?: number;
  /** Measured window per run (default 3000 ms), after warmupMs (default 500). */
  windowMs?: number;
  warmupMs?: number;
  /** Generator threads, one per CPU (default 1: the whole path on one core). */
  threads?: number;
  /** Distinct flows (default 256). */
  flows?: number;
  /** 'xdp' (default): bench/xdp_switch.bpf.c on the switch ports; 'bridge': the lab's bridge. */
  switch?: 'xdp' | 'bridge';
  log?: Log;
}

export interface RateSample {
  readonly offeredMpps: number;
  readonly balancerMpps: number;
  readonly backendsMpps: number;
}

export interface RateRow {
  readonly system: RateSystem;
  readonly description: string;
  /** Medians over rounds. */
  readonly offeredMpps: number;
  /** Packets leaving the balancer (0 for direct). */
  readonly balancerMpps: number;
  /** Packets reaching the backends. */
  readonly backendsMpps: number;
  readonly samples: RateSample[];
}

export interface RateResult {
  readonly rows: RateRow[];
  readonly rounds: number;
  readonly windowMs: number;
  readonly threads: number;
  readonly flows: number;
  readonly switch: 'xdp' | 'bridge';
}

const DESCRIPTIONS: Record<RateSystem, string> = {
  direct: 'straight to be1, no balancer (the limit)',
  'xdp-fwd': 'plain XDP on the balancer: rewrite MACs, XDP_TX (veth limit)',
  'lbctl-l2dsr': 'lbctl, UDP VIP, 3 backends, l2dsr',
  'lbctl-ipip': 'lbctl, UDP VIP, 3 backends, ipip',
  'kernel-fwd': 'kernel IPv4 forwarding, ECMP route, L4 hash',
  'iptables-dnat': 'iptables DNAT, statistic nth, conntrack',
};

const BACKENDS = ['be1', 'be2', 'be3'] as const;
/** Switch ports (test/lab/lab.sh names them after their hosts). */
const SWITCH_PORT = { client: 'client', lb: 'lb', backend: (b: string) => b } as const;
const PORT = 9;
const VIP = { l2dsr: LAB.vips[0], ipip: LAB.vips[1], kernel: LAB.vips[2], dnat: '10.100.0.103' } as const;
const address = (b: string) => LAB.backends.find((x) => x.name === b)!.address;

/** Sets rx/tx channels on both ends of a veth pair: the end running XDP first, else the kernel refuses. */
async function channels(lab: Lab, ends: Array<[string, string]>, count: number): Promise<void> {
  for (let pass = 0; pass < 2; pass++) {
    for (const [role, dev] of ends) await lab.exec(role, ['ethtool', '-L', dev, 'rx', String(count), 'tx', String(count)]);
  }
}

export async function measurePacketRate(options: RateOptions = {}): Promise<RateResult> {
  const rounds = options.rounds ?? 3;
  const windowMs = options.windowMs ?? 3000;
  const warmupMs = options.warmupMs ?? 500;
  const threads = options.threads ?? 1;
  const flows = options.flows ?? 256;
  const switchKind = options.switch ?? 'xdp';
  const log = options.log ?? (() => undefined);

  const lab = await Lab.up({ decap: false });
  const lb = new LabBalancer(lab);
  const counters: Counter[] = [];
  let xdpSwitch: XdpSwitch | undefined;
  try {
    const macs = Object.fromEntries(await Promise.all(['lb', ...BACKENDS].map(async (r) => [r, await macOf(lab, r)] as const)));
    if (threads > 1) {
      await channels(
        lab,
        [
          ['sw', SWITCH_PORT.client],
          ['client', 'eth0'],
          ['sw', SWITCH_PORT.lb],
          ['lb', 'eth0'],
          ...BACKENDS.flatMap((b): Array<[string, string]> => [
            ['sw', SWITCH_PORT.backend(b)],
            [b, 'eth0'],
          ]),
        ],
        threads,
      );
    }
    // Packets leaving the balancer: counted where they enter the switch.
    let leftBalancer: () => number;
    let leftClient: (() => number) | undefined;
    if (switchKind === 'xdp') {
      const hosts = new Map<string, string>([
        [SWITCH_PORT.client, await macOf(lab, 'client')],
        [SWITCH_PORT.lb, macs.lb!],
        ...BACKENDS.map((b) => [SWITCH_PORT.backend(b), macs[b]!] as [string, string]),
      ]);
      const sw = await XdpSwitch.attach(lab, 'sw', hosts);
      xdpSwitch = sw;
      leftBalancer = () => sw.received(SWITCH_PORT.lb);
      leftClient = () => sw.received(SWITCH_PORT.client);
    } else {
      // The generator XDP_TXes out of the client's eth0: its peer needs an XDP program.
      await attachPass(lab, 'sw', SWITCH_PORT.client);
      const atBalancer = await Counter.attach(lab, 'sw', SWITCH_PORT.lb, 'pass');
      counters.push(atBalancer);
      leftBalancer = () => atBalancer.read().packets;
    }
    const atBackends = await Promise.all(BACKENDS.map((b) => Counter.attach(lab, b, 'eth0', 'drop')));
    counters.push(...atBackends);

    // The balancer namespace: forwarding on (kernel-fwd, iptables-dnat), an
    // ECMP route for the kernel's VIP; lbctl's VIPs come from a config file.
    await sh(lab, 'lb', ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.fib_multipath_hash_policy=1']);
    await sh(lab, 'lb', [
      'ip',
      'route',
      'replace',
      `${VIP.kernel}/32`,
      ...BACKENDS.flatMap((b) => ['nexthop', 'via', address(b), 'dev', 'eth0']),
    ]);
    const config = join(lab.runtimeDir, 'bench-rate.yaml');
    writeFileSync(
      config,
      [
        'vips:',
        ...(['l2dsr', 'ipip'] as const).flatMap((mode) => [
          `  - vip: ${VIP[mode]}:${PORT}/udp`,
          `    forward: ${mode}`,
          '    backends:',
          ...BACKENDS.map((b) => `      - address: ${address(b)}`),
        ]),
        '',
      ].join('\n'),
    );

    const run = async (system: RateSystem): Promise<RateSample> => {
      const toBalancer = {
        ifname: 'eth0',
        dstMac: macs.lb!,
        saddr: LAB.client,
        flows,
        threads,
        durationMs: warmupMs + windowMs + 500,
        repeat: 1 << 15,
      };
      const daddr: Record<RateSystem, string> = {
        direct: LAB.vips[0],
        'xdp-fwd': LAB.vips[0],
        'lbctl-l2dsr': VIP.l2dsr,
        'lbctl-ipip': VIP.ipip,
        'kernel-fwd': VIP.kernel,
        'iptables-dnat': VIP.dnat,
      };
      const generator = startGenerator(lab, { ...toBalancer, daddr: daddr[system], ...(system === 'direct' ? { dstMac: macs.be1! } : {}) });
      await generator.ready;
      await sleep(warmupMs);
      const read = () => ({
        t: nowNs(),
        client: leftClient?.() ?? 0,
        lb: leftBalancer(),
        be: atBackends.reduce((sum, c) => sum + c.read().packets, 0),
      });
      const a = read();
      await sleep(windowMs);
      const b = read();
      const sent = await generator.done;
      const mpps = (packets: number) => (packets / Number(b.t - a.t)) * 1e3;
      // Offered: what entered the switch from the client in the window (the
      // generator's own average also covers its start, before the window).
      const sample = {
        offeredMpps: leftClient ? mpps(b.client - a.client) : (sent.frames / sent.elapsedNs) * 1e3,
        balancerMpps: mpps(b.lb - a.lb),
        backendsMpps: mpps(b.be - a.be),
      };
      if (sample.backendsMpps <= 0) throw new Error(`packet rate: ${system} delivered no packet to the backends`);
      return sample;
    };

    // Each system with the balancer namespace set up for it, and put back.
    const withSystem = async (system: RateSystem, body: () => Promise<RateSample>): Promise<RateSample> => {
      switch (system) {
        case 'xdp-fwd': {
          const fwd = await attachBench(lab, 'lb', 'eth0', 'xdp_l2fwd', (object) => {
            const cfg = Buffer.alloc(6 + 2 + 8 * 6);
            Buffer.from(macs.lb!.split(':').map((h) => parseInt(h, 16))).copy(cfg, 0);
            cfg.writeUInt16LE(BACKENDS.length, 6);
            BACKENDS.forEach((be, i) => Buffer.from(macs[be]!.split(':').map((h) => parseInt(h, 16))).copy(cfg, 8 + 6 * i));
            object.map('l2fwd_config').update(Buffer.alloc(4), cfg);
          });
          try {
            return await body();
          } finally {
            await fwd.detach();
          }
        }
        case 'iptables-dnat':
        case 'kernel-fwd': {
          // XDP frames from the switch reach eth0 only if it runs an XDP program.
          if (switchKind === 'xdp') await attachPass(lab, 'lb', 'eth0');
          if (system === 'iptables-dnat') await dnatRules(lab, VIP.dnat, 'udp', PORT, BACKENDS.map(address));
          try {
            return await body();
          } finally {
            if (system === 'iptables-dnat') await removeNat(lab);
            if (switchKind === 'xdp') await sh(lab, 'lb', ['ip', 'link', 'set', 'dev', 'eth0', 'xdpdrv', 'off']);
          }
        }
        default:
          return body();
      }
    };

    const samples = new Map<RateSystem, RateSample[]>(RATE_SYSTEMS.map((s) => [s, []]));
    for (let round = 0; round < rounds; round++) {
      // lbctl runs for its two systems only: the others see no XDP on the balancer.
      await lb.start(['--config', config]);
      await allResolved(lb);
      await sleep(1000); // the daemon's start-up work (first network refresh) settles
      try {
        for (const system of ['lbctl-l2dsr', 'lbctl-ipip'] as const) samples.get(system)!.push(await run(system));
      } finally {
        await lb.stop();
      }
      for (const system of ['xdp-fwd', 'kernel-fwd', 'iptables-dnat', 'direct'] as const)
        samples.get(system)!.push(await withSystem(system, () => run(system)));
      log(
        `packet rate round ${round + 1}/${rounds}: ${RATE_SYSTEMS.map((s) => `${s} ${samples.get(s)!.at(-1)!.backendsMpps.toFixed(2)}`).join(', ')} Mpps at the backends`,
      );
    }
    return {
      rounds,
      windowMs,
      threads,
      flows,
      switch: switchKind,
      rows: RATE_SYSTEMS.map((system) => {
        const s = samples.get(system)!;
        return {
          system,
          description: DESCRIPTIONS[system],
          samples: s,
          offeredMpps: median(s.map((x) => x.offeredMpps)),
          balancerMpps: median(s.map((x) => x.balancerMpps)),
          backendsMpps: median(s.map((x) => x.backendsMpps)),
        };
      }),
    };
  } finally {
    await lb.stop().catch(() => undefined);
    await xdpSwitch?.detach().catch(() => undefined);
    for (const c of counters) await c.detach().catch(() => undefined);
    await lab.down();
  }
}

/** Waits (up to 5 s) until the daemon has a path to every backend: until then their slots drop packets. */
export async function allResolved(lb: LabBalancer): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const status = await lb.json<{ backends: number; unresolvedBackends: number }>(['status']);
    if (status.unresolvedBackends === 0 || Date.now() > deadline) return;
    await sleep(100);
  }
}

/**
 * The classic iptables round robin: DNAT in PREROUTING, the n-th new
 * connection (conntrack) to the n-th backend with the statistic match.
 */
export async function dnatRules(
  lab: Lab,
  vip: string,
  proto: 'tcp' | 'udp',
  port: number,
  backends: readonly string[],
  toPort = port,
): Promise<void> {
  for (let i = 0; i < backends.length; i++) {
    const left = backends.length - i;
    const match = left > 1 ? ['-m', 'statistic', '--mode', 'nth', '--every', String(left), '--packet', '0'] : [];
    await sh(lab, 'lb', [
      'iptables',
      '-t',
      'nat',
      '-A',
      'PREROUTING',
      '-d',
      `${vip}/32`,
      '-p',
      proto,
      '--dport',
      String(port),
      ...match,
      '-j',
      'DNAT',
      '--to-destination',
      `${backends[i]}:${toPort}`,
    ]);
  }
}

/** Deletes iptables-nft's nat table: flushing leaves its hooks, and with them conntrack, in place. */
export async function removeNat(lab: Lab): Promise<void> {
  await lab.exec('lb', ['nft', 'delete', 'table', 'ip', 'nat']);
}

export function rateTable(result: RateResult): string {
  const by = new Map(result.rows.map((r) => [r.system, r]));
  const limit = by.get('direct')!.backendsMpps;
  const veth = by.get('xdp-fwd')!.backendsMpps;
  const ratio = (a: number, b: number | undefined) => (b && b > 0 ? (a / b).toFixed(2) : '-');
  return [
    '| system | offered Mpps | leaving the balancer Mpps | at the backends Mpps | × direct | × xdp-fwd | × kernel-fwd | × iptables-dnat |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...result.rows.map(
      (r) =>
        `| ${r.system}: ${r.description} | ${r.offeredMpps.toFixed(2)} | ${r.system === 'direct' ? '-' : r.balancerMpps.toFixed(2)} | ${r.backendsMpps.toFixed(2)} | ${ratio(r.backendsMpps, limit)} | ${ratio(r.backendsMpps, veth)} | ${ratio(r.backendsMpps, by.get('kernel-fwd')?.backendsMpps)} | ${ratio(r.backendsMpps, by.get('iptables-dnat')?.backendsMpps)} |`,
    ),
  ].join('\n');
}
