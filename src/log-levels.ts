/** The log levels an operator can choose (flag and config file); apart from src/log.ts so the CLI can list them without loading pino. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
