/**
 * The README's performance section: the headline tables of a results file
 * (bench/results/latest.json), written between the lines
 * `<!-- bench:start -->` and `<!-- bench:end -->` and nowhere else.
 * bench/run.ts calls it after a full run; by hand:
 *
 *   node dist/bench/readme.js [RESULTS.json]   (default bench/results/latest.json)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../src/paths.js';
import { costTable } from './dataplane-cost.js';
import { fleetTable } from './fleet.js';
import { type BenchResults, targets } from './report.js';

export const README_START = '<!-- bench:start -->';
export const README_END = '<!-- bench:end -->';

/** What bench/run.ts writes to NAME.json. */
export interface SavedResults {
  readonly startedAt: string;
  readonly command: string;
  readonly revision?: string;
  readonly quick: boolean;
  readonly load?: { readonly start: number; readonly end: number };
  readonly failures?: ReadonlyArray<{ readonly part: string; readonly message: string }>;
  readonly results: BenchResults;
}

const f2 = (n: number) => n.toFixed(2);

export function readmeSection(
  saved: SavedResults,
  resultsLink = 'bench/results/latest.md',
  plot = 'bench/results/latest-http.svg',
): string {
  const r = saved.results;
  const when = saved.startedAt.slice(0, 10);
  const out: string[] = [
    '## Performance',
    '',
    `Measured with \`${saved.command}\` on ${when} (revision ${saved.revision ?? 'unknown'}) on the project's 2-core CI hosts (shared${saved.load ? `: 1-minute load average ${saved.load.start.toFixed(1)} at the start, ${saved.load.end.toFixed(1)} at the end` : ''}). Everything below comes from that one run, with lbctl and the alternatives interleaved: read the ratios rather than the absolute figures. [${resultsLink}](${resultsLink}) has the rest (packet rate, HTTP with a new connection per request, latency and CPU per request, the control plane) and how each figure is measured.`,
    '',
  ];
  if (saved.failures?.length)
    out.push(
      `Parts that failed in that run (missing below): ${saved.failures.map((f) => `${f.part} (${f.message.split('\n')[0]})`).join('; ')}.`,
      '',
    );
  if (r.cost || r.http || r.control || r.fleet) {
    out.push('**Against the targets of issue 7** (targets, not assertions; not met is shown as not met):', '', ...targets(r), '');
  }
  if (r.cost) {
    out.push(
      `**Data-plane cost per packet** (BPF_PROG_TEST_RUN, repeat 1 in a loop, ${r.cost.iterations.toLocaleString('en-US')} runs per scenario, median of ${r.cost.rounds} interleaved rounds; every figure includes the fixed harness cost the bare XDP_PASS row shows; "× floor": against a program that only parses Ethernet and IP, swaps the MACs and returns XDP_TX, on a frame of the same family):`,
      '',
      costTable(r.cost.rows),
      '',
    );
  }
  if (r.http) {
    const rows = r.http.rows.filter((x) => x.variant === 'keep-alive');
    const limit = rows.find((x) => x.system === 'direct-ecmp')!.requestsPerSecond;
    out.push(
      `**HTTP, keep-alive** (wrk -t${r.http.threads} -c${r.http.connections} -d${r.http.seconds}s from the client namespace to nginx on three backends, median of ${r.http.rounds} interleaved rounds; direct-ecmp: straight to the same three backends, no balancer, the limit):`,
      '',
      '| system | requests/s | × direct-ecmp | p50 ms | p99 ms |',
      '|---|---:|---:|---:|---:|',
      ...rows.map(
        (x) =>
          `| ${x.system}: ${x.description} | ${Math.round(x.requestsPerSecond)} | ${f2(x.requestsPerSecond / limit)} | ${f2(x.p50Ms)} | ${f2(x.p99Ms)} |`,
      ),
      '',
      `![requests/s per system](${plot})`,
      '',
    );
  }
  if (r.rate) {
    const by = new Map(r.rate.rows.map((x) => [x.system, x.backendsMpps]));
    const ratios = (system: 'lbctl-l2dsr' | 'lbctl-ipip') => {
      const v = by.get(system)!;
      return `${system} ${f2(v)} Mpps (${f2(v / by.get('xdp-fwd')!)}× plain XDP forwarding on the same path, ${f2(v / by.get('kernel-fwd')!)}× kernel forwarding, ${f2(v / by.get('iptables-dnat')!)}× iptables DNAT)`;
    };
    out.push(`**Packet rate** (60-byte UDP through the lab, one core): ${ratios('lbctl-l2dsr')}; ${ratios('lbctl-ipip')}.`, '');
  }
  if (r.control) {
    const c = r.control;
    const load =
      c.loadMs !== undefined
        ? `\`lbctl start --config\` returned after ${(c.loadMs / 1000).toFixed(1)} s`
        : `\`lbctl start --config\` had **not returned within ${(c.loadDeadlineMs / 1000).toFixed(0)} s**`;
    out.push(
      `**Control plane**: a backend added through the API reached the data plane ${c.api.afterStartMs.toFixed(0)} ms after the request was sent (${Math.abs(c.api.afterReturnMs).toFixed(0)} ms ${c.api.afterReturnMs < 0 ? 'before' : 'after'} the answer). ${c.vips} VIPs × ${c.backendsPerVip} backends (M = ${c.tableSize}) from a config file: every map written after ${c.writtenMs !== undefined ? `${(c.writtenMs / 1000).toFixed(1)} s` : '(not logged)'}, ${load}; daemon RSS ${c.rssMiB.toFixed(0)} MiB (${c.idleRssMiB.toFixed(0)} MiB with no VIPs). One Maglev table, M = ${c.tableSize}: ${c.maglev.map((m) => `${m.medianMs.toFixed(1)} ms for ${m.backends} backends`).join(', ')}. A CLI call, spawn to exit: ${c.cliCalls.rows
        .slice(1)
        .map((row) => `\`${row.command}\` ${row.medianMs.toFixed(0)} ms`)
        .join(', ')} (\`${c.cliCalls.rows[0]!.command}\`: ${c.cliCalls.rows[0]!.medianMs.toFixed(0)} ms).`,
      '',
    );
  }
  if (r.fleet) {
    out.push(
      '**Fleet failover** (two nodes behind ECMP, 50 long-lived connections and a new request every 50 ms while one node leaves and comes back):',
      '',
      fleetTable(r.fleet),
      '',
    );
  }
  return out.join('\n');
}

/** The README with the text between the markers replaced; throws unless each marker is there exactly once, start before end. */
export function replaceSection(readme: string, section: string): string {
  const lines = readme.split('\n');
  const start = lines.indexOf(README_START);
  const end = lines.indexOf(README_END);
  if (start < 0 || end < start || lines.lastIndexOf(README_START) !== start || lines.lastIndexOf(README_END) !== end) {
    throw new Error(`README.md must hold the lines ${README_START} and ${README_END} once each, in that order`);
  }
  return [...lines.slice(0, start + 1), section.replace(/\n+$/, ''), '', ...lines.slice(end)].join('\n');
}

export function updateReadme(
  resultsJson = join(PROJECT_ROOT, 'bench', 'results', 'latest.json'),
  readmePath = join(PROJECT_ROOT, 'README.md'),
): void {
  const saved = JSON.parse(readFileSync(resultsJson, 'utf8')) as SavedResults;
  if (saved.quick) throw new Error(`${resultsJson} is from a quick run: its figures are not for the README`);
  writeFileSync(readmePath, replaceSection(readFileSync(readmePath, 'utf8'), readmeSection(saved)));
}

if (process.argv[1]?.endsWith('readme.js')) {
  updateReadme(process.argv[2]);
  process.stderr.write('bench: README.md performance section updated\n');
}
