/** `sudo make bench`: every benchmark, one results file (bench/results/latest.md). */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../src/paths.js';
import { costTable, measureDataplaneCost } from './dataplane-cost.js';

const iterations = Number(process.env.BENCH_ITERATIONS ?? 1_000_000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const log = (line: string) => process.stderr.write(`${line}\n`);

log(`data-plane cost: ${rounds} rounds of ${iterations} runs per scenario`);
const cost = measureDataplaneCost({ iterations, rounds, log });
const report = [
  '# lbctl benchmarks',
  '',
  `Measured ${new Date().toISOString()} on Linux ${release()}, ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}; command: \`sudo make bench\`.`,
  '',
  '## Data-plane cost per packet',
  '',
  `BPF_PROG_TEST_RUN, repeat 1 in a loop, ${iterations} runs per scenario and round, median of ${rounds} rounds' means, scenarios interleaved.`,
  'The kernel\'s per-run timing includes a fixed harness cost: the bare XDP_PASS row shows it.',
  '',
  costTable(cost),
  '',
].join('\n');
const dir = join(PROJECT_ROOT, 'bench', 'results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'latest.md'), report);
process.stdout.write(report);
