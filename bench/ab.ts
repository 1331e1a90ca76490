/**
 * Before/after comparison of the per-packet cost of two builds of
 * xdp_balancer: the way to measure a change to the hot path. Each build
 * runs in its own process with its own maps (set up by its own code, so
 * layout changes between the builds are fine); the parent interleaves them
 * scenario by scenario, alternating which goes first, so host noise hits
 * both alike. Ratios are after / before.
 *
 *   git worktree add /tmp/before HEAD && (cd /tmp/before && ln -s "$OLDPWD/node_modules" && make)
 *   sudo node dist/bench/ab.js /tmp/before [rounds]
 */
import { type ChildProcess, fork } from 'node:child_process';
import { join, resolve } from 'node:path';
import { PROJECT_ROOT } from '../src/paths.js';
import { TCP_FLAGS, ipv4Frame } from '../test/support/packets.js';

function frames(dst: string, count: number, flags: number): Buffer {
  return Buffer.concat(
    Array.from({ length: count }, (_, i) =>
      ipv4Frame({ src: `172.16.${(i >> 8) & 255}.${i & 255}`, dst, srcPort: 1024 + i, dstPort: 80, tcpFlags: flags }),
    ),
  );
}

function start(root: string): Promise<ChildProcess> {
  const child = fork(join(PROJECT_ROOT, 'dist', 'bench', 'ab-worker.js'), [root], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolveStart, reject) => {
    child.once('message', () => resolveStart(child));
    child.once('exit', (code) => reject(new Error(`the worker for ${root} exited (${code})`)));
  });
}

function run(child: ChildProcess, packets: Buffer, count: number, iterations: number): Promise<number> {
  return new Promise((resolveRun) => {
    child.once('message', (mean) => resolveRun(mean as number));
    child.send({ packets: [...packets], count, iterations });
  });
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!;

async function main(): Promise<void> {
  const [otherRoot, roundsText] = process.argv.slice(2);
  if (!otherRoot) throw new Error('usage: node dist/bench/ab.js OTHER_TREE [rounds]');
  const rounds = Number(roundsText ?? 7);
  const workers = [await start(resolve(otherRoot)), await start(PROJECT_ROOT)];
  try {
    const scenarios = [
      { name: 'not a VIP', packets: frames('10.9.9.9', 256, TCP_FLAGS.ACK), iterations: 300_000 },
      { name: 'l2dsr established', packets: frames('10.100.0.100', 256, TCP_FLAGS.ACK), iterations: 300_000 },
      { name: 'ipip established', packets: frames('10.100.0.101', 256, TCP_FLAGS.ACK), iterations: 300_000 },
      { name: 'l2dsr SYN', packets: frames('10.100.0.100', 256, TCP_FLAGS.SYN), iterations: 100_000 },
    ];
    for (const worker of workers) {
      await run(worker, frames('10.100.0.100', 256, TCP_FLAGS.SYN), 256, 256);
      await run(worker, frames('10.100.0.101', 256, TCP_FLAGS.SYN), 256, 256);
    }
    const results = scenarios.map(() => [[] as number[], [] as number[]]);
    for (let round = 0; round < rounds; round++) {
      for (const [i, s] of scenarios.entries()) {
        for (const b of round % 2 === 0 ? [0, 1] : [1, 0]) results[i]![b]!.push(await run(workers[b]!, s.packets, 256, s.iterations));
      }
    }
    process.stdout.write('| scenario | before ns | after ns | after / before |\n|---|---:|---:|---:|\n');
    scenarios.forEach((s, i) => {
      const [before, after] = results[i]!.map(median) as [number, number];
      process.stdout.write(`| ${s.name} | ${before.toFixed(1)} | ${after.toFixed(1)} | ${(after / before).toFixed(3)} |\n`);
    });
  } finally {
    for (const worker of workers) worker.kill();
  }
}

main().catch((error: Error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exitCode = 1;
});
