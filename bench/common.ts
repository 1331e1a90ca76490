/** Helpers shared by the benchmark parts. */
import { readFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../test/lab/lab.js';
import { GENERATOR_SCRIPT, type GeneratorOptions, type GeneratorResult } from './traffic-gen.js';

export type Log = (line: string) => void;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function nowNs(): bigint {
  return process.hrtime.bigint(); // CLOCK_MONOTONIC, like bpf_ktime_get_ns()
}

/** Runs a command in a role's namespace; throws unless it exits 0. */
export async function sh(lab: Lab, role: string, argv: string[], timeoutMs = 30_000): Promise<string> {
  const r = await lab.exec(role, argv, { timeoutMs });
  if (r.code !== 0) throw new Error(`${role}: ${argv.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

export async function macOf(lab: Lab, role: string, dev = 'eth0'): Promise<string> {
  return (JSON.parse(await sh(lab, role, ['ip', '-j', 'link', 'show', 'dev', dev])) as Array<{ address: string }>)[0]!.address;
}

/** Jiffies of all CPUs from /proc/stat: busy (everything but idle and iowait) and total. */
export function cpuTimes(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
  const idle = f[3]! + f[4]!;
  return { busy: total - idle, total };
}

/** USER_HZ: /proc/stat counts in these (100 on Linux everywhere in practice). */
export const CLOCK_TICKS = 100;

/** CPU seconds (user + system) used so far by the processes in a namespace. */
export async function namespaceCpuSeconds(lab: Lab, role: string): Promise<number> {
  const r = await lab.exec('sw', ['ip', 'netns', 'pids', lab.ns(role)]).catch(() => undefined);
  let ticks = 0;
  for (const pid of (r?.stdout ?? '').split(/\s+/).filter(Boolean)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch {
      // exited
    }
  }
  return ticks / CLOCK_TICKS;
}

export interface RunningGenerator {
  readonly child: ChildProcess;
  /** Resolves once the generator sends. */
  readonly ready: Promise<void>;
  /** Resolves with the generator's own account when it is done. */
  readonly done: Promise<GeneratorResult>;
}

/** Starts bench/traffic-gen.js in the client namespace. */
export function startGenerator(lab: Lab, options: GeneratorOptions): RunningGenerator {
  const child = lab.spawn('client', [process.execPath, GENERATOR_SCRIPT, JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let onReady!: () => void;
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('"ready":true')) onReady();
  });
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const done = new Promise<GeneratorResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || !last.includes('frames')) reject(new Error(`traffic generator failed (exit ${code}): ${err.trim() || out.trim()}`));
      else resolve(JSON.parse(last) as GeneratorResult);
    });
  });
  // A generator that fails before it is ready must not leave ready pending.
  done.catch(() => undefined).finally(onReady);
  return { child, ready, done };
}
