/**
 * The desired state: the config as the baseline, runtime changes laid over
 * it, and the changes (withChange) that record them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseVip, type VipAddress } from '../../src/model/address.js';
import {
  applyChanges,
  type BackendPatch,
  type BackendSpec,
  type Change,
  type DesiredState,
  effectiveForward,
  findVip,
  NO_CHANGES,
  type RuntimeChanges,
  type DrainSpec,
  type VipSettings,
  vipSettings,
  withChange,
} from '../../src/model/desired-state.js';
import { InputError } from '../../src/model/errors.js';

/** Freezes value and everything reachable from it, so any mutation throws. */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Reflect.ownKeys(value)) deepFreeze((value as Record<PropertyKey, unknown>)[key]);
  }
  return value;
}

function backend(address: string, weight = 1, forward?: 'l2dsr' | 'ipip'): BackendSpec {
  const family = address.includes(':') ? 6 : 4;
  return { address, family, weight, ...(forward ? { forward } : {}) };
}

/** A VIP's settings with default checks. */
function settings(vip: VipAddress, forward: 'l2dsr' | 'ipip', tableSize = 65537) {
  return vipSettings(vip, { forward, tableSize });
}

const WEB = '10.100.0.100:80/tcp';

/** The runtime changes after one more change over CONFIG; also checks the desired state withChange returns. */
function change(changes: RuntimeChanges, next: Change): RuntimeChanges {
  const result = withChange(CONFIG, changes, next);
  assert.deepEqual(result.desired, applyChanges(CONFIG, result.changes), 'withChange returns the state its changes make');
  return result.changes;
}
const addVip = (changes: RuntimeChanges, vip: VipAddress, settings: VipSettings) => change(changes, { op: 'vip.add', vip, settings });
const removeVip = (changes: RuntimeChanges, vip: string) => change(changes, { op: 'vip.remove', vip });
const addBackend = (changes: RuntimeChanges, vip: string, backend: BackendSpec) => change(changes, { op: 'backend.add', vip, backend });
const removeBackend = (changes: RuntimeChanges, vip: string, address: string) => change(changes, { op: 'backend.remove', vip, address });
const setBackend = (changes: RuntimeChanges, vip: string, address: string, patch: BackendPatch) =>
  change(changes, { op: 'backend.set', vip, address, patch });
const DNS = '10.100.0.101:53/udp';
const V6 = '[2001:db8::10]:443/tcp';
const RUNTIME_VIP = '10.100.0.200:8080/tcp';

const CONFIG: DesiredState = deepFreeze({
  vips: [
    {
      vip: parseVip(WEB),
      ...settings(parseVip(WEB), 'l2dsr', 65537),
      backends: [backend('10.10.0.11', 6), backend('10.10.0.12', 3, 'ipip')],
    },
    { vip: parseVip(DNS), ...settings(parseVip(DNS), 'ipip', 251), backends: [] },
    { vip: parseVip(V6), ...settings(parseVip(V6), 'l2dsr', 251), backends: [backend('2001:db8::11')] },
  ],
});

/** The state as the keys of VIPs and the addresses of their backends. */
function summary(state: DesiredState): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const v of state.vips)
    out[`${v.vip.family === 6 ? `[${v.vip.address}]` : v.vip.address}:${v.vip.port}/${v.vip.protocol}`] = v.backends.map((b) => b.address);
  return out;
}

function assertInputError(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof InputError, `expected an InputError, got ${String(error)}`);
    assert.match(error.message, message);
    return true;
  });
}

describe('applyChanges', () => {
  test('no changes give the config itself', () => {
    const state = applyChanges(CONFIG, NO_CHANGES);
    assert.deepEqual(state, CONFIG);
  });

  test("'add' defines a VIP with only its own backends, 'modify' changes a config VIP's backends", () => {
    const changes: RuntimeChanges = deepFreeze({
      vips: {
        [RUNTIME_VIP]: {
          op: 'add',
          ...settings(parseVip(RUNTIME_VIP), 'ipip', 257),
          backends: { '10.10.0.21': { op: 'add', backend: backend('10.10.0.21', 2) } },
        },
        [WEB]: { op: 'modify', backends: { '10.10.0.11': { op: 'remove' }, '10.10.0.13': { op: 'add', backend: backend('10.10.0.13') } } },
      },
    });
    const state = applyChanges(CONFIG, changes);
    assert.deepEqual(summary(state), {
      [WEB]: ['10.10.0.12', '10.10.0.13'],
      [DNS]: [],
      [V6]: ['2001:db8::11'],
      [RUNTIME_VIP]: ['10.10.0.21'],
    });
    assert.deepEqual(findVip(state, RUNTIME_VIP), {
      vip: { family: 4, address: '10.100.0.200', port: 8080, protocol: 'tcp' },
      ...settings(parseVip(RUNTIME_VIP), 'ipip', 257),
      backends: [backend('10.10.0.21', 2)],
    });
    // The rest of a modified VIP comes from the config.
    const web = findVip(state, WEB)!;
    assert.equal(web.tableSize, 65537);
    assert.equal(web.forward, 'l2dsr');
  });

  test("'modify' changes for a VIP the config no longer has are ignored", () => {
    const changes: RuntimeChanges = deepFreeze({
      vips: { '10.100.0.99:80/tcp': { op: 'modify', backends: { '10.10.0.50': { op: 'add', backend: backend('10.10.0.50') } } } },
    });
    const state = applyChanges(CONFIG, changes);
    assert.equal(findVip(state, '10.100.0.99:80/tcp'), undefined);
    assert.deepEqual(summary(state), summary(CONFIG));
  });

  test("a 'remove' hides the config's VIP", () => {
    const state = applyChanges(CONFIG, deepFreeze({ vips: { [DNS]: { op: 'remove' } } }));
    assert.deepEqual(Object.keys(summary(state)), [WEB, V6]);
  });
});

describe('addVip', () => {
  test('adds a runtime VIP without backends, with the given method and table size', () => {
    const changes = addVip(NO_CHANGES, parseVip(RUNTIME_VIP), settings(parseVip(RUNTIME_VIP), 'ipip', 251));
    assert.deepEqual(changes, { vips: { [RUNTIME_VIP]: { op: 'add', ...settings(parseVip(RUNTIME_VIP), 'ipip', 251), backends: {} } } });
    const vip = findVip(applyChanges(CONFIG, changes), RUNTIME_VIP)!;
    assert.equal(vip.forward, 'ipip');
    assert.equal(vip.tableSize, 251);
    assert.deepEqual(vip.backends, []);
  });

  test('the table size defaults to 65537', () => {
    const changes = addVip(NO_CHANGES, parseVip(RUNTIME_VIP), settings(parseVip(RUNTIME_VIP), 'l2dsr'));
    assert.equal(findVip(applyChanges(CONFIG, changes), RUNTIME_VIP)!.tableSize, 65537);
  });

  test('a VIP that exists in the config or at runtime cannot be added again', () => {
    assertInputError(
      () => addVip(NO_CHANGES, parseVip(WEB), settings(parseVip(WEB), 'l2dsr')),
      /^VIP 10\.100\.0\.100:80\/tcp already exists$/,
    );
    assertInputError(
      () => addVip(NO_CHANGES, parseVip('[2001:DB8:0::10]:443/tcp'), settings(parseVip('[2001:DB8:0::10]:443/tcp'), 'l2dsr')),
      /already exists/,
    );
    const changes = deepFreeze(addVip(NO_CHANGES, parseVip(RUNTIME_VIP), settings(parseVip(RUNTIME_VIP), 'l2dsr')));
    assertInputError(() => addVip(changes, parseVip(RUNTIME_VIP), settings(parseVip(RUNTIME_VIP), 'ipip')), /already exists/);
  });

  test('a config VIP re-added after its removal starts without the config backends', () => {
    const removed = deepFreeze(removeVip(NO_CHANGES, WEB));
    const readded = deepFreeze(addVip(removed, parseVip(WEB), settings(parseVip(WEB), 'ipip', 251)));
    const web = findVip(applyChanges(CONFIG, readded), WEB)!;
    assert.deepEqual(web.backends, []);
    assert.equal(web.forward, 'ipip');
    assert.equal(web.tableSize, 251);
    // Backends added now are the VIP's only ones.
    const withBackend = addBackend(readded, WEB, backend('10.10.0.11'));
    assert.deepEqual(findVip(applyChanges(CONFIG, withBackend), WEB)!.backends, [backend('10.10.0.11')]);
  });
});

describe('removeVip', () => {
  test('an unknown VIP cannot be removed', () => {
    assertInputError(() => removeVip(NO_CHANGES, '10.1.1.1:80/tcp'), /^unknown VIP 10\.1\.1\.1:80\/tcp$/);
    const removed = deepFreeze(removeVip(NO_CHANGES, DNS));
    assertInputError(() => removeVip(removed, DNS), /unknown VIP/);
  });

  test('removing a config VIP records a tombstone that hides it while the config still has it', () => {
    const changes = removeVip(NO_CHANGES, DNS);
    assert.deepEqual(changes, { vips: { [DNS]: { op: 'remove' } } });
    assert.ok(findVip(CONFIG, DNS), 'the config still defines it');
    assert.equal(findVip(applyChanges(CONFIG, changes), DNS), undefined);
  });

  test('removing a config VIP with runtime backend changes replaces them by the tombstone', () => {
    const modified = deepFreeze(addBackend(NO_CHANGES, WEB, backend('10.10.0.13')));
    const changes = removeVip(modified, WEB);
    assert.deepEqual(changes, { vips: { [WEB]: { op: 'remove' } } });
  });

  test('removing a runtime-only VIP forgets it entirely', () => {
    let changes = deepFreeze(addVip(NO_CHANGES, parseVip(RUNTIME_VIP), settings(parseVip(RUNTIME_VIP), 'l2dsr', 251)));
    changes = deepFreeze(addBackend(changes, RUNTIME_VIP, backend('10.10.0.21')));
    const removed = removeVip(changes, RUNTIME_VIP);
    assert.deepEqual(removed, NO_CHANGES);
    assert.deepEqual(applyChanges(CONFIG, removed), CONFIG);
  });

  test('removing a re-added config VIP records the tombstone again', () => {
    const removed = deepFreeze(removeVip(NO_CHANGES, WEB));
    const readded = deepFreeze(addVip(removed, parseVip(WEB), settings(parseVip(WEB), 'l2dsr', 251)));
    assert.deepEqual(removeVip(readded, WEB), { vips: { [WEB]: { op: 'remove' } } });
  });
});

describe('addBackend', () => {
  test('adds to a config VIP through a modify change, keeping the config backends', () => {
    const changes = addBackend(NO_CHANGES, WEB, backend('10.10.0.13', 5, 'ipip'));
    assert.deepEqual(changes, {
      vips: { [WEB]: { op: 'modify', backends: { '10.10.0.13': { op: 'add', backend: backend('10.10.0.13', 5, 'ipip') } } } },
    });
    assert.deepEqual(
      findVip(applyChanges(CONFIG, changes), WEB)!.backends.map((b) => [b.address, b.weight]),
      [
        ['10.10.0.11', 6],
        ['10.10.0.12', 3],
        ['10.10.0.13', 5],
      ],
    );
  });

  test('adds to a runtime VIP inside its add change', () => {
    const added = deepFreeze(addVip(NO_CHANGES, parseVip(RUNTIME_VIP), settings(parseVip(RUNTIME_VIP), 'ipip', 251)));
    const changes = addBackend(added, RUNTIME_VIP, backend('10.10.0.21'));
    assert.deepEqual(changes, {
      vips: {
        [RUNTIME_VIP]: {
          op: 'add',
          ...settings(parseVip(RUNTIME_VIP), 'ipip', 251),
          backends: { '10.10.0.21': { op: 'add', backend: backend('10.10.0.21') } },
        },
      },
    });
  });

  test('fails for an unknown VIP, a removed VIP, a duplicate or another family', () => {
    assertInputError(() => addBackend(NO_CHANGES, '10.1.1.1:80/tcp', backend('10.10.0.13')), /^unknown VIP 10\.1\.1\.1:80\/tcp$/);
    const removed = deepFreeze(removeVip(NO_CHANGES, WEB));
    assertInputError(() => addBackend(removed, WEB, backend('10.10.0.13')), /unknown VIP/);
    assertInputError(
      () => addBackend(NO_CHANGES, WEB, backend('10.10.0.11')),
      /^backend 10\.10\.0\.11 already exists in VIP 10\.100\.0\.100:80\/tcp$/,
    );
    const added = deepFreeze(addBackend(NO_CHANGES, WEB, backend('10.10.0.13')));
    assertInputError(() => addBackend(added, WEB, backend('10.10.0.13', 9)), /already exists/);
    assertInputError(
      () => addBackend(NO_CHANGES, WEB, backend('2001:db8::11')),
      /^backend 2001:db8::11 is IPv6 but VIP 10\.100\.0\.100:80\/tcp is IPv4: only --forward ipip can cross address families$/,
    );
    assertInputError(() => addBackend(NO_CHANGES, V6, backend('10.10.0.13')), /is IPv4 but VIP .* is IPv6/);
  });

  test('a config backend removed at runtime can be added again, with new settings', () => {
    const removed = deepFreeze(removeBackend(NO_CHANGES, WEB, '10.10.0.11'));
    const readded = addBackend(removed, WEB, backend('10.10.0.11', 42));
    const web = findVip(applyChanges(CONFIG, readded), WEB)!;
    assert.deepEqual(
      web.backends.find((b) => b.address === '10.10.0.11'),
      backend('10.10.0.11', 42),
    );
    assert.equal(web.backends.length, 2);
  });
});

describe('removeBackend', () => {
  test('fails for an unknown VIP or a backend the VIP does not have', () => {
    assertInputError(() => removeBackend(NO_CHANGES, '10.1.1.1:80/tcp', '10.10.0.11'), /^unknown VIP 10\.1\.1\.1:80\/tcp$/);
    assertInputError(() => removeBackend(NO_CHANGES, WEB, '10.10.0.99'), /^VIP 10\.100\.0\.100:80\/tcp has no backend 10\.10\.0\.99$/);
    const removed = deepFreeze(removeBackend(NO_CHANGES, WEB, '10.10.0.11'));
    assertInputError(() => removeBackend(removed, WEB, '10.10.0.11'), /has no backend/);
  });

  test('removing a config backend records a removal that hides it', () => {
    const changes = removeBackend(NO_CHANGES, WEB, '10.10.0.11');
    assert.deepEqual(changes, { vips: { [WEB]: { op: 'modify', backends: { '10.10.0.11': { op: 'remove' } } } } });
    assert.deepEqual(
      findVip(applyChanges(CONFIG, changes), WEB)!.backends.map((b) => b.address),
      ['10.10.0.12'],
    );
  });

  test('removing a runtime-only backend of a config VIP leaves no trace', () => {
    const added = deepFreeze(addBackend(NO_CHANGES, WEB, backend('10.10.0.13')));
    const changes = removeBackend(added, WEB, '10.10.0.13');
    assert.deepEqual(changes, NO_CHANGES);
    assert.deepEqual(applyChanges(CONFIG, changes), CONFIG);
  });

  test('removing a runtime-only backend keeps the other changes of its VIP', () => {
    let changes = deepFreeze(removeBackend(NO_CHANGES, WEB, '10.10.0.12'));
    changes = deepFreeze(addBackend(changes, WEB, backend('10.10.0.13')));
    assert.deepEqual(removeBackend(changes, WEB, '10.10.0.13'), {
      vips: { [WEB]: { op: 'modify', backends: { '10.10.0.12': { op: 'remove' } } } },
    });
  });

  test('removing a backend of a runtime VIP forgets it, the VIP stays', () => {
    const vipOnly = deepFreeze(addVip(NO_CHANGES, parseVip(RUNTIME_VIP), settings(parseVip(RUNTIME_VIP), 'l2dsr', 251)));
    const withBackend = deepFreeze(addBackend(vipOnly, RUNTIME_VIP, backend('10.10.0.21')));
    const changes = removeBackend(withBackend, RUNTIME_VIP, '10.10.0.21');
    assert.deepEqual(changes, vipOnly);
    assert.deepEqual(findVip(applyChanges(CONFIG, changes), RUNTIME_VIP)!.backends, []);
  });

  test('removing a config backend that was removed and re-added at runtime records the removal', () => {
    let changes = deepFreeze(removeBackend(NO_CHANGES, WEB, '10.10.0.11'));
    changes = deepFreeze(addBackend(changes, WEB, backend('10.10.0.11', 9)));
    changes = removeBackend(changes, WEB, '10.10.0.11');
    assert.deepEqual(changes, { vips: { [WEB]: { op: 'modify', backends: { '10.10.0.11': { op: 'remove' } } } } });
    assert.deepEqual(
      findVip(applyChanges(CONFIG, changes), WEB)!.backends.map((b) => b.address),
      ['10.10.0.12'],
    );
  });
});

describe('effectiveForward', () => {
  test("a backend's own method overrides the VIP default", () => {
    const web = findVip(CONFIG, WEB)!;
    assert.equal(effectiveForward(web, web.backends[0]!), 'l2dsr');
    assert.equal(effectiveForward(web, web.backends[1]!), 'ipip');
    const dns = findVip(CONFIG, DNS)!;
    assert.equal(effectiveForward(dns, backend('10.10.0.30')), 'ipip');
    assert.equal(effectiveForward(dns, backend('10.10.0.30', 1, 'l2dsr')), 'l2dsr');
  });
});

describe('inputs', () => {
  test('a long sequence of operations never mutates its (frozen) inputs', () => {
    const before = JSON.stringify(CONFIG);
    let changes: RuntimeChanges = deepFreeze(NO_CHANGES);
    const steps: Array<(c: RuntimeChanges) => RuntimeChanges> = [
      (c) => addVip(c, parseVip(RUNTIME_VIP), settings(parseVip(RUNTIME_VIP), 'ipip', 251)),
      (c) => addBackend(c, RUNTIME_VIP, backend('10.10.0.21')),
      (c) => addBackend(c, RUNTIME_VIP, backend('10.10.0.22', 3)),
      (c) => removeBackend(c, RUNTIME_VIP, '10.10.0.21'),
      (c) => addBackend(c, WEB, backend('10.10.0.13')),
      (c) => removeBackend(c, WEB, '10.10.0.11'),
      (c) => removeVip(c, DNS),
      (c) => addVip(c, parseVip(DNS), settings(parseVip(DNS), 'l2dsr', 251)),
      (c) => removeVip(c, WEB),
    ];
    const snapshots: string[] = [];
    for (const step of steps) {
      const next = step(changes);
      assert.notEqual(next, changes, 'each step returns a new object');
      snapshots.push(JSON.stringify(changes));
      applyChanges(CONFIG, next);
      changes = deepFreeze(next);
    }
    assert.equal(JSON.stringify(CONFIG), before);
    assert.deepEqual(summary(applyChanges(CONFIG, changes)), { [DNS]: [], [V6]: ['2001:db8::11'], [RUNTIME_VIP]: ['10.10.0.22'] });
    assert.deepEqual(JSON.parse(snapshots[0]!), NO_CHANGES);
  });
});

describe('setBackend: weights and drains', () => {
  const DRAIN: DrainSpec = deepFreeze({ since: '2026-01-01T00:00:00.000Z', timeoutSeconds: 300, idleSeconds: 30 });
  const backendOf = (state: DesiredState, key: string, address: string) =>
    findVip(state, key)!.backends.find((b) => b.address === address)!;

  test('a weight change on a config backend is recorded as a patch and applied', () => {
    const changes = setBackend(NO_CHANGES, WEB, '10.10.0.11', { weight: 9 });
    assert.deepEqual(changes, { vips: { [WEB]: { op: 'modify', backends: { '10.10.0.11': { op: 'set', weight: 9 } } } } });
    assert.equal(backendOf(applyChanges(CONFIG, changes), WEB, '10.10.0.11').weight, 9);
    assert.equal(backendOf(applyChanges(CONFIG, changes), WEB, '10.10.0.12').weight, 3, 'other backends untouched');
  });

  test('setting a config backend back to what the config says forgets the change', () => {
    const changed = setBackend(NO_CHANGES, WEB, '10.10.0.11', { weight: 9 });
    assert.deepEqual(setBackend(changed, WEB, '10.10.0.11', { weight: 6 }), NO_CHANGES);
  });

  test('a drain is kept with the weight, and undrain (null) removes only the drain', () => {
    let changes = setBackend(NO_CHANGES, WEB, '10.10.0.11', { weight: 2 });
    changes = setBackend(changes, WEB, '10.10.0.11', { drain: DRAIN });
    assert.deepEqual(backendOf(applyChanges(CONFIG, changes), WEB, '10.10.0.11'), { ...backend('10.10.0.11', 2), drain: DRAIN });
    changes = setBackend(changes, WEB, '10.10.0.11', { drain: null });
    assert.deepEqual(backendOf(applyChanges(CONFIG, changes), WEB, '10.10.0.11'), backend('10.10.0.11', 2));
    assert.deepEqual(changes, { vips: { [WEB]: { op: 'modify', backends: { '10.10.0.11': { op: 'set', weight: 2 } } } } });
  });

  test('a runtime-added backend is patched in its own definition', () => {
    let changes = addBackend(NO_CHANGES, WEB, backend('10.10.0.13', 1, 'ipip'));
    changes = setBackend(changes, WEB, '10.10.0.13', { weight: 4, drain: DRAIN });
    assert.deepEqual(changes.vips[WEB], {
      op: 'modify',
      backends: { '10.10.0.13': { op: 'add', backend: { ...backend('10.10.0.13', 4, 'ipip'), drain: DRAIN } } },
    });
  });

  test('draining a draining backend, or undraining one that is not, is refused', () => {
    const draining = deepFreeze(setBackend(NO_CHANGES, WEB, '10.10.0.11', { drain: DRAIN }));
    assertInputError(
      () => setBackend(draining, WEB, '10.10.0.11', { drain: DRAIN }),
      /10\.10\.0\.11 of VIP .* is already draining \(since 2026-01-01/,
    );
    assertInputError(() => setBackend(NO_CHANGES, WEB, '10.10.0.12', { drain: null }), /10\.10\.0\.12 of VIP .* is not draining/);
  });

  test('unknown VIP or backend is refused', () => {
    assertInputError(() => setBackend(NO_CHANGES, RUNTIME_VIP, '10.10.0.11', { weight: 2 }), /unknown VIP 10.100.0.200:8080\/tcp/);
    assertInputError(() => setBackend(NO_CHANGES, WEB, '10.10.0.99', { weight: 2 }), /VIP 10.100.0.100:80\/tcp has no backend 10.10.0.99/);
  });

  test('removing a patched config backend replaces the patch with a removal', () => {
    const patched = setBackend(NO_CHANGES, WEB, '10.10.0.11', { drain: DRAIN });
    const removed = removeBackend(patched, WEB, '10.10.0.11');
    assert.deepEqual(removed.vips[WEB], { op: 'modify', backends: { '10.10.0.11': { op: 'remove' } } });
    assert.deepEqual(summary(applyChanges(CONFIG, removed))[WEB], ['10.10.0.12']);
  });
});
