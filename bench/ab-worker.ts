/**
 * One side of bench/ab.ts: loads xdp_balancer from the build in ROOT (its
 * own code sets its maps up: an l2dsr and an ipip VIP of each family, ten
 * backends each), then runs the scenarios the parent asks for and answers
 * with the mean ns per packet, or runs a flood on a data plane of its own
 * and answers with the established flows that survived it. Frames are
 * built here, by this tree's code, so both builds get the same bytes.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
// The loop is this tree's, whichever build it measures: both sides are timed alike.
import { nativeTesting } from '../test/support/native-testing.js';
import { TCP_FLAGS } from '../test/support/packets.js';
import { AB_VIPS, type AbFlood, type AbScenario, abFrames } from './ab-scenarios.js';
import { floodSurvivors } from './flood.js';

async function main(root: string): Promise<void> {
  const load = (module: string) => import(pathToFileURL(resolve(root, 'dist', module)).href);
  const { BalancerDataplane, KILL_SWITCH_NEVER } = await load('src/dataplane/balancer.js');
  const { parseVip } = await load('src/model/address.js');
  const { check } = await load('src/dataplane/libbpf.js');
  const { flowKeyV4 } = await load('src/dataplane/abi.js');
  const backend = (family: 4 | 6, i: number) => (family === 4 ? `10.10.0.${11 + i}` : `fd00:10::${(0x11 + i).toString(16)}`);
  const backends = (family: 4 | 6) => Array.from({ length: 10 }, (_, i) => ({ address: backend(family, i), family, weight: 1 }));
  const vip = (family: 4 | 6, address: string, forward: string) => ({
    vip: parseVip(family === 4 ? `${address}:80/tcp` : `[${address}]:80/tcp`),
    forward,
    tableSize: 65537,
    backends: backends(family),
  });
  const paths = (t: { address: string; forward: string }) => ({
    ok: true,
    path: {
      dev: 'lo',
      ifindex: 1,
      srcMac: '02:00:00:00:00:02',
      nextHop: t.address,
      dstMac: '02:00:00:00:00:11',
      mtu: 0,
      ...(t.forward === 'ipip' ? { tunnelSrc: t.address.includes(':') ? 'fd00:10::2' : '10.10.0.2' } : {}),
    },
  });
  const desired = { vips: ([4, 6] as const).flatMap((f) => [vip(f, AB_VIPS[f].l2dsr, 'l2dsr'), vip(f, AB_VIPS[f].ipip, 'ipip')]) };
  // Builds before the control core (src/core) had src/daemon/reconciler.js, applied with (desired, paths).
  const core = await load('src/core/reconciler.js').catch(() => undefined);
  const legacy = core ? undefined : await load('src/daemon/reconciler.js');
  const setUp = () => {
    const loaded = BalancerDataplane.load({ maxVips: 64, maxBackends: 1024, flowTableSize: 1_048_576 });
    loaded.setKillSwitchDeadline(KILL_SWITCH_NEVER);
    // As the daemon does (builds older than the check have no such method): frames are to this MAC.
    loaded.setInterfaceMac?.('02:00:00:00:00:02');
    const log = pino({ level: 'silent' });
    if (core) new core.Reconciler(loaded, log).apply({ desired, paths, health: () => undefined });
    else new legacy.Reconciler(loaded, log).apply(desired, paths);
    return loaded;
  };
  const dataplane = setUp();

  const runOn = (programFd: number, packets: Buffer, count: number, iterations: number): number => {
    const durations = new Uint32Array(iterations);
    check(nativeTesting.testRunDurations(programFd, packets, packets.length / count, count, iterations, durations), 'test run');
    let sum = 0;
    for (const d of durations) sum += d;
    return sum / iterations;
  };
  const run = (packets: Buffer, count: number, iterations: number) => runOn(dataplane.programFd, packets, count, iterations);
  const flood = (f: AbFlood): { survivors: number; entries: number } => {
    const fresh = setUp();
    try {
      const { survivors } = floodSurvivors(
        (packets, count) => runOn(fresh.programFd, packets, count, count),
        (flow) => fresh.flowsV4.lookup(flowKeyV4.encode(flow)) !== null,
        { ...f, vip: AB_VIPS[4].ipip },
      );
      let entries = 0;
      for (const _ of fresh.flowsV4.entries()) entries++;
      return { survivors, entries };
    } finally {
      fresh.close();
    }
  };
  const cache = new Map<string, Buffer>();
  process.on('message', (s: AbScenario | AbFlood) => {
    if ('flood' in s) {
      process.send!(flood(s));
      return;
    }
    const key = JSON.stringify(s);
    let packets = cache.get(key);
    if (!packets) {
      packets = abFrames(s);
      if (s.establish) {
        run(abFrames(s, TCP_FLAGS.SYN), s.count, s.count);
        run(abFrames(s, TCP_FLAGS.ACK), s.count, s.count);
      }
      // Fresh tuples are used once; the others are kept for the next round.
      if (s.base === 0) cache.set(key, packets);
    }
    process.send!(run(packets, s.count, s.iterations));
  });
  process.send!('ready');
}

main(process.argv[2]!).catch((error: Error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
