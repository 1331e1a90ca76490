/**
 * Backends change under live traffic: 50 long-lived connections, each
 * sending a request every 100 ms and checking every answer, while a backend
 * is added, a weight changed, one backend drained and one removed. Every
 * connection whose backend stays alive must finish without a reset or a
 * lost message; new connections must follow the new table.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LAB, Lab, ROOT } from './lab.js';
import type { BackendSummary, ChangeResult, ExplainResult, VipSummary } from '../../src/api/protocol.js';
import { LabBalancer, backendPredictor } from '../support/balancer.js';
import { waitFor } from '../support/wait.js';
import { EXIT } from '../../src/api/exit-codes.js';
import type { ConnectionReport } from '../support/long-lived.js';

const VIP = `${LAB.vips[0]}:80/tcp`;
const LONG_LIVED = join(ROOT, 'dist', 'test', 'support', 'long-lived.js');
const nameOf = (address: string) => LAB.backends.find((b) => b.address === address)!.name;

describe('changing backends under live traffic', () => {
  let lab: Lab;
  let lb: LabBalancer;

  before(async () => {
    lab = await Lab.up();
    lb = new LabBalancer(lab);
    await lb.start();
    await lb.ok(['vip', 'add', VIP]);
    for (const address of ['10.10.0.11', '10.10.0.12', '10.10.0.13']) await lb.ok(['backend', 'add', VIP, address]);
  });

  after(async () => {
    await lb?.stop();
    await lab?.down();
  });

  test('--dry-run shows shares, moved slots and affected flows, and changes nothing; explain tells where a flow goes', async () => {
    const answers = await lb.httpFromClient(`http://${LAB.vips[0]}/`, 60);
    assert.deepEqual(answers.failures, []);
    const onBe2 = answers.answers.filter((a) => a.backend === 'be2').length;
    // What a change would alter; the health checks go on probing meanwhile.
    const definition = async () =>
      (await lb.json<BackendSummary[]>(['backend', 'list', VIP])).map(({ address, weight, forward, state, slots, share, drain }) => ({
        address,
        weight,
        forward,
        state,
        slots,
        share,
        drain,
      }));
    const before = await definition();

    const add = await lb.json<ChangeResult>(['backend', 'add', VIP, '10.20.0.14', '--forward', 'ipip', '--dry-run']);
    assert.equal(add.applied, false);
    const preview = add.preview!;
    assert.deepEqual(
      preview.backends.map((b) => [b.address, b.after && Math.round(b.after.share * 100)]),
      [
        ['10.10.0.11', 25],
        ['10.10.0.12', 25],
        ['10.10.0.13', 25],
        ['10.20.0.14', 25],
      ],
    );
    assert.ok(preview.fractionMoved > 0.24 && preview.fractionMoved < 0.27, `about a quarter of the slots move (${preview.fractionMoved})`);
    assert.equal(preview.flowsToMove, 0, 'adding a backend moves no tracked flow');
    assert.ok(preview.trackedFlows >= 60, `tracked flows counted (${preview.trackedFlows})`);

    const remove = await lb.json<ChangeResult>(['backend', 'remove', VIP, '10.10.0.12', '--dry-run']);
    assert.equal(remove.preview!.flowsToMove, onBe2, 'the flows tracked on the removed backend');
    assert.equal(remove.preview!.activeFlowsToMove, 0, 'none of them a live connection: the client closed them all');
    assert.ok(Math.abs(remove.preview!.fractionMoved - 1 / 3) < 0.01);
    const text = await lb.ok(['backend', 'weight', VIP, '10.10.0.11', '2', '--dry-run']);
    assert.match(text, /^lbctl: dry run, nothing changed: backend weight 10\.100\.0\.100:80\/tcp 10\.10\.0\.11 2\n/);
    assert.match(text, /new-flow slots that change backend: \d+ of 65537/);
    assert.deepEqual(await definition(), before, 'nothing changed');

    const seen = answers.answers[0]!;
    const tracked = await lb.json<ExplainResult>(['explain', `${LAB.client}:${seen.port}`, VIP]);
    assert.equal(tracked.backend, LAB.backends.find((b) => b.name === seen.backend)!.address);
    assert.equal(tracked.decidedBy, 'tracked flow');
    assert.equal(tracked.tracked?.closing, true, 'the client closed that connection');
    const unusedPort = 64999;
    const fresh = await lb.json<ExplainResult>(['explain', `${LAB.client}:${unusedPort}`, VIP]);
    const predicted = backendPredictor(
      ['10.10.0.11', '10.10.0.12', '10.10.0.13'].map((address) => ({ address, weight: 1 })),
      LAB.client,
      LAB.vips[0],
    )(unusedPort);
    assert.equal(fresh.decidedBy, 'maglev table');
    assert.equal(fresh.backend, predicted);
    assert.equal(fresh.tracked, undefined);
    const bad = await lb.cli(['explain', 'nonsense', VIP]);
    assert.equal(bad.stderr, 'lbctl: invalid client "nonsense": expected ADDRESS:PORT, e.g. 192.0.2.7:40000 or [2001:db8::7]:40000\n');
  });

  test('50 long-lived connections survive add, weight, drain and remove; new connections follow the new table', async (t) => {
    const runner = lab.spawn('client', [process.execPath, LONG_LIVED, LAB.vips[0], '80', '50', '9000', '100'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let progress = '';
    runner.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    runner.stderr!.on('data', (chunk: Buffer) => {
      progress += chunk.toString();
    });
    const finished = new Promise<void>((resolve) => runner.once('exit', () => resolve()));
    const deadline = Date.now() + 10_000;
    while (!progress.includes('open') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(progress.includes('open'), `the connections opened: ${progress}`);

    const pause = () => new Promise((r) => setTimeout(r, 800));
    await lb.ok(['backend', 'add', VIP, '10.20.0.14', '--forward', 'ipip']);
    await pause();
    await lb.ok(['backend', 'weight', VIP, '10.10.0.11', '3']);
    await pause();
    await lb.ok(['backend', 'drain', VIP, '10.10.0.12', '--timeout', '2m', '--idle', '30s']);
    await pause();
    const preview = (await lb.json<ChangeResult>(['backend', 'remove', VIP, '10.10.0.13', '--dry-run'])).preview!;
    await lb.ok(['backend', 'remove', VIP, '10.10.0.13']);
    await pause();

    // New connections while the old ones still run: they follow the new table.
    const final = [
      { address: '10.10.0.11', weight: 3 },
      { address: '10.20.0.14', weight: 1 },
    ];
    const fresh = await lb.httpFromClient(`http://${LAB.vips[0]}/`, 300);
    assert.deepEqual(fresh.failures, []);
    const predict = backendPredictor(final, LAB.client, LAB.vips[0]);
    for (const answer of fresh.answers)
      assert.equal(answer.backend, nameOf(predict(answer.port)), `new connection from port ${answer.port}`);
    const draining = (await lb.json<BackendSummary[]>(['backend', 'list', VIP])).find((b) => b.address === '10.10.0.12');
    assert.equal(draining?.state, 'draining', 'the drained backend waits for its connections');

    await finished;
    const reports = JSON.parse(output) as ConnectionReport[];
    assert.equal(reports.length, 50);
    const byBackend = new Map<string, ConnectionReport[]>();
    for (const r of reports) byBackend.set(r.backend ?? '?', [...(byBackend.get(r.backend ?? '?') ?? []), r]);
    t.diagnostic(`connections per backend: ${[...byBackend].map(([b, rs]) => `${b} ${rs.length}`).join(', ')}`);
    for (const name of ['be1', 'be2', 'be3']) assert.ok(byBackend.has(name), `some connections started on ${name}`);
    for (const r of reports.filter((report) => report.backend !== 'be3')) {
      assert.equal(r.failure, null, `connection from port ${r.port} on ${r.backend} (alive) failed: ${r.failure}`);
      assert.equal(r.answered, r.sent, `connection from port ${r.port}: every message answered`);
      assert.ok(r.sent >= 60, `connection from port ${r.port} kept talking (${r.sent} messages)`);
    }
    // be3 was removed: its connections were moved to other backends, which reset them.
    for (const r of byBackend.get('be3')!)
      assert.notEqual(r.failure, null, `connection on removed be3 from port ${r.port} could not survive`);
    assert.equal(
      preview.activeFlowsToMove,
      byBackend.get('be3')!.length,
      'the dry run counted exactly the live connections the removal broke',
    );
    assert.ok(preview.flowsToMove >= preview.activeFlowsToMove, 'and counts ended flows apart');

    // The drained backend goes once its connections have closed (their FINs).
    const gone = Date.now() + 8000;
    let backends = await lb.json<BackendSummary[]>(['backend', 'list', VIP]);
    while (backends.some((b) => b.address === '10.10.0.12') && Date.now() < gone) {
      await new Promise((r) => setTimeout(r, 250));
      backends = await lb.json<BackendSummary[]>(['backend', 'list', VIP]);
    }
    assert.deepEqual(
      backends.map((b) => b.address),
      ['10.10.0.11', '10.20.0.14'],
      'the drain finished after its flows ended',
    );
    const [vip] = await lb.json<VipSummary[]>(['vip', 'list']);
    assert.ok(vip!.movedFlows >= byBackend.get('be3')!.length, `moved flows counted (${vip!.movedFlows})`);
  });

  test("a VIP of all ports hashing the client's address (lbctl vip add ADDRESS:0/tcp --hash source): one backend for every connection of a client, any port", async (t) => {
    const address = LAB.vips[1]!;
    const key = `${address}:0/tcp`;
    const refused = await lb.cli(['vip', 'add', key]);
    assert.equal(refused.code, EXIT.invalid);
    assert.match(refused.stderr, /a VIP of all ports \(port 0\) needs the port to check: check_port in a config file, --check-port/);
    await lb.ok(['vip', 'add', key, '--check-port', '80', '--hash', 'source']);
    try {
      for (const backend of ['10.10.0.11', '10.10.0.12', '10.10.0.13']) await lb.ok(['backend', 'add', key, backend]);
      await waitFor('three healthy backends', async () =>
        (await lb.json<VipSummary[]>(['vip', 'list'])).find((v) => v.vip === key && v.activeBackends === 3),
      );
      const vips = await lb.json<VipSummary[]>(['vip', 'list']);
      assert.equal(vips.find((v) => v.vip === key)!.hash, 'source');
      assert.match(await lb.ok(['vip', 'list']), new RegExp(`^${address.replaceAll('.', '\\.')}:0/tcp .* source `, 'm'));

      const answers = await lb.httpFromClient(`http://${address}/`, 40);
      assert.deepEqual(answers.failures, []);
      const backends = new Set(answers.answers.map((a) => a.backend));
      assert.equal(backends.size, 1, `every connection to one backend: ${[...backends].join(', ')}`);
      const [name] = backends;
      const sample = answers.answers[0]!;
      const explained = await lb.json<ExplainResult>(['explain', `${LAB.client}:${sample.port}`, key, '--port', '80']);
      assert.equal(nameOf(explained.backend!), name);
      assert.equal(explained.table.hashOf, 'source');
      // Any other client port and destination port: the same slot.
      const other = await lb.json<ExplainResult>(['explain', `${LAB.client}:1234`, key, '--port', '8443']);
      assert.equal(other.table.slot, explained.table.slot);
      const noPort = await lb.cli(['explain', `${LAB.client}:1234`, key]);
      assert.equal(noPort.code, EXIT.invalid);
      assert.match(noPort.stderr, /give the port the client connects to \(--port\)/);
      t.diagnostic(`40 connections from ${LAB.client} to ${address} (a VIP of all ports, hash source): all on ${name}`);
    } finally {
      await lb.ok(['vip', 'remove', key]);
    }
  });
});
