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

export async function runDaemon(options: DaemonOptions, log: Logger): Promise<number> {
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
    return refused ? EXIT.invalid : EXIT.internal;
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
  return 0;
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
