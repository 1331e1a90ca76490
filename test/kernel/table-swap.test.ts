/**
 * Table changes are atomic from the packet's point of view: packets run
 * through xdp_balancer in another thread while the reconciler rebuilds and
 * resizes the VIP's table and removes backends, hundreds of times. Not one
 * packet may be dropped or passed, or leave towards a backend that was not
 * in the table it used.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { BalancerDataplane, KILL_SWITCH_NEVER } from '../../src/dataplane/balancer.js';
import { XDP_ACTION } from '../../src/dataplane/xdp.js';
import { Reconciler } from '../../src/core/reconciler.js';
import { parseVip } from '../../src/model/address.js';
import { type DesiredState, vipSettings } from '../../src/model/desired-state.js';
import { type PathResult, type PathTarget } from '../../src/net/forwarding-paths.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { TCP_FLAGS, formatMac, ipv4Frame } from '../support/packets.js';
import type { LoopResult } from '../support/packet-loop.js';

/** No backend is health-checked here. */
const NO_HEALTH = () => undefined;

const dataplane = BalancerDataplane.load({ maxVips: 4, maxBackends: 64, flowTableSize: 4096 });
dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
after(() => dataplane.close());

const BACKENDS = ['10.10.0.11', '10.10.0.12', '10.10.0.13', '10.10.0.14'];
const macOf = (address: string) => `02:00:00:00:00:${address.split('.')[3]!.padStart(2, '0')}`;
const paths = (t: PathTarget): PathResult => ({
  ok: true,
  path: { dev: 'lo', ifindex: 1, srcMac: '02:00:00:00:00:02', nextHop: t.address, dstMac: macOf(t.address), mtu: 0 },
});

function state(addresses: readonly string[], tableSize: number): DesiredState {
  const vip = parseVip('10.100.0.100:80/tcp');
  return { vips: [{ vip, ...vipSettings(vip, { tableSize }), backends: addresses.map((address) => ({ address, family: 4, weight: 1 })) }] };
}

test('no packet sees a half-written table while tables are rebuilt, resized and backends removed', async (t) => {
  const reconciler = new Reconciler(dataplane, pino({ level: 'silent' }));
  // Each state differs in backends and most in size: 251 and 257 slots.
  const states = [
    state(BACKENDS.slice(0, 2), 251),
    state(BACKENDS.slice(2, 4), 257),
    state(BACKENDS, 251),
    state(BACKENDS.slice(1, 3), 257),
  ];
  reconciler.apply({ desired: states[0]!, paths, health: NO_HEALTH });

  // SYNs always take the table's choice: every packet exercises the table.
  const frames = Array.from({ length: 256 }, (_, i) =>
    ipv4Frame({ src: `172.16.0.${i}`, dst: '10.100.0.100', srcPort: 1024 + i, dstPort: 80, tcpFlags: TCP_FLAGS.SYN }),
  );
  const packets = Buffer.concat(frames);
  const iterations = 2_000_000;
  const worker = new Worker(join(PROJECT_ROOT, 'dist', 'test', 'support', 'packet-loop.js'), {
    workerData: { programFd: dataplane.programFd, packets, packetLength: frames[0]!.length, count: frames.length, iterations },
  });
  const result = new Promise<LoopResult>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });

  let swaps = 0;
  let done = false;
  void result.finally(() => {
    done = true;
  });
  while (!done) {
    reconciler.apply({ desired: states[++swaps % states.length]!, paths, health: NO_HEALTH });
    reconciler.sweepFlows();
    await new Promise((r) => setImmediate(r));
  }
  const { actions, macs } = await result;
  t.diagnostic(`${iterations} packets during ${swaps} table changes`);
  assert.ok(swaps >= 100, `enough table changes happened during the run (${swaps})`);

  const counts = new Map<string, number>();
  const allowed = new Set(BACKENDS.map(macOf));
  for (let i = 0; i < iterations; i++) {
    const action = XDP_ACTION[actions[i]!];
    counts.set(action ?? '?', (counts.get(action ?? '?') ?? 0) + 1);
    if (action !== 'tx') assert.fail(`packet ${i}: ${action}`);
    const mac = formatMac(Buffer.from(macs.subarray(i * 6, i * 6 + 6)));
    if (!allowed.has(mac)) assert.fail(`packet ${i} went to ${mac}`);
  }
  assert.deepEqual([...counts], [['tx', iterations]]);
  assert.equal(dataplane.reasonCounters().no_backend, 0n);
});
