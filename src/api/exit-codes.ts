/**
 * lbctl's exit codes, so that scripts can tell a typo from a refused
 * change from a daemon that is not there (README, "Exit codes").
 */
export const EXIT = {
  ok: 0,
  /** Something failed that is not the caller's fault: a bug, the kernel refusing, a daemon error. */
  internal: 1,
  /** The command line itself: an unknown command or option, a missing argument. */
  usage: 2,
  /** A value or a request that was refused as it stands (invalid address, unknown VIP, lock held...): nothing changed. */
  invalid: 3,
  /** No daemon answers on the socket (not running, or no permission). */
  unreachable: 4,
} as const;

export type ErrorKind = 'internal' | 'usage' | 'input' | 'unreachable';

export const EXIT_BY_KIND: Record<ErrorKind, number> = {
  internal: EXIT.internal,
  usage: EXIT.usage,
  input: EXIT.invalid,
  unreachable: EXIT.unreachable,
};

/** How an error thrown by a command is reported. By name: the modules defining the classes load only with the commands that use them. */
export function errorKind(error: unknown): ErrorKind {
  const name = (error as Error)?.name;
  const code = (error as { code?: unknown })?.code;
  if (typeof code === 'string' && code.startsWith('commander.')) return 'usage';
  if (name === 'InputError') return 'input';
  if (name === 'DaemonUnreachableError') return 'unreachable';
  return 'internal';
}
