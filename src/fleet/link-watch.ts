/**
 * Whether the balanced interface can carry traffic (administratively up
 * and with a carrier), as it changes: `ip -o monitor link` prints one line
 * per change, read as it comes. A node whose interface is down withdraws its
 * VIPs (the routing daemon may still reach the router another way).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import type { Logger } from 'pino';

const run = promisify(execFile);

/** "3: eth0@if12: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu ..." (or "Deleted 3: ..."): name, flags, deleted. */
export function parseLinkLine(line: string): { name: string; up: boolean } | undefined {
  const match = /^(Deleted )?\d+: ([^:@\s]+)(?:@[^:\s]+)?: <([^>]*)>/.exec(line.trim());
  if (!match) return undefined;
  const flags = match[3]!.split(',');
  return { name: match[2]!, up: !match[1] && flags.includes('UP') && flags.includes('LOWER_UP') };
}

export class LinkWatch {
  private monitor?: ChildProcess;
  private current: boolean;
  private stopped = false;

  private constructor(
    readonly name: string,
    up: boolean,
    private readonly onChange: (up: boolean) => void,
    private readonly log: Logger,
  ) {
    this.current = up;
  }

  /** Watches first, then reads the state, so that no change falls in between. */
  static async start(name: string, onChange: (up: boolean) => void, log: Logger): Promise<LinkWatch> {
    const watch = new LinkWatch(name, false, onChange, log);
    watch.listen();
    const { stdout } = await run('ip', ['-o', 'link', 'show', 'dev', name]);
    const state = parseLinkLine(stdout);
    watch.current = state?.up ?? false;
    return watch;
  }

  get up(): boolean {
    return this.current;
  }

  stop(): void {
    this.stopped = true;
    this.monitor?.kill();
  }

  private listen(): void {
    const monitor = spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    createInterface({ input: monitor.stdout! }).on('line', (line) => {
      const state = parseLinkLine(line);
      if (!state || state.name !== this.name || state.up === this.current) return;
      this.current = state.up;
      this.onChange(state.up);
    });
    monitor.on('error', (error) => this.log.warn({ event: 'announce.link_watch_failed', err: error }, 'cannot watch the interface'));
    monitor.on('exit', (code, signal) => {
      if (this.stopped) return;
      this.log.warn({ event: 'announce.link_watch_failed', code, signal }, 'ip monitor link exited: interface changes are no longer seen');
    });
    this.monitor = monitor;
  }
}
