/**
 * Which addresses a fleet node announces, and why not (src/fleet/announce-policy.ts):
 * node conditions, need, hold-down restarted by a changing healthy set,
 * immediate withdrawal, addresses shared by several VIPs, IPv6. Pure: no root.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { BackendView, VipView } from '../../src/core/views.js';
import type { BackendHealth } from '../../src/health/checker.js';
import { parseVip } from '../../src/model/address.js';
import {
  type AnnounceInputs,
  type NodeConditions,
  type Readiness,
  type VipReadiness,
  healthyBackends,
  planAnnouncements,
} from '../../src/fleet/announce-policy.js';

const NODE: NodeConditions = { stopping: false, killSwitchEngaged: false, interface: 'eth0', interfaceUp: true };
const HOLD = 5000;

const vip = (key: string, healthy: string[], need = 1): VipReadiness => ({
  key,
  address: parseVip(key).address,
  healthy,
  need,
});

/** Plans with defaults; `state` carries readiness and what is announced from one plan to the next, as the controller does. */
function planner(holdDownMs = HOLD) {
  let readiness: Readiness = new Map();
  const announced = new Set<string>();
  return (vips: VipReadiness[], now: number, node: NodeConditions = NODE) => {
    const inputs: AnnounceInputs = { vips, node, holdDownMs, now, announced: new Set(announced), readiness };
    const plan = planAnnouncements(inputs);
    readiness = plan.readiness;
    for (const [address, yes] of plan.addresses) {
      if (yes) announced.add(address);
      else announced.delete(address);
    }
    return plan;
  };
}

const WEB = '10.100.0.100:80/tcp';
const TLS = '10.100.0.100:443/tcp';
const DNS = '10.100.0.101:53/udp';
const WEB6 = '[fd00:100::100]:80/tcp';

describe('planAnnouncements', () => {
  test('a VIP with enough healthy backends is announced after the hold-down, not before', () => {
    const plan = planner();
    const first = plan([vip(WEB, ['a', 'b'])], 0);
    assert.equal(first.addresses.get('10.100.0.100'), false);
    assert.deepEqual(first.vips[0]!.reason, { code: 'hold_down', text: 'hold-down: 5 s left' });
    assert.equal(first.wakeAt, 5000);
    assert.deepEqual(plan([vip(WEB, ['a', 'b'])], 3100).vips[0]!.reason, { code: 'hold_down', text: 'hold-down: 2 s left' });
    assert.equal(plan([vip(WEB, ['a', 'b'])], 4999).addresses.get('10.100.0.100'), false);
    const due = plan([vip(WEB, ['a', 'b'])], 5000);
    assert.equal(due.addresses.get('10.100.0.100'), true);
    assert.equal(due.vips[0]!.reason, null);
    assert.equal(due.wakeAt, undefined);
  });

  test('no hold-down: announced at once', () => {
    assert.equal(planner(0)([vip(WEB, ['a'])], 0).addresses.get('10.100.0.100'), true);
  });

  test('backends coming back one by one restart the hold-down: the node rejoins with its whole table', () => {
    const plan = planner();
    plan([vip(WEB, ['a'])], 0);
    plan([vip(WEB, ['a', 'b'])], 3000);
    assert.equal(plan([vip(WEB, ['a', 'b'])], 5000).addresses.get('10.100.0.100'), false, 'b joined at 3000');
    assert.equal(plan([vip(WEB, ['a', 'b'])], 8000).addresses.get('10.100.0.100'), true);
  });

  test('once announced, a backend leaving (still >= need) changes nothing; below need it is withdrawn at once', () => {
    const plan = planner(0);
    plan([vip(WEB, ['a', 'b', 'c'], 2)], 0);
    const fewer = plan([vip(WEB, ['a', 'c'], 2)], 10);
    assert.equal(fewer.addresses.get('10.100.0.100'), true);
    const below = plan([vip(WEB, ['c'], 2)], 20);
    assert.equal(below.addresses.get('10.100.0.100'), false);
    assert.deepEqual(below.vips[0]!.reason, { code: 'backends', text: '1 healthy backend, need 2' });
    assert.deepEqual(plan([vip(WEB, [], 1)], 30).vips[0]!.reason, { code: 'backends', text: '0 healthy backends, need 1' });
  });

  test('a withdrawn VIP goes through the hold-down again', () => {
    const plan = planner();
    plan([vip(WEB, ['a'])], 0);
    assert.equal(plan([vip(WEB, ['a'])], 5000).addresses.get('10.100.0.100'), true);
    plan([vip(WEB, [])], 6000);
    assert.equal(plan([vip(WEB, ['a'])], 7000).addresses.get('10.100.0.100'), false);
    assert.equal(plan([vip(WEB, ['a'])], 12_000).addresses.get('10.100.0.100'), true);
  });

  test('the node withdraws every VIP while stopping, kill-switched, its interface down or its device gone: reasons in that order', () => {
    const cases: Array<[Partial<NodeConditions>, string, string]> = [
      [{ stopping: true, killSwitchEngaged: true }, 'stopping', 'stopping'],
      [{ killSwitchEngaged: true, interfaceUp: false }, 'kill_switch', 'kill-switch engaged'],
      [{ interfaceUp: false }, 'interface_down', 'interface eth0 is down'],
      [{ deviceMissing: 'the watchdog withdrew every VIP' }, 'no_device', 'the watchdog withdrew every VIP'],
    ];
    for (const [node, code, text] of cases) {
      const plan = planner(0);
      plan([vip(WEB, ['a']), vip(DNS, ['a'])], 0);
      const blocked = plan([vip(WEB, ['a']), vip(DNS, ['a'])], 10, { ...NODE, ...node });
      assert.deepEqual([...blocked.addresses.values()], [false, false], code);
      for (const d of blocked.vips) assert.deepEqual(d.reason, { code, text });
      // Back to normal: the hold-down starts again (here 0), nothing is carried over.
      assert.deepEqual([...plan([vip(WEB, ['a']), vip(DNS, ['a'])], 20).addresses.values()], [true, true]);
    }
  });

  test('an address is announced only while every VIP on it can be; the others say which one holds it back', () => {
    const plan = planner(0);
    const both = plan([vip(WEB, ['a']), vip(TLS, ['a']), vip(DNS, ['x'])], 0);
    assert.deepEqual(Object.fromEntries(both.addresses), { '10.100.0.100': true, '10.100.0.101': true });
    const held = plan([vip(WEB, ['a']), vip(TLS, []), vip(DNS, ['x'])], 10);
    assert.deepEqual(Object.fromEntries(held.addresses), { '10.100.0.100': false, '10.100.0.101': true });
    assert.deepEqual(
      held.vips.map((d) => [d.key, d.reason]),
      [
        [WEB, { code: 'address', text: `its address is withdrawn: ${TLS} 0 healthy backends, need 1` }],
        [TLS, { code: 'backends', text: '0 healthy backends, need 1' }],
        [DNS, null],
      ],
    );
  });

  test('the hold-down of an address ends when its last VIP has been ready for it', () => {
    const plan = planner();
    plan([vip(WEB, ['a']), vip(TLS, [])], 0);
    plan([vip(WEB, ['a']), vip(TLS, ['a'])], 2000);
    const early = plan([vip(WEB, ['a']), vip(TLS, ['a'])], 5000);
    assert.equal(early.addresses.get('10.100.0.100'), false);
    assert.equal(early.wakeAt, 7000);
    assert.equal(plan([vip(WEB, ['a']), vip(TLS, ['a'])], 7000).addresses.get('10.100.0.100'), true);
  });

  test('IPv6 VIPs are planned by their address too', () => {
    const plan = planner(0);
    const result = plan([vip(WEB6, ['fd00:10::11'])], 0);
    assert.deepEqual(Object.fromEntries(result.addresses), { 'fd00:100::100': true });
  });
});

describe('healthyBackends', () => {
  const backend = (address: string, state: BackendView['state']): BackendView => ({
    address,
    weight: 1,
    forward: 'l2dsr',
    id: 1,
    state,
    slots: 0,
  });
  const view: VipView = {
    key: WEB,
    vip: parseVip(WEB),
    forward: 'l2dsr',
    hash: 'flow',
    tableSize: 251,
    vipId: 0,
    allDown: false,
    backends: [
      backend('10.0.0.5', 'active'),
      backend('10.0.0.1', 'active'),
      backend('10.0.0.2', 'active'),
      backend('10.0.0.3', 'draining'),
      backend('10.0.0.4', 'quiesced'),
      backend('10.0.0.6', 'unresolved'),
      backend('10.0.0.7', 'down'),
    ],
  };
  const health = (state: BackendHealth['state']): BackendHealth => ({ state, since: '', consecutive: 0 });

  test('counts backends in the table whose check passed: not unknown (not yet answered), draining, quiesced, unresolved or down', () => {
    const states: Record<string, BackendHealth['state']> = {
      '10.0.0.1': 'up',
      '10.0.0.2': 'unknown',
      '10.0.0.3': 'up',
      '10.0.0.4': 'up',
      '10.0.0.5': 'up',
      '10.0.0.6': 'up',
      '10.0.0.7': 'up',
    };
    assert.deepEqual(
      healthyBackends(view, (_vip, address) => health(states[address]!)),
      ['10.0.0.1', '10.0.0.5'],
    );
    assert.deepEqual(
      healthyBackends(view, () => undefined),
      [],
      'not checked yet',
    );
  });
});
