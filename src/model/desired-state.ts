/**
 * What the balancer should be doing: the config file's VIPs and backends
 * with the runtime changes (CLI, API) laid over them. Runtime changes are
 * kept apart from the config so that both survive a restart and a config
 * edit: the daemon saves them (src/daemon/state-store.ts) and lays them over
 * whatever the config says at the next start or reload.
 */
import { DEFAULT_TABLE_SIZE } from '../maglev/maglev.js';
import {
  type AllDownPolicy,
  type CheckSettings,
  DEFAULT_ALL_DOWN,
  defaultCheck,
  effectiveCheck,
  validateCheckSettings,
  withCheckOverrides,
} from './check.js';
import { type Family, type ForwardMethod, type VipAddress, type VipHash, formatVip, parseVip } from './address.js';
import { validateNeed } from './announce.js';
import { InputError } from './errors.js';

/**
 * A backend being drained takes no new flows; its tracked flows continue
 * until they end (FIN/RST, or idle for idleSeconds) or timeoutSeconds after
 * `since`, when the daemon removes it.
 */
export interface DrainSpec {
  readonly since: string; // ISO 8601
  readonly timeoutSeconds: number;
  readonly idleSeconds: number;
}

export interface BackendSpec {
  readonly address: string;
  readonly family: Family;
  readonly weight: number;
  /** Overrides the VIP's method for this backend. */
  readonly forward?: ForwardMethod;
  readonly drain?: DrainSpec;
  /** Overrides of the VIP's health check for this backend. */
  readonly check?: Partial<CheckSettings>;
}

export interface VipSpec {
  readonly vip: VipAddress;
  readonly forward: ForwardMethod;
  readonly tableSize: number;
  readonly check: CheckSettings;
  readonly onAllDown: AllDownPolicy;
  /** Fewest healthy backends to announce the VIP (a fleet node); default the daemon's `announce.need`. */
  readonly need?: number;
  /** What picks a new flow's backend; absent: the whole flow. */
  readonly hash?: VipHash;
  readonly backends: readonly BackendSpec[];
}

/** How a VIP is defined, apart from its address and backends. */
export type VipSettings = Pick<VipSpec, 'forward' | 'tableSize' | 'check' | 'onAllDown' | 'need' | 'hash'>;

export interface DesiredState {
  readonly vips: readonly VipSpec[];
}

export const EMPTY_STATE: DesiredState = { vips: [] };
export const DEFAULT_FORWARD: ForwardMethod = 'l2dsr';
export const DEFAULT_WEIGHT = 1;

/** What can change at runtime about a backend defined elsewhere; drain null ends a drain. */
export interface BackendPatch {
  readonly weight?: number;
  readonly drain?: DrainSpec | null;
}

/** A backend added at runtime is defined entirely by its 'add'; 'set' patches one from the config. */
export type BackendChange =
  | { readonly op: 'add'; readonly backend: BackendSpec }
  | { readonly op: 'set'; readonly weight?: number; readonly drain?: DrainSpec }
  | { readonly op: 'remove' };

/**
 * 'add' defines the VIP at runtime (the config's definition, if any, is
 * replaced); 'modify' only changes backends of a VIP defined elsewhere.
 */
type VipChange =
  | ({ readonly op: 'add'; readonly backends: Readonly<Record<string, BackendChange>> } & VipSettings)
  | { readonly op: 'modify'; readonly backends: Readonly<Record<string, BackendChange>> }
  | { readonly op: 'remove' };

export interface RuntimeChanges {
  readonly vips: Readonly<Record<string, VipChange>>;
}

export const NO_CHANGES: RuntimeChanges = { vips: {} };

export function effectiveForward(vip: VipSpec, backend: BackendSpec): ForwardMethod {
  return backend.forward ?? vip.forward;
}

/**
 * A backend of the other family than its VIP (4-in-6, 6-in-4) is reached
 * through a tunnel only: l2dsr delivers the client's packet as it is.
 */
export function validateFamilies(
  vip: VipAddress,
  backend: Pick<BackendSpec, 'address' | 'family' | 'forward'>,
  vipForward: ForwardMethod,
): void {
  if (backend.family === vip.family || (backend.forward ?? vipForward) === 'ipip') return;
  throw new InputError(
    `backend ${backend.address} is IPv${backend.family} but VIP ${formatVip(vip)} is IPv${vip.family}: only --forward ipip can cross address families`,
  );
}

/** Checks that hold for the state as a whole (whatever mix of config and runtime changes made it). */
export function validateDesired(desired: DesiredState): void {
  for (const vip of desired.vips) {
    for (const backend of vip.backends) {
      validateFamilies(vip.vip, backend, vip.forward);
      if (backend.check) validateCheckSettings(effectiveCheck(vip, backend), vip.vip);
    }
  }
}

export function findVip(state: DesiredState, key: string): VipSpec | undefined {
  return state.vips.find((v) => formatVip(v.vip) === key);
}

/** The config with the runtime changes applied. */
export function applyChanges(config: DesiredState, changes: RuntimeChanges): DesiredState {
  const vips = new Map(config.vips.map((v) => [formatVip(v.vip), v] as const));
  for (const [key, change] of Object.entries(changes.vips)) {
    const base = vips.get(key);
    if (change.op === 'remove') {
      vips.delete(key);
      continue;
    }
    let spec: VipSpec;
    if (change.op === 'add') {
      spec = {
        vip: parseVip(key),
        forward: change.forward,
        tableSize: change.tableSize,
        check: change.check,
        onAllDown: change.onAllDown,
        ...(change.need !== undefined ? { need: change.need } : {}),
        ...(change.hash === 'source' ? { hash: change.hash } : {}),
        backends: [],
      };
    } else if (base) {
      spec = base;
    } else {
      continue; // the config no longer has the VIP these changes were for
    }
    vips.set(key, { ...spec, backends: applyBackendChanges(spec.backends, change.backends) });
  }
  return { vips: [...vips.values()] };
}

function applyBackendChanges(backends: readonly BackendSpec[], changes: Readonly<Record<string, BackendChange>>): BackendSpec[] {
  const byAddress = new Map(backends.map((b) => [b.address, b] as const));
  for (const [address, change] of Object.entries(changes)) {
    if (change.op === 'remove') {
      byAddress.delete(address);
    } else if (change.op === 'add') {
      byAddress.set(address, change.backend);
    } else {
      const base = byAddress.get(address);
      if (base) byAddress.set(address, patchBackend(base, change));
    }
  }
  return [...byAddress.values()];
}

function patchBackend(backend: BackendSpec, patch: BackendPatch): BackendSpec {
  const { drain: _previous, ...rest } = backend;
  const drain = patch.drain === undefined ? backend.drain : (patch.drain ?? undefined);
  return { ...rest, ...(patch.weight !== undefined ? { weight: patch.weight } : {}), ...(drain ? { drain } : {}) };
}

/** A VIP's settings with the defaults for what was not given. */
export function vipSettings(
  vip: VipAddress,
  given: {
    forward?: ForwardMethod;
    tableSize?: number;
    check?: Partial<CheckSettings>;
    onAllDown?: AllDownPolicy;
    need?: number;
    hash?: VipHash;
  },
): VipSettings {
  return {
    forward: given.forward ?? DEFAULT_FORWARD,
    tableSize: given.tableSize ?? DEFAULT_TABLE_SIZE,
    check: validateCheckSettings(withCheckOverrides(defaultCheck(vip), given.check ?? {}), vip),
    onAllDown: given.onAllDown ?? DEFAULT_ALL_DOWN,
    ...(given.need !== undefined ? { need: validateNeed(given.need) } : {}),
    ...(given.hash === 'source' ? { hash: given.hash } : {}),
  };
}

/** A change requested at runtime (CLI, API, a finished drain). */
export type Change =
  | { readonly op: 'vip.add'; readonly vip: VipAddress; readonly settings: VipSettings }
  | { readonly op: 'vip.remove'; readonly vip: string }
  | { readonly op: 'backend.add'; readonly vip: string; readonly backend: BackendSpec }
  | { readonly op: 'backend.remove'; readonly vip: string; readonly address: string }
  | { readonly op: 'backend.set'; readonly vip: string; readonly address: string; readonly patch: BackendPatch };

export interface Changed {
  readonly changes: RuntimeChanges;
  /** The config with the new runtime changes applied, validated as a whole. */
  readonly desired: DesiredState;
}

/**
 * Lays one more change over the runtime changes. `current` is the state
 * they produce now (the caller keeps it); the change is checked against it
 * and the result as a whole, so an InputError means nothing changed.
 */
export function withChange(
  config: DesiredState,
  changes: RuntimeChanges,
  change: Change,
  current = applyChanges(config, changes),
): Changed {
  const next = nextChanges(config, changes, current, change);
  const desired = applyChanges(config, next);
  validateDesired(desired);
  return { changes: next, desired };
}

function nextChanges(config: DesiredState, changes: RuntimeChanges, current: DesiredState, change: Change): RuntimeChanges {
  if (change.op === 'vip.add') {
    const key = formatVip(change.vip);
    if (findVip(current, key)) throw new InputError(`VIP ${key} already exists`);
    return withVip(changes, key, { op: 'add', ...change.settings, backends: {} });
  }
  const key = change.vip;
  const vip = findVip(current, key);
  if (!vip) throw new InputError(`unknown VIP ${key}`);
  switch (change.op) {
    case 'vip.remove':
      return removeVip(config, changes, key);
    case 'backend.add':
      if (vip.backends.some((b) => b.address === change.backend.address)) {
        throw new InputError(`backend ${change.backend.address} already exists in VIP ${key}`);
      }
      return withBackend(changes, key, change.backend.address, { op: 'add', backend: change.backend });
    case 'backend.remove':
      if (!vip.backends.some((b) => b.address === change.address)) throw new InputError(`VIP ${key} has no backend ${change.address}`);
      return removeBackend(config, changes, key, change.address);
    case 'backend.set': {
      const backend = vip.backends.find((b) => b.address === change.address);
      if (!backend) throw new InputError(`VIP ${key} has no backend ${change.address}`);
      if (change.patch.drain && backend.drain) {
        throw new InputError(`backend ${change.address} of VIP ${key} is already draining (since ${backend.drain.since})`);
      }
      if (change.patch.drain === null && !backend.drain) throw new InputError(`backend ${change.address} of VIP ${key} is not draining`);
      return setBackend(config, changes, key, backend, change.patch);
    }
  }
}

/** A removal of something the config defines is recorded; of anything else, forgotten. */
function removeVip(config: DesiredState, changes: RuntimeChanges, key: string): RuntimeChanges {
  const { [key]: _dropped, ...others } = changes.vips;
  const withoutChange: RuntimeChanges = { vips: others };
  return findVip(config, key) ? withVip(withoutChange, key, { op: 'remove' }) : withoutChange;
}

function removeBackend(config: DesiredState, changes: RuntimeChanges, key: string, address: string): RuntimeChanges {
  const vipChange = changes.vips[key];
  if (vipChange && vipChange.op !== 'remove' && address in vipChange.backends) {
    // Forgetting the runtime change removes the backend, unless the config
    // defines one at that address (under a VIP the runtime only modifies).
    const revealed = vipChange.op === 'modify' && findVip(config, key)?.backends.some((b) => b.address === address);
    if (!revealed) return forgetBackendChange(changes, key, address);
  }
  return withBackend(changes, key, address, { op: 'remove' });
}

/** Changes a backend's weight or drain state, wherever the backend was defined. */
function setBackend(config: DesiredState, changes: RuntimeChanges, key: string, backend: BackendSpec, patch: BackendPatch): RuntimeChanges {
  const address = backend.address;
  const vipChange = changes.vips[key];
  const change = vipChange && vipChange.op !== 'remove' ? vipChange.backends[address] : undefined;
  if (change?.op === 'add') return withBackend(changes, key, address, { op: 'add', backend: patchBackend(change.backend, patch) });

  // Patch what the config defines; a patch that changes nothing is forgotten.
  const base = findVip(config, key)?.backends.find((b) => b.address === address) ?? backend;
  const target = patchBackend(backend, patch);
  const set = {
    op: 'set' as const,
    ...(target.weight !== base.weight ? { weight: target.weight } : {}),
    ...(target.drain ? { drain: target.drain } : {}),
  };
  if (set.weight === undefined && set.drain === undefined) return forgetBackendChange(changes, key, address);
  return withBackend(changes, key, address, set);
}

/** Drops a backend's runtime change; a 'modify' left with no backend changes is dropped too: no trace remains. */
function forgetBackendChange(changes: RuntimeChanges, key: string, address: string): RuntimeChanges {
  const vipChange = changes.vips[key];
  if (!vipChange || vipChange.op === 'remove' || !(address in vipChange.backends)) return changes;
  const { [address]: _dropped, ...backends } = vipChange.backends;
  if (vipChange.op === 'modify' && Object.keys(backends).length === 0) {
    const { [key]: _emptied, ...others } = changes.vips;
    return { vips: others };
  }
  return withVip(changes, key, { ...vipChange, backends });
}

function withVip(changes: RuntimeChanges, key: string, change: VipChange): RuntimeChanges {
  return { vips: { ...changes.vips, [key]: change } };
}

function withBackend(changes: RuntimeChanges, key: string, address: string, change: BackendChange): RuntimeChanges {
  const vipChange = changes.vips[key];
  const next: VipChange =
    vipChange && vipChange.op !== 'remove'
      ? { ...vipChange, backends: { ...vipChange.backends, [address]: change } }
      : { op: 'modify', backends: { [address]: change } };
  return withVip(changes, key, next);
}
