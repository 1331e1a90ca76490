/**
 * `lbctl top`: a live table of VIPs and backends with packet, bit and new
 * flow rates, health and share of the Maglev table. Plain ANSI (works over
 * SSH); q or Ctrl-C quits. Without a terminal it prints one frame per
 * interval, for scripts (`--count` bounds it).
 */
import { call } from '../api/client.js';
import type { KillSwitchStatus, StatsResult, StatusResult, TrafficStats } from '../api/protocol.js';
import { compact, formatKillSwitch, percent, table } from './format.js';

export interface TopOptions {
  readonly socket: string;
  readonly intervalMs: number;
  /** Stop after this many frames (default: until q). */
  readonly count?: number;
}

interface Sample {
  readonly stats: StatsResult;
  readonly killSwitch: KillSwitchStatus;
}

const ALT_SCREEN_ON = '\x1b[?1049h\x1b[?25l';
const ALT_SCREEN_OFF = '\x1b[?25h\x1b[?1049l';
const HOME_AND_CLEAR = '\x1b[H\x1b[2J';

/** Per-second rates of a counter set between two samples; '-' until there are two. */
function rates(now: TrafficStats, before: TrafficStats | undefined, seconds: number): string[] {
  if (!before || seconds <= 0) return ['-', '-', '-'];
  const per = (field: keyof TrafficStats) => Math.max(0, now[field] - before[field]) / seconds;
  return [compact(Math.round(per('packets'))), compact(Math.round(per('bytes') * 8)), compact(Math.round(per('newFlows')))];
}

export function renderFrame(
  status: StatusResult,
  sample: Sample,
  previous: Sample | undefined,
  intervalMs: number,
  width = Infinity,
  height = Infinity,
): string {
  const { stats } = sample;
  const seconds = previous ? (Date.parse(stats.at) - Date.parse(previous.stats.at)) / 1000 : 0;
  const oldVips = new Map((previous?.stats.vips ?? []).map((v) => [v.vip, v]));
  const rows: string[][] = [];
  for (const vip of stats.vips) {
    const old = oldVips.get(vip.vip);
    const active = vip.backends.filter((b) => b.state === 'active').length;
    rows.push([vip.vip, `${active}/${vip.backends.length} active`, '', ...rates(vip, old, seconds), compact(vip.packets)]);
    const oldBackends = new Map((old?.backends ?? []).map((b) => [b.address, b]));
    for (const b of vip.backends) {
      rows.push([
        `  ${b.address}`,
        b.health ? `${b.state}/${b.health}` : b.state,
        percent(b.share),
        ...rates(b, oldBackends.get(b.address), seconds),
        compact(b.packets),
      ]);
    }
  }
  const oldReasons = new Map((previous?.stats.reasons ?? []).map((r) => [r.reason, r.packets]));
  const notBalanced =
    seconds > 0
      ? stats.reasons
          .map((r) => ({ reason: r.reason, rate: (r.packets - (oldReasons.get(r.reason) ?? 0)) / seconds }))
          .filter((r) => r.rate > 0)
          .map((r) => `${r.reason} ${compact(Math.round(r.rate))}/s`)
      : [];
  const header = `lbctl ${status.version} on ${status.interface} (${status.xdpMode} XDP)  ${new Date(stats.at).toLocaleTimeString()}  every ${intervalMs / 1000}s  q quits`;
  const lines = [
    header,
    `kill-switch ${formatKillSwitch(sample.killSwitch)}`,
    '',
    ...(rows.length > 0
      ? table(['VIP / BACKEND', 'STATE', 'SHARE', 'PKT/S', 'BIT/S', 'NEW FLOWS/S', 'PACKETS'], rows).split('\n')
      : ['no VIPs']),
    '',
    `not balanced: ${notBalanced.length > 0 ? notBalanced.join(', ') : seconds > 0 ? 'none' : '-'}`,
  ];
  const fitted =
    lines.length > height
      ? [...lines.slice(0, Math.max(1, height - 1)), `... ${lines.length - height + 1} more lines (a taller terminal shows them)`]
      : lines;
  return fitted.map((line) => (line.length > width ? `${line.slice(0, Math.max(0, width - 1))}>` : line)).join('\n');
}

/** A pseudo-terminal nobody sized (`script` without a terminal above it) reports 0 x 0. */
function terminalSize(out: NodeJS.WriteStream): [number, number] {
  const fallback = (reported: number | undefined, variable: string | undefined, standard: number) =>
    reported && reported > 0 ? reported : Number(variable) > 0 ? Number(variable) : standard;
  return [fallback(out.columns, process.env.COLUMNS, 80), fallback(out.rows, process.env.LINES, 24)];
}

export async function runTop(options: TopOptions): Promise<void> {
  const out = process.stdout;
  const interactive = out.isTTY === true && process.stdin.isTTY === true;
  const status = await call(options.socket, 'status', {});
  const sampleNow = async (): Promise<Sample> => {
    const [stats, killSwitch] = await Promise.all([call(options.socket, 'stats', {}), call(options.socket, 'killswitch.status', {})]);
    return { stats, killSwitch };
  };

  let quit!: () => void;
  const quitting = new Promise<void>((resolve) => {
    quit = resolve;
  });
  const restore = () => {
    if (!interactive) return;
    process.stdin.setRawMode(false);
    process.stdin.pause();
    out.write(ALT_SCREEN_OFF);
  };
  if (interactive) {
    out.write(ALT_SCREEN_ON);
    process.stdin.setRawMode(true);
    process.stdin.resume();
    process.stdin.on('data', (key: Buffer) => {
      // q, Q, Ctrl-C, Ctrl-D
      if ([0x71, 0x51, 0x03, 0x04].includes(key[0]!)) quit();
    });
  }
  process.once('SIGINT', () => quit());
  process.once('SIGTERM', () => quit());

  let previous: Sample | undefined;
  let frames = 0;
  try {
    for (;;) {
      const sample = await sampleNow();
      const [width, height] = interactive ? terminalSize(out) : [Infinity, Infinity];
      const frame = renderFrame(status, sample, previous, options.intervalMs, width, height);
      out.write(interactive ? `${HOME_AND_CLEAR}${frame}` : `${frames > 0 ? '\n' : ''}${frame}\n`);
      previous = sample;
      frames++;
      if (options.count !== undefined && frames >= options.count) break;
      let timer: NodeJS.Timeout | undefined;
      const tick = new Promise<'tick'>((resolve) => {
        timer = setTimeout(() => resolve('tick'), options.intervalMs);
      });
      const outcome = await Promise.race([tick, quitting.then(() => 'quit' as const)]);
      clearTimeout(timer);
      if (outcome === 'quit') break;
    }
  } finally {
    restore();
  }
}
