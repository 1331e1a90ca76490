/**
 * Runs inside the lab's client namespace (nsenter) and opens N new HTTP
 * connections to a URL, a few at a time; prints one JSON object: what each
 * answer said (the lab's backends answer "backend=be1 client=... port=...").
 *
 *   node http-load.js URL CONNECTIONS [CONCURRENCY]
 */
import { request } from 'node:http';

export interface LabAnswer {
  readonly backend: string;
  readonly client: string;
  readonly port: number;
}

export interface LoadResult {
  readonly answers: LabAnswer[];
  readonly failures: string[];
}

const TIMEOUT_MS = 5000;

function fetchOnce(url: string): Promise<LabAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers: { connection: 'close' }, timeout: TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => {
        const match = /^backend=(\S+) client=(\S+) port=(\d+)/.exec(body);
        if (res.statusCode !== 200 || !match) reject(new Error(`HTTP ${res.statusCode}: ${body.slice(0, 80)}`));
        else resolve({ backend: match[1]!, client: match[2]!, port: Number(match[3]) });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export async function load(url: string, connections: number, concurrency: number): Promise<LoadResult> {
  const answers: LabAnswer[] = [];
  const failures: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < connections) {
      next++;
      try {
        answers.push(await fetchOnce(url));
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, connections) }, worker));
  return { answers, failures };
}

if (process.argv[1]?.endsWith('http-load.js')) {
  const [url, connections, concurrency] = process.argv.slice(2);
  if (!url || !connections) {
    process.stderr.write('usage: node http-load.js URL CONNECTIONS [CONCURRENCY]\n');
    process.exit(2);
  }
  void load(url, Number(connections), Number(concurrency ?? 16)).then((result) => process.stdout.write(`${JSON.stringify(result)}\n`));
}
