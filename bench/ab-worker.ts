/**
 * One side of bench/ab.ts: loads xdp_balancer from the build in ROOT
 * (its own code sets its maps up), then runs the scenarios the parent asks
 * for and answers with the mean ns per packet.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
// The loop is this tree's, whichever build it measures: both sides are timed alike.
import { nativeTesting } from '../test/support/native-testing.js';

export interface AbRequest {
  readonly packets: number[];
  readonly count: number;
  readonly iterations: number;
}

async function main(root: string): Promise<void> {
  const load = (module: string) => import(pathToFileURL(resolve(root, 'dist', module)).href);
  const { BalancerDataplane, KILL_SWITCH_NEVER } = await load('src/dataplane/balancer.js');
  const { parseVip } = await load('src/model/address.js');
  const { check } = await load('src/dataplane/libbpf.js');
  const dataplane = BalancerDataplane.load({ maxVips: 64, maxBackends: 1024, flowTableSize: 1_048_576 });
  dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
  const backends = Array.from({ length: 10 }, (_, i) => ({ address: `10.10.0.${11 + i}`, family: 4, weight: 1 }));
  const vip = (address: string, forward: string) => ({ vip: parseVip(`${address}:80/tcp`), forward, tableSize: 65537, backends });
  const paths = (t: { address: string; forward: string }) => ({
    ok: true,
    path: {
      dev: 'lo',
      ifindex: 1,
      srcMac: '02:00:00:00:00:02',
      nextHop: t.address,
      dstMac: '02:00:00:00:00:11',
      mtu: 0,
      ...(t.forward === 'ipip' ? { tunnelSrc: '10.10.0.2' } : {}),
    },
  });
  const desired = { vips: [vip('10.100.0.100', 'l2dsr'), vip('10.100.0.101', 'ipip')] };
  // Builds before the control core (src/core) had src/daemon/reconciler.js, applied with (desired, paths).
  const core = await load('src/core/reconciler.js').catch(() => undefined);
  if (core) {
    new core.Reconciler(dataplane, pino({ level: 'silent' })).apply({ desired, paths, health: () => undefined });
  } else {
    const { Reconciler } = await load('src/daemon/reconciler.js');
    new Reconciler(dataplane, pino({ level: 'silent' })).apply(desired, paths);
  }

  process.on('message', (request: AbRequest) => {
    const packets = Buffer.from(request.packets);
    const durations = new Uint32Array(request.iterations);
    check(
      nativeTesting.testRunDurations(
        dataplane.programFd,
        packets,
        packets.length / request.count,
        request.count,
        request.iterations,
        durations,
      ),
      'test run',
    );
    let sum = 0;
    for (const d of durations) sum += d;
    process.send!(sum / request.iterations);
  });
  process.send!('ready');
}

main(process.argv[2]!).catch((error: Error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
