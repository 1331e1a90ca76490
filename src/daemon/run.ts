/**
 * Runs the daemon in this process until it is stopped (signal or API). When
 * started by `lbctl start` (an IPC channel exists) it reports readiness or
 * the reason it could not start, then lets its parent exit.
 */
import type { Logger } from 'pino';
import { Daemon, type DaemonOptions } from './daemon.js';
import { notifySystemd } from './systemd.js';
import { EXIT } from '../api/exit-codes.js';
import { InputError } from '../model/errors.js';

/** What a daemon started in the background tells `lbctl start`; kind input: refused as asked (exit code 3). */
export type StartOutcome = { type: 'ready'; pid: number } | { type: 'failed'; kind: 'input' | 'internal'; message: string };

/** Once stopped, the process exits by itself; a log write stuck on a pipe nobody reads keeps it at most this long. */
const EXIT_GRACE_MS = 2000;

export async function runDaemon(options: DaemonOptions, log: Logger): Promise<number> {
  // The log goes through a LogSink that never throws; anything else written
  // to a standard stream on a full disk or into a closed pipe must not
  // crash the daemon either (an unhandled 'error' event would).
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
  let daemon: Daemon;
  try {
    daemon = await Daemon.start(options, log);
  } catch (error) {
    const message = (error as Error).message;
    const refused = error instanceof InputError;
    // A refused start (bad config, a daemon already running) is one line, not
    // a stack trace: it may land in the log of the daemon that is running.
    if (refused) log.error({ event: 'daemon.refused', reason: message }, 'lbctl daemon refused to start');
    else log.error({ event: 'daemon.failed', err: error }, 'lbctl daemon failed to start');
    report({ type: 'failed', kind: refused ? 'input' : 'internal', message });
    if (!process.send) process.stderr.write(`lbctl: ${message}\n`);
    const code = refused ? EXIT.invalid : EXIT.internal;
    exitSoon(code);
    return code;
  }
  // SIGTERM (a service manager, an upgrade) stops the daemon but leaves the
  // data plane balancing for the next daemon to take over; SIGINT (Ctrl-C at
  // a terminal) stops everything; SIGHUP reloads the config.
  process.on('SIGTERM', () => {
    log.info({ event: 'daemon.signal', signal: 'SIGTERM' }, 'stopping, keeping the data plane');
    tellSystemd(log, 'STOPPING=1');
    void daemon.stop({ keepDataplane: true });
  });
  process.on('SIGINT', () => {
    log.info({ event: 'daemon.signal', signal: 'SIGINT' }, 'stopping');
    tellSystemd(log, 'STOPPING=1');
    void daemon.stop({ keepDataplane: false });
  });
  process.on('SIGHUP', () => {
    log.info({ event: 'daemon.signal', signal: 'SIGHUP' }, 'reloading the config');
    daemon
      .reload()
      .catch((error: Error) => log.error({ event: 'config.rejected', err: error }, 'reload failed: the running state is unchanged'));
  });
  report({ type: 'ready', pid: process.pid });
  process.disconnect?.();
  tellSystemd(log, `READY=1\nSTATUS=balancing on ${options.interface}\nMAINPID=${process.pid}`);
  await daemon.whenStopped;
  exitSoon(0);
  return 0;
}

/** The process ends when nothing is left to do; a log write stuck on a pipe nobody reads does not hold it for more than EXIT_GRACE_MS. */
function exitSoon(code: number): void {
  setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
}

function report(message: StartOutcome): void {
  process.send?.(message);
}

/** Readiness for a Type=notify unit; a failure to tell is logged, not fatal. */
function tellSystemd(log: Logger, state: string): void {
  notifySystemd(state).then(
    (told) => told && log.debug({ event: 'systemd.notified', state }, 'told systemd'),
    (error) => log.warn({ event: 'systemd.notify_failed', err: error }, 'could not notify systemd'),
  );
}
