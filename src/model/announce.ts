/**
 * How a fleet node announces its VIPs (docs/fleet.md): where the routes go
 * (a kernel table and route protocol of lbctl's own, which the node's
 * routing daemon learns), how many healthy backends a VIP needs to be
 * announced, how long it must have been able to serve before it is
 * announced again, and how long `lbctl stop` waits between withdrawing and
 * detaching. Pure: parsing and defaults, no I/O.
 */
import { parseDuration } from './duration.js';
import { InputError } from './errors.js';

export interface AnnounceSettings {
  /** Kernel routing table of lbctl's host routes; no `ip rule` may point at it. */
  readonly table: number;
  /** The routes' `proto` number, which the routing daemon filters on. */
  readonly proto: number;
  /** Fewest healthy backends a VIP needs to be announced (a VIP's own `need` overrides it). */
  readonly need: number;
  /** A VIP is announced once it has been able to serve, with the same healthy backends, this long. */
  readonly holdDownMs: number;
  /** `lbctl stop` waits this long between withdrawing and detaching the data plane: the router moves the flows meanwhile. */
  readonly withdrawDelayMs: number;
}

export const DEFAULT_ANNOUNCE_TABLE = 100;
export const DEFAULT_ANNOUNCE_PROTO = 201;

export const ANNOUNCE_DEFAULTS: AnnounceSettings = {
  table: DEFAULT_ANNOUNCE_TABLE,
  proto: DEFAULT_ANNOUNCE_PROTO,
  need: 1,
  holdDownMs: 5000,
  withdrawDelayMs: 1000,
};

export const NEED_LIMITS = { min: 1, max: 65535 } as const;
const MAX_HOLD_DOWN_MS = 3_600_000;
const MAX_WITHDRAW_DELAY_MS = 60_000;

/** Tables the kernel itself uses: unspec, default, main, local. */
const RESERVED_TABLES = new Set([0, 253, 254, 255]);
/**
 * Route protocol numbers that the kernel (0-4) or another routing program
 * owns, from iproute2's rt_protos: BIRD (12) and FRR's zebra (11, 186-192)
 * delete routes of their own numbers when they start.
 */
const TAKEN_PROTOS = new Map<number, string>([
  [0, 'unspec'],
  [1, 'redirect'],
  [2, 'kernel'],
  [3, 'boot'],
  [4, 'static'],
  [8, 'gated'],
  [9, 'ra'],
  [10, 'mrt'],
  [11, 'zebra'],
  [12, 'bird'],
  [13, 'dnrouted'],
  [14, 'xorp'],
  [15, 'ntk'],
  [16, 'dhcp'],
  [18, 'keepalived'],
  [42, 'babel'],
  [99, 'openr'],
  [186, 'bgp'],
  [187, 'isis'],
  [188, 'ospf'],
  [189, 'rip'],
  [192, 'eigrp'],
]);

export function validateAnnounceTable(table: number): number {
  if (!Number.isInteger(table) || table < 1 || table > 0xffffffff || RESERVED_TABLES.has(table)) {
    throw new InputError(`invalid announce table ${table}: a routing table number 1-4294967295 other than 253, 254, 255 (the kernel's)`);
  }
  return table;
}

export function validateAnnounceProto(proto: number): number {
  if (!Number.isInteger(proto) || proto < 1 || proto > 255) {
    throw new InputError(`invalid announce proto ${proto}: a route protocol number 1-255`);
  }
  const owner = TAKEN_PROTOS.get(proto);
  if (owner)
    throw new InputError(`invalid announce proto ${proto}: it is "${owner}"'s (iproute2 rt_protos); pick an unused one such as 201`);
  return proto;
}

export function validateNeed(need: number): number {
  if (!Number.isInteger(need) || need < NEED_LIMITS.min || need > NEED_LIMITS.max) {
    throw new InputError(`invalid need ${need}: the fewest healthy backends to announce, an integer from 1 to ${NEED_LIMITS.max}`);
  }
  return need;
}

/** A duration that may be zero ("0", "0s"), up to max. */
function zeroOrDuration(text: string, what: string, maxMs: number): number {
  const ms = /^\s*0+(?:\.0+)?(?:ms|s|m|h|d)?\s*$/.test(text) ? 0 : parseDuration(text, what);
  if (ms > maxMs) throw new InputError(`invalid ${what} "${text}": at most ${maxMs / 1000} s`);
  return ms;
}

export function parseHoldDown(text: string): number {
  return zeroOrDuration(text, 'hold-down', MAX_HOLD_DOWN_MS);
}

export function parseWithdrawDelay(text: string): number {
  return zeroOrDuration(text, 'withdraw delay', MAX_WITHDRAW_DELAY_MS);
}
