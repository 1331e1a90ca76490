/**
 * Before/after comparison of the per-packet cost of two builds of
 * xdp_balancer: the way to measure a change to the hot path. Each build
 * runs in its own process with its own maps (set up by its own code, so
 * layout changes between the builds are fine); the parent interleaves them
 * scenario by scenario, alternating which goes first, so host noise hits
 * both alike. Ratios are after / before; "pass" runs a bare XDP_PASS beside
 * them, the unit bench/results expresses costs in.
 *
 *   mkdir /tmp/before && git archive REV | tar -x -C /tmp/before
 *   (cd /tmp/before && ln -s "$OLDPWD/node_modules" && make)
 *   sudo node dist/bench/ab.js /tmp/before [rounds] [scenario filter (a regular expression)]
 *
 * With the filter "flood" it instead counts the established flows of each
 * build that survive floods of spoofed SYNs and ACKs (bench/flood.ts).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { join, resolve } from 'node:path';
import { loadBpfObject } from '../src/dataplane/bpf-object.js';
import { orThrow } from '../src/dataplane/libbpf.js';
import { PROJECT_ROOT, bpfObjectPath } from '../src/paths.js';
import { nativeTesting } from '../test/support/native-testing.js';
import { TCP_FLAGS } from '../test/support/packets.js';
import { AB_VIPS, type AbFlood, type AbScenario, abFrames } from './ab-scenarios.js';

function start(root: string): Promise<ChildProcess> {
  const child = fork(join(PROJECT_ROOT, 'dist', 'bench', 'ab-worker.js'), [root], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolveStart, reject) => {
    child.once('message', () => resolveStart(child));
    child.once('exit', (code) => reject(new Error(`the worker for ${root} exited (${code})`)));
  });
}

function run(child: ChildProcess, scenario: AbScenario): Promise<number>;
function run(child: ChildProcess, scenario: AbFlood): Promise<{ survivors: number; entries: number }>;
function run(child: ChildProcess, scenario: AbScenario | AbFlood): Promise<unknown> {
  return new Promise((resolveRun) => {
    child.once('message', resolveRun);
    child.send(scenario);
  });
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!;

interface Named {
  readonly name: string;
  /** Per round: fresh tuples every run (flows never seen, so never tracked). */
  readonly fresh?: boolean;
  readonly scenario: AbScenario;
}

function scenarios(): Named[] {
  return ([4, 6] as const).flatMap((family): Named[] => {
    const v = AB_VIPS[family];
    const at = (dst: string, tcpFlags: number, count: number, iterations: number, establish = false) => ({
      family,
      dst,
      tcpFlags,
      count,
      base: 0,
      iterations,
      establish,
    });
    return [
      { name: `IPv${family} not a VIP`, scenario: at(v.other, TCP_FLAGS.ACK, 256, 300_000) },
      { name: `IPv${family} l2dsr established`, scenario: at(v.l2dsr, TCP_FLAGS.ACK, 256, 300_000, true) },
      { name: `IPv${family} ipip established`, scenario: at(v.ipip, TCP_FLAGS.ACK, 256, 300_000, true) },
      { name: `IPv${family} l2dsr SYN, 64k tuples`, scenario: at(v.l2dsr, TCP_FLAGS.SYN, 65536, 200_000) },
      { name: `IPv${family} ipip SYN, 64k tuples`, scenario: at(v.ipip, TCP_FLAGS.SYN, 65536, 200_000) },
      { name: `IPv${family} l2dsr first ACK of an untracked flow`, fresh: true, scenario: at(v.l2dsr, TCP_FLAGS.ACK, 100_000, 100_000) },
    ];
  });
}

async function main(): Promise<void> {
  const [otherRoot, roundsText, filter] = process.argv.slice(2);
  if (!otherRoot) throw new Error('usage: node dist/bench/ab.js OTHER_TREE [rounds] [scenario filter]');
  const rounds = Number(roundsText ?? 7);
  if (filter === 'flood') return floods(otherRoot);
  const chosen = scenarios().filter((s) => !filter || new RegExp(filter).test(s.name));
  const pass = loadBpfObject(bpfObjectPath('xdp_pass'), 'xdp_pass');
  const passPackets = abFrames({ family: 4, dst: AB_VIPS[4].other, tcpFlags: TCP_FLAGS.ACK, count: 256, base: 0 });
  const runPass = () => {
    const durations = new Uint32Array(300_000);
    orThrow(
      nativeTesting.testRunDurations(pass.programFd, passPackets, passPackets.length / 256, 256, durations.length, durations),
      'bare pass',
    );
    return durations.reduce((a, b) => a + b, 0) / durations.length;
  };
  const workers = [await start(resolve(otherRoot)), await start(PROJECT_ROOT)];
  try {
    const results = chosen.map(() => [[] as number[], [] as number[]]);
    const passes: number[] = [];
    let freshBase = 1 << 24;
    for (let round = 0; round < rounds; round++) {
      passes.push(runPass());
      for (const [i, s] of chosen.entries()) {
        for (const b of round % 2 === 0 ? [0, 1] : [1, 0]) {
          const scenario = s.fresh ? { ...s.scenario, base: (freshBase += s.scenario.count) } : s.scenario;
          results[i]![b]!.push(await run(workers[b]!, scenario));
        }
      }
    }
    const bare = median(passes);
    process.stdout.write(`bare XDP_PASS ${bare.toFixed(1)} ns (median of ${rounds} rounds)\n\n`);
    process.stdout.write(
      '| scenario | before ns | after ns | before × pass | after × pass | after / before |\n|---|---:|---:|---:|---:|---:|\n',
    );
    chosen.forEach((s, i) => {
      const [before, after] = results[i]!.map(median) as [number, number];
      process.stdout.write(
        `| ${s.name} | ${before.toFixed(1)} | ${after.toFixed(1)} | ${(before / bare).toFixed(2)} | ${(after / bare).toFixed(2)} | ${(after / before).toFixed(3)} |\n`,
      );
    });
  } finally {
    for (const worker of workers) worker.kill();
    pass.close();
  }
}

async function floods(otherRoot: string): Promise<void> {
  const workers = [await start(resolve(otherRoot)), await start(PROJECT_ROOT)];
  try {
    const base = { established: 100_000, flood: 10_000_000, touchEvery: 10_000_000 };
    process.stdout.write(
      `${base.established} established flows (IPv4 ipip VIP, flow table of 1,048,576), then ${base.flood} spoofed packets of distinct tuples, the established flows quiet meanwhile:\n\n`,
    );
    process.stdout.write(
      '| flood | survivors before | survivors after | table entries before | table entries after |\n|---|---:|---:|---:|---:|\n',
    );
    for (const [name, tcpFlags] of [
      ['SYNs', TCP_FLAGS.SYN],
      ['ACKs', TCP_FLAGS.ACK],
    ] as const) {
      const before = await run(workers[0]!, { ...base, tcpFlags });
      const after = await run(workers[1]!, { ...base, tcpFlags });
      process.stdout.write(`| ${name} | ${before.survivors} | ${after.survivors} | ${before.entries} | ${after.entries} |\n`);
    }
  } finally {
    for (const worker of workers) worker.kill();
  }
}

main().catch((error: Error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exitCode = 1;
});
