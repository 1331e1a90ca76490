/**
 * A fleet of two lbctl nodes behind the router, each daemon announcing its
 * VIPs itself (announce in the config; BIRD takes the routes to the router,
 * which spreads new connections from the client behind it over both nodes
 * by ECMP): identical Maglev tables make both nodes name the same backend
 * for every flow; a node that leaves the fleet in any way (stop, restart, SIGKILL,
 * kill-switch, a stuck event loop, its checks failing, cut off for 10 s) is
 * out of the router's route at once and comes back after its checks and
 * hold-down, and no connection or request breaks; a VIP whose backends all
 * fail is withdrawn and comes back after rise and hold-down. Needs root,
 * `make`, bird2 and nft (scripts/install-deps.sh).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { call } from '../../src/api/client.js';
import type { ExplainResult, StatsResult, StatusResult, VipSummary } from '../../src/api/protocol.js';
import { LAB, Lab } from './lab.js';
import { nextHops, waitUntil } from '../support/fleet.js';
import {
  BACKENDS,
  FAILOVER_WAYS,
  type FailoverWay,
  Fleet,
  type FleetNode,
  KEY,
  KEY6,
  VIP,
  VIP6,
  describeFailover,
} from '../support/fleet-failover.js';
import type { LabAnswer } from '../support/http-load.js';

const CONNECTIONS = 500;
const MIN_SHARE = 0.35;
/** A VIP of its own on one backend (be3), for the test where all its backends fail. */
const LONE = LAB.vips[1]!;
const LONE_KEY = `${LONE}:80/tcp`;
const LONE_BACKEND = LAB.backends.find((b) => b.forward === 'l2dsr' && !BACKENDS.includes(b))!;
const METRICS = '127.0.0.1:9640';

/** What each way must show in the node's own log, besides the withdrawal reaching the router. */
const EXPECTED_EVENTS: Record<FailoverWay, string[]> = {
  stop: ['announce.withdrawn stopping', 'daemon.stopped', 'announce.started', 'announce.announced'],
  restart: ['announce.withdrawn stopping', 'daemon.stopped', 'announce.started', 'announce.announced'],
  sigkill: ['announce.started', 'announce.announced'],
  'kill-switch': ['announce.withdrawn kill_switch', 'killswitch.engaged', 'announce.announced'],
  stall: ['announce.watchdog_fired', 'announce.device_restored', 'announce.announced'],
  'checks-fail': ['announce.withdrawn backends', 'announce.announced'],
  'cut-off': ['announce.link_changed', 'announce.withdrawn interface_down', 'announce.announced'],
};

describe('a fleet of two lbctl nodes behind ECMP, announcing their VIPs', () => {
  let lab: Lab;
  let fleet: Fleet;
  let nodes: readonly FleetNode[];
  let readyMs = 0;

  /** New flows each node's data plane gave a backend, per VIP key. */
  const newFlows = async (node: FleetNode, key: string) => {
    const stats = (await call(node.lb.socket, 'stats', {})) as StatsResult;
    return stats.vips.find((v) => v.vip === key)?.newFlows ?? NaN;
  };
  const explain = (node: FleetNode, client: string, key: string) => call(node.lb.socket, 'explain', { client, vip: key });
  const load = (url: string, connections: number) => nodes[0]!.lb.httpFromClient(url, connections, 16, LAB.fleet.clientNamespace);
  const vipList = (node: FleetNode) => node.lb.json<VipSummary[]>(['vip', 'list']);

  before(async () => {
    lab = await Lab.up({ fleet: true });
    const started = performance.now();
    fleet = await Fleet.start(lab, {
      extraVips:
        `  - vip: ${LONE_KEY}\n    check_interval: 200ms\n    check_timeout: 150ms\n    rise: 3\n    fall: 2\n` +
        `    backends:\n      - address: ${LONE_BACKEND.address}\n`,
      metricsAddress: METRICS,
    });
    readyMs = performance.now() - started;
    nodes = fleet.nodes;
  });

  after(async () => {
    await fleet?.stop();
    await lab?.down();
  });

  test('each daemon announces: the router holds one route per VIP with both nodes as next hops', async (t) => {
    t.diagnostic(`both daemons started -> ECMP routes (IPv4 and IPv6) on the router in ${readyMs.toFixed(0)} ms (hold-down 1 s)`);
    // The lone VIP has checks of its own (rise 3 x 200 ms, then the hold-down): it may come a moment after the others.
    const loneMs = await waitUntil(
      async () => (await nextHops(lab, 'router', `${LONE}/32`)).length === nodes.length,
      10_000,
      `${LONE} announced by both nodes`,
      20,
    );
    t.diagnostic(`${LONE} on the router over both nodes ${loneMs.toFixed(0)} ms after the others`);
    assert.deepEqual(await nextHops(lab, 'router', `${VIP}/32`), nodes.map((n) => n.address).sort());
    assert.deepEqual(await nextHops(lab, 'router', `${VIP6}/128`), nodes.map((n) => n.address6).sort());
    for (const node of nodes) {
      const status = await node.lb.json<StatusResult>(['status']);
      assert.equal(status.announce?.device, `lbv-${LAB.interface}`);
      assert.deepEqual(status.announce?.announced, [VIP, LONE, VIP6].sort());
      assert.match(
        await node.lb.ok(['status']),
        new RegExp(`announce +${[VIP, LONE, VIP6].sort().join(', ')} through lbv-eth0 \\(table 100, proto 201\\)`),
      );
      const vips = await vipList(node);
      assert.deepEqual(
        vips.map((v) => [v.vip, v.announce.announced, v.announce.reason]),
        [
          [KEY, true, null],
          [KEY6, true, null],
          [LONE_KEY, true, null],
        ],
      );
      assert.match(await node.lb.ok(['vip', 'list']), /^VIP +ANNOUNCED +FORWARD/);
      const metrics = await lab.exec(node.namespaceSuffix, ['curl', '-sS', `http://${METRICS}/metrics`]);
      assert.match(metrics.stdout, new RegExp(`^lbctl_vip_announced\\{vip="${KEY}"\\} 1$`, 'm'));
      assert.doesNotMatch(metrics.stdout, /^lbctl_vip_not_announced\{/m);
    }
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

  for (const way of FAILOVER_WAYS) {
    test(`a node leaves the fleet (${way}) and comes back under traffic: no connection or request breaks, the router drops it at once`, async (t) => {
      const victim = nodes[0]!;
      const result = await fleet.failover(way, victim, way === 'cut-off' ? { awayMs: 10_000 } : {});
      t.diagnostic(describeFailover(result));
      assert.deepEqual(result.broken, [], 'long-lived connections broken');
      assert.deepEqual(result.failedRequests, [], 'requests failed');
      assert.ok(result.connections === 50 && result.messages > 50 * 20, `${result.connections} connections, ${result.messages} messages`);
      assert.ok(result.requests > 40, `the request loop kept going (${result.requests})`);
      // The node's own withdrawal reaches the router in milliseconds; a stuck
      // event loop waits for the watchdog, which fires long before the
      // kill-switch could fail open; a node cut off is dropped by BFD (3 x 300 ms).
      const limit = way === 'stall' ? 0.75 * fleet.killSwitchTimeoutMs : way === 'cut-off' ? 1500 : way === 'checks-fail' ? 1500 : 1000;
      assert.ok(
        Math.max(result.withdrawnMs, result.withdrawnMs6) < limit,
        `withdrawn at the router after ${result.withdrawnMs.toFixed(0)} / ${result.withdrawnMs6.toFixed(0)} ms (limit ${limit} ms)`,
      );
      // The watchdog's limit counts from the last heartbeat, up to a tenth of it before the stop.
      if (way === 'stall') assert.ok(result.withdrawnMs >= 0.85 * (fleet.killSwitchTimeoutMs / 3), 'not before the watchdog limit');
      assert.ok(result.packetsAfterRejoin > 0, `${victim.name} balances again once back`);
      for (const event of EXPECTED_EVENTS[way]) assert.ok(result.events.includes(event), `${event} in ${result.events.join(', ')}`);
    });
  }

  test('a VIP whose backends all fail is withdrawn by every node, its table kept; it comes back after rise and the hold-down', async (t) => {
    const block = (op: 'add' | 'delete') =>
      lab.exec(LONE_BACKEND.namespaceSuffix, ['nft', '-f', '-'], {
        input:
          op === 'add'
            ? 'add table inet lbtest\nadd chain inet lbtest in { type filter hook input priority 0 ; tcp dport 80 drop ; }\n'
            : 'delete table inet lbtest\n',
      });
    const blockedAt = performance.now();
    assert.equal((await block('add')).code, 0);
    const withdrawnMs = await waitUntil(
      async () => (await nextHops(lab, 'router', `${LONE}/32`)).length === 0,
      10_000,
      `${LONE} withdrawn`,
      20,
    );
    assert.deepEqual(await nextHops(lab, 'router', `${VIP}/32`), nodes.map((n) => n.address).sort(), 'the other VIPs stay');
    for (const node of nodes) {
      const lone = (await vipList(node)).find((v) => v.vip === LONE_KEY)!;
      assert.equal(lone.allDown, true);
      assert.equal(lone.announce.announced, false);
      assert.deepEqual(lone.announce.reason, { code: 'backends', text: '0 healthy backends, need 1' });
      assert.match(await node.lb.ok(['vip', 'list']), new RegExp(`${LONE_KEY}: not announced: 0 healthy backends, need 1`));
      // Withdrawn, not rewritten: the table still names the backend (on_all_down keep).
      const [backend] = await node.lb.json<Array<{ keptWhileAllDown?: boolean; slots: number }>>(['backend', 'list', LONE_KEY]);
      assert.equal(backend!.keptWhileAllDown, true);
      assert.ok(backend!.slots > 0);
      const metrics = await lab.exec(node.namespaceSuffix, ['curl', '-sS', `http://${METRICS}/metrics`]);
      assert.match(metrics.stdout, new RegExp(`^lbctl_vip_announced\\{vip="${LONE_KEY}"\\} 0$`, 'm'));
      assert.match(metrics.stdout, new RegExp(`^lbctl_vip_not_announced\\{vip="${LONE_KEY}",reason="backends"\\} 1$`, 'm'));
    }

    const unblockedAt = performance.now();
    assert.equal((await block('delete')).code, 0);
    let sawHoldDown = false;
    const backMs = await waitUntil(
      async () => {
        const lone = (await vipList(nodes[0]!)).find((v) => v.vip === LONE_KEY)!;
        if (lone.announce.reason?.code === 'hold_down') sawHoldDown = true;
        return (await nextHops(lab, 'router', `${LONE}/32`)).length === nodes.length;
      },
      15_000,
      `${LONE} announced again by both nodes`,
      20,
    );
    t.diagnostic(
      `backend blocked -> ${LONE} withdrawn everywhere in ${withdrawnMs.toFixed(0)} ms (fall 2 x 200 ms); ` +
        `unblocked -> back on the router in ${backMs.toFixed(0)} ms (rise 3 x 200 ms + hold-down 1 s)`,
    );
    assert.ok(sawHoldDown, 'the VIP waited in its hold-down');
    assert.ok(backMs >= 1000 + 2 * 200, `not before rise and hold-down (${backMs.toFixed(0)} ms)`);
    assert.ok(unblockedAt > blockedAt);
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
