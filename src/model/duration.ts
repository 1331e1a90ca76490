import { InputError, quote } from './errors.js';

const UNIT_MS: Record<string, number> = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
const UNITS_IN_ORDER = ['d', 'h', 'm', 's', 'ms'];

/**
 * Parses "500ms", "2s", "1.5m", "1h30m", "1m30s" into milliseconds. A
 * number needs a unit: HAProxy reads a bare 2000 as milliseconds, other
 * tools as seconds, so a bare number other than 0 is refused rather than
 * guessed at.
 */
export function parseDuration(text: string, what = 'duration'): number {
  const trimmed = text.trim();
  if (/^0+(?:\.0+)?$/.test(trimmed)) throw new InputError(`invalid ${what} ${quote(text)}: must be more than zero`);
  if (/^\d+(?:\.\d+)?$/.test(trimmed)) {
    throw new InputError(`invalid ${what} ${quote(text)}: give a unit, e.g. ${trimmed}s or ${trimmed}ms (a bare number is ambiguous)`);
  }
  const parts = [...trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  const units = parts.map((p) => p[2]!);
  const ordered = units.every((unit, i) => i === 0 || UNITS_IN_ORDER.indexOf(units[i - 1]!) < UNITS_IN_ORDER.indexOf(unit));
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== trimmed || !ordered) {
    throw new InputError(`invalid ${what} ${quote(text)}: expected a number with a unit (ms, s, m, h, d), e.g. 500ms, 2s, 5m, 1h30m`);
  }
  const ms = parts.reduce((sum, p) => sum + Number(p[1]) * UNIT_MS[p[2]!]!, 0);
  if (!(ms > 0)) throw new InputError(`invalid ${what} ${quote(text)}: must be more than zero`);
  if (!Number.isSafeInteger(Math.round(ms))) throw new InputError(`invalid ${what} ${quote(text)}: too long`);
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
  if (ms < 1000 || ms > 3_600_000) throw new InputError(`invalid kill-switch timeout ${quote(text)}: must be from 1s to 1h`);
  return ms;
}
