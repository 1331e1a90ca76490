/**
 * The down settler (src/fleet/down-settler.ts): a fleet node's failed
 * backend reaches the tables one check period late, unless every backend of
 * its VIP is down by then, when all reach them at once (and the VIP is
 * kept and withdrawn, not rewritten). No root.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DownSettler } from '../../src/fleet/down-settler.js';
import type { BackendHealth, HealthState, Transition } from '../../src/health/checker.js';
import { parseVip } from '../../src/model/address.js';

const WEB = '10.100.0.100:80/tcp';
const PERIOD_MS = 80;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function setup(backends = ['10.0.0.1', '10.0.0.2', '10.0.0.3']) {
  const live = new Map<string, HealthState>(backends.map((b) => [b, 'up']));
  const forwarded: string[] = [];
  const settler = new DownSettler({
    live: (_vip, address): BackendHealth | undefined => {
      const state = live.get(address);
      return state && { state, since: '', consecutive: 0 };
    },
    periodMs: () => PERIOD_MS,
    eligible: () => backends,
    forward: (t) => forwarded.push(`${t.address} ${t.to}`),
  });
  const change = (address: string, to: HealthState) => {
    const from = live.get(address)!;
    live.set(address, to);
    const t: Transition = { key: `${WEB} ${address}`, vip: parseVip(WEB), address, from, to, reason: 'test' };
    settler.transition(t);
  };
  return { settler, forwarded, change, seen: (address: string) => settler.health(WEB, address)?.state };
}

test('one backend down: the tables see it one check period later', async () => {
  const { settler, forwarded, change, seen } = setup();
  change('10.0.0.2', 'down');
  assert.deepEqual(forwarded, []);
  assert.equal(seen('10.0.0.2'), 'up', 'still up for the tables');
  await sleep(PERIOD_MS + 30);
  assert.deepEqual(forwarded, ['10.0.0.2 down']);
  assert.equal(seen('10.0.0.2'), 'down');
  settler.stop();
});

test('every backend down within the period: all reach the tables at once, when the last one fails', async () => {
  const { settler, forwarded, change, seen } = setup();
  change('10.0.0.1', 'down');
  await sleep(PERIOD_MS / 3);
  change('10.0.0.2', 'down');
  assert.deepEqual(forwarded, []);
  change('10.0.0.3', 'down');
  assert.deepEqual(forwarded.sort(), ['10.0.0.1 down', '10.0.0.2 down', '10.0.0.3 down']);
  for (const b of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) assert.equal(seen(b), 'down');
  await sleep(PERIOD_MS + 30);
  assert.equal(forwarded.length, 3, 'nothing twice');
  settler.stop();
});

test('back up within the period: the down and the up go on together, the tables never lost it', async () => {
  const { settler, forwarded, change } = setup();
  change('10.0.0.1', 'down');
  change('10.0.0.1', 'up');
  assert.deepEqual(forwarded, ['10.0.0.1 down', '10.0.0.1 up']);
  await sleep(PERIOD_MS + 30);
  assert.equal(forwarded.length, 2);
  settler.stop();
});

test('a backend that was never up (a first check failing) goes on at once', () => {
  const { settler, forwarded } = setup();
  settler.transition({ key: `${WEB} 10.0.0.9`, vip: parseVip(WEB), address: '10.0.0.9', from: 'unknown', to: 'down', reason: 'test' });
  assert.deepEqual(forwarded, ['10.0.0.9 down']);
  settler.stop();
});
