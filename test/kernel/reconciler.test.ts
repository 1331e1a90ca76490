/**
 * The reconciler against the real data plane: what it writes to the maps,
 * how little it writes, and that packets keep flowing across changes.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import {
  BACKEND_FLAG_ACTIVE,
  backendInfo,
  type BackendInfo,
  FORWARD,
  flowKeyV4,
  flowState,
  IPPROTO,
  readU32,
  tunnelChecksumBase,
  u32Key,
  vipInfo,
  type VipInfo,
  vipKeyV4,
} from '../../src/dataplane/abi.js';
import { BalancerDataplane, KILL_SWITCH_NEVER } from '../../src/dataplane/balancer.js';
import { type SourceRange, clearFlows as clearFlowMaps, clearVips, field16, outerSource } from '../support/dataplane.js';
import { type Flow, flowHash, sourceHash, tableSlot } from '../../src/dataplane/flow-hash.js';
import { testRun } from '../../src/dataplane/xdp.js';
import { Reconciler } from '../../src/core/reconciler.js';
import type { VipView } from '../../src/core/views.js';
import { buildMaglevTable } from '../../src/maglev/maglev.js';
import { type ForwardMethod, formatAddressBytes, parseVip } from '../../src/model/address.js';
import { type BackendSpec, type DesiredState, EMPTY_STATE, type VipSpec, vipSettings } from '../../src/model/desired-state.js';
import { InputError } from '../../src/model/errors.js';
import { type ForwardingPath, type PathResult, type PathTarget } from '../../src/net/forwarding-paths.js';
import { ETHERTYPE, ipv4Frame, parseEthernet, parseIpv4, TCP_FLAGS } from '../support/packets.js';
import { insidePrefix } from '../lab/lab.js';

/** No backend is health-checked here. */
const NO_HEALTH = () => undefined;

const MAX_VIPS = 8;
const MAX_BACKENDS = 32;
const dataplane = BalancerDataplane.load({ maxVips: MAX_VIPS, maxBackends: MAX_BACKENDS, flowTableSize: 1024 });
dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
after(() => dataplane.close());
const log = pino({ level: 'silent' });

const CLIENT = '10.10.0.10';
const TUNNEL_SRC = '10.10.0.2';
const BACKEND_MAC = '02:00:00:00:00:11';
const LB_MAC = '02:00:00:00:00:02';

/** Addresses (of any VIP) whose path does not resolve, with the reason. */
const unresolved = new Map<string, string>();
/** Outer source ranges of ipip paths, per backend family (else one source, TUNNEL_SRC). */
const tunnelRanges: Partial<Record<4 | 6, SourceRange>> = {};

function paths(target: PathTarget): PathResult {
  const reason = unresolved.get(target.address);
  if (reason !== undefined) return { ok: false, reason, permanent: false };
  return {
    ok: true,
    path: {
      dev: 'lo',
      ifindex: 1,
      srcMac: LB_MAC,
      nextHop: target.address,
      dstMac: BACKEND_MAC,
      mtu: 0,
      ...(target.forward === 'ipip' ? tunnelOf(target.address) : {}),
    },
  };
}

function tunnelOf(address: string): Pick<ForwardingPath, 'tunnelSrc' | 'tunnelSourceBits'> {
  const range = tunnelRanges[address.includes(':') ? 6 : 4];
  return range ? { tunnelSrc: range.base, tunnelSourceBits: range.bits } : { tunnelSrc: TUNNEL_SRC };
}

function be(address: string, weight = 1, forward?: ForwardMethod): BackendSpec {
  return { address, family: 4, weight, ...(forward ? { forward } : {}) };
}

function vip(
  key: string,
  backends: BackendSpec[],
  options: { forward?: ForwardMethod; tableSize?: number; hash?: 'flow' | 'source'; checkPort?: number } = {},
): VipSpec {
  const address = parseVip(key);
  const settings = vipSettings(address, {
    forward: options.forward ?? 'l2dsr',
    tableSize: options.tableSize ?? 251,
    ...(options.hash ? { hash: options.hash } : {}),
    ...(options.checkPort ? { check: { port: options.checkPort } } : {}),
  });
  return { vip: address, ...settings, backends };
}

function state(...vips: VipSpec[]): DesiredState {
  return { vips };
}

/** Empty maps and a reconciler that has written nothing yet. */
function fresh(): Reconciler {
  clearVips(dataplane);
  dataplane.putTables(Array.from({ length: MAX_VIPS * 2 }, (_, tableId) => ({ tableId, table: null })));
  for (let i = 0; i < MAX_BACKENDS; i++) dataplane.clearBackend(i);
  clearFlows();
  unresolved.clear();
  dataplane.setInterfaceMac(null);
  delete tunnelRanges[4];
  delete tunnelRanges[6];
  return new Reconciler(dataplane, log);
}

function clearFlows(): void {
  clearFlowMaps(dataplane);
}

function vipEntry(key: string): VipInfo | null {
  const v = parseVip(key);
  const value = dataplane.vipsV4.lookup(vipKeyV4.encode({ addr: v.address, port: v.port, proto: IPPROTO[v.protocol] }));
  return value ? vipInfo.decode(value) : null;
}

function backendEntry(id: number): BackendInfo {
  return backendInfo.decode(dataplane.backends.lookup(u32Key(id))!);
}

function backendRaw(id: number): Buffer {
  return dataplane.backends.lookup(u32Key(id))!;
}

/**
 * The inner map in a table slot: its kernel id and its entries; null for a
 * slot without a table of its own (unset, or the shared one-entry empty
 * table that names backend 0).
 */
function tableAt(tableId: number): { mapId: number; entries: Uint32Array } | null {
  const value = dataplane.tables.lookup(u32Key(tableId));
  if (!value) return null;
  const entries = dataplane.readTable(tableId)!;
  return entries.length === 1 && entries[0] === 0 ? null : { mapId: readU32(value), entries };
}

/** Every map the reconciler writes, as comparable text. */
function snapshot(): string {
  const vips = [...dataplane.vipsV4.keys()].map((k) => `${k.toString('hex')}=${dataplane.vipsV4.lookup(k)!.toString('hex')}`).sort();
  const tables = Array.from({ length: MAX_VIPS * 2 }, (_, i) => dataplane.tables.lookup(u32Key(i))?.toString('hex') ?? '-');
  const backends = Array.from({ length: MAX_BACKENDS }, (_, i) => backendRaw(i).toString('hex'));
  return JSON.stringify({ vips, tables, backends, flows: flowEntries().length });
}

function flowEntries(): Array<{ sport: number; backendId: number }> {
  return [...dataplane.flowsV4.entries()].map(([k, v]) => ({
    sport: flowKeyV4.decode(k).sport,
    backendId: flowState.decode(v).backend_id,
  }));
}

function viewOf(reconciler: Reconciler, key: string): VipView {
  const found = reconciler.view.find((v) => v.key === key);
  assert.ok(found, `view has ${key}`);
  return found;
}

function idOf(reconciler: Reconciler, key: string, address: string): number {
  const found = viewOf(reconciler, key).backends.find((b) => b.address === address);
  assert.ok(found, `view has backend ${address} of ${key}`);
  return found.id;
}

/** The table the reconciler must have built for these (address, weight, id) members. */
function expectedTable(members: Array<[string, number, number]>, size: number): Uint32Array {
  return buildMaglevTable(
    members.map(([name, weight, id]) => ({ name, weight, id })),
    size,
  );
}

function syn(dst: string, sport: number, dport = 80, tcpFlags: number = TCP_FLAGS.SYN): Buffer {
  return ipv4Frame({ src: CLIENT, dst, srcPort: sport, dstPort: dport, tcpFlags });
}

/** The backend id the table of size `size` gives this flow. */
function slotOwner(table: Uint32Array, dst: string, sport: number, dport = 80): number {
  return table[tableSlot(flowHash({ saddr: CLIENT, daddr: dst, sport, dport, proto: 6 }), table.length)]!;
}

const WEB = '10.100.0.100:80/tcp';
const DNS = '10.100.0.101:53/udp';
const TUNNEL = '10.100.0.102:80/tcp';

describe('Reconciler', () => {
  test('applying a state writes backend entries, tables and VIP entries', () => {
    const r = fresh();
    const desired = state(
      vip(WEB, [be('10.10.0.11'), be('10.10.0.12', 2, 'ipip')]),
      vip(DNS, [be('10.10.0.21')], { forward: 'ipip', tableSize: 257 }),
    );
    const { writes } = r.apply({ desired: desired, paths, health: NO_HEALTH });
    assert.equal(writes, 3 + 2 + 2 + 2, '3 backends, 2 tables, 2 VIP entries, 2 VIP addresses (they answer pings)');
    assert.deepEqual(dataplane.vipAddresses().sort(), ['10.100.0.100', '10.100.0.101']);

    const web = viewOf(r, WEB);
    const dns = viewOf(r, DNS);
    const ids = [idOf(r, WEB, '10.10.0.11'), idOf(r, WEB, '10.10.0.12'), idOf(r, DNS, '10.10.0.21')];
    assert.deepEqual(ids, [1, 2, 3], 'backend ids start at 1');
    assert.notEqual(web.vipId, dns.vipId);

    assert.deepEqual(vipEntry(WEB), { vip_id: web.vipId, table_id: web.vipId, table_size: 251, flags: 0 });
    assert.deepEqual(vipEntry(DNS), { vip_id: dns.vipId, table_id: dns.vipId, table_size: 257, flags: 0 });
    assert.equal([...dataplane.vipsV4.keys()].length, 2);

    assert.deepEqual(
      tableAt(web.vipId)!.entries,
      expectedTable(
        [
          ['10.10.0.11', 1, 1],
          ['10.10.0.12', 2, 2],
        ],
        251,
      ),
    );
    assert.deepEqual(tableAt(dns.vipId)!.entries, expectedTable([['10.10.0.21', 1, 3]], 257));
    assert.ok(!tableAt(web.vipId)!.entries.includes(0), 'no slot names backend 0');

    assert.deepEqual(backendEntry(1), {
      dst_mac: BACKEND_MAC,
      src_mac: LB_MAC,
      ifindex: 1,
      forward: FORWARD.l2dsr,
      flags: BACKEND_FLAG_ACTIVE,
      mtu: 0,
      tunnel_src: Buffer.alloc(16),
      address: field16('10.10.0.11'),
      tunnel_csum_base: 0,
      vip_id: web.vipId,
      tunnel_src_spread: 0,
    });
    assert.deepEqual(backendEntry(2), {
      dst_mac: BACKEND_MAC,
      src_mac: LB_MAC,
      ifindex: 1,
      forward: FORWARD.ipip,
      flags: BACKEND_FLAG_ACTIVE,
      mtu: 0,
      tunnel_src: field16(TUNNEL_SRC),
      address: field16('10.10.0.12'),
      tunnel_csum_base: tunnelChecksumBase(TUNNEL_SRC, '10.10.0.12'),
      vip_id: web.vipId,
      tunnel_src_spread: 0,
    });
    assert.equal(backendEntry(3).forward, FORWARD.ipip, 'the VIP default applies');
    assert.deepEqual(backendEntry(3).address, field16('10.10.0.21'));
    assert.equal(backendEntry(3).vip_id, dns.vipId, 'entries name their VIP and address: a restarted daemon can take them over');
    assert.ok(backendRaw(0).equals(Buffer.alloc(backendInfo.size)), 'backend 0 is never written');
    assert.ok(backendRaw(4).equals(Buffer.alloc(backendInfo.size)));

    // The view: methods, states, slots by weight.
    const [b11, b12] = web.backends;
    assert.deepEqual([b11!.forward, b12!.forward], ['l2dsr', 'ipip']);
    assert.deepEqual([b11!.state, b12!.state], ['active', 'active']);
    assert.equal(b11!.slots + b12!.slots, 251);
    assert.ok(
      b12!.slots > 1.8 * b11!.slots && b12!.slots < 2.2 * b11!.slots,
      `weight 2 gets twice the slots: ${b11!.slots} / ${b12!.slots}`,
    );
    assert.equal(dns.backends[0]!.slots, 257);
    assert.equal(b11!.path?.nextHop, '10.10.0.11');
  });

  test('packets follow the tables the reconciler wrote', () => {
    const r = fresh();
    r.apply({
      desired: state(vip(TUNNEL, [be('10.10.0.31'), be('10.10.0.32'), be('10.10.0.33')], { forward: 'ipip' })),
      paths,
      health: NO_HEALTH,
    });
    const table = tableAt(viewOf(r, TUNNEL).vipId)!.entries;
    const addressOf = new Map(viewOf(r, TUNNEL).backends.map((b) => [b.id, b.address]));
    const seen = new Set<string>();
    for (let sport = 30000; sport < 30060; sport++) {
      const { action, output } = testRun(dataplane.programFd, syn('10.100.0.102', sport));
      assert.equal(action, 'tx');
      const outer = parseIpv4(parseEthernet(output).payload);
      assert.equal(outer.src, TUNNEL_SRC);
      assert.equal(outer.dst, addressOf.get(slotOwner(table, '10.100.0.102', sport)), `port ${sport}`);
      seen.add(outer.dst);
    }
    assert.equal(seen.size, 3);
  });

  test("an ipip path from an outer source range: the entry holds the range's first address, its spread and the checksum base over that address; each flow leaves from one address of the range", () => {
    const r = fresh();
    tunnelRanges[4] = { base: '10.10.4.0', bits: 8 };
    tunnelRanges[6] = { base: 'fd00:10::7:0', bits: 16 };
    const desired = state(vip(TUNNEL, [be('10.10.0.31'), { address: 'fd00:20::32', family: 6, weight: 1 }], { forward: 'ipip' }));
    r.apply({ desired, paths, health: NO_HEALTH });
    const [id4, id6] = [idOf(r, TUNNEL, '10.10.0.31'), idOf(r, TUNNEL, 'fd00:20::32')];
    const { tunnel_src, tunnel_src_spread, tunnel_csum_base } = backendEntry(id4);
    assert.deepEqual(
      { tunnel_src, tunnel_src_spread, tunnel_csum_base },
      { tunnel_src: field16('10.10.4.0'), tunnel_src_spread: 0xff, tunnel_csum_base: tunnelChecksumBase('10.10.4.0', '10.10.0.31') },
    );
    assert.deepEqual([backendEntry(id6).tunnel_src, backendEntry(id6).tunnel_src_spread], [field16('fd00:10::7:0'), 0xffff]);

    /** Sends 120 new flows; checks each one's outer source against the range of its backend's family; returns the sources seen per family. */
    const sendFlows = (firstPort: number, prefixes: Record<4 | 6, string>): Record<4 | 6, Set<string>> => {
      const table = tableAt(viewOf(r, TUNNEL).vipId)!.entries;
      const seen = { 4: new Set<string>(), 6: new Set<string>() };
      for (let sport = firstPort; sport < firstPort + 120; sport++) {
        const flow: Flow = { saddr: CLIENT, daddr: '10.100.0.102', sport, dport: 80, proto: 6 };
        const { action, output } = testRun(dataplane.programFd, syn(flow.daddr, sport));
        assert.equal(action, 'tx');
        const frame = parseEthernet(output);
        const family = frame.etherType === ETHERTYPE.IPV6 ? 6 : 4;
        assert.equal(family, slotOwner(table, flow.daddr, sport) === id6 ? 6 : 4, `port ${sport}: the outer family is the backend's`);
        let src: string;
        if (family === 4) {
          const outer = parseIpv4(frame.payload);
          assert.ok(outer.checksumValid, `port ${sport}: outer checksum`);
          src = outer.src;
        } else {
          src = formatAddressBytes(6, frame.payload.subarray(8, 24));
        }
        assert.equal(src, outerSource(tunnelRanges[family]!, flow), `port ${sport}`);
        assert.ok(insidePrefix(src, prefixes[family]), `port ${sport}: ${src} in ${prefixes[family]}`);
        seen[family].add(src);
      }
      return seen;
    };
    const seen = sendFlows(30000, { 4: '10.10.4.0/24', 6: 'fd00:10::7:0/112' });
    assert.ok(seen[4].size > 30 && seen[6].size > 30, `sources used: IPv4 ${seen[4].size}, IPv6 ${seen[6].size}`);

    // Another range (a restart with another tunnel_source) rewrites the entries of that family only.
    tunnelRanges[4] = { base: '10.10.8.0', bits: 4 };
    assert.equal(r.apply({ desired, paths, health: NO_HEALTH }).writes, 1);
    assert.equal(backendEntry(id4).tunnel_src_spread, 0xf);
    const after = sendFlows(31000, { 4: '10.10.8.0/28', 6: 'fd00:10::7:0/112' });
    assert.ok(after[4].size > 8, `16 sources, ${after[4].size} used`);
  });

  test('applying the same state again writes nothing', () => {
    const r = fresh();
    const build = () =>
      state(
        vip(WEB, [be('10.10.0.11'), be('10.10.0.12', 2, 'ipip')]),
        vip(DNS, [be('10.10.0.21')], { forward: 'ipip', tableSize: 257 }),
        vip(TUNNEL, []),
      );
    assert.ok(r.apply({ desired: build(), paths, health: NO_HEALTH }).writes > 0);
    const before = snapshot();
    const tableIds = [tableAt(viewOf(r, WEB).vipId)!.mapId, tableAt(viewOf(r, DNS).vipId)!.mapId];
    assert.equal(r.apply({ desired: build(), paths, health: NO_HEALTH }).writes, 0, 'an equal state built anew');
    assert.equal(r.apply({ desired: build(), paths, health: NO_HEALTH }).writes, 0);
    assert.equal(snapshot(), before);
    assert.deepEqual([tableAt(viewOf(r, WEB).vipId)!.mapId, tableAt(viewOf(r, DNS).vipId)!.mapId], tableIds, 'tables were not replaced');
    // The order of backends does not matter either.
    assert.equal(
      r.apply({
        desired: state(
          vip(TUNNEL, []),
          vip(DNS, [be('10.10.0.21')], { forward: 'ipip', tableSize: 257 }),
          vip(WEB, [be('10.10.0.12', 2, 'ipip'), be('10.10.0.11')]),
        ),
        paths,
        health: NO_HEALTH,
      }).writes,
      0,
    );
  });

  test('a weight change rewrites only the table', () => {
    const r = fresh();
    r.apply({ desired: state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])), paths, health: NO_HEALTH });
    const vipId = viewOf(r, WEB).vipId;
    const vipBefore = vipEntry(WEB);
    const backendsBefore = [backendRaw(1), backendRaw(2)];
    const tableBefore = tableAt(vipId)!;

    assert.equal(r.apply({ desired: state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12', 5)])), paths, health: NO_HEALTH }).writes, 1);
    const tableAfter = tableAt(vipId)!;
    assert.notEqual(tableAfter.mapId, tableBefore.mapId, 'a new table was swapped in');
    assert.deepEqual(
      tableAfter.entries,
      expectedTable(
        [
          ['10.10.0.11', 1, 1],
          ['10.10.0.12', 5, 2],
        ],
        251,
      ),
    );
    assert.notDeepEqual(tableAfter.entries, tableBefore.entries);
    assert.deepEqual(vipEntry(WEB), vipBefore);
    assert.ok(backendRaw(1).equals(backendsBefore[0]!));
    assert.ok(backendRaw(2).equals(backendsBefore[1]!));
    assert.deepEqual(
      viewOf(r, WEB).backends.map((b) => b.id),
      [1, 2],
      'ids are kept',
    );
  });

  test('a change of forwarding method rewrites only the backend entry', () => {
    const r = fresh();
    r.apply({ desired: state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12')])), paths, health: NO_HEALTH });
    const table = tableAt(viewOf(r, WEB).vipId)!;
    assert.equal(
      r.apply({ desired: state(vip(WEB, [be('10.10.0.11'), be('10.10.0.12', 1, 'ipip')])), paths, health: NO_HEALTH }).writes,
      1,
    );
    assert.equal(backendEntry(2).forward, FORWARD.ipip);
    assert.deepEqual(backendEntry(2).address, field16('10.10.0.12'));
    assert.equal(tableAt(viewOf(r, WEB).vipId)!.mapId, table.mapId);
  });

  test('an unresolved backend stays out of the table until its path resolves', () => {
    const r = fresh();
    unresolved.set('10.10.0.13', 'no neighbour entry for 10.10.0.13');
    const desired = state(vip(WEB, [be('10.10.0.11'), be('10.10.0.13')]));
    assert.equal(
      r.apply({ desired: desired, paths, health: NO_HEALTH }).writes,
      1 + 1 + 1 + 1,
      'one backend, the table, the VIP entry, its address',
    );
    const id13 = idOf(r, WEB, '10.10.0.13');
    const view13 = viewOf(r, WEB).backends.find((b) => b.address === '10.10.0.13')!;
    assert.equal(view13.state, 'unresolved');
    assert.equal(view13.reason, 'no neighbour entry for 10.10.0.13');
    assert.equal(view13.slots, 0);
    assert.equal(view13.path, undefined);
    assert.equal(backendEntry(id13).flags, 0);
    const id11 = idOf(r, WEB, '10.10.0.11');
    assert.deepEqual(tableAt(viewOf(r, WEB).vipId)!.entries, new Uint32Array(251).fill(id11));
    assert.equal(r.apply({ desired: desired, paths, health: NO_HEALTH }).writes, 0, 'still unresolved: nothing to do');

    unresolved.delete('10.10.0.13');
    assert.equal(r.apply({ desired: desired, paths, health: NO_HEALTH }).writes, 2, 'the backend entry and the table');
    assert.equal(idOf(r, WEB, '10.10.0.13'), id13, 'same id once resolved');
    assert.equal(backendEntry(id13).flags, BACKEND_FLAG_ACTIVE);
    assert.deepEqual(
      tableAt(viewOf(r, WEB).vipId)!.entries,
      expectedTable(
        [
          ['10.10.0.11', 1, id11],
          ['10.10.0.13', 1, id13],
        ],
        251,
      ),
    );
    const resolved = viewOf(r, WEB).backends.find((b) => b.address === '10.10.0.13')!;
    assert.equal(resolved.state, 'active');
    assert.equal(resolved.reason, undefined);
    assert.ok(resolved.slots > 100);

    // Losing the path again clears the entry and takes it out of the table.
    unresolved.set('10.10.0.13', 'next hop stopped answering');
    assert.equal(r.apply({ desired: desired, paths, health: NO_HEALTH }).writes, 2);
    assert.equal(backendEntry(id13).flags, 0);
    assert.deepEqual(tableAt(viewOf(r, WEB).vipId)!.entries, new Uint32Array(251).fill(id11));
  });

  test('a VIP whose backends are all unresolved has no table and drops its packets', () => {
    const r = fresh();
    r.apply({ desired: state(vip(WEB, [be('10.10.0.11')])), paths, health: NO_HEALTH });
    const vipId = viewOf(r, WEB).vipId;
    assert.ok(tableAt(vipId));
    unresolved.set('10.10.0.11', 'gone');
    assert.equal(
      r.apply({ desired: state(vip(WEB, [be('10.10.0.11')])), paths, health: NO_HEALTH }).writes,
      2,
      'backend cleared, table deleted',
    );
    assert.equal(tableAt(vipId), null);
    assert.ok(vipEntry(WEB), 'the VIP itself stays');
    const before = dataplane.reasonCounters().no_backend;
    assert.equal(testRun(dataplane.programFd, syn('10.100.0.100', 40000)).action, 'drop');
    assert.equal(dataplane.reasonCounters().no_backend, before + 1n);

    unresolved.clear();
    assert.equal(
      r.apply({ desired: state(vip(WEB, [be('10.10.0.11')])), paths, health: NO_HEALTH }).writes,
      2,
      'backend and table written again',
    );
    assert.equal(testRun(dataplane.programFd, syn('10.100.0.100', 40000)).action, 'tx');
  });

  test('a removed backend is cleared, and its id is reused only after sweepFlows() dropped its flows', () => {
    const r = fresh();
    r.apply({ desired: state(vip(TUNNEL, [be('10.10.0.31'), be('10.10.0.32')], { forward: 'ipip' })), paths, health: NO_HEALTH });
    const id31 = idOf(r, TUNNEL, '10.10.0.31');
    const id32 = idOf(r, TUNNEL, '10.10.0.32');
    // ACKs: a SYN is not tracked, the first packet after it is.
    for (let sport = 31000; sport < 31040; sport++)
      assert.equal(testRun(dataplane.programFd, syn('10.100.0.102', sport, 80, TCP_FLAGS.ACK)).action, 'tx');
    const tracked = flowEntries();
    assert.equal(tracked.length, 40);
    const on31 = tracked.filter((f) => f.backendId === id31).length;
    assert.ok(on31 > 0 && on31 < 40, `flows on both backends (${on31} on ${id31})`);

    assert.equal(
      r.apply({ desired: state(vip(TUNNEL, [be('10.10.0.32')], { forward: 'ipip' })), paths, health: NO_HEALTH }).writes,
      2,
      'table, then the backend entry',
    );
    assert.ok(backendRaw(id31).equals(Buffer.alloc(backendInfo.size)), 'the entry is zeroed (flags 0)');
    assert.deepEqual(tableAt(viewOf(r, TUNNEL).vipId)!.entries, new Uint32Array(251).fill(id32));
    assert.equal(flowEntries().filter((f) => f.backendId === id31).length, on31, 'flows still name it');

    // The data plane moves such a flow to the slot owner by itself.
    const movedPort = tracked.find((f) => f.backendId === id31)!.sport;
    const moved = testRun(dataplane.programFd, syn('10.100.0.102', movedPort, 80, TCP_FLAGS.ACK));
    assert.equal(parseIpv4(parseEthernet(moved.output).payload).dst, '10.10.0.32');

    // Not reused before the sweep.
    r.apply({ desired: state(vip(TUNNEL, [be('10.10.0.32'), be('10.10.0.33')], { forward: 'ipip' })), paths, health: NO_HEALTH });
    const id33 = idOf(r, TUNNEL, '10.10.0.33');
    assert.notEqual(id33, id31);
    assert.equal(id33, 3);

    const stale = flowEntries().filter((f) => f.backendId === id31).length;
    assert.equal(stale, on31 - 1, 'the moved flow names its new backend');
    assert.equal(r.sweepFlows(), stale);
    assert.equal(flowEntries().filter((f) => f.backendId === id31).length, 0);
    assert.equal(flowEntries().length, 40 - stale, 'flows of other backends stay');
    assert.equal(r.sweepFlows(), 0, 'nothing left to sweep');

    // Now the id is free again.
    r.apply({
      desired: state(vip(TUNNEL, [be('10.10.0.32'), be('10.10.0.33'), be('10.10.0.34')], { forward: 'ipip' })),
      paths,
      health: NO_HEALTH,
    });
    assert.equal(idOf(r, TUNNEL, '10.10.0.34'), id31);
    assert.deepEqual(backendEntry(id31).address, field16('10.10.0.34'));
    assert.equal(backendEntry(id31).flags, BACKEND_FLAG_ACTIVE);
  });

  test('sweepFlows() without removed backends deletes nothing', () => {
    const r = fresh();
    r.apply({ desired: state(vip(WEB, [be('10.10.0.11')])), paths, health: NO_HEALTH });
    testRun(dataplane.programFd, syn('10.100.0.100', 32000, 80, TCP_FLAGS.ACK));
    assert.equal(r.sweepFlows(), 0);
    assert.equal(flowEntries().length, 1);
  });

  test('removing a VIP deletes its entry and its table', () => {
    const r = fresh();
    r.apply({ desired: state(vip(WEB, [be('10.10.0.11')]), vip(DNS, [be('10.10.0.21')])), paths, health: NO_HEALTH });
    const webId = viewOf(r, WEB).vipId;
    const dnsTable = tableAt(viewOf(r, DNS).vipId)!;
    const id11 = idOf(r, WEB, '10.10.0.11');
    assert.equal(testRun(dataplane.programFd, syn('10.100.0.100', 33000)).action, 'tx');

    const { writes } = r.apply({ desired: state(vip(DNS, [be('10.10.0.21')])), paths, health: NO_HEALTH });
    assert.equal(writes, 4, 'VIP entry, its address, table, backend entry');
    assert.equal(vipEntry(WEB), null);
    assert.equal(tableAt(webId), null);
    assert.equal(backendEntry(id11).flags, 0);
    assert.deepEqual(
      r.view.map((v) => v.key),
      [DNS],
    );
    assert.equal(tableAt(viewOf(r, DNS).vipId)!.mapId, dnsTable.mapId, 'the other VIP is untouched');
    const { action, output } = testRun(dataplane.programFd, syn('10.100.0.100', 33000));
    assert.equal(action, 'pass');
    assert.equal(parseEthernet(output).dst, LB_MAC, 'no longer balanced');

    assert.equal(r.apply({ desired: EMPTY_STATE, paths, health: NO_HEALTH }).writes, 4);
    assert.deepEqual(dataplane.vipAddresses(), []);
    assert.deepEqual([...dataplane.vipsV4.keys()], []);
    assert.deepEqual(r.view, []);
  });

  test('a new table size goes to the other table slot, switched by the VIP entry', () => {
    const r = fresh();
    const backends = [be('10.10.0.31'), be('10.10.0.32'), be('10.10.0.33')];
    r.apply({ desired: state(vip(TUNNEL, backends, { forward: 'ipip', tableSize: 251 })), paths, health: NO_HEALTH });
    const vipId = viewOf(r, TUNNEL).vipId;
    assert.deepEqual(vipEntry(TUNNEL), { vip_id: vipId, table_id: vipId, table_size: 251, flags: 0 });
    const addressOf = new Map(viewOf(r, TUNNEL).backends.map((b) => [b.id, b.address]));
    // A tracked flow, to see it survive the switch.
    const first = testRun(dataplane.programFd, syn('10.100.0.102', 34000));
    const firstBackend = parseIpv4(parseEthernet(first.output).payload).dst;

    assert.equal(
      r.apply({ desired: state(vip(TUNNEL, backends, { forward: 'ipip', tableSize: 257 })), paths, health: NO_HEALTH }).writes,
      3,
      'new table, VIP entry, old table deleted',
    );
    assert.deepEqual(vipEntry(TUNNEL), { vip_id: vipId, table_id: vipId + MAX_VIPS, table_size: 257, flags: 0 });
    assert.equal(tableAt(vipId), null, 'the old slot is empty');
    const table = tableAt(vipId + MAX_VIPS)!.entries;
    assert.equal(table.length, 257);
    assert.deepEqual(
      table,
      expectedTable(
        [
          ['10.10.0.31', 1, 1],
          ['10.10.0.32', 1, 2],
          ['10.10.0.33', 1, 3],
        ],
        257,
      ),
    );
    assert.equal(viewOf(r, TUNNEL).tableSize, 257);
    assert.equal(
      viewOf(r, TUNNEL).backends.reduce((n, b) => n + b.slots, 0),
      257,
    );

    for (let sport = 34001; sport < 34041; sport++) {
      const { action, output } = testRun(dataplane.programFd, syn('10.100.0.102', sport));
      assert.equal(action, 'tx');
      assert.equal(parseIpv4(parseEthernet(output).payload).dst, addressOf.get(slotOwner(table, '10.100.0.102', sport)), `port ${sport}`);
    }
    const again = testRun(dataplane.programFd, syn('10.100.0.102', 34000, 80, TCP_FLAGS.ACK));
    assert.equal(parseIpv4(parseEthernet(again.output).payload).dst, firstBackend, 'a tracked flow keeps its backend');

    // And back: the first slot again.
    assert.equal(
      r.apply({ desired: state(vip(TUNNEL, backends, { forward: 'ipip', tableSize: 251 })), paths, health: NO_HEALTH }).writes,
      3,
    );
    assert.deepEqual(vipEntry(TUNNEL), { vip_id: vipId, table_id: vipId, table_size: 251, flags: 0 });
    assert.equal(tableAt(vipId + MAX_VIPS), null);
    assert.equal(tableAt(vipId)!.entries.length, 251);
    assert.equal(testRun(dataplane.programFd, syn('10.100.0.102', 34100)).action, 'tx');
    assert.equal(
      r.apply({ desired: state(vip(TUNNEL, backends, { forward: 'ipip', tableSize: 251 })), paths, health: NO_HEALTH }).writes,
      0,
    );
  });

  test('too many VIPs is refused before anything is written', () => {
    const r = fresh();
    r.apply({ desired: state(vip(WEB, [be('10.10.0.11')]), vip(DNS, [be('10.10.0.21')])), paths, health: NO_HEALTH });
    const before = snapshot();
    const tooMany = state(
      vip(WEB, [be('10.10.0.11', 7)]), // a change that must not be written either
      vip(DNS, [be('10.10.0.21')]),
      ...Array.from({ length: MAX_VIPS - 1 }, (_, i) => vip(`10.100.1.${i + 1}:80/tcp`, [be(`10.10.1.${i + 1}`)])),
    );
    assert.equal(tooMany.vips.length, MAX_VIPS + 1);
    assert.throws(
      () => r.apply({ desired: tooMany, paths, health: NO_HEALTH }),
      (error: unknown) => {
        assert.ok(error instanceof InputError, `got ${String(error)}`);
        assert.match(error.message, /^too many VIPs: this balancer holds at most 8 /);
        return true;
      },
    );
    assert.equal(snapshot(), before);
    assert.deepEqual(
      r.view.map((v) => v.key),
      [WEB, DNS],
    );
    assert.equal(
      r.apply({ desired: state(vip(WEB, [be('10.10.0.11')]), vip(DNS, [be('10.10.0.21')])), paths, health: NO_HEALTH }).writes,
      0,
      'nothing half-applied',
    );

    // Exactly as many as there is room for works.
    const full = state(
      vip(WEB, [be('10.10.0.11')]),
      vip(DNS, [be('10.10.0.21')]),
      ...Array.from({ length: MAX_VIPS - 2 }, (_, i) => vip(`10.100.1.${i + 1}:80/tcp`, [])),
    );
    r.apply({ desired: full, paths, health: NO_HEALTH });
    assert.equal([...dataplane.vipsV4.keys()].length, MAX_VIPS);
    assert.deepEqual(new Set(r.view.map((v) => v.vipId)), new Set(Array.from({ length: MAX_VIPS }, (_, i) => i)));
  });

  test('too many backends is refused before anything is written', () => {
    const r = fresh();
    r.apply({ desired: state(vip(WEB, [be('10.10.0.11')])), paths, health: NO_HEALTH });
    const before = snapshot();
    const many = (count: number, weight = 1) =>
      state(
        vip(
          WEB,
          Array.from({ length: count }, (_, i) => be(`10.10.0.${11 + i}`, i === 0 ? weight : 1)),
        ),
      );
    assert.throws(
      () => r.apply({ desired: many(MAX_BACKENDS, 3), paths, health: NO_HEALTH }),
      (error: unknown) => {
        assert.ok(error instanceof InputError, `got ${String(error)}`);
        assert.match(error.message, /^too many backends: this balancer holds at most 31 across all VIPs/);
        return true;
      },
    );
    assert.equal(snapshot(), before);
    assert.equal(r.apply({ desired: state(vip(WEB, [be('10.10.0.11')])), paths, health: NO_HEALTH }).writes, 0, 'nothing half-applied');

    // 31 fit: ids 1..31, never 0.
    r.apply({ desired: many(MAX_BACKENDS - 1), paths, health: NO_HEALTH });
    const ids = viewOf(r, WEB)
      .backends.map((b) => b.id)
      .sort((a, b) => a - b);
    assert.deepEqual(
      ids,
      Array.from({ length: MAX_BACKENDS - 1 }, (_, i) => i + 1),
    );
    assert.ok(backendRaw(0).equals(Buffer.alloc(backendInfo.size)));
    assert.ok(!tableAt(viewOf(r, WEB).vipId)!.entries.includes(0));

    // A removed backend's id is not free until the sweep: a new one does not fit before it.
    r.apply({ desired: many(MAX_BACKENDS - 2), paths, health: NO_HEALTH });
    const removedId = MAX_BACKENDS - 1;
    assert.ok(backendRaw(removedId).equals(Buffer.alloc(backendInfo.size)));
    const withNew = state(vip(WEB, [...many(MAX_BACKENDS - 2).vips[0]!.backends, be('10.10.0.99')]));
    const snapshotBeforeNew = snapshot();
    assert.throws(() => r.apply({ desired: withNew, paths, health: NO_HEALTH }), /too many backends/);
    assert.equal(snapshot(), snapshotBeforeNew);
    assert.equal(r.sweepFlows(), 0);
    r.apply({ desired: withNew, paths, health: NO_HEALTH });
    assert.equal(idOf(r, WEB, '10.10.0.99'), removedId, 'the swept id');
  });

  test('backends of different VIPs get different ids, even at the same address', () => {
    const r = fresh();
    r.apply({
      desired: state(vip(WEB, [be('10.10.0.11')]), vip(TUNNEL, [be('10.10.0.11')], { forward: 'ipip' })),
      paths,
      health: NO_HEALTH,
    });
    const a = idOf(r, WEB, '10.10.0.11');
    const b = idOf(r, TUNNEL, '10.10.0.11');
    assert.notEqual(a, b);
    assert.equal(backendEntry(a).forward, FORWARD.l2dsr);
    assert.equal(backendEntry(b).forward, FORWARD.ipip);
  });

  /** The backend address an ipip packet was sent to (its outer destination), or the action when not sent. */
  const sentTo = (frame: Buffer): string => {
    const { action, output } = testRun(dataplane.programFd, frame);
    return action === 'tx' ? parseIpv4(parseEthernet(output).payload).dst : action;
  };
  const FOUR = ['10.10.0.11', '10.10.0.12', '10.10.0.13', '10.10.0.14'].map((a) => be(a));

  test('hash source: every connection of a client goes to one backend; hash flow spreads them', () => {
    const r = fresh();
    r.apply({ desired: state(vip(TUNNEL, FOUR, { forward: 'ipip', hash: 'source' })), paths, health: NO_HEALTH });
    const bySource = new Set(Array.from({ length: 40 }, (_, i) => sentTo(syn('10.100.0.102', 41000 + i))));
    assert.equal(bySource.size, 1);
    const table = tableAt(viewOf(r, TUNNEL).vipId)!.entries;
    const owner = table[tableSlot(sourceHash(CLIENT), table.length)]!;
    assert.deepEqual([...bySource], [viewOf(r, TUNNEL).backends.find((b) => b.id === owner)!.address]);

    r.apply({ desired: state(vip(TUNNEL, FOUR, { forward: 'ipip' })), paths, health: NO_HEALTH });
    clearFlows();
    const byFlow = new Set(Array.from({ length: 40 }, (_, i) => sentTo(syn('10.100.0.102', 42000 + i))));
    assert.equal(byFlow.size, 4);
  });

  test('a VIP of all ports takes the ports without a VIP of their own; removing it stops that', () => {
    const r = fresh();
    const ALL = '10.100.0.102:0/tcp';
    const OWN = '10.100.0.102:443/tcp';
    r.apply({
      desired: state(vip(ALL, [be('10.10.0.11')], { forward: 'ipip', checkPort: 80 }), vip(OWN, [be('10.10.0.12')], { forward: 'ipip' })),
      paths,
      health: NO_HEALTH,
    });
    for (const port of [1, 80, 8080, 65535]) assert.equal(sentTo(syn('10.100.0.102', 43000, port)), '10.10.0.11', `port ${port}`);
    assert.equal(sentTo(syn('10.100.0.102', 43001, 443)), '10.10.0.12', 'a port with its own VIP');
    assert.equal(sentTo(syn('10.100.0.100', 43002, 8080)), 'pass', 'another address');

    r.apply({ desired: state(vip(OWN, [be('10.10.0.12')], { forward: 'ipip' })), paths, health: NO_HEALTH });
    clearFlows();
    assert.equal(sentTo(syn('10.100.0.102', 43003, 8080)), 'pass');
    assert.equal(sentTo(syn('10.100.0.102', 43004, 443)), '10.10.0.12');
  });

  test("with the interface's MAC known, frames to another unicast MAC are passed, not balanced", () => {
    const r = fresh();
    const desired = state(vip(TUNNEL, [be('10.10.0.11')], { forward: 'ipip' }));
    const toOther = () =>
      ipv4Frame({ src: CLIENT, dst: '10.100.0.102', srcPort: 44000, dstPort: 80, tcpFlags: TCP_FLAGS.SYN, dstMac: '02:00:00:00:00:77' });
    r.apply({ desired, paths, health: NO_HEALTH });
    assert.equal(sentTo(toOther()), '10.10.0.11', 'not known: not checked');
    r.apply({ desired, paths, health: NO_HEALTH, interfaceMac: LB_MAC });
    assert.equal(dataplane.interfaceMac(), LB_MAC);
    const before = dataplane.reasonCounters().not_for_this_host;
    assert.equal(sentTo(toOther()), 'pass');
    assert.equal(dataplane.reasonCounters().not_for_this_host, before + 1n);
    assert.equal(sentTo(syn('10.100.0.102', 44001)), '10.10.0.11', 'to this MAC');
    r.apply({ desired, paths, health: NO_HEALTH, interfaceMac: null });
    assert.equal(sentTo(toOther()), '10.10.0.11', 'a link without a MAC: not checked');
  });
});
