/**
 * A process that holds an Announcer (src/fleet/announcer.ts) the way the
 * daemon will: tests start it inside a namespace, drive it over stdin and
 * SIGKILL it to see the announcements die with it.
 *
 *   node announcer-holder.js --interface IFACE [--device NAME] [--table N] [--proto N] [--child]
 *
 * --child   also spawn a long-lived child (`sleep`), as the daemon spawns
 *           `ip monitor`: it must not keep the device alive.
 * Prints one JSON line when ready ({ ready, device, table, proto, pid, fd,
 * childPid }) or failed ({ error }, exit 1). Then one command a line on stdin
 * ("announce VIP", "withdraw VIP", "update +VIP -VIP ...", "withdraw-all", "list", "close"), one JSON
 * line each on stdout: { ok: true, ms, list } or { ok: false, error }.
 *
 * The driver, for tests: AnnouncerHolder.start(argvPrefix, options).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Announcer } from '../../src/fleet/announcer.js';

export interface HolderOptions {
  readonly interface: string;
  readonly device?: string;
  readonly table?: number;
  readonly proto?: number;
  readonly child?: boolean;
}

export interface HolderReady {
  readonly device: string;
  readonly table: number;
  readonly proto: number;
  readonly pid: number;
  /** The descriptor that holds the device (in the holder). */
  readonly fd: number;
  readonly childPid?: number;
}

export interface HolderAnswer {
  readonly ok: boolean;
  readonly ms?: number;
  readonly list?: string[];
  readonly error?: string;
}

const SCRIPT = fileURLToPath(import.meta.url);

/** Drives one holder process: start() it (in a namespace through `prefix`, e.g. nsenter), send commands, kill it. */
export class AnnouncerHolder {
  private readonly answers: Array<(a: HolderAnswer) => void> = [];
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly process: ChildProcess,
    readonly ready: HolderReady,
    lines: AsyncIterator<string>,
  ) {
    void (async () => {
      for (let next = await lines.next(); !next.done; next = await lines.next()) this.answers.shift()?.(JSON.parse(next.value));
      for (const pending of this.answers.splice(0)) pending({ ok: false, error: 'the holder exited' });
    })();
  }

  /**
   * Starts a holder with `prefix` before node (e.g. ['nsenter', '--net=/run/netns/X', '--']);
   * `spawner` replaces child_process.spawn (a lab's spawn(), which stops it at down()).
   * Rejects with the holder's error if it could not create its announcer.
   */
  static async start(
    options: HolderOptions,
    spawner: (argv: string[]) => ChildProcess = (argv) => spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] }),
  ): Promise<AnnouncerHolder> {
    const args = ['--interface', options.interface];
    if (options.device) args.push('--device', options.device);
    if (options.table !== undefined) args.push('--table', String(options.table));
    if (options.proto !== undefined) args.push('--proto', String(options.proto));
    if (options.child) args.push('--child');
    const child = spawner([process.execPath, SCRIPT, ...args]);
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done) throw new Error('announcer holder: exited before it was ready');
    const hello = JSON.parse(first.value) as HolderReady & { error?: string };
    if (hello.error !== undefined) throw new Error(hello.error);
    return new AnnouncerHolder(child, hello, lines);
  }

  /** Sends one command; resolves with the holder's answer. */
  command(line: string): Promise<HolderAnswer> {
    const result = this.queue.then(
      () =>
        new Promise<HolderAnswer>((resolve) => {
          this.answers.push(resolve);
          this.process.stdin!.write(`${line}\n`);
        }),
    );
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Like command() but throws the holder's error. */
  async ok(line: string): Promise<HolderAnswer> {
    const answer = await this.command(line);
    if (!answer.ok) throw new Error(`${line}: ${answer.error}`);
    return answer;
  }

  /** SIGKILL; resolves once the process is gone (reaped). */
  async kill(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise((resolve) => this.process.once('exit', resolve));
    this.process.kill('SIGKILL');
    await exited;
  }
}

async function main(argv: string[]): Promise<void> {
  const options: { interface?: string; device?: string; table?: number; proto?: number; child?: boolean } = {};
  for (let i = 0; i < argv.length; i++) {
    const value = () => argv[++i] ?? '';
    switch (argv[i]) {
      case '--interface':
        options.interface = value();
        break;
      case '--device':
        options.device = value();
        break;
      case '--table':
        options.table = Number(value());
        break;
      case '--proto':
        options.proto = Number(value());
        break;
      case '--child':
        options.child = true;
        break;
      default:
        throw new Error(`announcer-holder: unknown argument ${argv[i]}`);
    }
  }
  if (!options.interface) throw new Error('announcer-holder: --interface is required');
  let announcer: Announcer;
  try {
    announcer = await Announcer.create({ ...options, interface: options.interface });
  } catch (error) {
    process.stdout.write(`${JSON.stringify({ error: (error as Error).message })}\n`);
    process.exit(1);
  }
  const child = options.child ? spawn('sleep', ['3600'], { stdio: 'ignore', detached: true }) : undefined;
  child?.unref();
  process.stdout.write(
    `${JSON.stringify({
      ready: true,
      device: announcer.device,
      table: announcer.table,
      proto: announcer.proto,
      pid: process.pid,
      fd: announcer.descriptor,
      ...(child?.pid ? { childPid: child.pid } : {}),
    })}\n`,
  );
  for await (const line of createInterface({ input: process.stdin })) {
    const [verb, argument = ''] = line.trim().split(/\s+/);
    const started = performance.now();
    try {
      if (verb === 'announce') await announcer.announce(argument);
      else if (verb === 'withdraw') await announcer.withdraw(argument);
      else if (verb === 'withdraw-all') await announcer.withdrawAll();
      else if (verb === 'update') {
        const items = line.trim().split(/\s+/).slice(1);
        await announcer.update({
          announce: items.filter((i) => i.startsWith('+')).map((i) => i.slice(1)),
          withdraw: items.filter((i) => i.startsWith('-')).map((i) => i.slice(1)),
        });
      } else if (verb === 'close') await announcer.close();
      else if (verb !== 'list') throw new Error(`unknown command "${line}"`);
      const list = announcer.list();
      process.stdout.write(`${JSON.stringify({ ok: true, ms: performance.now() - started, list })}\n`);
    } catch (error) {
      process.stdout.write(`${JSON.stringify({ ok: false, error: (error as Error).message })}\n`);
    }
  }
}

if (process.argv[1] === SCRIPT) {
  main(process.argv.slice(2)).catch((error: Error) => {
    process.stderr.write(`${error.message}\n`);
    process.exit(2);
  });
}
