/**
 * HTTP through the balancer in the lab: real clients, real servers, the
 * real CLI and daemon. Every new connection must land on the backend the
 * Maglev table names for its 5-tuple, and the spread must follow weights.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { LAB, Lab } from './lab.js';
import { type BackendSummary, type StatusResult } from '../../src/api/protocol.js';
import { LabBalancer, backendPredictor } from '../support/balancer.js';
import type { LoadResult } from '../support/http-load.js';

const CONNECTIONS = 1000;
const TOLERANCE = 0.05;
const L2_VIP = { address: LAB.vips[0], key: `${LAB.vips[0]}:80/tcp` };
const IPIP_VIP = { address: LAB.vips[1], key: `${LAB.vips[1]}:80/tcp` };

const nameOf = (address: string) => LAB.backends.find((b) => b.address === address)!.name;

/** Asserts every answer came from the predicted backend, and shares match weights. */
function checkSpread(
  result: LoadResult,
  vip: string,
  backends: ReadonlyArray<{ address: string; weight: number }>,
  diagnostic: (s: string) => void,
): Map<string, number> {
  assert.deepEqual(result.failures, [], 'every connection succeeded');
  const predict = backendPredictor(backends, LAB.client, vip);
  const counts = new Map<string, number>(backends.map((b) => [nameOf(b.address), 0]));
  for (const answer of result.answers) {
    assert.equal(answer.client, LAB.client, "the backend saw the client's own address");
    assert.equal(
      answer.backend,
      nameOf(predict(answer.port)),
      `connection from port ${answer.port} reached the backend its Maglev slot names`,
    );
    counts.set(answer.backend, (counts.get(answer.backend) ?? 0) + 1);
  }
  const totalWeight = backends.reduce((sum, b) => sum + b.weight, 0);
  for (const b of backends) {
    const share = counts.get(nameOf(b.address))! / result.answers.length;
    const expected = b.weight / totalWeight;
    diagnostic(`${vip} ${nameOf(b.address)} weight ${b.weight}: ${(share * 100).toFixed(1)}% (expected ${(expected * 100).toFixed(1)}%)`);
    assert.ok(
      Math.abs(share - expected) <= TOLERANCE,
      `${nameOf(b.address)} got ${(share * 100).toFixed(1)}%, expected ${(expected * 100).toFixed(1)}% ± ${TOLERANCE * 100}`,
    );
  }
  return counts;
}

describe('balancing HTTP in the lab', () => {
  let lab: Lab;
  let lb: LabBalancer;
  let status: StatusResult;

  before(async () => {
    lab = await Lab.up();
    lb = new LabBalancer(lab);
    await lb.start();
    status = await lb.json<StatusResult>(['status']);
  });

  after(async () => {
    await lb?.stop();
    await lab?.down();
  });

  test('l2dsr: connections spread 6:4:2 over the backends on the segment', async (t) => {
    const backends = [
      { address: '10.10.0.11', weight: 6 },
      { address: '10.10.0.12', weight: 4 },
      { address: '10.10.0.13', weight: 2 },
    ];
    await lb.ok(['vip', 'add', L2_VIP.key, '--forward', 'l2dsr']);
    for (const b of backends) await lb.ok(['backend', 'add', L2_VIP.key, b.address, '--weight', String(b.weight)]);
    const list = await lb.json<BackendSummary[]>(['backend', 'list', L2_VIP.key]);
    assert.deepEqual(
      list.map((b) => [b.address, b.state, b.forward]),
      backends.map((b) => [b.address, 'active', 'l2dsr']),
    );
    const result = await lb.httpFromClient(`http://${L2_VIP.address}/`, CONNECTIONS);
    checkSpread(result, L2_VIP.address, backends, (s) => t.diagnostic(s));
    const counted = await lb.json<BackendSummary[]>(['backend', 'list', L2_VIP.key]);
    assert.ok(
      counted.every((b) => b.packets > 0),
      'backend packet counters moved',
    );
  });

  test('ipip: connections reach a backend on the segment and two behind the router', async (t) => {
    const backends = [
      { address: '10.10.0.11', weight: 2 },
      { address: '10.20.0.14', weight: 1 },
      { address: '10.20.0.15', weight: 1 },
    ];
    await lb.ok(['vip', 'add', IPIP_VIP.key, '--forward', 'ipip']);
    for (const b of backends) await lb.ok(['backend', 'add', IPIP_VIP.key, b.address, '--weight', String(b.weight)]);
    const list = await lb.json<BackendSummary[]>(['backend', 'list', IPIP_VIP.key]);
    assert.deepEqual(
      list.map((b) => b.nextHop),
      ['10.10.0.11', LAB.router.front, LAB.router.front],
      'next hops from the routing table',
    );
    const result = await lb.httpFromClient(`http://${IPIP_VIP.address}/`, CONNECTIONS);
    checkSpread(result, IPIP_VIP.address, backends, (s) => t.diagnostic(s));
  });

  test('replies go from the backends to the client, never through the balancer', async () => {
    const macOf = async (role: string) =>
      JSON.parse((await lab.exec(role, ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0].address as string;
    const balancerMac = await macOf('lb');
    const allowed = new Set([...(await Promise.all(['be1', 'be2', 'be3'].map(macOf))), await macOf('router')]);
    const capture = lab.spawn(
      'client',
      ['tcpdump', '--immediate-mode', '-i', 'eth0', '-e', '-n', '-l', `src net ${LAB.vipSubnet} and tcp`],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let lines = '';
    capture.stdout!.on('data', (chunk: Buffer) => {
      lines += chunk.toString();
    });
    await new Promise((resolve) => setTimeout(resolve, 500)); // tcpdump attaches
    await lb.httpFromClient(`http://${L2_VIP.address}/`, 10, 2);
    await lb.httpFromClient(`http://${IPIP_VIP.address}/`, 10, 2);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const exited = new Promise((resolve) => capture.once('exit', resolve));
    capture.kill('SIGINT');
    await exited;
    const sources = lines
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => l.split(' ')[1]!);
    assert.ok(sources.length >= 20, `captured ${sources.length} reply frames`);
    for (const mac of sources) {
      assert.notEqual(mac, balancerMac, 'a reply came from the balancer');
      assert.ok(allowed.has(mac), `reply from unexpected MAC ${mac}`);
    }
  });

  test('backend add and remove at runtime change the spread without a restart', async (t) => {
    await lb.ok(['backend', 'add', IPIP_VIP.key, '10.10.0.13', '--weight', '2']);
    const grown = [
      { address: '10.10.0.11', weight: 2 },
      { address: '10.20.0.14', weight: 1 },
      { address: '10.20.0.15', weight: 1 },
      { address: '10.10.0.13', weight: 2 },
    ];
    checkSpread(await lb.httpFromClient(`http://${IPIP_VIP.address}/`, CONNECTIONS), IPIP_VIP.address, grown, (s) => t.diagnostic(s));

    await lb.ok(['backend', 'remove', L2_VIP.key, '10.10.0.11']);
    const shrunk = [
      { address: '10.10.0.12', weight: 4 },
      { address: '10.10.0.13', weight: 2 },
    ];
    const counts = checkSpread(await lb.httpFromClient(`http://${L2_VIP.address}/`, CONNECTIONS), L2_VIP.address, shrunk, (s) =>
      t.diagnostic(s),
    );
    assert.equal(counts.get('be1') ?? 0, 0, 'the removed backend got no new connection');

    const after = await lb.json<StatusResult>(['status']);
    assert.equal(after.pid, status.pid, 'same daemon');
    assert.equal(after.programId, status.programId, 'same XDP program');
  });
});
