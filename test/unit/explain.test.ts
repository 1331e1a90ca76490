/** `lbctl explain` from the core's views: the table's choice, a tracked flow's backend, and why. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type ExplainSource, explainFlow, parseClientEndpoint } from '../../src/core/explain.js';
import type { TrackedFlow } from '../../src/core/flows.js';
import { emptyMapState, plan } from '../../src/core/planner.js';
import { flowHash, sourceHash, tableSlot } from '../../src/dataplane/flow-hash.js';
import type { BackendHealth } from '../../src/health/checker.js';
import { parseVip } from '../../src/model/address.js';
import { vipSettings } from '../../src/model/desired-state.js';
import { InputError } from '../../src/model/errors.js';
import { TestPaths } from '../support/memory-maps.js';

const WEB = '10.100.0.100:80/tcp';
const paths = new TestPaths();

const ALL_PORTS = '10.100.0.100:0/tcp';
const BACKENDS = ['10.10.0.11', '10.10.0.12', '10.10.0.13'].map((address) => ({ address, family: 4 as const, weight: 1 }));

function source(options: { down?: string; tracked?: TrackedFlow; hash?: 'flow' | 'source' } = {}): ExplainSource {
  const desired = {
    vips: [
      {
        vip: parseVip(WEB),
        ...vipSettings(parseVip(WEB), { tableSize: 251, ...(options.hash ? { hash: options.hash } : {}) }),
        backends: BACKENDS,
      },
      {
        vip: parseVip(ALL_PORTS),
        ...vipSettings(parseVip(ALL_PORTS), { tableSize: 251, check: { port: 80 }, ...(options.hash ? { hash: options.hash } : {}) }),
        backends: BACKENDS,
      },
    ],
  };
  const health = (_vip: string, address: string): BackendHealth | undefined =>
    address === options.down ? { state: 'down', since: '2026-01-01T00:00:00.000Z', consecutive: 3 } : undefined;
  const planned = plan(emptyMapState({ maxVips: 4, maxBackends: 16 }), { desired, paths: (t) => paths.get(t), health });
  return {
    views: planned.views,
    tableOwner: (key, slot) => planned.next.vips.get(key)?.table?.[slot],
    backendById: (id) => planned.views.flatMap((v) => v.backends).find((b) => b.id === id),
    lookupFlow: () => options.tracked,
    secondsSince: () => 12.4,
  };
}

const CLIENT = { address: '10.10.0.10', family: 4 as const, port: 40000 };
const FLOW = { saddr: '10.10.0.10', daddr: '10.100.0.100', sport: 40000, dport: 80, proto: 6 };

describe('explain', () => {
  test('a new flow goes where the Maglev slot of its hash says', () => {
    const s = source();
    const result = explainFlow(s, CLIENT, WEB);
    const slot = tableSlot(flowHash(FLOW), 251);
    const owner = s.views[0]!.backends.find((b) => b.id === s.tableOwner(WEB, slot))!.address;
    assert.equal(result.decidedBy, 'maglev table');
    assert.equal(result.backend, owner);
    assert.equal(result.table.slot, slot);
    assert.equal(result.table.hash, `0x${flowHash(FLOW).toString(16).padStart(8, '0')}`);
    assert.equal(result.client, '10.10.0.10:40000');
    assert.equal(result.tracked, undefined);
  });

  test('a tracked flow keeps its backend; one whose backend is down goes by the table', () => {
    const tracked: TrackedFlow = { key: FLOW, backendId: 3, closing: false, lastSeen: 0n };
    const kept = explainFlow(source({ tracked }), CLIENT, WEB);
    assert.equal(kept.decidedBy, 'tracked flow');
    assert.equal(kept.backend, '10.10.0.13');
    assert.deepEqual(kept.tracked, { backend: '10.10.0.13', state: 'active', lastSeenSecondsAgo: 12, closing: false });

    const moved = explainFlow(source({ tracked, down: '10.10.0.13' }), CLIENT, WEB);
    assert.equal(moved.decidedBy, 'maglev table');
    assert.notEqual(moved.backend, '10.10.0.13');
    assert.equal(moved.tracked?.state, 'down');
  });

  test('a flow tracked to a backend id nobody holds says so', () => {
    const result = explainFlow(source({ tracked: { key: FLOW, backendId: 9, closing: true, lastSeen: 0n } }), CLIENT, WEB);
    assert.deepEqual(result.tracked, { backend: '#9', state: 'removed', lastSeenSecondsAgo: 12, closing: true });
    assert.equal(result.decidedBy, 'maglev table');
  });

  test('bad input: an unknown VIP, a client of the other family, a malformed endpoint', () => {
    assert.throws(() => explainFlow(source(), CLIENT, '10.1.1.1:80/tcp'), /unknown VIP 10\.1\.1\.1:80\/tcp/);
    assert.throws(
      () => explainFlow(source(), { address: 'fd00::10', family: 6, port: 1 }, WEB),
      /client fd00::10 is IPv6 but VIP .* is IPv4/,
    );
    assert.deepEqual(parseClientEndpoint('[2001:db8::7]:40000'), { address: '2001:db8::7', family: 6, port: 40000 });
    for (const bad of ['10.10.0.10', '10.10.0.10:0', '10.10.0.10:70000', 'host:80', '[::1]']) {
      assert.throws(() => parseClientEndpoint(bad), InputError, bad);
    }
  });

  test("hash source: the slot comes from the client's address alone, whatever its port", () => {
    const s = source({ hash: 'source' });
    const one = explainFlow(s, CLIENT, WEB);
    const other = explainFlow(s, { ...CLIENT, port: 51234 }, WEB);
    assert.equal(one.table.hashOf, 'source');
    assert.equal(one.table.slot, tableSlot(sourceHash(CLIENT.address), 251));
    assert.equal(other.table.slot, one.table.slot);
    assert.equal(other.backend, one.backend);
    assert.equal(explainFlow(source(), CLIENT, WEB).table.hashOf, 'flow');
  });

  test('a VIP of all ports: the port the client connects to is needed, and must not have a VIP of its own', () => {
    const s = source();
    const result = explainFlow(s, CLIENT, ALL_PORTS, 8443);
    assert.equal(result.port, 8443);
    assert.equal(result.table.slot, tableSlot(flowHash({ ...FLOW, dport: 8443 }), 251));
    assert.throws(() => explainFlow(s, CLIENT, ALL_PORTS), /a VIP of all ports: give the port the client connects to/);
    assert.throws(
      () => explainFlow(s, CLIENT, ALL_PORTS, 80),
      /port 80 of 10\.100\.0\.100 has a VIP of its own: explain 10\.100\.0\.100:80\/tcp/,
    );
    assert.throws(() => explainFlow(s, CLIENT, ALL_PORTS, 70000), /invalid port 70000/);
    assert.throws(() => explainFlow(s, CLIENT, WEB, 81), /has port 80: give no other port/);
    assert.equal(explainFlow(s, CLIENT, WEB, 80).port, 80);
  });
});
