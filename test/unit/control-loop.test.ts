/**
 * The control loop over maps in memory: changes are validated, applied,
 * saved (or undone when saving fails), serialised; dry runs write nothing;
 * reloads keep runtime changes on top; health transitions are batched;
 * drains end only if still the same drain. No kernel, no root.
 */
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { pino } from 'pino';
import { ControlLoop } from '../../src/core/control-loop.js';
import { Reconciler } from '../../src/core/reconciler.js';
import type { BackendHealth, Transition } from '../../src/health/checker.js';
import { parseVip } from '../../src/model/address.js';
import { type BackendSpec, type DesiredState, NO_CHANGES, type RuntimeChanges, vipSettings } from '../../src/model/desired-state.js';
import { InputError } from '../../src/model/errors.js';
import { MemoryMaps, TestPaths } from '../support/memory-maps.js';

const WEB = '10.100.0.100:80/tcp';
const log = pino({ level: 'silent' });
/** The host's own addresses: the balancer's (eth0) and loopback. */
const HOST_ADDRESSES = new Map([
  ['10.10.0.2', 'eth0'],
  ['127.0.0.1', 'lo'],
]);

function be(address: string, weight = 1): BackendSpec {
  return { address, family: 4, weight };
}

const CONFIG: DesiredState = {
  vips: [{ vip: parseVip(WEB), ...vipSettings(parseVip(WEB), { tableSize: 251 }), backends: [be('10.10.0.11'), be('10.10.0.12')] }],
};

/** A clock whose jiffies are milliseconds. */
const clock = { now: () => BigInt(Date.now()), secondsSince: (j: bigint, now = BigInt(Date.now())) => Number(now - j) / 1000 };

interface Harness {
  loop: ControlLoop;
  maps: MemoryMaps;
  paths: TestPaths;
  reconciler: Reconciler;
  saved: RuntimeChanges[];
  down: Set<string>;
  failSave: { on: boolean };
}

async function harness(config = CONFIG, changes: RuntimeChanges = NO_CHANGES, options: { keepOnAllDown?: boolean } = {}): Promise<Harness> {
  const maps = new MemoryMaps({ maxVips: 8, maxBackends: 32, flowTableSize: 1024 });
  const paths = new TestPaths();
  const reconciler = new Reconciler(maps, log);
  const saved: RuntimeChanges[] = [];
  const down = new Set<string>();
  const failSave = { on: false };
  const health = (_vip: string, address: string): BackendHealth | undefined =>
    down.has(address) ? { state: 'down', since: new Date().toISOString(), consecutive: 3 } : undefined;
  const loop = new ControlLoop(
    {
      reconciler,
      flows: maps,
      clock,
      paths,
      health,
      hostAddresses: async () => HOST_ADDRESSES,
      saveChanges: (next) => {
        if (failSave.on) throw new Error('ENOSPC: no space left on device');
        saved.push(next);
      },
      log,
      ...options,
    },
    config,
    changes,
  );
  await loop.start();
  maps.takeLog();
  return { loop, maps, paths, reconciler, saved, down, failSave };
}

function addresses(loop: ControlLoop): string[] {
  return loop.views.find((v) => v.key === WEB)!.backends.map((b) => `${b.address}:${b.state}`);
}

function transition(address: string, from: Transition['from'], to: Transition['to']): Transition {
  return { key: `${WEB} ${address}`, vip: parseVip(WEB), address, from, to, reason: to === 'down' ? 'connection refused' : 'check passed' };
}

/** Waits (a few seconds at most) until check() holds. */
async function eventually(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('ControlLoop', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await harness();
  });

  test('a change is applied to the maps, saved, and answered with what it did', async () => {
    const result = await h.loop.change({ op: 'backend.add', vip: WEB, backend: be('10.10.0.13', 2) });
    assert.deepEqual(result, { message: `backend add ${WEB} 10.10.0.13 weight 2`, warnings: [], applied: true });
    assert.deepEqual(h.maps.takeLog(), ['reset backend counters 3', 'backend 3', 'tables 0']);
    assert.equal(h.saved.length, 1);
    assert.deepEqual(Object.keys(h.saved[0]!.vips[WEB]!.op === 'modify' ? h.saved[0]!.vips[WEB]!.backends : {}), ['10.10.0.13']);
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:active', '10.10.0.12:active', '10.10.0.13:active']);
    assert.equal(h.loop.desired.vips[0]!.backends.length, 3);
  });

  test('a change that does not apply is refused and changes nothing', async () => {
    await assert.rejects(h.loop.change({ op: 'backend.add', vip: WEB, backend: be('10.10.0.11') }), /already exists/);
    await assert.rejects(
      h.loop.change({ op: 'backend.add', vip: WEB, backend: { address: 'fd00::1', family: 6, weight: 1 } }),
      /only --forward ipip can cross/,
    );
    await assert.rejects(h.loop.change({ op: 'backend.remove', vip: '10.1.1.1:80/tcp', address: '10.10.0.11' }), /unknown VIP/);
    assert.deepEqual(h.maps.takeLog(), []);
    assert.deepEqual(h.saved, []);
  });

  test('when saving fails the maps are put back and the change is reported as not done', async () => {
    h.failSave.on = true;
    await assert.rejects(
      h.loop.change({ op: 'backend.remove', vip: WEB, address: '10.10.0.12' }),
      /could not save the change \(ENOSPC.*nothing was changed/,
    );
    assert.deepEqual(h.maps.takeLog(), ['tables 0', 'clear backend 2', 'reset backend counters 3', 'backend 3', 'tables 0']);
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:active', '10.10.0.12:active']);
    assert.equal(h.loop.desired.vips[0]!.backends.length, 2);
    h.failSave.on = false;
    await h.loop.change({ op: 'backend.remove', vip: WEB, address: '10.10.0.12' });
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:active']);
  });

  test('a dry run writes and saves nothing and says what the change would do', async () => {
    h.maps.addFlow({
      key: { saddr: '10.10.0.10', daddr: '10.100.0.100', sport: 40000, dport: 80, proto: 6 },
      backendId: 2,
      closing: false,
      lastSeen: clock.now(),
    });
    h.maps.addFlow({
      key: { saddr: '10.10.0.10', daddr: '10.100.0.100', sport: 40001, dport: 80, proto: 6 },
      backendId: 2,
      closing: true,
      lastSeen: clock.now(),
    });
    const result = await h.loop.change({ op: 'backend.remove', vip: WEB, address: '10.10.0.12' }, { dryRun: true });
    assert.equal(result.applied, false);
    assert.match(result.message, /^dry run, nothing changed: backend remove/);
    assert.equal(result.preview?.flowsToMove, 2);
    assert.equal(result.preview?.activeFlowsToMove, 1, 'the closing flow is not a live connection');
    assert.deepEqual(
      result.preview?.backends.map((b) => [b.address, b.after?.share ?? null]),
      [
        ['10.10.0.11', 1],
        ['10.10.0.12', null],
      ],
    );
    assert.deepEqual(h.maps.takeLog(), []);
    assert.deepEqual(h.saved, []);
  });

  test('a backend whose path can never work is refused; one not usable yet is added with a warning', async () => {
    h.paths.failures.set('10.20.0.14', {
      reason: '10.20.0.14 is behind router 10.10.0.1: l2dsr needs the backend on the same segment',
      permanent: true,
    });
    await assert.rejects(
      h.loop.change({ op: 'backend.add', vip: WEB, backend: be('10.20.0.14') }),
      /cannot add backend 10\.20\.0\.14: .* is behind router/,
    );
    h.paths.failures.set('10.10.0.15', { reason: 'next hop 10.10.0.15 on eth0 does not answer ARP', permanent: false });
    const result = await h.loop.change({ op: 'backend.add', vip: WEB, backend: be('10.10.0.15') });
    assert.deepEqual(result.warnings, ['backend 10.10.0.15 is not usable yet: next hop 10.10.0.15 on eth0 does not answer ARP']);
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:active', '10.10.0.12:active', '10.10.0.15:unresolved']);
  });

  test('changes asked for at once are applied one at a time, in order', async () => {
    const results = await Promise.allSettled([
      h.loop.change({ op: 'backend.add', vip: WEB, backend: be('10.10.0.13') }),
      h.loop.change({ op: 'backend.remove', vip: WEB, address: '10.10.0.13' }),
      h.loop.change({ op: 'backend.remove', vip: WEB, address: '10.10.0.13' }),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'fulfilled', 'rejected'],
    );
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:active', '10.10.0.12:active']);
    assert.equal(h.saved.length, 2);
  });

  test('a reload keeps the runtime changes on top; a reload that does not validate changes nothing', async () => {
    await h.loop.change({ op: 'backend.set', vip: WEB, address: '10.10.0.11', patch: { weight: 7 } });
    const edited: DesiredState = { vips: [{ ...CONFIG.vips[0]!, backends: [be('10.10.0.11', 2), be('10.10.0.14')] }] };
    await h.loop.reload(edited);
    assert.deepEqual(
      h.loop.desired.vips[0]!.backends.map((b) => [b.address, b.weight]),
      [
        ['10.10.0.11', 7],
        ['10.10.0.14', 1],
      ],
    );
    h.maps.takeLog();
    const invalid: DesiredState = { vips: [{ ...CONFIG.vips[0]!, backends: [{ address: 'fd00::14', family: 6, weight: 1 }] }] };
    await assert.rejects(h.loop.reload(invalid), InputError);
    assert.deepEqual(h.maps.takeLog(), []);
    assert.equal(h.loop.desired.vips[0]!.backends.length, 2);
  });

  test('health transitions that arrive together are applied in one go; unknown to up changes nothing', async () => {
    const applies = h.reconciler.stats.applies;
    h.loop.healthChanged(transition('10.10.0.11', 'unknown', 'up'));
    h.down.add('10.10.0.11');
    h.down.add('10.10.0.12');
    h.loop.healthChanged(transition('10.10.0.11', 'up', 'down'));
    h.loop.healthChanged(transition('10.10.0.12', 'unknown', 'down'));
    await h.loop.sweepFlows(); // queued after the health apply: waits for it
    assert.equal(h.reconciler.stats.applies, applies + 1);
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:down', '10.10.0.12:down']);
    assert.equal(h.loop.views[0]!.allDown, true);
    assert.deepEqual(h.loop.healthTransitions, { up: 1, down: 2 });
  });

  test("forgetting a VIP's tracked flows deletes those and only those, in the queue; an apply notifies onApplied", async () => {
    const flow = (daddr: string, dport: number, sport: number) => ({
      key: { saddr: '10.20.0.10', daddr, sport, dport, proto: 6 },
      backendId: 1,
      closing: false,
      lastSeen: 0n,
    });
    h.maps.addFlow(flow('10.100.0.100', 80, 1000));
    h.maps.addFlow(flow('10.100.0.100', 80, 1001));
    h.maps.addFlow(flow('10.100.0.100', 443, 1002));
    h.maps.addFlow(flow('10.100.0.101', 80, 1003));
    let applied = 0;
    h.loop.onApplied = () => applied++;
    h.down.add('10.10.0.11');
    h.loop.healthChanged(transition('10.10.0.11', 'up', 'down'));
    assert.equal(await h.loop.forgetFlows([parseVip(WEB)]), 2);
    assert.equal(applied, 1, 'the health apply queued before ran first, and said so');
    assert.deepEqual(
      [...h.maps.flows.values()].map((f) => `${f.key.daddr}:${f.key.dport}`),
      ['10.100.0.100:443', '10.100.0.101:80'],
    );
    assert.equal(await h.loop.forgetFlows([]), 0);
  });

  test('a fleet node keeps the table of a VIP whose backends all fail, whatever its policy', async () => {
    const drop: DesiredState = { vips: [{ ...CONFIG.vips[0]!, onAllDown: 'drop' }] };
    for (const keepOnAllDown of [false, true]) {
      const fleet = await harness(drop, NO_CHANGES, { keepOnAllDown });
      fleet.down.add('10.10.0.11');
      fleet.down.add('10.10.0.12');
      fleet.loop.healthChanged(transition('10.10.0.11', 'up', 'down'));
      fleet.loop.healthChanged(transition('10.10.0.12', 'up', 'down'));
      await fleet.loop.sweepFlows();
      const writes = fleet.maps.takeLog();
      if (keepOnAllDown) assert.deepEqual(writes, [], 'nothing rewritten');
      else assert.ok(writes.includes('tables 0:empty'), writes.join(', '));
    }
  });

  test('a drain ends only if it is still the same drain', async () => {
    const drain = { since: '2026-01-01T00:00:00.000Z', timeoutSeconds: 300, idleSeconds: 30 };
    await h.loop.change({ op: 'backend.set', vip: WEB, address: '10.10.0.12', patch: { drain } });
    await h.loop.finishDrain(WEB, '10.10.0.12', '2025-12-31T00:00:00.000Z', 'its flows have ended');
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:active', '10.10.0.12:draining'], 'another drain: left alone');
    await h.loop.finishDrain(WEB, '10.10.0.12', drain.since, 'its flows have ended');
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:active']);
  });

  test('once stopped, changes are refused; the last task runs after what was queued', async () => {
    const pending = h.loop.change({ op: 'backend.add', vip: WEB, backend: be('10.10.0.13') });
    const order: string[] = [];
    void pending.then(() => order.push('change'));
    await h.loop.stop(async () => {
      order.push('last');
    });
    assert.deepEqual(order, ['change', 'last']);
    await assert.rejects(h.loop.change({ op: 'backend.remove', vip: WEB, address: '10.10.0.13' }), /the daemon is stopping/);
  });

  test('a backend found down leaves the table while a reload still waits for the paths of its new backends', async () => {
    h.paths.hanging.add('10.10.0.14');
    const edited: DesiredState = { vips: [{ ...CONFIG.vips[0]!, backends: [be('10.10.0.11'), be('10.10.0.12'), be('10.10.0.14')] }] };
    let reloaded = false;
    void h.loop.reload(edited).then(() => (reloaded = true));
    h.down.add('10.10.0.12');
    h.loop.healthChanged(transition('10.10.0.12', 'up', 'down'));
    await eventually(() => addresses(h.loop).includes('10.10.0.12:down'), 'the health transition applied');
    assert.equal(reloaded, false, 'the reload is still resolving');
  });

  test('next hops being resolved hold back neither changes, nor health transitions, nor each other', async () => {
    // Both backends' next hops stop answering: every refresh of them hangs.
    h.paths.hanging.add('10.10.0.11');
    h.paths.hanging.add('10.10.0.12');
    let refreshed = false;
    void h.loop.pathsChanged().then(() => (refreshed = true));
    const result = await h.loop.change({ op: 'backend.set', vip: WEB, address: '10.10.0.12', patch: { weight: 5 } });
    assert.equal(result.applied, true);
    await h.loop.change({ op: 'backend.add', vip: WEB, backend: be('10.10.0.13') });
    h.down.add('10.10.0.11');
    h.loop.healthChanged(transition('10.10.0.11', 'up', 'down'));
    await eventually(() => addresses(h.loop).includes('10.10.0.11:down'), 'the health transition applied');
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:down', '10.10.0.12:active', '10.10.0.13:active']);
    assert.equal(refreshed, false, 'the network refresh is still waiting');
  });

  test('a change whose client went away before its turn is not made', async () => {
    const gone = new AbortController();
    gone.abort();
    await assert.rejects(
      h.loop.change({ op: 'backend.remove', vip: WEB, address: '10.10.0.12' }, { signal: gone.signal }),
      /the client went away before the change was made: nothing changed/,
    );
    assert.deepEqual(h.maps.takeLog(), []);
    assert.deepEqual(h.saved, []);
    assert.deepEqual(addresses(h.loop), ['10.10.0.11:active', '10.10.0.12:active']);
  });

  test("a VIP on one of the host's own addresses is refused: at a change, a reload and a start", async () => {
    const own = parseVip('10.10.0.2:22/tcp');
    await assert.rejects(
      h.loop.change({ op: 'vip.add', vip: own, settings: vipSettings(own, {}) }),
      /^InputError: VIP 10\.10\.0\.2:22\/tcp: 10\.10\.0\.2 is an address of this host \(on eth0\); only the backends hold a VIP$/,
    );
    const onHost: DesiredState = { vips: [...CONFIG.vips, { vip: own, ...vipSettings(own, {}), backends: [] }] };
    await assert.rejects(h.loop.reload(onHost), /10\.10\.0\.2 is an address of this host/);
    assert.equal(h.loop.desired.vips.length, 1, 'nothing changed');
    await assert.rejects(harness(onHost), /10\.10\.0\.2 is an address of this host/);
  });

  test('a config and runtime changes that do not make a valid state together are refused at start', () => {
    const changes: RuntimeChanges = {
      vips: { [WEB]: { op: 'modify', backends: { 'fd00::9': { op: 'add', backend: { address: 'fd00::9', family: 6, weight: 1 } } } } },
    };
    assert.throws(
      () =>
        new ControlLoop(
          {
            reconciler: new Reconciler(new MemoryMaps({ maxVips: 8, maxBackends: 32, flowTableSize: 1024 }), log),
            flows: new MemoryMaps({ maxVips: 8, maxBackends: 32, flowTableSize: 1024 }),
            clock,
            paths: new TestPaths(),
            hostAddresses: async () => HOST_ADDRESSES,
            health: () => undefined,
            saveChanges: () => {},
            log,
          },
          CONFIG,
          changes,
        ),
      /only --forward ipip can cross address families/,
    );
  });
});
