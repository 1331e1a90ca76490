/**
 * `sudo make bench`: installs what the benchmarks need (scripts/install-deps.sh
 * --bench), then this runs every part and writes bench/results/latest.md, latest.json and the
 * plot latest-http.svg; a full run that succeeds also rewrites the README's
 * performance section (between its bench:start/bench:end markers only).
 *
 *   1 cost     data-plane cost per packet (BPF_PROG_TEST_RUN)
 *   2 rate     packet rate through the balancer in the lab
 *   3 http     HTTP through lbctl and the alternatives (wrk)
 *   4 control  backend change to data plane, loading 1000 VIPs, RSS, CLI calls
 *   5 fleet    two nodes behind ECMP: withdrawal at the router and connections kept, per way a node leaves
 *
 * Knobs (environment):
 *   BENCH_QUICK=1          a ~2-minute smoke run of every part (writes quick.*)
 *   BENCH_PARTS=cost,http  only these parts (writes partial.* unless BENCH_OUT)
 *   BENCH_OUT=NAME         results file name under bench/results (NAME.md, NAME.json, NAME-http.svg)
 *   BENCH_REVISION=TEXT    what was measured, for the results file (default: git describe --dirty)
 *   BENCH_ITERATIONS, BENCH_ROUNDS            part 1 (default 1,000,000 runs, 5 rounds)
 *   BENCH_MANY_FLOWS       part 1: flows of the "million" rows (1,000,000)
 *   BENCH_FLOOD, BENCH_FLOOD_ESTABLISHED      part 1: spoofed packets of the flood and the flows it meets (10,000,000, 100,000)
 *   BENCH_RATE_ROUNDS, BENCH_RATE_SECONDS, BENCH_RATE_THREADS   part 2 (3, 3, 1)
 *   BENCH_RATE_SWITCH=bridge  part 2 through the lab's Linux bridge instead of bench/xdp_switch.bpf.c
 *   BENCH_HTTP_ROUNDS, BENCH_HTTP_SECONDS, BENCH_HTTP_CONNECTIONS  part 3 (5, 6, 64)
 *   BENCH_CONTROL_TRIALS, BENCH_CONTROL_VIPS, BENCH_CONTROL_DEADLINE (s), BENCH_MAGLEV_BUILDS, BENCH_CLI_RUNS
 *                          part 4 (5, 1000, 120, 21, 30)
 *   BENCH_FLEET_ROUNDS, BENCH_FLEET_CUT_OFF (s)   part 5 (3, 10)
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { ensureBpffs } from '../src/daemon/bpffs.js';
import { PROJECT_ROOT, bpfObjectPath } from '../src/paths.js';
import { measureDataplaneCost, measureSynFlood } from './dataplane-cost.js';
import { measurePacketRate } from './packet-rate.js';
import { httpSvg, measureHttp } from './http.js';
import { measureControlPlane } from './control-plane.js';
import { measureFleet } from './fleet.js';
import { type BenchResults, renderReport } from './report.js';
import { updateReadme } from './readme.js';

const PARTS = ['cost', 'rate', 'http', 'control', 'fleet'] as const;
type Part = (typeof PARTS)[number];

const env = process.env;
const quick = env.BENCH_QUICK === '1';
const num = (name: string, full: number, short: number) => {
  const text = env[name];
  if (text === undefined || text === '') return quick ? short : full;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}: expected a positive number, got "${text}"`);
  return value;
};
const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root (sudo make bench): it loads BPF programs and builds network namespaces');
  const parts = (env.BENCH_PARTS ?? PARTS.join(','))
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean) as Part[];
  for (const p of parts) if (!PARTS.includes(p)) throw new Error(`BENCH_PARTS: unknown part "${p}" (one of ${PARTS.join(', ')})`);
  const name = env.BENCH_OUT ?? (quick ? 'quick' : parts.length < PARTS.length ? 'partial' : 'latest');
  if (!/^[\w.-]+$/.test(name)) throw new Error(`BENCH_OUT: "${name}" is not a plain file name`);

  ensureBpffs('/sys/fs/bpf');

  const startedAt = new Date();
  // Before any result file is written: what is measured is the tree as it was at the start.
  const revision = env.BENCH_REVISION ?? gitRevision();
  const t0 = Date.now();
  const loadAtStart = loadavg()[0]!;
  const results: BenchResults = {};
  // A part that fails is reported as failed; the others still run and are written.
  const failures: Array<{ part: string; message: string }> = [];
  const timed = async <T>(part: Part, body: () => Promise<T> | T): Promise<T | undefined> => {
    const start = Date.now();
    log(`part ${part}: starting`);
    try {
      const value = await body();
      log(`part ${part}: done in ${((Date.now() - start) / 1000).toFixed(1)} s`);
      return value;
    } catch (error) {
      log(`part ${part}: FAILED after ${((Date.now() - start) / 1000).toFixed(1)} s: ${(error as Error).stack ?? String(error)}`);
      failures.push({ part, message: (error as Error).message ?? String(error) });
      return undefined;
    }
  };

  if (parts.includes('cost')) {
    const iterations = num('BENCH_ITERATIONS', 1_000_000, 100_000);
    const rounds = num('BENCH_ROUNDS', 5, 1);
    const cost = await timed('cost', () => ({
      rows: measureDataplaneCost({ iterations, rounds, manyFlows: num('BENCH_MANY_FLOWS', 1_000_000, 100_000), log }),
      flood: measureSynFlood({
        flood: num('BENCH_FLOOD', 10_000_000, 1_000_000),
        established: num('BENCH_FLOOD_ESTABLISHED', 100_000, 10_000),
        log,
      }),
    }));
    if (cost) results.cost = { iterations, rounds, ...cost };
  }
  if (parts.includes('rate')) {
    const rate = await timed('rate', () =>
      measurePacketRate({
        rounds: num('BENCH_RATE_ROUNDS', 3, 1),
        windowMs: num('BENCH_RATE_SECONDS', 3, 1) * 1000,
        threads: num('BENCH_RATE_THREADS', 1, 1),
        switch: env.BENCH_RATE_SWITCH === 'bridge' ? 'bridge' : 'xdp',
        log,
      }),
    );
    if (rate) results.rate = rate;
  }
  if (parts.includes('http')) {
    const http = await timed('http', () =>
      measureHttp({
        rounds: num('BENCH_HTTP_ROUNDS', 5, 1),
        seconds: num('BENCH_HTTP_SECONDS', 6, 2),
        connections: num('BENCH_HTTP_CONNECTIONS', 64, 64),
        log,
      }),
    );
    if (http) results.http = http;
  }
  if (parts.includes('control')) {
    const control = await timed('control', () =>
      measureControlPlane({
        trials: num('BENCH_CONTROL_TRIALS', 5, 2),
        vips: num('BENCH_CONTROL_VIPS', 1000, 100),
        loadDeadlineMs: num('BENCH_CONTROL_DEADLINE', 120, 60) * 1000,
        maglevBuilds: num('BENCH_MAGLEV_BUILDS', 21, 5),
        cliRuns: num('BENCH_CLI_RUNS', 30, 10),
        log,
      }),
    );
    if (control) results.control = control;
  }

  if (parts.includes('fleet')) {
    const fleet = await timed('fleet', () =>
      measureFleet({ rounds: num('BENCH_FLEET_ROUNDS', 3, 1), cutOffMs: num('BENCH_FLEET_CUT_OFF', 10, 10) * 1000, log }),
    );
    if (fleet) results.fleet = fleet;
  }

  const dir = join(PROJECT_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const plot = results.http ? `${name}-http.svg` : undefined;
  if (results.http && plot)
    writeFileSync(
      join(dir, plot),
      httpSvg(results.http, `lbctl vs alternatives: HTTP through the balancer (${startedAt.toISOString().slice(0, 10)})`),
    );
  const command = [quick ? 'BENCH_QUICK=1' : '', env.BENCH_PARTS ? `BENCH_PARTS=${env.BENCH_PARTS}` : '', 'sudo make bench']
    .filter(Boolean)
    .join(' ');
  const load = { start: loadAtStart, end: loadavg()[0]! };
  const report = renderReport(results, {
    command,
    startedAt,
    seconds: (Date.now() - t0) / 1000,
    quick,
    load,
    failures,
    ...(plot ? { plot } : {}),
    ...(revision ? { revision } : {}),
  });
  writeFileSync(join(dir, `${name}.md`), report);
  writeFileSync(
    join(dir, `${name}.json`),
    `${JSON.stringify({ startedAt, command, revision, quick, load, failures, results }, null, 2)}\n`,
  );
  process.stdout.write(report);
  log(`wrote bench/results/${name}.md${plot ? `, ${plot}` : ''} and ${name}.json`);
  // A full run is what the README quotes: only its section (between the markers) is rewritten.
  if (name === 'latest' && !quick && parts.length === PARTS.length && failures.length === 0) {
    try {
      updateReadme(join(dir, 'latest.json'));
      log('README.md: performance section updated');
    } catch (error) {
      log(`README.md not updated: ${(error as Error).message}`);
    }
  }
  if (failures.length > 0) {
    log(`${failures.length} part(s) failed: ${failures.map((f) => f.part).join(', ')}`);
    process.exitCode = 1;
  }
}

/** git describe, plus which data-plane sources differ from it (they decide part 1) and the object measured. */
function gitRevision(): string | undefined {
  const git = (args: string[]) =>
    execFileSync('git', ['-C', PROJECT_ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  let text: string;
  try {
    text = git(['describe', '--always', '--dirty']);
    if (!text) return undefined;
    const bpf = git(['status', '--porcelain', '--', 'bpf'])
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(3));
    if (bpf.length > 0) text += ` (uncommitted changes in ${bpf.join(', ')})`;
  } catch {
    return undefined;
  }
  try {
    const digest = createHash('sha256')
      .update(readFileSync(bpfObjectPath('xdp_balancer')))
      .digest('hex')
      .slice(0, 12);
    text += `; xdp_balancer.bpf.o sha256 ${digest}`;
  } catch {
    // not built: run.ts fails later anyway
  }
  return text;
}

main().catch((error) => {
  process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
  process.exitCode = 1;
});
