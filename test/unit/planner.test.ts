/**
 * The planner: from desired state, paths and health to the entries, tables
 * and views the maps must hold, and the ordered writes that get there.
 * Pure: no kernel, no root.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type MapState, type Plan, countWrites, emptyMapState, plan } from '../../src/core/planner.js';
import type { VipView } from '../../src/core/views.js';
import {
  BACKEND_FLAG_ACTIVE,
  BACKEND_FLAG_IPV6,
  FORWARD,
  VIP_FLAG_HASH_SOURCE,
  backendInfo,
  tunnelChecksumBase,
  vipInfo,
} from '../../src/dataplane/abi.js';
import type { BackendHealth } from '../../src/health/checker.js';
import { buildMaglevTable } from '../../src/maglev/maglev.js';
import { type ForwardMethod, parseVip } from '../../src/model/address.js';
import { type BackendSpec, type DesiredState, EMPTY_STATE, type VipSpec, vipSettings } from '../../src/model/desired-state.js';
import { InputError } from '../../src/model/errors.js';
import { BACKEND_MAC, LB_MAC, TUNNEL_SOURCE, TestPaths } from '../support/memory-maps.js';

const LIMITS = { maxVips: 4, maxBackends: 16 };
const WEB = '10.100.0.100:80/tcp';
const DNS = '10.100.0.101:53/udp';
const WEB_TLS = '10.100.0.100:443/tcp';
const V6 = '[fd00:100::100]:80/tcp';

function be(address: string, weight = 1, extra: Partial<BackendSpec> = {}): BackendSpec {
  return { address, family: address.includes(':') ? 6 : 4, weight, ...extra };
}

function vip(
  key: string,
  backends: BackendSpec[],
  options: { forward?: ForwardMethod; tableSize?: number; onAllDown?: 'keep' | 'drop' } = {},
): VipSpec {
  const address = parseVip(key);
  const settings = vipSettings(address, { forward: options.forward ?? 'l2dsr', tableSize: options.tableSize ?? 251 });
  return { vip: address, ...settings, ...(options.onAllDown ? { onAllDown: options.onAllDown } : {}), backends };
}

function state(...vips: VipSpec[]): DesiredState {
  return { vips };
}

/** Plans with every path resolved (unless failed in `paths`) and the given backends down. */
function planFrom(
  current: MapState,
  desired: DesiredState,
  options: { paths?: TestPaths; down?: string[]; keepOnAllDown?: boolean; interfaceMac?: string | null } = {},
): Plan {
  const paths = options.paths ?? new TestPaths();
  const down = new Set(options.down ?? []);
  const health = (_vip: string, address: string): BackendHealth | undefined =>
    down.has(address) ? { state: 'down', since: '2026-01-01T00:00:00.000Z', consecutive: 3 } : undefined;
  return plan(current, {
    desired,
    paths: (t) => paths.get(t),
    health,
    keepOnAllDown: options.keepOnAllDown ?? false,
    ...(options.interfaceMac !== undefined ? { interfaceMac: options.interfaceMac } : {}),
  });
}

/** The writes of a plan as readable lines, in order. */
function writeLog(p: Plan): string[] {
  const w = p.writes;
  return [
    ...w.resetVipCounters.map((id) => `reset vip counters ${id}`),
    ...w.resetBackendCounters.map((id) => `reset backend counters ${id}`),
    ...w.backends.map((b) => `backend ${b.id}`),
    ...(w.tables.length ? [`tables ${w.tables.map((t) => `${t.tableId}${t.table ? '' : ':empty'}`).join(',')}`] : []),
    ...w.vips.map((v) => `vip ${v.vip.address}:${v.vip.port}`),
    ...w.vipAddressesAdded.map((a) => `address ${a.address}`),
    ...w.vipAddressesRemoved.map((a) => `delete address ${a.address}`),
    ...w.vipsDeleted.map((v) => `delete vip ${v.address}:${v.port}`),
    ...(w.tablesReleased.length ? [`release tables ${w.tablesReleased.join(',')}`] : []),
    ...w.backendsCleared.map((id) => `clear backend ${id}`),
    ...(w.interfaceMac !== undefined ? [`mac ${w.interfaceMac}`] : []),
  ];
}

function viewOf(p: Plan, key: string): VipView {
  const found = p.views.find((v) => v.key === key);
  assert.ok(found, `a view of ${key}`);
  return found;
}

function idOf(p: Plan, key: string, address: string): number {
  const found = viewOf(p, key).backends.find((b) => b.address === address);
  assert.ok(found, `a view of ${address} in ${key}`);
  return found.id;
}

function tableOf(p: Plan, tableId: number): Uint32Array | null | undefined {
  return p.writes.tables.find((t) => t.tableId === tableId)?.table;
}

describe('plan', () => {
  const empty = emptyMapState(LIMITS);

  test('from empty maps: counters of new ids, backends, tables, VIP entries, then VIP addresses', () => {
    const p = planFrom(
      empty,
      state(
        vip(WEB, [be('10.10.0.11'), be('10.10.0.12', 2, { forward: 'ipip' })]),
        vip(DNS, [be('10.10.0.21')], { forward: 'ipip', tableSize: 257 }),
      ),
    );
    assert.deepEqual(writeLog(p), [
      'reset vip counters 0',
      'reset vip counters 1',
      'reset backend counters 1',
      'reset backend counters 2',
      'reset backend counters 3',
      'backend 1',
      'backend 2',
      'backend 3',
      'tables 0,1',
      'vip 10.100.0.100:80',
      'vip 10.100.0.101:53',
      'address 10.100.0.100',
      'address 10.100.0.101',
    ]);
    assert.equal(countWrites(p.writes), 3 + 1 + 1 + 2 + 2, 'counter resets are not counted as writes');
    assert.equal(p.writes.tables.length, 2);
    assert.equal(p.tablesBuilt, 2);

    assert.deepEqual(vipInfo.decode(p.writes.vips[0]!.entry), { vip_id: 0, table_id: 0, table_size: 251, flags: 0 });
    assert.deepEqual(vipInfo.decode(p.writes.vips[1]!.entry), { vip_id: 1, table_id: 1, table_size: 257, flags: 0 });
    assert.deepEqual(
      tableOf(p, 0),
      buildMaglevTable(
        [
          { name: '10.10.0.11', weight: 1, id: 1 },
          { name: '10.10.0.12', weight: 2, id: 2 },
        ],
        251,
      ),
    );
    assert.deepEqual(tableOf(p, 1), buildMaglevTable([{ name: '10.10.0.21', weight: 1, id: 3 }], 257));

    const l2dsr = backendInfo.decode(p.writes.backends[0]!.entry);
    assert.equal(l2dsr.forward, FORWARD.l2dsr);
    assert.equal(l2dsr.flags, BACKEND_FLAG_ACTIVE);
    assert.equal(l2dsr.dst_mac, BACKEND_MAC);
    assert.equal(l2dsr.src_mac, LB_MAC);
    assert.equal(l2dsr.mtu, 1500);
    assert.equal(l2dsr.vip_id, 0, 'an entry names its VIP: a restarted daemon takes it over');
    assert.deepEqual(l2dsr.tunnel_src, Buffer.alloc(16));
    const ipip = backendInfo.decode(p.writes.backends[1]!.entry);
    assert.equal(ipip.forward, FORWARD.ipip, "the backend's own method wins over the VIP's");
    assert.deepEqual(ipip.tunnel_src.subarray(0, 4), Buffer.from([10, 10, 0, 2]));
    assert.equal(ipip.tunnel_csum_base, tunnelChecksumBase(TUNNEL_SOURCE, '10.10.0.12'));
    assert.equal(backendInfo.decode(p.writes.backends[2]!.entry).forward, FORWARD.ipip, "the VIP's method applies");

    const [b11, b12] = viewOf(p, WEB).backends;
    assert.deepEqual([b11!.id, b12!.id], [1, 2], 'backend ids start at 1: 0 names no one');
    assert.deepEqual([b11!.state, b12!.state], ['active', 'active']);
    assert.equal(b11!.slots + b12!.slots, 251);
    assert.equal(b11!.path?.nextHop, '10.10.0.11');
  });

  test('an IPv6 VIP: the IPv6 flag and address in the entry, its address answered', () => {
    const p = planFrom(empty, state(vip(V6, [be('fd00:10::11')])));
    const entry = backendInfo.decode(p.writes.backends[0]!.entry);
    assert.equal(entry.flags, BACKEND_FLAG_ACTIVE | BACKEND_FLAG_IPV6);
    assert.equal(entry.address.subarray(0, 2).toString('hex'), 'fd00');
    assert.deepEqual(p.writes.vipAddressesAdded, [{ family: 6, address: 'fd00:100::100' }]);
  });

  test('the same state again writes nothing and builds no table', () => {
    const desired = () => state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')]), vip(DNS, [be('10.10.0.21')]));
    const first = planFrom(empty, desired());
    const again = planFrom(first.next, desired());
    assert.deepEqual(writeLog(again), []);
    assert.equal(again.tablesBuilt, 0);
    assert.deepEqual(again.views, first.views);
  });

  test('planning never changes the state it starts from', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])));
    const before = {
      vips: first.next.vips.size,
      backends: [...first.next.backends.keys()],
      ids: first.next.backendIds.available,
      vipIds: first.next.vipIds.available,
    };
    const a = planFrom(first.next, state(vip(WEB, [be('10.10.0.13')]), vip(DNS, [be('10.10.0.21')])));
    const b = planFrom(first.next, state(vip(WEB, [be('10.10.0.13')]), vip(DNS, [be('10.10.0.21')])));
    assert.deepEqual(writeLog(a), writeLog(b), 'the same inputs, the same plan');
    assert.deepEqual(
      {
        vips: first.next.vips.size,
        backends: [...first.next.backends.keys()],
        ids: first.next.backendIds.available,
        vipIds: first.next.vipIds.available,
      },
      before,
    );
  });

  test('a weight change rewrites only the table', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])));
    const p = planFrom(first.next, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12', 5)])));
    assert.deepEqual(writeLog(p), ['tables 0']);
    assert.deepEqual(
      tableOf(p, 0),
      buildMaglevTable(
        [
          { name: '10.10.0.11', weight: 1, id: 1 },
          { name: '10.10.0.12', weight: 5, id: 2 },
        ],
        251,
      ),
    );
  });

  test('a change of forwarding method rewrites only the backend entry', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])));
    const p = planFrom(first.next, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12', 1, { forward: 'ipip' })])));
    assert.deepEqual(writeLog(p), ['backend 2']);
    assert.equal(backendInfo.decode(p.writes.backends[0]!.entry).forward, FORWARD.ipip);
  });

  test("an outer source range: the entry holds the range's first address, its spread and the checksum base over that address; another range rewrites only ipip entries", () => {
    const paths = new TestPaths();
    paths.tunnelRange = { address: '10.10.4.0', bits: 8 };
    const desired = state(vip(WEB, [be('10.10.0.11'), be('10.20.0.12', 1, { forward: 'ipip' }), be('10.20.0.13', 1, { forward: 'ipip' })]));
    const first = planFrom(empty, desired, { paths });
    const ipip = backendInfo.decode(first.writes.backends[1]!.entry);
    assert.deepEqual(ipip.tunnel_src.subarray(0, 4), Buffer.from([10, 10, 4, 0]));
    assert.equal(ipip.tunnel_src_spread, 0xff);
    assert.equal(ipip.tunnel_csum_base, tunnelChecksumBase('10.10.4.0', '10.20.0.12'));
    assert.equal(backendInfo.decode(first.writes.backends[0]!.entry).tunnel_src_spread, 0, 'l2dsr has no tunnel');

    paths.tunnelRange = { address: '10.10.8.0', bits: 10 };
    const p = planFrom(first.next, desired, { paths });
    assert.deepEqual(writeLog(p), ['backend 2', 'backend 3']);
    const moved = backendInfo.decode(p.writes.backends[0]!.entry);
    assert.deepEqual([moved.tunnel_src.subarray(0, 4), moved.tunnel_src_spread], [Buffer.from([10, 10, 8, 0]), 0x3ff]);

    delete paths.tunnelRange;
    const single = backendInfo.decode(planFrom(p.next, desired, { paths }).writes.backends[0]!.entry);
    assert.deepEqual([single.tunnel_src.subarray(0, 4), single.tunnel_src_spread], [Buffer.from([10, 10, 0, 2]), 0]);
  });

  test('an unresolved backend stays out of the table, unwritten, until its path resolves', () => {
    const paths = new TestPaths();
    paths.failures.set('10.10.0.12', { reason: 'next hop 10.10.0.12 on eth0 does not answer ARP', permanent: false });
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])), { paths });
    assert.deepEqual(
      first.writes.backends.map((b) => b.id),
      [1],
    );
    assert.deepEqual(tableOf(first, 0), buildMaglevTable([{ name: '10.10.0.11', weight: 1, id: 1 }], 251));
    const unresolved = viewOf(first, WEB).backends[1]!;
    assert.equal(unresolved.state, 'unresolved');
    assert.equal(unresolved.reason, 'next hop 10.10.0.12 on eth0 does not answer ARP');
    assert.equal(unresolved.slots, 0);

    paths.failures.clear();
    const resolved = planFrom(first.next, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])), { paths });
    assert.deepEqual(writeLog(resolved), ['backend 2', 'tables 0'], 'its entry before the table that names it');

    paths.failures.set('10.10.0.11', { reason: 'no route to 10.10.0.11', permanent: false });
    const lost = planFrom(resolved.next, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])), { paths });
    assert.deepEqual(writeLog(lost), ['tables 0', 'clear backend 1'], 'cleared only once the table no longer names it');
  });

  test('a VIP without any usable backend points at the empty table and still has its entry', () => {
    const paths = new TestPaths();
    paths.failures.set('10.10.0.11', { reason: 'no route to 10.10.0.11', permanent: false });
    const p = planFrom(empty, state(vip(WEB, [be('10.10.0.11')])), { paths });
    assert.deepEqual(writeLog(p), [
      'reset vip counters 0',
      'reset backend counters 1',
      'tables 0:empty',
      'vip 10.100.0.100:80',
      'address 10.100.0.100',
    ]);
  });

  test('a draining backend keeps its entry (its flows continue) but leaves the table', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])));
    const drain = { since: '2026-01-01T00:00:00.000Z', timeoutSeconds: 300, idleSeconds: 30 };
    const p = planFrom(first.next, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12', 1, { drain })])));
    assert.deepEqual(writeLog(p), ['tables 0']);
    assert.deepEqual(tableOf(p, 0), buildMaglevTable([{ name: '10.10.0.11', weight: 1, id: 1 }], 251));
    assert.equal(viewOf(p, WEB).backends[1]!.state, 'draining');
  });

  test('weight 0 quiesces a backend: its entry stays (tracked flows continue), it leaves the table', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])));
    const quiesced = planFrom(first.next, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12', 0)])));
    assert.deepEqual(writeLog(quiesced), ['tables 0']);
    assert.deepEqual(tableOf(quiesced, 0), buildMaglevTable([{ name: '10.10.0.11', weight: 1, id: 1 }], 251));
    assert.deepEqual(
      viewOf(quiesced, WEB).backends.map((b) => [b.state, b.slots]),
      [
        ['active', 251],
        ['quiesced', 0],
      ],
    );
    const allZero = planFrom(quiesced.next, state(vip(WEB, [be('10.10.0.11', 0), be('10.10.0.12', 0)])));
    assert.deepEqual(writeLog(allZero), ['tables 0:empty'], 'no backend takes new flows; both keep their entries');
    assert.equal(viewOf(allZero, WEB).allDown, false, 'quiesced is not down');
  });

  test('a removed backend is cleared last and its id quarantined: not reused until its flows are swept', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])));
    const removed = planFrom(first.next, state(vip(WEB, [be('10.10.0.12')])));
    assert.deepEqual(writeLog(removed), ['tables 0', 'clear backend 1']);
    assert.deepEqual(removed.next.quarantined, [1]);
    const added = planFrom(removed.next, state(vip(WEB, [be('10.10.0.12'), be('10.10.0.13')])));
    assert.equal(idOf(added, WEB, '10.10.0.13'), 3, 'a fresh id, not the quarantined 1');
    assert.deepEqual(added.next.quarantined, [1]);
  });

  test('a removed VIP: its entry deleted, its table released, its address forgotten once no VIP uses it', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11')]), vip(WEB_TLS, [be('10.10.0.11')]), vip(DNS, [be('10.10.0.21')])));
    const p = planFrom(first.next, state(vip(DNS, [be('10.10.0.21')]), vip(WEB_TLS, [be('10.10.0.11')])));
    assert.deepEqual(writeLog(p), ['delete vip 10.100.0.100:80', 'release tables 0', 'clear backend 1']);
    const last = planFrom(p.next, state(vip(DNS, [be('10.10.0.21')])));
    assert.deepEqual(writeLog(last), ['delete address 10.100.0.100', 'delete vip 10.100.0.100:443', 'release tables 1', 'clear backend 2']);
    const readded = planFrom(last.next, state(vip(DNS, [be('10.10.0.21')]), vip(WEB, [be('10.10.0.11')])));
    assert.equal(viewOf(readded, WEB).vipId, 0, 'VIP ids are reused');
  });

  test('a new table size goes to the other slot, switched by the VIP entry; the old slot is released after', () => {
    const backends = [be('10.10.0.31'), be('10.10.0.32')];
    const first = planFrom(empty, state(vip(WEB, backends, { tableSize: 251 })));
    const grown = planFrom(first.next, state(vip(WEB, backends, { tableSize: 257 })));
    assert.deepEqual(writeLog(grown), [`tables ${LIMITS.maxVips}`, 'vip 10.100.0.100:80', 'release tables 0']);
    assert.deepEqual(vipInfo.decode(grown.writes.vips[0]!.entry), { vip_id: 0, table_id: LIMITS.maxVips, table_size: 257, flags: 0 });
    const back = planFrom(grown.next, state(vip(WEB, backends, { tableSize: 251 })));
    assert.deepEqual(writeLog(back), ['tables 0', 'vip 10.100.0.100:80', `release tables ${LIMITS.maxVips}`]);
  });

  test('too many VIPs or backends is refused before anything is planned', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11')])));
    const fiveVips = state(...['1', '2', '3', '4', '5'].map((n) => vip(`10.100.0.${n}:80/tcp`, [])));
    assert.throws(
      () => planFrom(first.next, fiveVips),
      (e: unknown) => e instanceof InputError && /too many VIPs: this balancer holds at most 4/.test(e.message),
    );
    const many = state(
      vip(
        WEB,
        Array.from({ length: 16 }, (_, i) => be(`10.10.1.${i + 1}`)),
      ),
    );
    assert.throws(
      () => planFrom(first.next, many),
      (e: unknown) => e instanceof InputError && /too many backends: .* at most 15/.test(e.message),
    );
    assert.deepEqual(writeLog(planFrom(first.next, state(vip(WEB, [be('10.10.0.11')])))), [], 'the state is as it was');
  });

  test('backends of different VIPs get different ids, even at the same address', () => {
    const p = planFrom(empty, state(vip(WEB, [be('10.10.0.11')]), vip(WEB_TLS, [be('10.10.0.11', 1, { forward: 'ipip' })])));
    assert.notEqual(idOf(p, WEB, '10.10.0.11'), idOf(p, WEB_TLS, '10.10.0.11'));
  });

  test('a down backend leaves the table and its entry is cleared after the table', () => {
    const desired = state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')]));
    const first = planFrom(empty, desired);
    const p = planFrom(first.next, desired, { down: ['10.10.0.12'] });
    assert.deepEqual(writeLog(p), ['tables 0', 'clear backend 2']);
    const view = viewOf(p, WEB);
    assert.equal(view.allDown, false);
    assert.equal(view.backends[1]!.state, 'down');
    assert.equal(view.backends[1]!.health?.state, 'down');
  });

  test('every backend down, policy keep: the last healthy ones stay in the table', () => {
    const desired = state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12'), be('10.10.0.13')], { onAllDown: 'keep' }));
    const first = planFrom(empty, desired);
    const oneDown = planFrom(first.next, desired, { down: ['10.10.0.13'] });
    const allDown = planFrom(oneDown.next, desired, { down: ['10.10.0.11', '10.10.0.12', '10.10.0.13'] });
    assert.deepEqual(writeLog(allDown), [], 'the table of the last healthy two stays as it is');
    const view = viewOf(allDown, WEB);
    assert.equal(view.allDown, true);
    assert.deepEqual(
      view.backends.map((b) => [b.address, b.state, b.keptWhileAllDown === true]),
      [
        ['10.10.0.11', 'down', true],
        ['10.10.0.12', 'down', true],
        ['10.10.0.13', 'down', false],
      ],
    );
  });

  test('every backend down, policy drop: the VIP drops', () => {
    const desired = state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')], { onAllDown: 'drop' }));
    const first = planFrom(empty, desired);
    const p = planFrom(first.next, desired, { down: ['10.10.0.11', '10.10.0.12'] });
    assert.deepEqual(writeLog(p), ['tables 0:empty', 'clear backend 1', 'clear backend 2']);
    assert.equal(viewOf(p, WEB).allDown, true);
  });

  test('a fleet node keeps the table of a VIP whose backends all fail, whatever its policy: it withdraws the VIP instead', () => {
    const desired = state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')], { onAllDown: 'drop' }));
    const first = planFrom(empty, desired);
    const p = planFrom(first.next, desired, { down: ['10.10.0.11', '10.10.0.12'], keepOnAllDown: true });
    assert.deepEqual(writeLog(p), [], 'nothing is rewritten: in-flight packets keep their backends');
    const view = viewOf(p, WEB);
    assert.equal(view.allDown, true);
    assert.deepEqual(
      view.backends.map((b) => b.keptWhileAllDown === true),
      [true, true],
    );
  });

  test('a table taken over from an earlier daemon is rewritten once, identically', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11')])));
    const written = first.next.vips.get(WEB)!;
    const takenOver: MapState = { ...first.next, vips: new Map([[WEB, { ...written, table: undefined, members: '', tableKnown: false }]]) };
    const p = planFrom(takenOver, state(vip(WEB, [be('10.10.0.11')])));
    assert.deepEqual(writeLog(p), ['tables 0']);
    assert.deepEqual(tableOf(p, 0), written.table);
    assert.deepEqual(writeLog(planFrom(p.next, state(vip(WEB, [be('10.10.0.11')])))), []);
  });

  test('the empty state removes everything', () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11')])));
    const p = planFrom(first.next, EMPTY_STATE);
    assert.deepEqual(writeLog(p), ['delete address 10.100.0.100', 'delete vip 10.100.0.100:80', 'release tables 0', 'clear backend 1']);
    assert.deepEqual(p.views, []);
  });

  test('hash source: the VIP entry carries the flag, the view says so; a change of hash rewrites only the entry', () => {
    const byFlow = planFrom(empty, state(vip(WEB, [be('10.10.0.11')])));
    assert.equal(vipInfo.decode(byFlow.writes.vips[0]!.entry).flags, 0);
    assert.equal(viewOf(byFlow, WEB).hash, 'flow');
    const source = { ...vip(WEB, [be('10.10.0.11')]), hash: 'source' as const };
    const bySource = planFrom(byFlow.next, state(source));
    assert.deepEqual(writeLog(bySource), ['vip 10.100.0.100:80']);
    assert.equal(vipInfo.decode(bySource.writes.vips[0]!.entry).flags, VIP_FLAG_HASH_SOURCE);
    assert.equal(viewOf(bySource, WEB).hash, 'source');
  });

  test("the interface's MAC is written when it first becomes known and when it changes, never otherwise", () => {
    const first = planFrom(empty, state(vip(WEB, [be('10.10.0.11')])), { interfaceMac: LB_MAC });
    assert.equal(writeLog(first).at(-1), `mac ${LB_MAC}`);
    assert.equal(first.next.interfaceMac, LB_MAC);
    assert.deepEqual(writeLog(planFrom(first.next, state(vip(WEB, [be('10.10.0.11')])), { interfaceMac: LB_MAC })), []);
    // Not known (no refresh yet): what the maps hold stays.
    const unknown = planFrom(first.next, state(vip(WEB, [be('10.10.0.11')])));
    assert.deepEqual(writeLog(unknown), []);
    assert.equal(unknown.next.interfaceMac, LB_MAC);
    const changed = planFrom(first.next, state(vip(WEB, [be('10.10.0.11')])), { interfaceMac: '02:00:00:00:00:99' });
    assert.deepEqual(writeLog(changed), ['mac 02:00:00:00:00:99']);
    assert.equal(countWrites(changed.writes), 1);
    // A link without a MAC turns the check off.
    assert.deepEqual(writeLog(planFrom(changed.next, state(vip(WEB, [be('10.10.0.11')])), { interfaceMac: null })), ['mac null']);
  });
});
