/** An lbctl daemon in one of a lab's balancer namespaces, driven through the real CLI. */
import { join } from 'node:path';
import { type Lab, ROOT } from '../lab/lab.js';
import { buildMaglevTable, DEFAULT_TABLE_SIZE } from '../../src/maglev/maglev.js';
import { flowHash, tableSlot } from '../../src/dataplane/flow-hash.js';
import type { LoadResult } from './http-load.js';

export const LBCTL = join(ROOT, 'bin', 'lbctl');
const HTTP_LOAD = join(ROOT, 'dist', 'test', 'support', 'http-load.js');

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export class LabBalancer {
  readonly socket: string;
  readonly stateDir: string;

  /**
   * role: the balancer's namespace (lb; a fleet lab's second one is lb2);
   * name: of the socket (NAME.sock) and state directory (NAME-state) in the
   * lab's runtime directory, for a second daemon in the same namespace.
   */
  constructor(
    readonly lab: Lab,
    readonly role = 'lb',
    name = role === 'lb' ? 'lbctl' : `lbctl-${role}`,
  ) {
    this.socket = join(lab.runtimeDir, `${name}.sock`);
    this.stateDir = join(lab.runtimeDir, `${name}-state`);
  }

  /** Runs `lbctl ARGS --socket ...` in the balancer's namespace. */
  cli(args: readonly string[], options: { socket?: boolean } = {}): Promise<CliResult> {
    const socketArgs = options.socket === false ? [] : ['--socket', this.socket];
    return this.lab.exec(this.role, [LBCTL, ...args, ...socketArgs], { timeoutMs: 30_000 });
  }

  /** Like cli() but throws unless the command succeeded. */
  async ok(args: readonly string[]): Promise<string> {
    const r = await this.cli(args);
    if (r.code !== 0) throw new Error(`lbctl ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  async start(extra: readonly string[] = []): Promise<string> {
    return this.ok(['start', '--interface', 'eth0', '--state-dir', this.stateDir, ...extra]);
  }

  async stop(): Promise<void> {
    const r = await this.cli(['stop']);
    if (r.code !== 0 && !/no lbctl daemon is listening/.test(r.stderr)) throw new Error(`lbctl stop failed: ${r.stderr}`);
  }

  async json<T>(args: readonly string[]): Promise<T> {
    return JSON.parse(await this.ok([...args, '--json'])) as T;
  }

  /** N new HTTP connections to url from the client namespace (`from`: another one, e.g. a fleet lab's fclient). */
  async httpFromClient(url: string, connections: number, concurrency = 16, from = 'client'): Promise<LoadResult> {
    const r = await this.lab.exec(from, [process.execPath, HTTP_LOAD, url, String(connections), String(concurrency)], {
      timeoutMs: 120_000,
    });
    if (r.code !== 0) throw new Error(`http-load failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as LoadResult;
  }
}

/**
 * Which backend a new TCP connection from client:port to vip must reach,
 * computed the way the daemon and the data plane do it.
 */
export function backendPredictor(
  backends: ReadonlyArray<{ address: string; weight: number }>,
  client: string,
  vip: string,
  vipPort = 80,
): (port: number) => string {
  const table = buildMaglevTable(
    backends.map((b, id) => ({ name: b.address, weight: b.weight, id })),
    DEFAULT_TABLE_SIZE,
  );
  return (sport) =>
    backends[table[tableSlot(flowHash({ saddr: client, daddr: vip, sport, dport: vipPort, proto: 6 }), DEFAULT_TABLE_SIZE)]!]!.address;
}
