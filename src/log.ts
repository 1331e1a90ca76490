/**
 * pino: JSON lines for machines, readable lines when a person watches a
 * terminal. The daemon's lines go through a LogSink, which never blocks and
 * never throws: a log that cannot be written must not stop the balancing.
 */
import { fstatSync, write as writeFd } from 'node:fs';
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { prettyFactory } from 'pino-pretty';
import { setNonBlocking } from './util/libc.js';

export type { Logger };

/** Where log lines go: pino calls write() with one whole line each time. */
export interface LogDestination {
  write(line: string): unknown;
}

export function createLogger(
  level: LevelWithSilent = 'info',
  human = process.stdout.isTTY === true,
  /** Where lines go; standard output through a LogSink by default. */
  to?: LogDestination,
  /** Lines go to journald (systemd's stdout): each carries its syslog priority, so `journalctl -p warning` finds warnings. */
  journal = to === undefined && stdoutIsJournal(),
): Logger {
  const destination = to ?? new LogSink(1);
  const options = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (!human) return pino(options, journal ? withJournalPriority(destination) : destination);
  const format = prettyFactory({
    colorize: destination instanceof LogSink && process.stdout.isTTY === true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
  });
  return pino(options, { write: (line: string) => destination.write(format(line)) });
}

/** syslog priorities of pino's levels: trace and debug 7, info 6, warn 4, error 3, fatal 2. */
const PRIORITY_BY_LEVEL: ReadonlyArray<readonly [number, number]> = [
  [60, 2],
  [50, 3],
  [40, 4],
  [30, 6],
];

/** journald reads a leading "<N>" on a stdout line as the line's priority (SyslogLevelPrefix=yes, systemd's default). */
export function withJournalPriority(destination: LogDestination): LogDestination {
  return {
    write: (line: string) => {
      const level = Number(/^\{"level":(\d+)/.exec(line)?.[1] ?? 30);
      const priority = PRIORITY_BY_LEVEL.find(([min]) => level >= min)?.[1] ?? 7;
      return destination.write(`<${priority}>${line}`);
    },
  };
}

/** systemd sets JOURNAL_STREAM to the device and inode of the stream it connected stdout to. */
function stdoutIsJournal(): boolean {
  const stream = process.env.JOURNAL_STREAM;
  if (!stream) return false;
  try {
    const { dev, ino } = fstatSync(1);
    return stream === `${dev}:${ino}`;
  } catch {
    return false;
  }
}

/** Lines held while the destination is slow; more are dropped. */
const MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** Bytes handed to one write(2). */
const MAX_WRITE_BYTES = 64 * 1024;
/** A destination that would block (a full pipe) is tried again after this long. */
const RETRY_MS = 100;

const dropped = { lines: 0, reason: '' };

/** Log lines dropped by this process since it started, and why the last ones were. */
export function droppedLogLines(): { readonly lines: number; readonly reason: string } {
  return { ...dropped };
}

/**
 * Writes log lines to a file descriptor off the main thread (libuv's
 * pool), one write at a time, holding at most MAX_QUEUED_BYTES meanwhile.
 * A line that does not fit, or whose write fails (ENOSPC on a full disk,
 * EIO, EPIPE...), is dropped and counted; the next line tries again, so
 * the log resumes by itself once the disk has room. A pipe or socket
 * (journald's stream, a shell pipe) is made non-blocking first: a reader
 * that stops reading then only fills the queue, and no pool thread waits
 * in write(2) forever (the process could not even exit: Node joins its
 * pool threads on the way out).
 */
export class LogSink implements LogDestination {
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private writing = false;

  constructor(
    private readonly fd: number,
    private readonly maxQueuedBytes = MAX_QUEUED_BYTES,
  ) {
    const stat = fstatSync(fd);
    if (stat.isFIFO() || stat.isSocket()) setNonBlocking(fd);
  }

  write(line: string): boolean {
    const bytes = Buffer.from(line, 'utf8');
    if (this.queuedBytes + bytes.length > this.maxQueuedBytes) {
      dropped.lines++;
      dropped.reason = 'the log destination is not keeping up';
      return true;
    }
    this.queue.push(bytes);
    this.queuedBytes += bytes.length;
    if (!this.writing) this.flush();
    return true;
  }

  private flush(): void {
    let count = 0;
    let size = 0;
    while (count < this.queue.length && (count === 0 || size + this.queue[count]!.length <= MAX_WRITE_BYTES)) {
      size += this.queue[count]!.length;
      count++;
    }
    if (count === 0) {
      this.writing = false;
      return;
    }
    this.writing = true;
    const chunk = count === 1 ? this.queue[0]! : Buffer.concat(this.queue.slice(0, count), size);
    writeFd(this.fd, chunk, 0, chunk.length, null, (error, written) => {
      if (error?.code === 'EAGAIN') {
        setTimeout(() => this.flush(), RETRY_MS).unref();
        return;
      }
      if (error) {
        this.queue.splice(0, count);
        this.queuedBytes -= size;
        dropped.lines += count;
        dropped.reason = `${error.code ?? 'error'}: ${error.message}`;
      } else {
        this.consume(written);
      }
      this.flush();
    });
  }

  /** Takes written bytes off the queue; a line written in part keeps its rest at the front. */
  private consume(written: number): void {
    this.queuedBytes -= written;
    while (written > 0) {
      const first = this.queue[0]!;
      if (written >= first.length) {
        written -= first.length;
        this.queue.shift();
      } else {
        this.queue[0] = first.subarray(written);
        written = 0;
      }
    }
  }
}
