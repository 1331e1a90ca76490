/**
 * Health-check settings of a VIP and its backends: what to probe, how
 * often, and how many results it takes to change a backend's state. Pure:
 * parsing, defaults, overrides and validation, no I/O (src/health/ probes).
 */
import { formatDuration } from './duration.js';
import { InputError, quote } from './errors.js';
import { formatVip, type VipAddress } from './address.js';

export type CheckKind = 'tcp' | 'http' | 'https' | 'dns' | 'udp' | 'none';

export const CHECK_KINDS: readonly CheckKind[] = ['tcp', 'http', 'https', 'dns', 'udp', 'none'];

export interface CheckSpec {
  readonly kind: CheckKind;
  /** http(s): the request path, starts with '/'. */
  readonly path?: string;
  /** dns: the query name ('.' is the root). */
  readonly name?: string;
}

export interface CheckSettings {
  readonly spec: CheckSpec;
  /** Time between the starts of two probes. Default 2000. */
  readonly intervalMs: number;
  /** A probe that takes longer fails. Default 1000; at most intervalMs. */
  readonly timeoutMs: number;
  /** Successes in a row that bring a down backend up. Default 2. */
  readonly rise: number;
  /** Failures in a row that take an up backend down. Default 3. */
  readonly fall: number;
  /** Also send a SYN the way the data plane forwards a client's (TCP VIPs only). Default false. */
  readonly dsr: boolean;
  /** Port probed on the backend; default the VIP's port. */
  readonly port?: number;
  /** http(s): the exact status expected; default any of 200-399. */
  readonly expectStatus?: number;
}

export const CHECK_DEFAULTS = {
  intervalMs: 2000,
  timeoutMs: 1000,
  rise: 2,
  fall: 3,
} as const;

export const CHECK_LIMITS = {
  intervalMs: { min: 100, max: 3_600_000 },
  timeoutMs: { min: 10 },
  count: { min: 1, max: 100 },
  port: { min: 1, max: 65535 },
  status: { min: 100, max: 599 },
  pathLength: 1024,
} as const;

const EXAMPLES = 'tcp, http:/PATH, https:/PATH, dns:NAME, udp or none';

/** 'tcp' | 'http:/path' | 'https:/path' | 'dns:name' | 'udp' | 'none'. */
export function parseCheck(text: string): CheckSpec {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(':');
  const kindText = (colon < 0 ? trimmed : trimmed.slice(0, colon)).toLowerCase();
  const argument = colon < 0 ? undefined : trimmed.slice(colon + 1);
  if (!CHECK_KINDS.includes(kindText as CheckKind)) {
    throw new InputError(`invalid check ${quote(text)}: expected ${EXAMPLES}`);
  }
  const kind = kindText as CheckKind;
  switch (kind) {
    case 'http':
    case 'https': {
      if (argument === undefined || argument === '') {
        throw new InputError(`invalid check ${quote(text)}: ${kind} needs a path, e.g. ${kind}:/healthz`);
      }
      const reason = pathProblem(argument);
      if (reason) throw new InputError(`invalid check ${quote(text)}: ${reason}`);
      return { kind, path: argument };
    }
    case 'dns': {
      if (argument === undefined || argument === '') {
        throw new InputError(`invalid check ${quote(text)}: dns needs a query name, e.g. dns:example.com or dns:.`);
      }
      const reason = dnsNameProblem(argument);
      if (reason) throw new InputError(`invalid check ${quote(text)}: ${reason}`);
      return { kind, name: argument };
    }
    default:
      if (argument !== undefined) {
        throw new InputError(`invalid check ${quote(text)}: ${kind} takes no argument (expected ${quote(kind)})`);
      }
      return { kind };
  }
}

/** The inverse of parseCheck. */
export function formatCheck(spec: CheckSpec): string {
  switch (spec.kind) {
    case 'http':
    case 'https':
      return `${spec.kind}:${spec.path ?? '/'}`;
    case 'dns':
      return `dns:${spec.name ?? '.'}`;
    default:
      return spec.kind;
  }
}

/** TCP VIPs: a TCP connect; UDP VIPs: a DNS query for "." on port 53, else a UDP datagram. */
export function defaultCheck(vip: VipAddress): CheckSettings {
  const spec: CheckSpec = vip.protocol === 'tcp' ? { kind: 'tcp' } : vip.port === 53 ? { kind: 'dns', name: '.' } : { kind: 'udp' };
  // The DSR-path check is on for TCP VIPs: a backend without the VIP on lo
  // passes a check of its own address and silently drops its share of
  // connections, the most common DSR mistake.
  return { spec, ...CHECK_DEFAULTS, dsr: vip.protocol === 'tcp' };
}

/**
 * A backend's settings: the VIP's with the backend's own laid over them.
 * Fields an override leaves undefined keep the VIP's value; an override
 * that changes the kind away from http(s) drops the VIP's expectStatus
 * (it would not mean anything) unless it gives its own.
 */
/** The health check a backend gets: its VIP's, with its own overrides. */
export function effectiveCheck(
  vip: { readonly check: CheckSettings },
  backend: { readonly check?: Partial<CheckSettings> },
): CheckSettings {
  return backend.check ? withCheckOverrides(vip.check, backend.check) : vip.check;
}

export function withCheckOverrides(base: CheckSettings, overrides: Partial<CheckSettings>): CheckSettings {
  const merged: { -readonly [K in keyof CheckSettings]: CheckSettings[K] } = { ...base };
  for (const [key, value] of Object.entries(overrides) as [keyof CheckSettings, unknown][]) {
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  }
  if (overrides.spec !== undefined && overrides.expectStatus === undefined && !isHttp(overrides.spec.kind)) {
    delete merged.expectStatus;
  }
  return merged;
}

/** Returns the settings unchanged or throws an InputError with a one-line reason. */
export function validateCheckSettings(settings: CheckSettings, vip: VipAddress): CheckSettings {
  const where = `check of ${formatVip(vip)}`;
  const { spec } = settings;
  if (!CHECK_KINDS.includes(spec.kind)) {
    throw new InputError(`invalid ${where}: unknown kind ${quote(String(spec.kind))}: expected ${EXAMPLES}`);
  }
  if (isHttp(spec.kind)) {
    const reason = spec.path === undefined ? `${spec.kind} needs a path, e.g. ${spec.kind}:/healthz` : pathProblem(spec.path);
    if (reason) throw new InputError(`invalid ${where}: ${reason}`);
  }
  if (spec.kind === 'dns') {
    const reason = spec.name === undefined ? 'dns needs a query name, e.g. dns:example.com or dns:.' : dnsNameProblem(spec.name);
    if (reason) throw new InputError(`invalid ${where}: ${reason}`);
  }
  const needs: Partial<Record<CheckKind, 'tcp' | 'udp'>> = { tcp: 'tcp', http: 'tcp', https: 'tcp', dns: 'udp', udp: 'udp' };
  const protocol = needs[spec.kind];
  if (protocol !== undefined && protocol !== vip.protocol) {
    const fits = vip.protocol === 'tcp' ? 'tcp, http, https or none' : 'dns, udp or none';
    throw new InputError(`invalid ${where}: a ${spec.kind} check needs a ${protocol.toUpperCase()} VIP (use ${fits})`);
  }

  if (vip.port === 0 && spec.kind !== 'none' && settings.port === undefined) {
    throw new InputError(
      `invalid ${where}: a VIP of all ports (port 0) needs the port to check: check_port in a config file, --check-port`,
    );
  }

  const { intervalMs, timeoutMs } = settings;
  const interval = CHECK_LIMITS.intervalMs;
  if (!Number.isInteger(intervalMs) || intervalMs < interval.min || intervalMs > interval.max) {
    throw new InputError(
      `invalid check interval ${msText(intervalMs)} for ${formatVip(vip)}: must be a whole number of milliseconds from ${formatDuration(interval.min)} to ${formatDuration(interval.max)}`,
    );
  }
  if (!Number.isInteger(timeoutMs) || timeoutMs < CHECK_LIMITS.timeoutMs.min || timeoutMs > intervalMs) {
    throw new InputError(
      `invalid check timeout ${msText(timeoutMs)} for ${formatVip(vip)}: must be a whole number of milliseconds from ${formatDuration(CHECK_LIMITS.timeoutMs.min)} to the interval (${formatDuration(intervalMs)})`,
    );
  }
  for (const field of ['rise', 'fall'] as const) {
    const value = settings[field];
    const { min, max } = CHECK_LIMITS.count;
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new InputError(`invalid check ${field} ${quote(value)} for ${formatVip(vip)}: must be an integer from ${min} to ${max}`);
    }
  }
  if (settings.port !== undefined) {
    const { min, max } = CHECK_LIMITS.port;
    if (!Number.isInteger(settings.port) || settings.port < min || settings.port > max) {
      throw new InputError(`invalid check port ${quote(settings.port)} for ${formatVip(vip)}: must be from ${min} to ${max}`);
    }
  }
  if (settings.expectStatus !== undefined) {
    const { min, max } = CHECK_LIMITS.status;
    if (!Number.isInteger(settings.expectStatus) || settings.expectStatus < min || settings.expectStatus > max) {
      throw new InputError(
        `invalid expected HTTP status ${quote(settings.expectStatus)} for ${formatVip(vip)}: must be from ${min} to ${max}`,
      );
    }
    if (!isHttp(spec.kind)) {
      throw new InputError(`invalid ${where}: an expected HTTP status needs an http or https check, not ${formatCheck(spec)}`);
    }
  }
  if (typeof settings.dsr !== 'boolean') {
    throw new InputError(`invalid ${where}: dsr must be true or false`);
  }
  if (settings.dsr && vip.protocol !== 'tcp') {
    throw new InputError(`invalid ${where}: the DSR-path check sends a TCP SYN, it needs a TCP VIP`);
  }
  return settings;
}

function isHttp(kind: CheckKind): boolean {
  return kind === 'http' || kind === 'https';
}

function msText(ms: number): string {
  return Number.isFinite(ms) && ms > 0 ? quote(formatDuration(ms)) : quote(ms);
}

/** Why a path cannot go in a request line, or undefined. */
function pathProblem(path: string): string | undefined {
  if (!path.startsWith('/')) return `the path ${quote(path)} must start with "/"`;
  if (path.length > CHECK_LIMITS.pathLength) return `the path is longer than ${CHECK_LIMITS.pathLength} characters`;
  if (/[\s\x00-\x1f\x7f]/.test(path)) return `the path ${quote(path)} contains a space or a control character (percent-encode it)`;
  if (/[^\x21-\x7e]/.test(path)) return `the path ${quote(path)} contains a non-ASCII character (percent-encode it)`;
  return undefined;
}

/** Why a DNS query name is not valid, or undefined. '.' is the root. */
function dnsNameProblem(name: string): string | undefined {
  if (name === '.') return undefined;
  const bare = name.endsWith('.') ? name.slice(0, -1) : name;
  if (bare.length === 0 || bare.length > 253) return `invalid DNS name ${quote(name)}: must have 1 to 253 characters`;
  for (const label of bare.split('.')) {
    if (label.length === 0) return `invalid DNS name ${quote(name)}: empty label`;
    if (label.length > 63) return `invalid DNS name ${quote(name)}: a label is longer than 63 characters`;
    if (!/^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$/.test(label)) {
      return `invalid DNS name ${quote(name)}: labels are letters, digits, "-" and "_", not starting or ending with "-"`;
    }
  }
  return undefined;
}

/** Check settings as an operator writes them (flags, config keys, API fields). */
export interface CheckOptions {
  readonly check?: string;
  readonly intervalMs?: number;
  readonly timeoutMs?: number;
  readonly rise?: number;
  readonly fall?: number;
  readonly dsr?: boolean;
  readonly port?: number;
  readonly expectStatus?: number;
}

const CHECK_OPTION_NAMES: ReadonlyArray<keyof CheckOptions> = [
  'check',
  'intervalMs',
  'timeoutMs',
  'rise',
  'fall',
  'dsr',
  'port',
  'expectStatus',
];

/** The options given, as overrides of a VIP's (or the defaults'). Validate the result with validateCheckSettings. */
export function checkOverrides(options: CheckOptions): Partial<CheckSettings> {
  const overrides: { -readonly [K in keyof CheckSettings]?: CheckSettings[K] } = {};
  const unknown = Object.keys(options).find((key) => !CHECK_OPTION_NAMES.includes(key as keyof CheckOptions));
  if (unknown !== undefined) throw new InputError(`unknown check option ${quote(unknown)} (expected ${CHECK_OPTION_NAMES.join(', ')})`);
  if (options.check !== undefined) {
    if (typeof options.check !== 'string') throw new InputError(`invalid check ${quote(JSON.stringify(options.check))}: expected a string`);
    overrides.spec = parseCheck(options.check);
  }
  const numbers = [
    ['intervalMs', 'check interval'],
    ['timeoutMs', 'check timeout'],
    ['rise', 'rise'],
    ['fall', 'fall'],
    ['port', 'check port'],
    ['expectStatus', 'expected status'],
  ] as const;
  for (const [key, what] of numbers) {
    const value = options[key];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isFinite(value))
      throw new InputError(`invalid ${what} ${quote(JSON.stringify(value))}: expected a number`);
    overrides[key] = value;
  }
  if (options.dsr !== undefined) {
    if (typeof options.dsr !== 'boolean')
      throw new InputError(`invalid DSR-path check setting ${quote(JSON.stringify(options.dsr))}: expected true or false`);
    overrides.dsr = options.dsr;
  }
  return overrides;
}

/** What a VIP does when every backend is down. */
export type AllDownPolicy = 'keep' | 'drop';
export const ALL_DOWN_POLICIES: readonly AllDownPolicy[] = ['keep', 'drop'];
/** Keep sending to the last healthy set: when every check fails at once, the checks are likelier wrong than every server. */
export const DEFAULT_ALL_DOWN: AllDownPolicy = 'keep';

export function parseAllDownPolicy(text: string): AllDownPolicy {
  if (ALL_DOWN_POLICIES.includes(text as AllDownPolicy)) return text as AllDownPolicy;
  throw new InputError(`invalid all-backends-down policy ${quote(text)}: expected keep (the last healthy backends) or drop`);
}
