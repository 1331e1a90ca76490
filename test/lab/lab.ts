/**
 * Network-namespace lab for tests and the demo: brings test/lab/lab.sh labs
 * up and down, runs commands inside their namespaces and reads the backends'
 * nginx access logs.
 *
 *   const lab = await Lab.up({ decap: false });
 *   try {
 *     const r = await lab.exec('client', ['curl', '-sS', 'http://10.10.0.11/']);
 *   } finally {
 *     await lab.down();
 *   }
 *
 * Every lab that is up is torn down when the process exits, including on
 * SIGINT/SIGTERM/SIGHUP and uncaught exceptions; a lab whose owning process
 * was SIGKILLed is reaped by the next Lab.up() of any process.
 */
import { execFileSync, spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const LAB = {
  front: { subnet: '10.10.0.0/24', prefixLength: 24, bridge: 'br0', gateway: '10.10.0.1' },
  remote: { subnet: '10.20.0.0/24', prefixLength: 24, bridge: 'br1', gateway: '10.20.0.1' },
  vipSubnet: '10.100.0.0/24',
  client: '10.10.0.10',
  balancer: '10.10.0.2',
  router: { front: '10.10.0.1', remote: '10.20.0.1' },
  backends: [
    { name: 'be1', namespaceSuffix: 'be1', address: '10.10.0.11', segment: 'front' },
    { name: 'be2', namespaceSuffix: 'be2', address: '10.10.0.12', segment: 'front' },
    { name: 'be3', namespaceSuffix: 'be3', address: '10.10.0.13', segment: 'front' },
    { name: 'be4', namespaceSuffix: 'be4', address: '10.20.0.14', segment: 'remote' },
    { name: 'be5', namespaceSuffix: 'be5', address: '10.20.0.15', segment: 'remote' },
  ],
  vips: ['10.100.0.100', '10.100.0.101', '10.100.0.102'],
  /** Interface of every host (the router also has eth1 on the remote segment). */
  interface: 'eth0',
  /** The client keeps 1500; everything else has room for the IP-in-IP header. */
  mtu: { client: 1500, interior: 1600 },
  backendPort: 80,
  runtimeBase: '/run/lbctl-lab',
} as const;

export type LabBackend = (typeof LAB.backends)[number];

/** Namespace suffixes, and aliases accepted by ns()/exec()/spawn(). */
const ROLES = ['sw', 'client', 'lb', 'router', ...LAB.backends.map((b) => b.namespaceSuffix)] as const;
const ROLE_ALIASES: Record<string, string> = { switch: 'sw', balancer: 'lb' };

export interface LabOptions {
  /** Namespace-name prefix: a lower-case letter then up to 11 letters or digits. Default: unique `lbt` + 5 chars. */
  prefix?: string;
  /** Attach the XDP decapsulator on the backends (`lbctl decap attach`). Default true. */
  decap?: boolean;
  /** VIPs the backends hold on lo. Default LAB.vips. */
  vips?: string[];
  /** MTU of the lab interfaces other than the client's. Default LAB.mtu.interior. */
  mtu?: number;
  /** Give up bringing the lab up after this long (it is then torn down). Default 60 s. */
  timeoutMs?: number;
}

export interface ExecOptions {
  timeoutMs?: number;
  /** Written to the command's stdin. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** The project root: the directory above test/lab/lab.sh (works from test/ and dist/test/). */
function findRoot(): string {
  if (process.env.LBCTL_ROOT) return resolve(process.env.LBCTL_ROOT);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'test', 'lab', 'lab.sh'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`lab: cannot find test/lab/lab.sh above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

export const ROOT = findRoot();
export const LAB_SH = join(ROOT, 'test', 'lab', 'lab.sh');

// ------------------------------------------------------ process-wide cleanup

/** Labs that are up or coming up, by prefix; the child is a running `lab.sh up`. */
const live = new Map<string, { upChild?: ChildProcess }>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
let handlersInstalled = false;

/** Synchronous teardown of every live lab (the only kind 'exit' handlers can do). */
function teardownAllSync(): void {
  for (const [prefix, entry] of live) {
    live.delete(prefix);
    if (entry.upChild && entry.upChild.exitCode === null && entry.upChild.signalCode === null) {
      // Its trap tears down what it built; `down` waits for it on the lab's lock.
      entry.upChild.kill('SIGTERM');
    }
    try {
      execFileSync(LAB_SH, ['down', prefix], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 60_000 });
    } catch (err) {
      process.stderr.write(`lab: teardown of ${prefix} failed (${(err as Error).message}); run: ${LAB_SH} down ${prefix}\n`);
    }
  }
}

function onExit(): void {
  teardownAllSync();
}

function onSignal(signal: NodeJS.Signals): void {
  teardownAllSync();
  uninstallHandlers();
  // Without other listeners, die of the signal as if we had never caught it.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstallHandlers(): void {
  if (!handlersInstalled) return;
  handlersInstalled = false;
  process.removeListener('exit', onExit);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Tears down labs whose owning process died without cleaning up (SIGKILL, crash of node itself). */
async function reapOrphans(): Promise<void> {
  let entries: string[];
  try {
    entries = readdirSync(LAB.runtimeBase);
  } catch {
    return;
  }
  for (const prefix of entries) {
    if (live.has(prefix) || !/^[a-z][a-z0-9]{0,11}$/.test(prefix)) continue;
    let owner: number;
    try {
      owner = Number(readFileSync(join(LAB.runtimeBase, prefix, 'owner'), 'utf8').trim());
    } catch {
      continue; // not started by lab.ts (e.g. a demo), or still coming up
    }
    if (!Number.isInteger(owner) || owner <= 0 || pidAlive(owner)) continue;
    await run(LAB_SH, ['down', prefix], { timeoutMs: 60_000 }).catch(() => undefined);
  }
}

// ------------------------------------------------------------------ helpers

function run(file: string, args: string[], opts: ExecOptions & { onSpawn?: (c: ChildProcess) => void } = {}): Promise<ExecResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawnChild(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    opts.onSpawn?.(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    let timedOut = false;
    const timer =
      opts.timeoutMs !== undefined && opts.timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs)
        : undefined;
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (timedOut) {
        const e = new Error(`${[file, ...args].join(' ')}: timed out after ${opts.timeoutMs} ms\n${stderr}`);
        Object.assign(e, { stdout, stderr });
        reject(e);
        return;
      }
      resolvePromise({ stdout, stderr, code: code ?? 128 + (signal ? signalNumber(signal) : 0) });
    });
    child.stdin!.on('error', () => undefined); // the command may not read its input
    child.stdin!.end(opts.input ?? '');
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  return (osConstants.signals as Record<string, number>)[signal] ?? 0;
}

function randomPrefix(): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
  const bytes = randomBytes(5);
  let s = 'lbt';
  for (const b of bytes) s += alphabet[b % 36];
  return s;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------- Lab

export class Lab {
  readonly prefix: string;
  readonly decap: boolean;
  readonly vips: readonly string[];
  /** /run/lbctl-lab/PREFIX: per-backend nginx prefixes (be1/…), provisioning logs. */
  readonly runtimeDir: string;
  private readonly children = new Set<ChildProcess>();
  private downPromise: Promise<void> | undefined;

  private constructor(prefix: string, decap: boolean, vips: readonly string[]) {
    this.prefix = prefix;
    this.decap = decap;
    this.vips = vips;
    this.runtimeDir = join(LAB.runtimeBase, prefix);
  }

  static async up(options: LabOptions = {}): Promise<Lab> {
    const prefix = options.prefix ?? randomPrefix();
    if (!/^[a-z][a-z0-9]{0,11}$/.test(prefix)) {
      throw new Error(`lab: bad prefix "${prefix}": a lower-case letter then up to 11 letters or digits`);
    }
    if (live.has(prefix)) throw new Error(`lab: a lab with prefix ${prefix} is already up in this process`);
    const decap = options.decap ?? true;
    const vips = options.vips ?? [...LAB.vips];
    await reapOrphans();

    const args = ['up', prefix, '--owner', String(process.pid)];
    if (!decap) args.push('--no-decap');
    if (options.vips) args.push('--vips', vips.join(','));
    if (options.mtu !== undefined) args.push('--mtu', String(options.mtu));

    const entry: { upChild?: ChildProcess } = {};
    live.set(prefix, entry);
    installHandlers();
    let result: ExecResult;
    try {
      result = await run(LAB_SH, args, {
        timeoutMs: options.timeoutMs ?? 60_000,
        onSpawn: (c) => (entry.upChild = c),
      });
    } catch (err) {
      // Timed out (SIGKILLed: its trap did not run) or could not start.
      await run(LAB_SH, ['down', prefix], { timeoutMs: 60_000 }).catch(() => undefined);
      forget(prefix);
      throw new Error(`lab: up ${prefix} failed: ${(err as Error).message}`);
    }
    delete entry.upChild;
    if (result.code !== 0) {
      // lab.sh tore down what it had created; make sure.
      await run(LAB_SH, ['down', prefix], { timeoutMs: 60_000 }).catch(() => undefined);
      forget(prefix);
      throw new Error(`lab: up ${prefix} failed (exit ${result.code}):\n${result.stderr.trim()}`);
    }
    return new Lab(prefix, decap, vips);
  }

  /** Namespace name of a role: sw, client, lb, router, be1..be5 (aliases: switch, balancer). */
  ns(role: string): string {
    const r = ROLE_ALIASES[role] ?? role;
    if (!(ROLES as readonly string[]).includes(r)) {
      throw new Error(`lab: unknown role "${role}" (one of ${ROLES.join(', ')})`);
    }
    return `${this.prefix}-${r}`;
  }

  /** argv that runs a command in a role's namespace (network namespace only: /sys/fs/bpf stays visible). */
  nsArgv(role: string, argv: string[]): string[] {
    if (argv.length === 0) throw new Error('lab: empty command');
    return ['nsenter', `--net=/run/netns/${this.ns(role)}`, '--', ...argv];
  }

  /** Runs a command to completion in a role's namespace; rejects only if it cannot start or times out (default 30 s). */
  exec(role: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.assertUp();
    const [file, ...args] = this.nsArgv(role, argv);
    return run(file!, args, { ...opts, timeoutMs: opts.timeoutMs ?? 30_000 });
  }

  /** Starts a long-running process in a role's namespace; down() stops it (SIGTERM, then SIGKILL). */
  spawn(role: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    this.assertUp();
    const [file, ...args] = this.nsArgv(role, argv);
    const child = spawnChild(file!, args, opts);
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    child.on('error', () => this.children.delete(child));
    return child;
  }

  backend(name: string): LabBackend {
    const b = LAB.backends.find((x) => x.name === name);
    if (!b) throw new Error(`lab: unknown backend "${name}"`);
    return b;
  }

  /** Lines of a backend's nginx access log; each starts with the client address nginx saw. */
  async backendAccessLog(name: string): Promise<string[]> {
    this.backend(name);
    let text: string;
    try {
      text = await readFile(join(this.runtimeDir, name, 'logs', 'access.log'), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return text.split('\n').filter((l) => l.length > 0);
  }

  /** Stops spawned processes and deletes the lab. Idempotent; concurrent calls share one teardown. */
  down(): Promise<void> {
    this.downPromise ??= this.doDown();
    return this.downPromise;
  }

  get isUp(): boolean {
    return this.downPromise === undefined;
  }

  private async doDown(): Promise<void> {
    const running = [...this.children].filter((c) => c.exitCode === null && c.signalCode === null);
    for (const c of running) c.kill('SIGTERM');
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline && running.some((c) => c.exitCode === null && c.signalCode === null)) await sleep(20);
    for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    // lab.sh down also kills whatever else runs in the namespaces.
    let failure: string | undefined;
    try {
      const r = await run(LAB_SH, ['down', this.prefix], { timeoutMs: 60_000 });
      if (r.code !== 0) failure = `exit ${r.code}:\n${r.stderr.trim()}`;
    } catch (err) {
      failure = (err as Error).message;
    }
    if (failure !== undefined) {
      // Stay registered (the exit handler tries again) and let a later down() retry.
      this.downPromise = undefined;
      throw new Error(`lab: down ${this.prefix} failed (${failure})`);
    }
    forget(this.prefix);
  }

  private assertUp(): void {
    if (this.downPromise) throw new Error(`lab ${this.prefix} is down`);
  }
}

function forget(prefix: string): void {
  live.delete(prefix);
  if (live.size === 0) uninstallHandlers();
}
