/** The results file (Markdown) from whatever parts ran. */
import { cpus, release } from 'node:os';
import type { CostRow, FloodResult } from './dataplane-cost.js';
import { costTable, floodTable } from './dataplane-cost.js';
import type { RateResult } from './packet-rate.js';
import { rateTable } from './packet-rate.js';
import type { HttpResult } from './http.js';
import { httpTable } from './http.js';
import type { ControlResult } from './control-plane.js';
import { controlTable } from './control-plane.js';
import { type FleetBenchResult, fleetTable } from './fleet.js';

export interface BenchResults {
  cost?: { rows: CostRow[]; iterations: number; rounds: number; flood?: FloodResult };
  rate?: RateResult;
  http?: HttpResult;
  control?: ControlResult;
  fleet?: FleetBenchResult;
}

export interface ReportMeta {
  readonly command: string;
  readonly startedAt: Date;
  readonly seconds: number;
  readonly plot?: string;
  readonly quick: boolean;
  /** Source revision measured (git describe), if known. */
  readonly revision?: string;
  /** Parts that failed (their sections are missing). */
  readonly failures?: ReadonlyArray<{ readonly part: string; readonly message: string }>;
  /** 1-minute load average of the host when the run started and ended (other work on a shared host shows here). */
  readonly load?: { readonly start: number; readonly end: number };
}

/** Katran, measured the same way on these hosts (../shared/notes/platform.md). */
const KATRAN = { established: 234, newFlow: [437, 458], nonVip: 133, bare: 79, floor: 83 };

/**
 * Katran's default build in multiples of a bare XDP_PASS measured beside it
 * (issue 15): a SYN over 64k tuples, an established flow, an established
 * flow among a million tracked ones.
 */
const KATRAN_PASS_RATIO = { newFlow: 5.4, established: 3.3, establishedMillion: 6.2 };

/** The rows the established-flow targets apply to (not the cross-family tunnels). */
const TARGET_ROW = /^IPv[46] balancer (l2dsr|ipip): established flow$/;
const NEW_FLOW_ROW = /^IPv[46] balancer (l2dsr|ipip): new flow \(SYN, /;
const MILLION_ROW = /^IPv[46] balancer ipip: established flow, .* flows tracked$/;
const NOT_VIP_ROW = /^IPv[46] balancer: not a VIP$/;

const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);
const yes = (ok: boolean) => (ok ? 'met' : '**not met**');

/** The targets table of issue 7 (Markdown lines), for whatever parts ran. */
export function targets(r: BenchResults): string[] {
  const lines: string[] = ['| target | measured | |', '|---|---|---|'];
  if (r.cost) {
    const bare = r.cost.rows.find((x) => x.scenario === 'bare XDP_PASS')!.ns;
    const katran = (KATRAN.established / KATRAN.bare) * bare;
    for (const row of r.cost.rows.filter((x) => TARGET_ROW.test(x.scenario))) {
      lines.push(
        `| ${row.scenario}: below Katran's established flow (IPv4, ${KATRAN.established} ns at a ${KATRAN.bare} ns bare pass; ${f1(katran)} ns scaled to this run's ${f1(bare)} ns) | ${f1(row.ns)} ns | ${yes(row.ns < katran)} |`,
      );
      lines.push(`| ${row.scenario}: within 2× of the floor program (IPv${row.family}) | ${f2(row.vsFloor)}× | ${yes(row.vsFloor <= 2)} |`);
    }
    const newFlowLimit = 0.8 * KATRAN_PASS_RATIO.newFlow;
    for (const row of r.cost.rows.filter((x) => NEW_FLOW_ROW.test(x.scenario)))
      lines.push(
        `| ${row.scenario}: ≤ 0.8× Katran's new flow (${KATRAN_PASS_RATIO.newFlow}× bare pass): ≤ ${f2(newFlowLimit)}× bare pass | ${f2(row.vsPass)}× (${f2(row.vsPass / KATRAN_PASS_RATIO.newFlow)}× Katran) | ${yes(row.vsPass <= newFlowLimit)} |`,
      );
    for (const row of r.cost.rows.filter((x) => TARGET_ROW.test(x.scenario)))
      lines.push(
        `| ${row.scenario}: ≤ 2.8× bare pass (Katran ${KATRAN_PASS_RATIO.established}×) | ${f2(row.vsPass)}× | ${yes(row.vsPass <= 2.8)} |`,
      );
    for (const row of r.cost.rows.filter((x) => MILLION_ROW.test(x.scenario)))
      lines.push(
        `| ${row.scenario}: below Katran's (${KATRAN_PASS_RATIO.establishedMillion}× bare pass) | ${f2(row.vsPass)}× (${f2(row.vsPass / KATRAN_PASS_RATIO.establishedMillion)}× Katran) | ${yes(row.vsPass < KATRAN_PASS_RATIO.establishedMillion)} |`,
      );
    for (const row of r.cost.rows.filter((x) => NOT_VIP_ROW.test(x.scenario)))
      lines.push(`| ${row.scenario}: ≤ 1.5× bare pass | ${f2(row.vsPass)}× | ${yes(row.vsPass <= 1.5)} |`);
    const flood = r.cost.flood;
    if (flood)
      lines.push(
        `| a flood of ${flood.flood.toLocaleString('en-US')} spoofed SYNs evicts no established flow (${flood.established.toLocaleString('en-US')} tracked) | ${flood.syns.survivors.toLocaleString('en-US')} survive | ${yes(flood.syns.survivors === flood.established)} |`,
      );
  }
  if (r.http) {
    for (const variant of ['keep-alive', 'new-connection'] as const) {
      const rows = r.http.rows.filter((x) => x.variant === variant);
      const direct = rows.find((x) => x.system === 'direct')!.requestsPerSecond;
      const limit = rows.find((x) => x.system === 'direct-ecmp')!.requestsPerSecond;
      const others = rows.filter((x) => !x.system.startsWith('lbctl') && !x.system.startsWith('direct'));
      const best = Math.max(...others.map((x) => x.requestsPerSecond));
      for (const l of rows.filter((x) => x.system.startsWith('lbctl'))) {
        lines.push(
          `| ${l.system} (${variant}): requests/s ≥ 0.9× straight to the same backends (direct-ecmp) | ${f2(l.requestsPerSecond / limit)}× (${f2(l.requestsPerSecond / direct)}× be1 alone) | ${yes(l.requestsPerSecond >= 0.9 * limit)} |`,
        );
        lines.push(
          `| ${l.system} (${variant}): ahead of iptables and every proxy | ${f2(l.requestsPerSecond / best)}× the best of them | ${yes(l.requestsPerSecond > best)} |`,
        );
      }
    }
  }
  if (r.control) {
    lines.push(
      `| a backend change visible in the data plane within 10 ms (of the command returning) | first packet ${f2(r.control.cli.afterReturnMs)} ms after \`lbctl\` exited, ${f2(r.control.api.afterReturnMs)} ms after the API answered; ${f1(r.control.api.afterStartMs)} ms after the API request was sent | ${yes(r.control.cli.afterReturnMs <= 10 && r.control.api.afterReturnMs <= 10)} |`,
    );
    const [floor, ...calls] = r.control.cliCalls.rows;
    lines.push(
      `| \`lbctl --help\`, \`--version\` and a change answer within 100 ms (wall, median) | ${calls.map((c) => `${c.command.split(' ').slice(0, 3).join(' ')} ${f1(c.medianMs)} ms`).join(', ')}; \`${floor!.command}\` ${f1(floor!.medianMs)} ms; the change on the socket ${f1(r.control.cliCalls.socketChange.medianMs)} ms | ${yes(calls.every((c) => c.medianMs < 100))} |`,
    );
  }
  if (r.fleet) {
    const prompt = r.fleet.ways.filter((w) => w.way !== 'stall' && w.way !== 'cut-off');
    if (prompt.length > 0) {
      const slowest = Math.max(...prompt.map((w) => w.withdrawnMs.max));
      lines.push(
        `| a node's withdrawal at the fleet's router within 1 s (${prompt.map((w) => w.way).join(', ')}) | slowest ${f1(slowest)} ms | ${yes(slowest < 1000)} |`,
      );
    }
    const stall = r.fleet.ways.find((w) => w.way === 'stall');
    if (stall) {
      const failOpen = 0.75 * r.fleet.killSwitchTimeoutMs;
      lines.push(
        `| a stuck event loop withdrawn before the kill-switch can fail open (${(failOpen / 1000).toFixed(2)} s at the earliest) | slowest ${f1(stall.withdrawnMs.max)} ms | ${yes(stall.withdrawnMs.max < failOpen)} |`,
      );
    }
    const broken = r.fleet.ways.reduce((n, w) => n + w.connectionsBroken + w.requestsFailed, 0);
    const total = r.fleet.ways.reduce((n, w) => n + w.connections + w.requests, 0);
    lines.push(`| no connection or request broken by a node leaving or rejoining | ${broken} of ${total} | ${yes(broken === 0)} |`);
  }
  return lines;
}

export function renderReport(r: BenchResults, meta: ReportMeta): string {
  const cpu = cpus();
  const out: string[] = [
    '# lbctl benchmarks',
    '',
    `Measured ${meta.startedAt.toISOString()} on Linux ${release()}, ${cpu.length} × ${cpu[0]?.model ?? 'CPU'}; command: \`${meta.command}\`; ${meta.revision ? `revision ${meta.revision}; ` : ''}took ${Math.floor(meta.seconds / 60)} min ${Math.floor(meta.seconds % 60)} s${meta.load ? `; 1-minute load average ${meta.load.start.toFixed(2)} at the start, ${meta.load.end.toFixed(2)} at the end` : ''}.`,
    ...(meta.quick ? ['', '**Quick run (`BENCH_QUICK=1`): small counts, one round; shapes, not figures to quote.**'] : []),
    '',
    'Everything below comes from this one run. The hosts are shared and noisy: compare the ratios, which are measured side by side (interleaved), rather than absolute figures across runs.',
    '',
  ];
  if (meta.failures?.length) {
    out.push(
      '## Failed parts',
      '',
      'These parts did not complete; their sections are missing below.',
      '',
      ...meta.failures.map((f) => `- **${f.part}**: ${f.message.split('\n')[0]}`),
      '',
    );
  }
  if (r.cost || r.http || r.control || r.fleet) out.push('## Against the targets', '', ...targets(r), '');

  if (r.cost) {
    out.push(
      '## 1. Data-plane cost per packet',
      '',
      `BPF_PROG_TEST_RUN with repeat 1 in a loop (repeat N would feed an encapsulating program its own output), ${r.cost.iterations.toLocaleString('en-US')} runs per scenario and round, median of ${r.cost.rounds} rounds' means, scenarios interleaved round by round.`,
      'Each run\'s kernel timing includes a fixed harness cost, which the bare XDP_PASS row shows; the floor program (bench/xdp_floor.bpf.c) parses Ethernet and the IPv4 or IPv6 header, swaps the MACs and returns XDP_TX: a balancer cannot do less. "× floor" compares each row with the floor on a frame of the same (client-side) family.',
      "Frames: TCP, no payload; 54 bytes over IPv4, 74 over IPv6. New flows: distinct TCP SYNs, 64k or a million of them (each a Maglev lookup and a note of its backend: a SYN is not tracked, docs/connection-tracking.md); the first packet after the SYN: ACKs of flows never seen, fresh every round (each a flow-table insert; the table fills, then evicts); established: 256 tracked flows, or a million tracked flows each sent once per round (cache-cold lookups); 10 backends per VIP, Maglev table size 65537; the maps are written by the daemon's reconciler, the interface's MAC as the daemon will write it. l2dsr rewrites the MACs; ipip encapsulates in the backend's family: 4in4, 6in6, and across families 4in6 (IPv4 VIP, IPv6 backends) and 6in4. Before timing, the first packet of every scenario is checked to take its path (action, backend MAC, outer header).",
      `Katran (default build, 65537-slot ring, per-CPU LRU; IPv4), measured the same way on these hosts: bare XDP_PASS ${KATRAN.bare} ns, established ${KATRAN.established} ns, new flow ${KATRAN.newFlow.join('-')} ns, non-VIP ${KATRAN.nonVip} ns (../shared/notes/platform.md).`,
      '',
      costTable(r.cost.rows),
      '',
      ...(r.cost.flood
        ? [
            `SYN flood: ${r.cost.flood.established.toLocaleString('en-US')} established flows of an IPv4 ipip VIP are tracked (flow table of ${r.cost.flood.flowTableSize.toLocaleString('en-US')}), then ${r.cost.flood.flood.toLocaleString('en-US')} spoofed packets of distinct tuples arrive; ${r.cost.flood.touchEvery >= r.cost.flood.flood ? 'the established flows send nothing meanwhile (quiet connections: the hardest case for an LRU)' : `every established flow sends one packet per ${r.cost.flood.touchEvery.toLocaleString('en-US')} flood packets`}. Survivors and entries are counted in the flow table afterwards; each flood runs on a fresh data plane.`,
            '',
            floodTable(r.cost.flood),
            '',
          ]
        : []),
    );
  }
  if (r.rate) {
    out.push(
      '## 2. Packet rate through the balancer in the lab',
      '',
      `A generator of our own (bench/xdp_traffic_gen.bpf.c on BPF_PROG_TEST_RUN live frames, bench/traffic-gen.ts) in the client namespace sends 60-byte UDP packets, ${r.rate.flows} flows, to port 9 of a VIP for ${r.rate.windowMs / 1000} s per run (after a warm-up), ${r.rate.threads} generator thread${r.rate.threads > 1 ? 's' : ''}; median of ${r.rate.rounds} interleaved rounds.`,
      r.rate.switch === 'xdp'
        ? "The lab's switch namespace bridges with a Linux bridge, whose socket-buffer path costs several times what any balancer does per packet; for this part bench/xdp_switch.bpf.c on the switch ports forwards frames to the benchmark's hosts (client, balancer, be1..be3) straight to their ports as XDP frames, as a NIC's driver hands frames to XDP, and counts the benchmark's packets per ingress port: \"leaving the balancer\" is what entered the switch from the balancer, \"offered\" what entered it from the client during the window. The balancer's eth0 always runs an XDP program: lbctl's, the plain forwarder, or (kernel-fwd, iptables-dnat) xdp_pass, the driver-to-stack path of a NIC with XDP. bench/xdp_count.bpf.c counts (and drops) what reaches be1..be3 on their eth0."
        : "The switch is the lab's Linux bridge (BENCH_RATE_SWITCH=bridge), whose socket-buffer path costs far more per packet than any of the balancers: the absolute rates are the lab's, the ratios are what to read. bench/xdp_count.bpf.c counts the packets where they leave the balancer (on its switch port, passing them on) and where they reach be1..be3 (on their eth0, dropping them).",
      `With ${r.rate.threads === 1 ? "one generator thread every packet is handled start to end on one core (generator, switch, balancer, backend: all in softirq of that core), so the rate is one core's worth and a slower hop shows directly as a lower rate. BENCH_RATE_THREADS=2 spreads the work over both cores; on these hosts its results vary widely from run to run, hence the default" : `${r.rate.threads} generator threads the work spreads over the cores (veth rx/tx channels set to match); on these hosts such results vary widely from run to run`}.`,
      'Every system but `direct` takes the same path: client → switch → balancer → switch → backend; `direct` goes client → switch → be1, one switch hop fewer. xdp-fwd is the floor for any XDP balancer on this path.',
      '',
      rateTable(r.rate),
      '',
    );
  }
  if (r.http) {
    out.push(
      '## 3. HTTP through the balancer in the lab',
      '',
      `wrk -t${r.http.threads} -c${r.http.connections} -d${r.http.seconds}s --latency from the client namespace against nginx on be1..be3 (one worker each) through each system; \`direct\` goes straight to be1 alone (what the issue names), \`direct-ecmp\` straight to be1..be3 without a balancer (a multipath route on the client, L4 hash, spreads the connections): the same backend capacity as the balanced systems, so that is the limit the ratios and the targets use. With one nginx worker per backend and 2 cores shared by everything, one backend alone can be slower than three behind a balancer. Keep-alive, and a new connection per request (\`-H 'Connection: close'\`). Median of ${r.http.rounds} rounds; in each round the systems run one after another, each round starting one system later than the previous (A B C ..., B C ... A, ...), both variants back to back.`,
      "lbctl runs only during its own runs (started with a config file, stopped after); iptables rules exist only during theirs. The proxies (nginx `stream`, HAProxy `mode tcp`, both with as many workers/threads as CPUs) listen on addresses of their own in the balancer namespace and connect to the backends from the balancer's address.",
      "iptables recipe: in the balancer namespace, `-t nat -A PREROUTING -d VIP -p tcp --dport 80 -m statistic --mode nth --every N --packet 0 -j DNAT --to-destination BACKEND:80` for N = 3, 2, then a plain DNAT to the last backend; ip_forward=1; during these runs the backends route the client through the balancer, so replies are un-NATed there and the backends still see the client's address (as with lbctl).",
      'CPU per request: busy time of all CPUs from /proc/stat over the run (user, system, irq, softirq: XDP and netfilter work happens in softirq, where no process owns it), divided by the requests; it includes wrk and the backends, so read it beside `direct-ecmp`. "Balancer-ns processes" is the user+system time of the processes in the balancer namespace (the proxies; lbctl\'s idle daemon), per request.',
      '',
      httpTable(r.http),
      ...(meta.plot ? [`![requests/s per system](${meta.plot})`, ''] : []),
    );
  }
  if (r.control) {
    out.push(
      '## 4. Control plane',
      '',
      `Backend change: the generator sends ${r.control.packetsPerSecond.toLocaleString('en-US')} UDP packets/s to a VIP with be1 and be2, each packet a new flow, so each is placed by the current Maglev table; \`backend add\` then adds be3, and bench/xdp_count.bpf.c on be3 notes its first packet to the VIP (bpf_ktime_get_ns, the same clock as the benchmark's process.hrtime). Median of ${r.control.trials} trials each through the CLI (\`lbctl backend add\`, a new Node process) and through the daemon's socket API (what the CLI sends). Negative: the packet arrived before the command had returned.`,
      `Config load: a YAML file with ${r.control.vips} VIPs × ${r.control.backendsPerVip} ipip backends (${(r.control.vips * r.control.backendsPerVip).toLocaleString('en-US')} distinct addresses behind the lab's router, where nothing answers, so \`check: none\`: what is timed is loading the config, not that many health checks failing), Maglev table size ${r.control.tableSize}; wall time of \`lbctl start --config\`, which returns once every map is written, XDP is attached and the daemon answers. RSS from /proc/PID/status of the daemon (kernel memory of the maps is not in it).`,
      `Maglev build: the daemon's table builder (src/maglev/maglev.ts) alone, in the benchmark's process, before any lab is up: N backends of weight 1, M = ${r.control.maglev[0]?.tableSize ?? 65537}, the cases interleaved after two untimed builds each; median ms per table.`,
      `CLI calls: wall time from spawn to exit of \`lbctl --version\`, \`lbctl --help\` and \`lbctl backend weight\` (a change, applied by the daemon above, each call flipping the weight between 1 and 2), beside \`node -e 0\` (a Node process that does nothing: no CLI can start faster) and the same change sent as a request on the socket (what the daemon takes), interleaved, ${r.control.cliCalls.runs} runs each, without NODE_EXTRA_CA_CERTS in the environment (it makes every Node process read a certificate file at start).`,
      '',
      controlTable(r.control),
      '',
    );
  }
  if (r.fleet) {
    const rounds = r.fleet.ways[0]?.rounds ?? 0;
    out.push(
      '## 5. Fleet failover',
      '',
      `Two lbctl nodes behind the lab's router (BIRD, ECMP over both, BFD 3 × 300 ms), each announcing its VIPs itself (hold-down ${r.fleet.holdDownMs / 1000} s, withdraw delay 0.5 s, kill-switch timeout ${r.fleet.killSwitchTimeoutMs / 1000} s, checks every 200 ms, rise 2, fall 2; test/support/fleet-failover.ts). During each failover the client behind the router keeps 40 IPv4 and 10 IPv6 long-lived connections (a message every 100 ms, each answer checked: same backend, its own port) and opens a new connection every 50 ms; the nodes take turns leaving, ${rounds} time${rounds === 1 ? '' : 's'} per way. "Withdrawn": from the action (the API request, the SIGKILL, the ptrace stop, the nft rule, the port down) to the router's route to the VIP (the slower of IPv4 and IPv6) without the node, seen by a poller in the router's namespace. "Back": from the node's return (started again, released, let go, rule deleted, port up) to the route with both nodes: its checks (rise), its hold-down and BGP. A cut-off node stays away ${r.fleet.cutOffMs / 1000} s.`,
      '',
      fleetTable(r.fleet),
      '',
    );
  }
  return out.join('\n');
}
