/** The reconciler over maps in memory: it writes what the planner says, in order, and takes over maps a previous daemon wrote. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { Reconciler } from '../../src/core/reconciler.js';
import { parseVip } from '../../src/model/address.js';
import { type DesiredState, vipSettings } from '../../src/model/desired-state.js';
import { MemoryMaps, TestPaths } from '../support/memory-maps.js';

const log = pino({ level: 'silent' });
const WEB = '10.100.0.100:80/tcp';
const paths = new TestPaths();
const inputs = (desired: DesiredState) => ({
  desired,
  paths: (t: Parameters<TestPaths['get']>[0]) => paths.get(t),
  health: () => undefined,
});
const desired = (...addresses: string[]): DesiredState => ({
  vips: [
    {
      vip: parseVip(WEB),
      ...vipSettings(parseVip(WEB), { tableSize: 251 }),
      backends: addresses.map((address) => ({ address, family: 4, weight: 1 })),
    },
  ],
});

test('a new daemon takes over the maps as they are: nothing rewritten but the tables, stale flows forgotten, in-service backends listed', () => {
  const maps = new MemoryMaps({ maxVips: 4, maxBackends: 16, flowTableSize: 1024 });
  const first = new Reconciler(maps, log);
  first.apply(inputs(desired('10.10.0.11', '10.10.0.12', '10.10.0.13')));
  first.apply(inputs(desired('10.10.0.11', '10.10.0.12'))); // 10.10.0.13 (id 3) removed: its entry cleared
  const flow = (sport: number, backendId: number) => ({
    key: { saddr: '10.10.0.10', daddr: '10.100.0.100', sport, dport: 80, proto: 6 },
    backendId,
    closing: false,
    lastSeen: 0n,
  });
  maps.addFlow(flow(40001, 1));
  maps.addFlow(flow(40003, 3));
  maps.takeLog();

  const taken = Reconciler.adopt(maps, log);
  assert.deepEqual([...taken.takenOverBackends].sort(), [`${WEB} 10.10.0.11`, `${WEB} 10.10.0.12`]);
  assert.deepEqual(
    [...maps.trackedFlows()].map((f) => f.backendId),
    [1],
    'the flow of the removed backend is forgotten: its id may be reused',
  );
  taken.apply(inputs(desired('10.10.0.11', '10.10.0.12')));
  assert.deepEqual(maps.takeLog(), ['tables 0'], 'the table is rewritten (identically); entries stay');
  assert.deepEqual(
    taken.view[0]!.backends.map((b) => [b.address, b.id]),
    [
      ['10.10.0.11', 1],
      ['10.10.0.12', 2],
    ],
    'the same ids: tracked flows keep their backends',
  );
  assert.equal(new Reconciler(maps, log).takenOverBackends.size, 0, 'a fresh reconciler took nothing over');
});
