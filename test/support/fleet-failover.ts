/**
 * A fleet of lbctl nodes in a fleet lab (Lab.up({ fleet: true })), each
 * announcing its VIPs itself (announce in the config, docs/fleet.md), and
 * the ways one of them leaves the fleet and comes back under traffic from
 * the client behind the router: long-lived connections (a message every
 * 100 ms, each answer checked) and a new request every 50 ms. For each way
 * it measures when the router's route lost the node and got it back, and
 * what broke. test/lab/e2e-fleet.test.ts asserts on it; bench/fleet.ts
 * reports it.
 */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { call } from '../../src/api/client.js';
import type { StatsResult, StatusResult } from '../../src/api/protocol.js';
import { LAB, type Lab, ROOT, pidAlive } from '../lab/lab.js';
import { LabBalancer } from './balancer.js';
import { establishedSessions, nextHops, waitUntil } from './fleet.js';
import type { ConnectionReport } from './long-lived.js';
import type { LoopReport } from './request-loop.js';
import { waitForHops, wallClock } from './route-wait.js';
import { stallThread } from './stall.js';

const execFileP = promisify(execFile);
const LONG_LIVED = join(ROOT, 'dist', 'test', 'support', 'long-lived.js');
const REQUEST_LOOP = join(ROOT, 'dist', 'test', 'support', 'request-loop.js');

export const VIP = LAB.vips[0]!;
export const VIP6 = LAB.vips6[0]!;
export const KEY = `${VIP}:80/tcp`;
export const KEY6 = `[${VIP6}]:80/tcp`;
/** Two backends on the nodes' segment, one behind the router (ipip). */
export const BACKENDS = [...LAB.backends.filter((b) => b.forward === 'l2dsr').slice(0, 2), LAB.backends.find((b) => b.forward === 'ipip')!];

/**
 * How a node leaves the fleet: `lbctl stop`; a restart (the daemon stops,
 * the data plane stays and the next daemon takes it over); SIGKILL of its daemon;
 * `lbctl kill-switch engage` (both through the API, without the CLI's start-up); its event loop stuck (the main thread stopped
 * by ptrace, the watchdog's case); every health check of the node failing
 * while its data plane works (its own problem, not the backends'); cut off
 * (its switch port down). And back: start, start (taking over the data
 * plane), release, the thread let go, the checks passing again, the port up.
 */
export const FAILOVER_WAYS = ['stop', 'restart', 'sigkill', 'kill-switch', 'stall', 'checks-fail', 'cut-off'] as const;
export type FailoverWay = (typeof FAILOVER_WAYS)[number];

export interface FleetOptions {
  /** announce.hold_down (default 1s: the lab's checks settle fast). */
  readonly holdDown?: string;
  readonly withdrawDelay?: string;
  /** The watchdog fires at a third of it (default 3s: 1 s). */
  readonly killSwitchTimeout?: string;
  /** More VIP entries (YAML list items, indented by 2) for every node's config. */
  readonly extraVips?: string;
  /** metrics_address of every node (each in its own namespace). */
  readonly metricsAddress?: string;
}

export interface FleetNode {
  readonly name: string;
  readonly namespaceSuffix: string;
  readonly address: string;
  readonly address6: string;
  readonly lb: LabBalancer;
}

export interface FailoverResult {
  readonly way: FailoverWay;
  readonly node: string;
  /** From the action to the router's route (IPv4, IPv6) without the node, ms. */
  readonly withdrawnMs: number;
  readonly withdrawnMs6: number;
  /** From the way back (start, release, ...) to the router's route with every node again, ms. */
  readonly rejoinedMs: number;
  readonly connections: number;
  /** Long-lived connections that broke (reset, timeout, wrong answer): "port: reason". */
  readonly broken: readonly string[];
  readonly messages: number;
  readonly requests: number;
  readonly failedRequests: readonly string[];
  /** Packets of the VIPs the node balanced once back: the router sent it its share again. */
  readonly packetsAfterRejoin: number;
  /** Log events of the node's daemon during the run (event, and code when there is one). */
  readonly events: readonly string[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The lab names a one-interface host's switch port after its namespace (test/lab/topology.jq). */
const switchPort = (node: FleetNode) => node.namespaceSuffix;

export function fleetConfig(options: FleetOptions = {}): string {
  const check = '    check_interval: 200ms\n    check_timeout: 150ms\n    rise: 2\n    fall: 2\n';
  const backends = (family: 4 | 6) =>
    BACKENDS.map(
      (b) => `      - address: ${family === 4 ? b.address : b.address6}\n${b.forward === 'ipip' ? '        forward: ipip\n' : ''}`,
    ).join('');
  return (
    `interface: ${LAB.interface}\n` +
    `kill_switch_timeout: ${options.killSwitchTimeout ?? '3s'}\n` +
    (options.metricsAddress ? `metrics_address: ${options.metricsAddress}\n` : '') +
    `announce:\n  hold_down: ${options.holdDown ?? '1s'}\n  withdraw_delay: ${options.withdrawDelay ?? '500ms'}\n` +
    `vips:\n  - vip: ${KEY}\n${check}    backends:\n${backends(4)}` +
    `  - vip: '${KEY6}'\n${check}    backends:\n${backends(6)}` +
    (options.extraVips ?? '')
  );
}

export class Fleet {
  private constructor(
    readonly lab: Lab,
    readonly nodes: readonly FleetNode[],
    readonly configPath: string,
    readonly killSwitchTimeoutMs: number,
  ) {}

  /** Starts lbctl with the same config on every balancer of the lab; resolves once the router has every node for both VIPs. */
  static async start(lab: Lab, options: FleetOptions = {}): Promise<Fleet> {
    const configPath = join(lab.runtimeDir, 'fleet.yaml');
    await writeFile(configPath, fleetConfig(options));
    const nodes = LAB.fleet.balancers.map((b) => ({ ...b, lb: new LabBalancer(lab, b.namespaceSuffix) }));
    const killSwitch = Number(/^(\d+)s$/.exec(options.killSwitchTimeout ?? '3s')?.[1] ?? NaN) * 1000;
    const fleet = new Fleet(lab, nodes, configPath, killSwitch);
    for (const node of nodes) await fleet.startNode(node);
    await waitUntil(
      async () => (await establishedSessions(lab, 'router')).length === 2 * nodes.length,
      15_000,
      'BGP sessions between the router and the nodes',
      50,
    );
    await fleet.waitForEveryNode(15_000);
    return fleet;
  }

  startNode(node: FleetNode): Promise<string> {
    return node.lb.start(['--config', this.configPath]);
  }

  async stop(): Promise<void> {
    for (const node of this.nodes) await node.lb.stop().catch(() => undefined);
  }

  async pid(node: FleetNode): Promise<number> {
    return ((await call(node.lb.socket, 'status', {})) as StatusResult).pid;
  }

  /** The router's next hops for both VIPs are every node's address. */
  async waitForEveryNode(timeoutMs: number): Promise<number> {
    const all = this.nodes.map((n) => n.address).sort();
    const all6 = this.nodes.map((n) => n.address6).sort();
    return waitUntil(
      async () =>
        (await nextHops(this.lab, 'router', `${VIP}/32`)).join() === all.join() &&
        (await nextHops(this.lab, 'router', `${VIP6}/128`)).join() === all6.join(),
      timeoutMs,
      'ECMP routes over every node',
      20,
    );
  }

  /** Packets of both VIPs the node's data plane balanced. */
  async packets(node: FleetNode): Promise<number> {
    const stats = (await call(node.lb.socket, 'stats', {})) as StatsResult;
    return stats.vips.filter((v) => v.vip === KEY || v.vip === KEY6).reduce((n, v) => n + Number(v.packets), 0);
  }

  /**
   * Runs traffic, takes `victim` out of the fleet in the given way, brings
   * it back, and says what the router saw and what broke. `awayMs`: how
   * long it stays away (a cut-off: how long its port is down).
   */
  async failover(way: FailoverWay, victim: FleetNode, { awayMs = 1500, afterMs = 2500 } = {}): Promise<FailoverResult> {
    const { lab } = this;
    await this.waitForEveryNode(20_000);
    const logBefore = await this.logLines(victim);
    const traffic = this.startTraffic();
    try {
      await traffic.open;
      await sleep(500);
      const inRouter = (argv: string[]) => lab.spawn('router', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      const others = this.nodes.length - 1;
      const gone = await waitForHops(inRouter, 'main', `${VIP}/32`, others, 20_000);
      const gone6 = await waitForHops(inRouter, 'main', `${VIP6}/128`, others, 20_000);
      const { at: leftAt, back } = await this.leave(way, victim, awayMs);
      const [v4, v6] = await Promise.all([gone.done, gone6.done]);
      const away = awayMs - (wallClock() - leftAt);
      if (away > 0) await sleep(away);

      const rejoined = await waitForHops(inRouter, 'main', `${VIP}/32`, this.nodes.length, 30_000);
      const backAt = await back();
      const { at: rejoinedAt } = await rejoined.done;
      await this.waitForEveryNode(10_000);
      const packetsBefore = await this.packets(victim);
      await sleep(afterMs);
      const packetsAfterRejoin = (await this.packets(victim)) - packetsBefore;
      const { reports, loop } = await traffic.finish();
      const events = (await this.logLines(victim)).slice(logBefore.length).flatMap((line) => {
        const entry = JSON.parse(line) as { event?: string; code?: string };
        return entry.event?.startsWith('announce.') || entry.event === 'killswitch.engaged' || entry.event === 'daemon.stopped'
          ? [`${entry.event}${entry.code ? ` ${entry.code}` : ''}`]
          : [];
      });
      return {
        way,
        node: victim.name,
        withdrawnMs: v4.at - leftAt,
        withdrawnMs6: v6.at - leftAt,
        rejoinedMs: rejoinedAt - backAt,
        connections: reports.length,
        broken: reports.filter((r) => r.failure !== null).map((r) => `${r.port}: ${r.failure}`),
        messages: reports.reduce((n, r) => n + r.answered, 0),
        requests: loop.answered + loop.failures.length,
        failedRequests: loop.failures,
        packetsAfterRejoin,
        events: [...new Set(events)],
      };
    } finally {
      traffic.kill();
    }
  }

  /** Takes the node out; resolves with when (wall clock) and how to bring it back (resolving with when that began). */
  private async leave(way: FailoverWay, node: FleetNode, awayMs: number): Promise<{ at: number; back: () => Promise<number> }> {
    const start = async () => {
      const at = wallClock();
      await this.startNode(node);
      return at;
    };
    switch (way) {
      case 'stop': {
        // Through the API, as `lbctl stop` does: the CLI's own start-up is not the daemon's latency.
        const pid = await this.pid(node);
        const at = wallClock();
        await call(node.lb.socket, 'stop', {});
        await waitUntil(async () => !pidAlive(pid), 10_000, `pid ${pid} gone`, 10);
        return { at, back: start };
      }
      case 'restart': {
        // `lbctl restart`, in two steps: the stop that keeps the data plane, then the start that takes it over.
        const pid = await this.pid(node);
        const at = wallClock();
        await call(node.lb.socket, 'stop', { keepDataplane: true });
        await waitUntil(async () => !pidAlive(pid), 10_000, `pid ${pid} gone`, 10);
        return { at, back: start };
      }
      case 'sigkill': {
        const pid = await this.pid(node);
        const at = wallClock();
        process.kill(pid, 'SIGKILL');
        await waitUntil(async () => !pidAlive(pid), 5000, `pid ${pid} gone`, 10);
        return { at, back: start };
      }
      case 'kill-switch': {
        const at = wallClock();
        await call(node.lb.socket, 'killswitch.engage', {});
        return {
          at,
          back: async () => {
            const backAt = wallClock();
            await call(node.lb.socket, 'killswitch.release', {});
            return backAt;
          },
        };
      }
      case 'stall': {
        // Longer than the watchdog's limit (a third of the kill-switch timeout), shorter than the data plane keeps balancing.
        const { stoppedAt, resumed } = stallThread(await this.pid(node), Math.round(this.killSwitchTimeoutMs * 0.6));
        return { at: stoppedAt, back: () => resumed };
      }
      case 'checks-fail': {
        // The node's own health checks (TCP to port 80) are dropped on their way out; its data plane (XDP) forwards as before.
        const at = wallClock();
        await this.nft(node, [
          'add table inet lbtest',
          'add chain inet lbtest out { type filter hook output priority 0 ; tcp dport 80 drop ; }',
        ]);
        return {
          at,
          back: async () => {
            const backAt = wallClock();
            await this.nft(node, ['delete table inet lbtest']);
            return backAt;
          },
        };
      }
      case 'cut-off': {
        const at = wallClock();
        await this.switchPort(node, 'down');
        return {
          at,
          back: async () => {
            const remaining = awayMs - (wallClock() - at);
            if (remaining > 0) await sleep(remaining);
            const backAt = wallClock();
            await this.switchPort(node, 'up');
            return backAt;
          },
        };
      }
    }
  }

  private async nft(node: FleetNode, commands: string[]): Promise<void> {
    const r = await this.lab.exec(node.namespaceSuffix, ['nft', '-f', '-'], { input: `${commands.join('\n')}\n` });
    if (r.code !== 0) throw new Error(`nft in ${node.name}: ${r.stderr}`);
  }

  private async switchPort(node: FleetNode, state: 'up' | 'down'): Promise<void> {
    await execFileP('ip', ['-n', this.lab.ns('sw'), 'link', 'set', 'dev', switchPort(node), state]);
  }

  private async logLines(node: FleetNode): Promise<string[]> {
    const text = await readFile(join(node.lb.stateDir, 'lbctl.log'), 'utf8').catch(() => '');
    return text.split('\n').filter((line) => line.startsWith('{'));
  }

  /** 40 long-lived IPv4 connections and 10 IPv6 ones (a message every 100 ms), and a new IPv4 request every 50 ms. */
  private startTraffic() {
    const client = LAB.fleet.clientNamespace;
    const spawn = (argv: string[]) => this.lab.spawn(client, [process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    const runs = [
      spawn([LONG_LIVED, VIP, '80', '40', '600000', '100']),
      spawn([LONG_LIVED, VIP6, '80', '10', '600000', '100']),
      spawn([REQUEST_LOOP, `http://${VIP}/`, '600000', '50']),
    ];
    const outputs = runs.map((child) => {
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      return { child, exited, stdout: () => stdout, stderr: () => stderr };
    });
    const open = waitUntil(
      async () => outputs.slice(0, 2).every((o) => o.stderr().includes('open')),
      20_000,
      'every long-lived connection answered',
      20,
    );
    return {
      open,
      finish: async () => {
        for (const o of outputs) o.child.kill('SIGUSR2');
        await Promise.all(outputs.map((o) => o.exited));
        const parse = <T>(o: (typeof outputs)[number]): T => {
          try {
            return JSON.parse(o.stdout()) as T;
          } catch {
            throw new Error(`traffic generator printed no report: ${o.stderr().slice(0, 300)}`);
          }
        };
        return {
          reports: [...parse<ConnectionReport[]>(outputs[0]!), ...parse<ConnectionReport[]>(outputs[1]!)],
          loop: parse<LoopReport>(outputs[2]!),
        };
      },
      kill: () => {
        for (const o of outputs) if (o.child.exitCode === null) o.child.kill('SIGKILL');
      },
    };
  }
}

/** One line per failover, for test diagnostics and the benchmark's log. */
export function describeFailover(r: FailoverResult): string {
  return (
    `${r.way} of ${r.node}: withdrawn at the router in ${r.withdrawnMs.toFixed(0)} ms (IPv6 ${r.withdrawnMs6.toFixed(0)} ms), ` +
    `back in the route ${r.rejoinedMs.toFixed(0)} ms after it returned; ${r.connections} long-lived connections (${r.messages} messages), ` +
    `${r.broken.length} broken; ${r.requests} requests, ${r.failedRequests.length} failed; ${r.packetsAfterRejoin} packets on ${r.node} once back`
  );
}
