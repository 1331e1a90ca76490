/**
 * Part 5: a fleet of two lbctl nodes behind the lab's router (BIRD, ECMP),
 * each announcing its VIPs (test/support/fleet-failover.ts). For each way a
 * node leaves the fleet, under traffic from the client behind the router
 * (50 long-lived connections, a message every 100 ms; a new request every
 * 50 ms): how long until the router's route no longer has the node, how
 * long until it has it again once the node is back, and how many
 * connections and requests survived. The two nodes take turns leaving.
 */
import { Lab } from '../test/lab/lab.js';
import { FAILOVER_WAYS, type FailoverResult, type FailoverWay, Fleet, describeFailover } from '../test/support/fleet-failover.js';
import { type Log, median } from './common.js';

export interface FleetBenchOptions {
  /** Failovers per way (default 3). */
  readonly rounds?: number;
  readonly ways?: readonly FailoverWay[];
  /** How long a node is cut off (default 10 s). */
  readonly cutOffMs?: number;
  readonly log?: Log;
}

export interface FleetWayResult {
  readonly way: FailoverWay;
  readonly rounds: number;
  /** Action to the router's route without the node (the slower family), ms: median, min, max. */
  readonly withdrawnMs: { readonly median: number; readonly min: number; readonly max: number };
  /** The node back (started, released, ...) to the router's route with it again, median ms. */
  readonly rejoinedMs: number;
  readonly connections: number;
  readonly connectionsBroken: number;
  readonly requests: number;
  readonly requestsFailed: number;
}

export interface FleetBenchResult {
  readonly holdDownMs: number;
  readonly killSwitchTimeoutMs: number;
  readonly cutOffMs: number;
  readonly ways: readonly FleetWayResult[];
}

const HOLD_DOWN = '1s';

export async function measureFleet(options: FleetBenchOptions = {}): Promise<FleetBenchResult> {
  const rounds = options.rounds ?? 3;
  const ways = options.ways ?? FAILOVER_WAYS;
  const cutOffMs = options.cutOffMs ?? 10_000;
  const log = options.log ?? (() => undefined);
  const lab = await Lab.up({ fleet: true });
  let fleet: Fleet | undefined;
  try {
    fleet = await Fleet.start(lab, { holdDown: HOLD_DOWN });
    const results = new Map<FailoverWay, FailoverResult[]>(ways.map((w) => [w, []]));
    for (let round = 0; round < rounds; round++) {
      for (const way of ways) {
        const victim = fleet.nodes[(round + ways.indexOf(way)) % fleet.nodes.length]!;
        const result = await fleet.failover(way, victim, way === 'cut-off' ? { awayMs: cutOffMs } : {});
        log(describeFailover(result));
        results.get(way)!.push(result);
      }
    }
    return {
      holdDownMs: 1000,
      killSwitchTimeoutMs: fleet.killSwitchTimeoutMs,
      cutOffMs,
      ways: ways.map((way) => summarize(way, results.get(way)!)),
    };
  } finally {
    await fleet?.stop();
    await lab.down();
  }
}

function summarize(way: FailoverWay, runs: readonly FailoverResult[]): FleetWayResult {
  const withdrawn = runs.map((r) => Math.max(r.withdrawnMs, r.withdrawnMs6));
  return {
    way,
    rounds: runs.length,
    withdrawnMs: { median: median(withdrawn), min: Math.min(...withdrawn), max: Math.max(...withdrawn) },
    rejoinedMs: median(runs.map((r) => r.rejoinedMs)),
    connections: runs.reduce((n, r) => n + r.connections, 0),
    connectionsBroken: runs.reduce((n, r) => n + r.broken.length, 0),
    requests: runs.reduce((n, r) => n + r.requests, 0),
    requestsFailed: runs.reduce((n, r) => n + r.failedRequests.length, 0),
  };
}

const WAY_TEXT: Record<FailoverWay, string> = {
  stop: '`lbctl stop` (the API request; withdraw, 0.5 s delay, detach)',
  restart: '`lbctl restart` (the stop keeping the data plane: withdraw, no delay; the next daemon takes it over)',
  sigkill: 'SIGKILL of the daemon (the kernel deletes its announce device)',
  'kill-switch': '`lbctl kill-switch engage` (the API request)',
  stall: 'event loop stuck (main thread stopped by ptrace; the watchdog fires at a third of the kill-switch timeout)',
  'checks-fail': "the node's own checks fail (its outgoing port 80 dropped; its data plane unaffected)",
  'cut-off': 'cut off (its switch port down; BFD 3 × 300 ms)',
};

export function fleetTable(r: FleetBenchResult): string {
  return [
    '| the node leaves by | withdrawn at the router: median (min–max) | back in the route after it returned (median) | long-lived connections broken | requests failed |',
    '|---|---:|---:|---:|---:|',
    ...r.ways.map(
      (w) =>
        `| ${WAY_TEXT[w.way]} | ${w.withdrawnMs.median.toFixed(0)} ms (${w.withdrawnMs.min.toFixed(0)}–${w.withdrawnMs.max.toFixed(0)}) | ` +
        `${(w.rejoinedMs / 1000).toFixed(1)} s | ${w.connectionsBroken} of ${w.connections} | ${w.requestsFailed} of ${w.requests} |`,
    ),
  ].join('\n');
}
