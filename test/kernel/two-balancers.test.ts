/**
 * Two balancers given the same backends send every flow to the same
 * backend, whatever order the backends were added in and whatever else
 * happened before: their tables, read back from the kernel, name the same
 * backend in every slot. ECMP in front of several balancers depends on it.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { vipInfo } from '../../src/dataplane/abi.js';
import { BalancerDataplane } from '../../src/dataplane/balancer.js';
import { Reconciler } from '../../src/core/reconciler.js';
import { parseVip } from '../../src/model/address.js';
import { type BackendSpec, type DesiredState, vipSettings } from '../../src/model/desired-state.js';
import { type PathResult, type PathTarget } from '../../src/net/forwarding-paths.js';

/** No backend is health-checked here. */
const NO_HEALTH = () => undefined;

const limits = { maxVips: 8, maxBackends: 128, flowTableSize: 1024 };
const first = BalancerDataplane.load(limits);
const second = BalancerDataplane.load(limits);
after(() => {
  first.close();
  second.close();
});

const log = pino({ level: 'silent' });
const paths = (t: PathTarget): PathResult => ({
  ok: true,
  path: { dev: 'lo', ifindex: 1, srcMac: '02:00:00:00:00:02', nextHop: t.address, dstMac: '02:00:00:00:00:11', mtu: 0 },
});
const backend = (address: string, weight = 1): BackendSpec => ({ address, family: 4, weight });
const VIP = parseVip('10.100.0.100:80/tcp');
const state = (backends: BackendSpec[], tableSize = 65537): DesiredState => ({
  vips: [{ vip: VIP, ...vipSettings(VIP, { tableSize }), backends }],
});

/** The VIP's table as backend addresses, slot by slot, read from the kernel. */
function tableByAddress(dataplane: BalancerDataplane, reconciler: Reconciler): string[] {
  const [key] = [...dataplane.vipsV4.keys()];
  const { table_id } = vipInfo.decode(dataplane.vipsV4.lookup(key!)!);
  const names = new Map(reconciler.view[0]!.backends.map((b) => [b.id, b.address]));
  return Array.from(dataplane.readTable(table_id)!, (id) => names.get(id) ?? `#${id}`);
}

test('same backends, different histories: identical tables slot by slot', () => {
  const backends = [backend('10.10.0.11', 3), backend('10.10.0.12', 1), backend('10.10.0.13', 2), backend('10.20.0.14', 1)];

  const a = new Reconciler(first, log);
  a.apply({ desired: state(backends), paths, health: NO_HEALTH });

  // The second balancer saw other backends come and go first, so its ids
  // differ, and got the final set in another order.
  const b = new Reconciler(second, log);
  b.apply({ desired: state([backend('10.30.0.1'), backend('10.30.0.2'), backend('10.10.0.13', 2)]), paths, health: NO_HEALTH });
  b.apply({ desired: state([backend('10.10.0.13', 2), backend('10.20.0.14'), backend('10.30.0.2')]), paths, health: NO_HEALTH });
  b.sweepFlows();
  b.apply({ desired: state([...backends].reverse()), paths, health: NO_HEALTH });

  const idsA = a.view[0]!.backends.map((x) => `${x.address}=${x.id}`).sort();
  const idsB = b.view[0]!.backends.map((x) => `${x.address}=${x.id}`).sort();
  assert.notDeepEqual(idsA, idsB, 'the two balancers use different backend ids');
  const tableA = tableByAddress(first, a);
  const tableB = tableByAddress(second, b);
  assert.equal(tableA.length, 65537);
  assert.deepEqual(tableA, tableB);
});
