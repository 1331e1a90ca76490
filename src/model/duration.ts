import { InputError } from './errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses "500ms", "2s", "1.5m", "1h" (a bare number is seconds) into milliseconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) throw new InputError(`invalid ${what} "${text}": expected a number with a unit, e.g. 500ms, 2s, 5m`);
  const ms = Number(match[1]) * UNIT_MS[match[2] ?? 's']!;
  if (!(ms > 0)) throw new InputError(`invalid ${what} "${text}": must be more than zero`);
  return ms;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${ms / 1000}s`;
}

/** The kill-switch timeout: from 1 second to 1 hour. */
export function parseKillSwitchTimeout(text: string): number {
  const ms = parseDuration(text, 'kill-switch timeout');
  if (ms < 1000 || ms > 3_600_000) throw new InputError(`invalid kill-switch timeout "${text}": must be from 1s to 1h`);
  return ms;
}
