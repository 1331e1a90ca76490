/** pino: JSON lines for machines, readable lines when a person watches a terminal. */
import { pino, type Logger, type LevelWithSilent } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export function createLogger(
  level: LevelWithSilent = 'info',
  human = process.stdout.isTTY === true,
  /** Where lines go; standard output (synchronously, through pino's own writer) by default. */
  destination?: NodeJS.WritableStream,
): Logger {
  const options = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (!human) return destination ? pino(options, destination) : pino(options);
  return pino(
    options,
    pretty({
      colorize: destination === undefined && process.stdout.isTTY === true,
      sync: true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname',
      ...(destination ? { destination } : {}),
    }),
  );
}
