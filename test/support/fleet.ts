/**
 * Looking at a fleet lab (Lab.up({ fleet: true })): BIRD's sessions through
 * each host's own control socket, and the router's multipath routes.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Lab } from '../lab/lab.js';

const execFileP = promisify(execFile);

/** `birdc -s RUNTIME/HOST/bird.ctl COMMAND...` for a host of the topology (router, balancer, balancer2). */
export async function birdc(lab: Lab, host: string, command: string[]): Promise<string> {
  const { stdout } = await execFileP('birdc', ['-s', join(lab.runtimeDir, host, 'bird.ctl'), ...command], { timeout: 10_000 });
  return stdout;
}

export interface BirdProtocol {
  readonly name: string;
  readonly proto: string;
  readonly state: string;
  /** When it entered the state (BIRD's clock, e.g. 14:04:23.012). */
  readonly since: string;
  readonly info: string;
}

/** `show protocols`, parsed. */
export async function birdProtocols(lab: Lab, host: string): Promise<BirdProtocol[]> {
  const out = await birdc(lab, host, ['show', 'protocols']);
  return out
    .split('\n')
    .slice(2)
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const [name = '', proto = '', , state = '', since = '', ...info] = line.trim().split(/\s+/);
      return { name, proto, state, since, info: info.join(' ') };
    });
}

/** The BGP sessions of a host that are up (Established), by protocol name. */
export async function establishedSessions(lab: Lab, host: string): Promise<string[]> {
  return (await birdProtocols(lab, host)).filter((p) => p.proto === 'BGP' && /\bEstablished\b/.test(p.info)).map((p) => p.name);
}

/** Polls `check` every `intervalMs` until it returns true; the time it took, or throws `what` after timeoutMs. */
export async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string, intervalMs = 5): Promise<number> {
  const started = performance.now();
  for (;;) {
    if (await check()) return performance.now() - started;
    if (performance.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** The gateways of a host's route to exactly `prefix` (main table), sorted: [] without one. */
export async function nextHops(lab: Lab, role: string, prefix: string): Promise<string[]> {
  const family = prefix.includes(':') ? '-6' : '-4';
  const r = await lab.exec(role, ['ip', '-j', family, 'route', 'show', 'exact', prefix]);
  if (r.code !== 0) throw new Error(`ip route show ${prefix} in ${role}: ${r.stderr}`);
  const routes = JSON.parse(r.stdout || '[]') as { gateway?: string; nexthops?: { gateway: string }[] }[];
  return routes.flatMap((x) => (x.nexthops ? x.nexthops.map((h) => h.gateway) : x.gateway ? [x.gateway] : [])).sort();
}
