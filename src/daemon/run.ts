/**
 * Runs the daemon in this process until it is stopped (signal or API). When
 * started by `lbctl start` (an IPC channel exists) it reports readiness or
 * the reason it could not start, then lets its parent exit.
 */
import type { Logger } from 'pino';
import { Daemon, DaemonOptions } from './daemon.js';

type StartMessage = { type: 'ready'; pid: number } | { type: 'failed'; message: string };

export async function runDaemon(options: DaemonOptions, log: Logger): Promise<number> {
  let daemon: Daemon;
  try {
    daemon = await Daemon.start(options, log);
  } catch (error) {
    const message = (error as Error).message;
    log.error({ err: error }, 'lbctl daemon failed to start');
    report({ type: 'failed', message });
    if (!process.send) process.stderr.write(`lbctl: ${message}\n`);
    return 1;
  }
  // SIGTERM (a service manager, an upgrade) stops the daemon but leaves the
  // data plane balancing for the next daemon to take over; SIGINT (Ctrl-C at
  // a terminal) stops everything; SIGHUP reloads the config.
  process.on('SIGTERM', () => {
    log.info({ signal: 'SIGTERM' }, 'stopping, keeping the data plane');
    void daemon.stop({ keepDataplane: true });
  });
  process.on('SIGINT', () => {
    log.info({ signal: 'SIGINT' }, 'stopping');
    void daemon.stop({ keepDataplane: false });
  });
  process.on('SIGHUP', () => {
    daemon.reload().catch((error: Error) => log.error({ err: error }, 'reload failed: the running state is unchanged'));
  });
  report({ type: 'ready', pid: process.pid });
  process.disconnect?.();
  await daemon.whenStopped;
  return 0;
}

function report(message: StartMessage): void {
  process.send?.(message);
}
