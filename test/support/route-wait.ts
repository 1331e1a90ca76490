/**
 * Runs inside a namespace (nsenter) and polls one route until it has a given
 * number of next hops (0: gone), as fast as `ip` answers, so that a test can
 * time a withdrawal from its own clock: the parent notes the wall-clock time
 * of what it did, this prints the wall-clock time it saw the result.
 *
 *   node route-wait.js TABLE PREFIX HOPS TIMEOUT_MS
 *
 * TABLE: a table number or main. Prints "watching HOPS_NOW" on stderr after
 * the first look, then one JSON line on stdout: { at, polls } (at: ms since
 * the epoch, fractional) or { timeout: true, hops } and exit 1.
 *
 * The driver, for tests: waitForHops().
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(import.meta.url);

/** Wall-clock ms with the monotonic clock's resolution. */
export const wallClock = (): number => performance.timeOrigin + performance.now();

function hops(table: string, prefix: string): number {
  const family = prefix.includes(':') ? '-6' : '-4';
  const r = spawnSync('ip', ['-j', family, 'route', 'show', 'table', table, 'exact', prefix], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip route show table ${table} ${prefix}: ${r.stderr.trim()}`);
  const routes = JSON.parse(r.stdout || '[]') as { nexthops?: unknown[] }[];
  return routes.reduce((n, route) => n + (route.nexthops ? route.nexthops.length : 1), 0);
}

export interface RouteWait {
  readonly child: ChildProcess;
  /** When the route had `hops` next hops (wall clock, ms). */
  readonly done: Promise<{ at: number; polls: number }>;
}

/**
 * Starts a watcher (argv prefix: how to run node in the namespace, e.g. a
 * lab's nsArgv) and resolves once it has looked at the route for the first
 * time: do what should change the route after that.
 */
export async function waitForHops(
  spawner: (argv: string[]) => ChildProcess,
  table: string,
  prefix: string,
  wanted: number,
  timeoutMs: number,
): Promise<RouteWait> {
  const child = spawner([process.execPath, SCRIPT, table, prefix, String(wanted), String(timeoutMs)]);
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const done = new Promise<{ at: number; polls: number }>((resolve, reject) => {
    child.once('exit', (code) => {
      const answer = JSON.parse(stdout.trim() || '{}') as { at?: number; polls?: number; timeout?: boolean; hops?: number };
      if (code === 0 && answer.at !== undefined) resolve({ at: answer.at, polls: answer.polls ?? 0 });
      else
        reject(
          new Error(`route ${prefix} (table ${table}) still had ${answer.hops ?? '?'} next hops after ${timeoutMs} ms, not ${wanted}`),
        );
    });
  });
  done.catch(() => undefined);
  const first = await createInterface({ input: child.stderr! })[Symbol.asyncIterator]().next();
  if (first.done || !first.value.startsWith('watching ')) throw new Error(`route-wait did not start: ${first.value ?? 'no output'}`);
  const now = Number(first.value.split(' ')[1]);
  if (now === wanted) throw new Error(`route ${prefix} (table ${table}) has ${wanted} next hops already`);
  return { child, done };
}

function main([table, prefix, wanted, timeout]: string[]): void {
  if (!table || !prefix || wanted === undefined || !timeout) throw new Error('usage: node route-wait.js TABLE PREFIX HOPS TIMEOUT_MS');
  const deadline = performance.now() + Number(timeout);
  let polls = 0;
  let seen = hops(table, prefix);
  process.stderr.write(`watching ${seen}\n`);
  while (seen !== Number(wanted)) {
    if (performance.now() > deadline) {
      process.stdout.write(`${JSON.stringify({ timeout: true, hops: seen })}\n`);
      process.exit(1);
    }
    seen = hops(table, prefix);
    polls++;
  }
  process.stdout.write(`${JSON.stringify({ at: wallClock(), polls })}\n`);
}

if (process.argv[1] === SCRIPT) main(process.argv.slice(2));
