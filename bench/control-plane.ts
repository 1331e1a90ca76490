/**
 * Part 4: the control plane, through the real CLI in the lab.
 *
 * 1. Backend change to data plane: the generator sends paced UDP packets to
 *    a VIP, each of a new flow (new source port/address every packet), so
 *    every packet is placed by the current Maglev table. `lbctl backend add`
 *    adds be3 to a VIP that has be1 and be2; bench/xdp_count.bpf.c on be3's
 *    eth0 notes when the first packet arrives (bpf_ktime_get_ns, the clock of
 *    process.hrtime). Reported: how long the command took, and when the
 *    first packet reached be3 counted from the command's return (negative:
 *    before the CLI process had exited) and from its start.
 * 2. A config file with VIPS VIPs × 10 ipip backends each (distinct
 *    addresses behind the lab's router, nothing there; `check: none`),
 *    Maglev table size 65537: wall time of
 *    `lbctl start --config` (it returns once the maps are written, XDP is
 *    attached and the daemon answers), then the daemon's RSS.
 * 3. Maglev table build time alone (src/maglev/maglev.ts, no lab, no maps):
 *    N backends, M = 65537, the two sizes interleaved, median ms per table.
 * 4. A CLI call, wall time from spawn to exit: `lbctl --version`, `lbctl
 *    --help` and `lbctl backend weight` (a change the daemon of 1. applies),
 *    beside `node -e 0` (a Node process that does nothing: the floor) and
 *    the same change as a request on the socket (the daemon's share),
 *    interleaved run by run.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, LAB } from '../test/lab/lab.js';
import { LBCTL, LabBalancer } from '../test/support/balancer.js';
import { call } from '../src/api/client.js';
import { DEFAULT_TABLE_SIZE, type MaglevBackend, buildMaglevTable } from '../src/maglev/maglev.js';
import { Counter, attachPass } from './lab-xdp.js';
import { type Log, macOf, median, nowNs, sh, sleep, startGenerator } from './common.js';

export interface ControlOptions {
  /** backend add trials (default 5). */
  trials?: number;
  /** VIPs in the config-load test (default 1000), 10 backends each. */
  vips?: number;
  /** Packets per second of the paced generator (default 20,000). */
  packetsPerSecond?: number;
  /** Timed builds per Maglev case (default 21). */
  maglevBuilds?: number;
  /** Timed runs of each CLI command (default 30). */
  cliRuns?: number;
  /** How long `lbctl start --config` may take before the daemon is killed and the load reported as not done (default 120 s). */
  loadDeadlineMs?: number;
  log?: Log;
}

export interface Trial {
  /** Request to acknowledgement, ms. */
  readonly commandMs: number;
  /** First packet at the new backend after the acknowledgement (negative: before it), ms. */
  readonly afterReturnMs: number;
  /** First packet at the new backend after the request started, ms. */
  readonly afterStartMs: number;
}

export interface TrialSummary extends Trial {
  /** Medians of these. */
  readonly samples: Trial[];
}

export interface ControlResult {
  readonly trials: number;
  readonly packetsPerSecond: number;
  /** `lbctl backend add` run as a command: returned = the CLI process exited. */
  readonly cli: TrialSummary;
  /** The same request through the daemon's socket API: returned = the answer arrived. */
  readonly api: TrialSummary;
  readonly vips: number;
  readonly backendsPerVip: number;
  readonly tableSize: number;
  /** `lbctl start --config` to its return (the daemon answers); undefined if not within loadDeadlineMs. */
  readonly loadMs?: number;
  readonly loadDeadlineMs: number;
  /** `lbctl start --config` to the daemon's first "data plane updated" log line: every map written (XDP attaches right after). */
  readonly writtenMs?: number;
  /** The daemon's RSS once it answered, or at the deadline. */
  readonly rssMiB: number;
  readonly peakRssMiB: number;
  readonly idleRssMiB: number;
  readonly maglev: MaglevBuild[];
  readonly cliCalls: CliCalls;
}

export interface CliCalls {
  readonly runs: number;
  /** `node -e 0` first (the floor), then the lbctl commands; median and fastest wall ms, spawn to exit. */
  readonly rows: ReadonlyArray<{ readonly command: string; readonly medianMs: number; readonly minMs: number }>;
  /** The same change as a request on an open socket, sent to answer: the daemon's share of the CLI's change. */
  readonly socketChange: { readonly medianMs: number; readonly minMs: number };
}

export interface MaglevBuild {
  readonly backends: number;
  readonly tableSize: number;
  readonly builds: number;
  /** Median and fastest ms per table. */
  readonly medianMs: number;
  readonly minMs: number;
}

/** Backend counts of the Maglev build-time measurement. */
export const MAGLEV_CASES = [1000, 10] as const;

/**
 * Wall time of buildMaglevTable (the daemon's own builder) for N backends of
 * weight 1 named by address, as the daemon names them; the cases are
 * interleaved build by build, after two untimed builds each (JIT warm-up).
 */
export function measureMaglevBuild(builds = 21, cases: readonly number[] = MAGLEV_CASES, tableSize = DEFAULT_TABLE_SIZE): MaglevBuild[] {
  const sets = cases.map((n) =>
    Array.from({ length: n }, (_, i): MaglevBackend => ({ name: `10.30.${Math.floor(i / 250)}.${(i % 250) + 1}`, weight: 1, id: i + 1 })),
  );
  const times = cases.map(() => [] as number[]);
  for (let round = -2; round < builds; round++) {
    sets.forEach((set, i) => {
      const start = nowNs();
      const table = buildMaglevTable(set, tableSize);
      const ms = Number(nowNs() - start) / 1e6;
      if (table.length !== tableSize) throw new Error(`Maglev table of ${table.length} slots, expected ${tableSize}`);
      if (round >= 0) times[i]!.push(ms);
    });
  }
  return cases.map((n, i) => ({ backends: n, tableSize, builds, medianMs: median(times[i]!), minMs: Math.min(...times[i]!) }));
}

/** The commands of measureCliCalls, as reported. */
export const CLI_COMMANDS = ['node -e 0', 'lbctl --version', 'lbctl --help', 'lbctl backend weight VIP ADDRESS N'] as const;

/**
 * Wall time of CLI calls, spawn to exit, interleaved run by run, and of the
 * same change sent on the socket. The CLI sets the backend's weight to 1 or
 * 2 and the socket request to 3, so every call changes something.
 * NODE_EXTRA_CA_CERTS is left out of the environment: it makes every Node
 * process read a certificate file at start, and the CLI makes no TLS
 * connection.
 */
export async function measureCliCalls(socket: string, vip: string, backend: string, runs: number): Promise<CliCalls> {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const commands: Array<(run: number) => string[]> = [
    () => [process.execPath, '-e', '0'],
    () => [LBCTL, '--version'],
    () => [LBCTL, '--help'],
    (run) => [LBCTL, 'backend', 'weight', vip, backend, run & 1 ? '2' : '1', '--socket', socket],
  ];
  const times = commands.map(() => [] as number[]);
  const socketTimes: number[] = [];
  // Run -1 is not timed: it warms the file cache.
  for (let run = -1; run < runs; run++) {
    commands.forEach((command, i) => {
      const [file, ...args] = command(run);
      const start = nowNs();
      const r = spawnSync(file!, args, { env, encoding: 'utf8' });
      const ms = Number(nowNs() - start) / 1e6;
      if (r.status !== 0) throw new Error(`${command(run).join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
      if (run >= 0) times[i]!.push(ms);
    });
    const start = nowNs();
    await call(socket, 'backend.weight', { vip, address: backend, weight: 3 });
    if (run >= 0) socketTimes.push(Number(nowNs() - start) / 1e6);
  }
  return {
    runs,
    rows: CLI_COMMANDS.map((command, i) => ({ command, medianMs: median(times[i]!), minMs: Math.min(...times[i]!) })),
    socketChange: { medianMs: median(socketTimes), minMs: Math.min(...socketTimes) },
  };
}

const PORT = 9;
const BACKENDS_PER_VIP = 10;
const TABLE_SIZE = 65537;
const address = (b: string) => LAB.backends.find((x) => x.name === b)!.address;

function rssMiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
}

export function bigConfig(vips: number): string {
  const lines = ['vips:'];
  let k = 0;
  for (let v = 0; v < vips; v++) {
    // No health checks: the addresses lead nowhere, and what is timed is loading the config, not 10,000 probes failing.
    lines.push(
      `  - vip: 10.200.${v >> 8}.${v & 255}:80/tcp`,
      '    forward: ipip',
      `    table_size: ${TABLE_SIZE}`,
      '    check: none',
      '    backends:',
    );
    for (let b = 0; b < BACKENDS_PER_VIP; b++, k++) lines.push(`      - address: 10.30.${Math.floor(k / 250)}.${(k % 250) + 1}`);
  }
  lines.push('');
  return lines.join('\n');
}

export async function measureControlPlane(options: ControlOptions = {}): Promise<ControlResult> {
  const trials = options.trials ?? 5;
  const vips = options.vips ?? 1000;
  const pps = options.packetsPerSecond ?? 20_000;
  const loadDeadlineMs = options.loadDeadlineMs ?? 120_000;
  const log = options.log ?? (() => undefined);

  // --- 3 first, while no lab is up: the builder alone.
  const maglev = measureMaglevBuild(options.maglevBuilds ?? 21);
  log(
    `Maglev build, M = ${TABLE_SIZE}: ${maglev.map((m) => `N = ${m.backends} ${m.medianMs.toFixed(2)} ms`).join(', ')} (median of ${maglev[0]!.builds})`,
  );

  const lab = await Lab.up({ decap: false });
  const lb = new LabBalancer(lab);
  const counters: Counter[] = [];
  try {
    // --- 1. backend add -> first packet at the new backend
    await attachPass(lab, 'sw', 'client');
    const vip = `${LAB.vips[0]}:${PORT}/udp`;
    await lb.start();
    const status = await lb.json<{ pid: number }>(['status']);
    const idle = rssMiB(status.pid);
    await lb.ok(['vip', 'add', vip, '--forward', 'l2dsr']);
    for (const b of ['be1', 'be2']) await lb.ok(['backend', 'add', vip, address(b)]);
    // Only packets to the VIP count: the daemon's UDP health probes go to the backends' own addresses.
    for (const b of ['be1', 'be2', 'be3']) counters.push(await Counter.attach(lab, b, 'eth0', 'drop', LAB.vips[0]));
    const be3 = counters[2]!;
    // be3's MAC in the balancer's neighbour table, as for a backend that has talked before.
    await sh(lab, 'lb', ['ping', '-c1', '-W1', address('be3')]);

    const repeat = 4;
    const intervalUs = Math.round((repeat * 1e6) / pps);
    const generator = startGenerator(lab, {
      ifname: 'eth0',
      dstMac: await macOf(lab, 'lb'),
      saddr: '172.16.0.0',
      daddr: LAB.vips[0],
      flows: 2 ** 32,
      threads: 1,
      repeat,
      intervalUs,
      durationMs: trials * 2000 + 3000,
    });
    const cli: Trial[] = [];
    const api: Trial[] = [];
    try {
      await generator.ready;
      await sleep(300);
      if (counters[0]!.read().packets === 0 && counters[1]!.read().packets === 0)
        throw new Error('control plane: the paced generator reaches no backend');
      // Waits for be3's first packet after `add` (which resolves when the change is acknowledged).
      const trial = async (add: () => Promise<void>) => {
        be3.reset();
        const start = nowNs();
        await add();
        const answered = nowNs();
        const deadline = Date.now() + 2000;
        let first = 0n;
        while ((first = be3.read().firstNs) === 0n && Date.now() < deadline) await sleep(1);
        if (first === 0n) {
          const list = await lb.cli(['backend', 'list', vip]).catch((error: Error) => ({ stdout: error.message }));
          throw new Error(
            `control plane: no packet to the VIP reached the added backend within 2 s (be1 ${counters[0]!.read().packets}, be2 ${counters[1]!.read().packets} packets so far); backend list:\n${list.stdout}`,
          );
        }
        await lb.ok(['backend', 'remove', vip, address('be3')]);
        await sleep(200);
        return {
          commandMs: Number(answered - start) / 1e6,
          afterReturnMs: Number(first - answered) / 1e6,
          afterStartMs: Number(first - start) / 1e6,
        };
      };
      for (let i = 0; i < trials; i++) {
        cli.push(
          await trial(async () => {
            await lb.ok(['backend', 'add', vip, address('be3')]);
          }),
        );
        api.push(
          await trial(async () => {
            await call(lb.socket, 'backend.add', { vip, address: address('be3') });
          }),
        );
      }
    } finally {
      generator.child.kill('SIGTERM');
      await generator.done.catch(() => undefined);
    }
    log(
      `backend add -> first packet at the new backend: CLI ${cli.map((s) => s.afterReturnMs.toFixed(2)).join(', ')} ms after it exited; API ${api.map((s) => s.afterReturnMs.toFixed(2)).join(', ')} ms after the answer`,
    );
    // --- 4. CLI calls against this daemon, the generator stopped
    const cliCalls = await measureCliCalls(lb.socket, vip, address('be1'), options.cliRuns ?? 30);
    log(`CLI calls, median of ${cliCalls.runs}: ${cliCalls.rows.map((r) => `${r.command} ${r.medianMs.toFixed(1)} ms`).join(', ')}`);
    await lb.stop();

    // --- 2. VIPS × 10 backends from a config file
    await sh(lab, 'lb', ['ip', 'route', 'replace', '10.30.0.0/16', 'via', LAB.router.front]);
    const config = join(lab.runtimeDir, 'bench-control.yaml');
    writeFileSync(config, bigConfig(vips));
    const load = await loadBigConfig(lab, lb, config, vips, loadDeadlineMs, log);
    const summary = (t: Trial[]): TrialSummary => ({
      commandMs: median(t.map((x) => x.commandMs)),
      afterReturnMs: median(t.map((x) => x.afterReturnMs)),
      afterStartMs: median(t.map((x) => x.afterStartMs)),
      samples: t,
    });
    return {
      trials,
      packetsPerSecond: pps,
      cli: summary(cli),
      api: summary(api),
      vips,
      backendsPerVip: BACKENDS_PER_VIP,
      tableSize: TABLE_SIZE,
      ...load,
      idleRssMiB: idle.rss,
      maglev,
      cliCalls,
    };
  } finally {
    await lb.stop().catch(() => undefined);
    for (const c of counters) await c.detach().catch(() => undefined);
    await lab.down();
  }
}

type LoadResult = Pick<ControlResult, 'loadMs' | 'loadDeadlineMs' | 'writtenMs' | 'rssMiB' | 'peakRssMiB'>;

/**
 * `lbctl start --config` with a deadline. The daemon logs at debug level to
 * its log file: the first line gives its pid, the first "dataplane.updated"
 * line when every map was written. Past the deadline the daemon (the one
 * this started, by pid) is killed and its pins removed.
 */
async function loadBigConfig(lab: Lab, lb: LabBalancer, config: string, vips: number, deadlineMs: number, log: Log): Promise<LoadResult> {
  const stateDir = join(lab.runtimeDir, 'bench-control-state');
  const pinDir = join('/sys/fs/bpf', `lbctl-bench-${process.pid}-load`);
  const logPath = join(stateDir, 'lbctl.log');
  rmSync(logPath, { force: true });
  let pid: number | undefined;
  let writtenMs: number | undefined;
  const wallStart = Date.now();
  const readLog = () => {
    if (pid !== undefined && writtenMs !== undefined) return;
    let text = '';
    try {
      text = readFileSync(logPath, 'utf8');
    } catch {
      return;
    }
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const entry = JSON.parse(line) as { pid?: number; event?: string; time?: string | number };
        pid ??= entry.pid;
        if (writtenMs === undefined && entry.event === 'dataplane.updated' && entry.time !== undefined)
          writtenMs = new Date(entry.time).getTime() - wallStart;
      } catch {
        // a line being written
      }
    }
  };
  const watcher = setInterval(readLog, 50);
  const t0 = nowNs();
  let loadMs: number | undefined;
  try {
    const started = await lab.exec(
      'lb',
      [
        LBCTL,
        'start',
        '--interface',
        'eth0',
        '--config',
        config,
        '--state-dir',
        stateDir,
        '--socket',
        lb.socket,
        '--pin-dir',
        pinDir,
        '--log-level',
        'debug',
      ],
      { timeoutMs: deadlineMs },
    );
    loadMs = Number(nowNs() - t0) / 1e6;
    if (started.code !== 0) throw new Error(`lbctl start --config (${vips} VIPs) failed: ${started.stderr}`);
  } catch (error) {
    if (!/timed out/.test((error as Error).message)) throw error;
  } finally {
    clearInterval(watcher);
    readLog();
  }
  if (pid === undefined) throw new Error(`lbctl start --config (${vips} VIPs): no daemon pid in ${logPath}`);
  const rss = rssMiB(pid);
  if (loadMs !== undefined) {
    const loaded = await lb.json<{ pid: number; vips: number }>(['status']);
    if (loaded.vips !== vips) throw new Error(`lbctl loaded ${loaded.vips} VIPs, expected ${vips}`);
    log(
      `${vips} VIPs × ${BACKENDS_PER_VIP} backends: maps written after ${writtenMs ?? NaN} ms, lbctl start returned after ${loadMs.toFixed(0)} ms, RSS ${rss.rss.toFixed(1)} MiB`,
    );
    await lb.stop();
  } else {
    log(
      `${vips} VIPs × ${BACKENDS_PER_VIP} backends: maps written after ${writtenMs ?? NaN} ms, lbctl start had not returned after ${deadlineMs} ms: killing the daemon (pid ${pid}), RSS ${rss.rss.toFixed(1)} MiB`,
    );
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await sleep(50);
    rmSync(pinDir, { recursive: true, force: true });
  }
  return {
    ...(loadMs !== undefined ? { loadMs } : {}),
    loadDeadlineMs: deadlineMs,
    ...(writtenMs !== undefined ? { writtenMs } : {}),
    rssMiB: rss.rss,
    peakRssMiB: rss.peak,
  };
}

export function controlTable(r: ControlResult): string {
  return [
    '| measurement | result |',
    '|---|---:|',
    `| \`lbctl backend add\`: the command, start to exit | ${r.cli.commandMs.toFixed(1)} ms |`,
    `| first packet at the new backend, after the command exited (negative: before) | ${r.cli.afterReturnMs.toFixed(2)} ms |`,
    `| first packet at the new backend, after the command started | ${r.cli.afterStartMs.toFixed(1)} ms |`,
    `| \`backend.add\` through the daemon's socket: request to answer | ${r.api.commandMs.toFixed(2)} ms |`,
    `| first packet at the new backend, after the answer (negative: before) | ${r.api.afterReturnMs.toFixed(2)} ms |`,
    `| first packet at the new backend, after the request was sent | ${r.api.afterStartMs.toFixed(2)} ms |`,
    `| \`lbctl start --config\`: ${r.vips} VIPs × ${r.backendsPerVip} ipip backends, M = ${r.tableSize}: every map written (the daemon's log) | ${r.writtenMs !== undefined ? `${(r.writtenMs / 1000).toFixed(2)} s` : 'not logged'} |`,
    `| \`lbctl start --config\`: the same, until the command returns (the daemon answers) | ${r.loadMs !== undefined ? `${(r.loadMs / 1000).toFixed(2)} s` : `**not within ${(r.loadDeadlineMs / 1000).toFixed(0)} s** (then killed)`} |`,
    `| daemon RSS with that config (peak during the load)${r.loadMs === undefined ? ', at the deadline' : ''} | ${r.rssMiB.toFixed(0)} MiB (${r.peakRssMiB.toFixed(0)} MiB) |`,
    `| daemon RSS with no VIPs | ${r.idleRssMiB.toFixed(0)} MiB |`,
    ...r.maglev.map(
      (m) =>
        `| Maglev table build alone (src/maglev/maglev.ts): N = ${m.backends} backends, M = ${m.tableSize}, median of ${m.builds} (fastest) | ${m.medianMs.toFixed(2)} ms (${m.minMs.toFixed(2)} ms) |`,
    ),
    ...r.cliCalls.rows.map((row, i) => {
      const floor = r.cliCalls.rows[0]!.medianMs;
      const what = i === 0 ? `CLI call floor: \`${row.command}\` (a Node process that does nothing)` : `CLI call: \`${row.command}\``;
      const above = i === 0 ? '' : `, ${(row.medianMs - floor).toFixed(1)} ms above the floor`;
      return `| ${what}, spawn to exit, median of ${r.cliCalls.runs} (fastest) | ${row.medianMs.toFixed(1)} ms (${row.minMs.toFixed(1)} ms)${above} |`;
    }),
    `| the same change as a \`backend.weight\` request on the socket: request to answer (the daemon's share), median of ${r.cliCalls.runs} (fastest) | ${r.cliCalls.socketChange.medianMs.toFixed(1)} ms (${r.cliCalls.socketChange.minMs.toFixed(1)} ms) |`,
  ].join('\n');
}
