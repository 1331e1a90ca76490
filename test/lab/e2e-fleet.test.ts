/**
 * Two lbctl nodes behind the router, each announcing the VIPs with the
 * announcer (src/fleet/announcer.ts) held by a helper process, as the daemon
 * will hold it (issue 13, phase 1): BIRD takes the routes to the router,
 * which spreads new connections from the client behind it over both nodes by
 * ECMP; identical Maglev tables make both nodes name the same backend for
 * every flow; SIGKILL of one announcer takes that node out of the router's
 * route within a second. Needs root, `make` and bird2 (scripts/install-deps.sh).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { call } from '../../src/api/client.js';
import type { ExplainResult, StatsResult } from '../../src/api/protocol.js';
import { LAB, Lab } from './lab.js';
import { AnnouncerHolder } from '../support/announcer-holder.js';
import { LabBalancer } from '../support/balancer.js';
import { establishedSessions, nextHops, waitUntil } from '../support/fleet.js';
import type { LabAnswer } from '../support/http-load.js';
import { waitForHops, wallClock } from '../support/route-wait.js';

const VIP = LAB.vips[0]!;
const VIP6 = LAB.vips6[0]!;
const KEY = `${VIP}:80/tcp`;
const KEY6 = `[${VIP6}]:80/tcp`;
/** Two backends on the nodes' segment, one behind the router. */
const BACKENDS = [...LAB.backends.filter((b) => b.forward === 'l2dsr').slice(0, 2), LAB.backends.find((b) => b.forward === 'ipip')!];
const CONNECTIONS = 500;
const MIN_SHARE = 0.35;

interface Node {
  readonly name: string;
  readonly namespaceSuffix: string;
  readonly address: string;
  readonly address6: string;
  readonly lb: LabBalancer;
  holder?: AnnouncerHolder;
}

describe('a fleet of two lbctl nodes behind ECMP (announcer held by a helper)', () => {
  let lab: Lab;
  let nodes: Node[];
  let announcedMs = 0;

  /** New flows each node's data plane gave a backend, per VIP key. */
  const newFlows = async (node: Node, key: string) => {
    const stats = await call(node.lb.socket, 'stats', {});
    return (stats as StatsResult).vips.find((v) => v.vip === key)?.newFlows ?? NaN;
  };
  const explain = (node: Node, client: string, key: string) => call(node.lb.socket, 'explain', { client, vip: key });
  const load = (url: string, connections: number) => nodes[0]!.lb.httpFromClient(url, connections, 16, LAB.fleet.clientNamespace);

  before(async () => {
    lab = await Lab.up({ fleet: true });
    nodes = LAB.fleet.balancers.map((b) => ({ ...b, lb: new LabBalancer(lab, b.namespaceSuffix) }));
    // The same VIPs and backends on both nodes: identical Maglev tables.
    for (const node of nodes) {
      await node.lb.start();
      for (const key of [KEY, KEY6]) {
        await node.lb.ok(['vip', 'add', key]);
        for (const b of BACKENDS) await node.lb.ok(['backend', 'add', key, key === KEY ? b.address : b.address6, '--forward', b.forward]);
      }
    }
    await waitUntil(
      async () => (await establishedSessions(lab, 'router')).length === 2 * nodes.length,
      15_000,
      'BGP sessions between the router and the nodes',
      50,
    );
    for (const node of nodes) {
      node.holder = await AnnouncerHolder.start({ interface: LAB.interface }, (argv) =>
        lab.spawn(node.namespaceSuffix, argv, { stdio: ['pipe', 'pipe', 'inherit'] }),
      );
    }
    const started = performance.now();
    await Promise.all(nodes.map(async (node) => [await node.holder!.ok(`announce ${VIP}`), await node.holder!.ok(`announce ${VIP6}`)]));
    const all = nodes.map((n) => n.address).join();
    const all6 = nodes.map((n) => n.address6).join();
    await waitUntil(async () => (await nextHops(lab, 'router', `${VIP}/32`)).join() === all, 5000, `ECMP route to ${VIP}`);
    await waitUntil(async () => (await nextHops(lab, 'router', `${VIP6}/128`)).join() === all6, 5000, `ECMP route to ${VIP6}`);
    announcedMs = performance.now() - started;
  });

  after(async () => {
    for (const node of nodes ?? []) await node.lb.stop().catch(() => undefined);
    await lab?.down();
  });

  test('the router holds one route per VIP with both nodes as next hops', async (t) => {
    t.diagnostic(`both nodes announced -> ECMP routes (IPv4 and IPv6) on the router in ${announcedMs.toFixed(0)} ms`);
    assert.deepEqual(await nextHops(lab, 'router', `${VIP}/32`), nodes.map((n) => n.address).sort());
    assert.deepEqual(await nextHops(lab, 'router', `${VIP6}/128`), nodes.map((n) => n.address6).sort());
    for (const node of nodes) assert.deepEqual(node.holder!.ready.device, `lbv-${LAB.interface}`);
  });

  test(`${CONNECTIONS} new connections from the client behind the router spread over both nodes, which name the backend that answered`, async (t) => {
    const before = await Promise.all(nodes.map((n) => newFlows(n, KEY)));
    const result = await load(`http://${VIP}/`, CONNECTIONS);
    assert.deepEqual(result.failures, []);
    assert.equal(result.answers.length, CONNECTIONS);
    const after = await Promise.all(nodes.map((n) => newFlows(n, KEY)));
    const perNode = after.map((a, i) => a - before[i]!);
    t.diagnostic(
      `new flows per node: ${nodes.map((n, i) => `${n.name} ${perNode[i]} (${((100 * perNode[i]!) / CONNECTIONS).toFixed(1)}%)`).join(', ')}`,
    );
    assert.equal(
      perNode.reduce((a, b) => a + b, 0),
      CONNECTIONS,
      'each connection was a new flow on exactly one node',
    );
    for (const [i, n] of perNode.entries()) assert.ok(n >= MIN_SHARE * CONNECTIONS, `${nodes[i]!.name} got ${n} of ${CONNECTIONS}`);
    const tracked = await assertExplained(result.answers, KEY, t.diagnostic.bind(t));
    assert.deepEqual(tracked, perNode, 'each node tracks the flows it took');
  });

  test('IPv6: new connections spread over both nodes too, and both nodes agree', async (t) => {
    const before = await Promise.all(nodes.map((n) => newFlows(n, KEY6)));
    const result = await load(`http://[${VIP6}]/`, 100);
    assert.deepEqual(result.failures, []);
    const perNode = (await Promise.all(nodes.map((n) => newFlows(n, KEY6)))).map((a, i) => a - before[i]!);
    t.diagnostic(`IPv6 new flows per node: ${perNode.join(', ')}`);
    for (const [i, n] of perNode.entries()) assert.ok(n >= 20, `${nodes[i]!.name} got ${n} of 100`);
    await assertExplained(result.answers, KEY6, t.diagnostic.bind(t));
  });

  test("SIGKILL of one node's announcer: the router is down to the other node within a second; new connections still succeed", async (t) => {
    const [gone, kept] = nodes as [Node, Node];
    const inRouter = (argv: string[]) => lab.spawn('router', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const onNode = (argv: string[]) => lab.spawn(gone.namespaceSuffix, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const local = await waitForHops(onNode, String(LAB.fleet.announceTable), `${VIP}/32`, 0, 5000);
    const router = await waitForHops(inRouter, 'main', `${VIP}/32`, 1, 5000);
    const router6 = await waitForHops(inRouter, 'main', `${VIP6}/128`, 1, 5000);
    const killedAt = wallClock();
    await gone.holder!.kill();
    const [l, r, r6] = await Promise.all([local.done, router.done, router6.done]);
    const ms = { local: l.at - killedAt, router: r.at - killedAt, router6: r6.at - killedAt };
    t.diagnostic(
      `SIGKILL -> route gone on ${gone.name} ${ms.local.toFixed(1)} ms, router down to ${kept.name}: ` +
        `IPv4 ${ms.router.toFixed(1)} ms, IPv6 ${ms.router6.toFixed(1)} ms`,
    );
    assert.ok(
      ms.router < 1000 && ms.router6 < 1000,
      `the router still had ${gone.name} after ${Math.max(ms.router, ms.router6).toFixed(0)} ms`,
    );
    assert.deepEqual(await nextHops(lab, 'router', `${VIP}/32`), [kept.address]);
    assert.deepEqual(await nextHops(lab, 'router', `${VIP6}/128`), [kept.address6]);

    const before = await Promise.all(nodes.map((n) => newFlows(n, KEY)));
    const result = await load(`http://${VIP}/`, 100);
    assert.deepEqual(result.failures, []);
    const perNode = (await Promise.all(nodes.map((n) => newFlows(n, KEY)))).map((a, i) => a - before[i]!);
    assert.deepEqual(perNode, [0, 100], `new flows per node after the withdrawal (${gone.name}, ${kept.name})`);
  });

  /**
   * Both nodes' `explain` (the API `lbctl explain` prints) name, for every
   * flow, the backend that answered it; the CLI says the same for a few.
   */
  async function assertExplained(answers: readonly LabAnswer[], key: string, diagnostic: (s: string) => void): Promise<number[]> {
    const addressOf = new Map(BACKENDS.map((b) => [b.name, key === KEY ? b.address : b.address6]));
    const client = key === KEY ? LAB.fleet.client : `[${LAB.fleet.client6}]`;
    const tracked = nodes.map(() => 0);
    for (const answer of answers) {
      const flow = `${client}:${answer.port}`;
      const explained: ExplainResult[] = await Promise.all(nodes.map((n) => explain(n, flow, key)));
      for (const [i, e] of explained.entries()) {
        assert.equal(e.backend, addressOf.get(answer.backend), `${nodes[i]!.name}: ${flow} answered by ${answer.backend}`);
        if (e.decidedBy === 'tracked flow') tracked[i]!++;
      }
      // The node the router sent the flow to tracks it; the other only computes it.
      assert.equal(explained.filter((e) => e.decidedBy === 'tracked flow').length, 1, `${flow} tracked by one node`);
    }
    diagnostic(`${answers.length} flows explained alike on both nodes; tracked per node: ${tracked.join(', ')}`);
    for (const answer of answers.slice(0, 2)) {
      for (const node of nodes) {
        const out = await node.lb.ok(['explain', `${client}:${answer.port}`, key]);
        assert.match(
          out,
          new RegExp(`\\b${addressOf.get(answer.backend)!.replace(/[.:[\]]/g, '\\$&')}\\b`),
          `lbctl explain on ${node.name}:\n${out}`,
        );
      }
    }
    return tracked;
  }
});
