/**
 * Runs in the lab's client namespace: new HTTP connections one after the
 * other to URL for DURATION_MS (a pause of PAUSE_MS between them), and
 * prints one JSON line: how many were answered and every failure.
 *
 *   node request-loop.js URL DURATION_MS PAUSE_MS
 */
import { load } from './http-load.js';

if (process.argv[1]?.endsWith('request-loop.js')) {
  const [url, durationMs, pauseMs] = process.argv.slice(2);
  if (!url || !durationMs || !pauseMs) {
    process.stderr.write('usage: node request-loop.js URL DURATION_MS PAUSE_MS\n');
    process.exit(2);
  }
  const stopAt = Date.now() + Number(durationMs);
  let answered = 0;
  const failures: string[] = [];
  void (async () => {
    while (Date.now() < stopAt) {
      const result = await load(url, 1, 1);
      answered += result.answers.length;
      failures.push(...result.failures.map((f) => `${new Date().toISOString()} ${f}`));
      await new Promise((resolve) => setTimeout(resolve, Number(pauseMs)));
    }
    process.stdout.write(`${JSON.stringify({ answered, failures })}\n`);
  })();
}
