/**
 * Runs in the lab's client namespace: new HTTP connections one after the
 * other to URL for DURATION_MS (a pause of PAUSE_MS between them), from
 * CONCURRENCY loops at once (default 1), and prints one JSON line: every
 * answer (when, and which backend) and every failure (when, and why).
 *
 *   node request-loop.js URL DURATION_MS PAUSE_MS [CONCURRENCY]
 *
 * SIGUSR2 ends the run early (after the requests under way).
 */
import { load } from './http-load.js';

export interface LoopReport {
  readonly answered: number;
  /** [Date.now() when the answer came, backend name]. */
  readonly answers: Array<[number, string]>;
  /** ISO time, then the reason. */
  readonly failures: string[];
}

async function loop(url: string, until: { stopAt: number }, pauseMs: number, report: LoopReport & { answered: number }): Promise<void> {
  while (Date.now() < until.stopAt) {
    const result = await load(url, 1, 1);
    const now = Date.now();
    for (const answer of result.answers) report.answers.push([now, answer.backend]);
    report.answered += result.answers.length;
    report.failures.push(...result.failures.map((f) => `${new Date(now).toISOString()} ${f}`));
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
}

if (process.argv[1]?.endsWith('request-loop.js')) {
  const [url, durationMs, pauseMs, concurrency = '1'] = process.argv.slice(2);
  if (!url || !durationMs || !pauseMs) {
    process.stderr.write('usage: node request-loop.js URL DURATION_MS PAUSE_MS [CONCURRENCY]\n');
    process.exit(2);
  }
  const until = { stopAt: Date.now() + Number(durationMs) };
  process.on('SIGUSR2', () => {
    until.stopAt = 0;
  });
  const report = { answered: 0, answers: [] as Array<[number, string]>, failures: [] as string[] };
  void Promise.all(Array.from({ length: Number(concurrency) }, () => loop(url, until, Number(pauseMs), report))).then(() => {
    process.stdout.write(`${JSON.stringify(report)}\n`);
  });
}
