/**
 * The API handlers against hostile parameters: every field of every method
 * given every wrong type gets an input error (never a TypeError reported as
 * internal), and no long value is echoed back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { METHOD_NAMES, type StatusResult } from '../../src/api/protocol.js';
import type { Change } from '../../src/model/desired-state.js';
import { InputError } from '../../src/model/errors.js';
import { createHandlers, type DaemonApi } from '../../src/daemon/handlers.js';

const changes: Change[] = [];
const fake: DaemonApi = {
  core: {
    change: async (change) => {
      changes.push(change);
      return { message: 'ok', warnings: [], applied: true };
    },
    desired: { vips: [] },
    views: [],
    tableOwner: () => undefined,
    backendById: () => undefined,
  },
  dataplane: {
    vipCounters: () => ({ packets: 0n, bytes: 0n, new_flows: 0n, moved_flows: 0n }),
    backendCounters: () => ({ packets: 0n, bytes: 0n, new_flows: 0n, moved_flows: 0n }),
    lookupFlow: () => undefined,
  },
  clock: { now: () => 0n, secondsSince: () => 0 },
  health: () => undefined,
  attachmentProblem: () => undefined,
  announceView: () => ({
    announced: false,
    reason: { code: 'off', text: 'announcing is off' },
    healthyBackends: 0,
    need: 1,
    since: '2026-01-01T00:00:00.000Z',
  }),
  status: async () => ({ pid: 1 }) as unknown as StatusResult,
  stats: () => {
    throw new Error('not used');
  },
  requestStop: () => {},
  reload: async () => ({ message: 'reloaded', warnings: [], applied: true }),
  configDiff: async () => ({ file: 'lbctl.yaml', differences: [], settings: [] }),
  configExport: () => ({ text: '' }),
  setKillSwitch: () => {
    throw new Error('not used');
  },
  killSwitchStatus: () => {
    throw new Error('not used');
  },
};
const byName = createHandlers(fake) as unknown as Record<
  string,
  (params: Record<string, unknown>, signal: AbortSignal) => Promise<unknown>
>;
const live = new AbortController().signal;
const handlers: Record<string, (params: Record<string, unknown>) => Promise<unknown>> = Object.fromEntries(
  Object.entries(byName).map(([name, handler]) => [name, (params: Record<string, unknown>) => handler(params, live)]),
);

const VALID: Record<string, Record<string, unknown>> = {
  reload: { discardRuntimeChanges: true },
  stop: { keepDataplane: true },
  'vip.add': {
    vip: '10.0.0.100:80/tcp',
    forward: 'ipip',
    tableSize: 251,
    check: { check: 'http:/x', rise: 2, dsr: false },
    onAllDown: 'drop',
    need: 2,
  },
  'vip.remove': { vip: '10.0.0.100:80/tcp' },
  'backend.add': { vip: '10.0.0.100:80/tcp', address: '10.0.0.11', weight: 3, forward: 'l2dsr', check: { fall: 2 }, dryRun: true },
  'backend.remove': { vip: '10.0.0.100:80/tcp', address: '10.0.0.11', dryRun: false },
  'backend.weight': { vip: '10.0.0.100:80/tcp', address: '10.0.0.11', weight: 0, dryRun: true },
  'backend.drain': { vip: '10.0.0.100:80/tcp', address: '10.0.0.11', timeoutSeconds: 60, idleSeconds: 5, dryRun: true },
  'backend.undrain': { vip: '10.0.0.100:80/tcp', address: '10.0.0.11' },
  explain: { client: '10.0.0.9:4000', vip: '10.0.0.100:80/tcp' },
};

const WRONG: unknown[] = [42, -1, 1.5, true, null, [], ['10.0.0.1'], {}, { toString: 'x' }, 'x'.repeat(100_000)];

test('valid parameters of every changing method reach the core as typed changes', async () => {
  for (const [method, params] of Object.entries(VALID)) {
    if (method === 'explain') continue;
    await handlers[method]!(params);
  }
  assert.deepEqual(
    changes.map((c) => c.op),
    ['vip.add', 'vip.remove', 'backend.add', 'backend.remove', 'backend.set', 'backend.set', 'backend.set'],
  );
  await assert.rejects(handlers.explain!(VALID.explain!), /unknown VIP 10\.0\.0\.100:80\/tcp/, 'explain parses, then asks the views');
});

test('a field of the wrong type is an input error that echoes little, for every field of every method', async () => {
  let checked = 0;
  for (const [method, params] of Object.entries(VALID)) {
    for (const field of Object.keys(params)) {
      for (const wrong of WRONG) {
        if (typeof params[field] === typeof wrong && !Array.isArray(wrong) && wrong !== null && typeof wrong !== 'string') continue;
        const result = await handlers[method]!({ ...params, [field]: wrong }).then(
          () => undefined,
          (error: unknown) => error,
        );
        if (result === undefined) continue; // e.g. weight 42 is a valid weight
        assert.ok(result instanceof InputError, `${method}.${field} = ${JSON.stringify(wrong)?.slice(0, 20)}: ${String(result)}`);
        assert.ok(result.message.length < 400, `${method}.${field}: a ${result.message.length}-character message`);
        checked++;
      }
    }
  }
  assert.ok(checked > 150, `${checked} refusals checked`);
  assert.deepEqual(
    METHOD_NAMES.filter((m) => !(m in handlers)),
    [],
  );
});

test('nested check options: unknown names and wrong types are refused by name', async () => {
  await assert.rejects(
    handlers['vip.add']!({ vip: '10.0.0.100:80/tcp', check: { interval: 5 } }),
    /unknown check option "interval" \(expected check, intervalMs/,
  );
  await assert.rejects(handlers['vip.add']!({ vip: '10.0.0.100:80/tcp', check: { check: 5 } }), /invalid check "5": expected a string/);
  await assert.rejects(
    handlers['vip.add']!({ vip: '10.0.0.100:80/tcp', check: { rise: '2' } }),
    /invalid rise "\\"2\\"": expected a number/,
  );
});
