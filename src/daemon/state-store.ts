/**
 * Runtime changes on disk (STATE_DIR/runtime.json), so that what operators
 * changed with the CLI survives a restart or a crash of the daemon.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { validateTableSize } from '../maglev/maglev.js';
import { formatVip, parseForward, parseIpAddress, parseVip, parseVipHash, parseWeight } from '../model/address.js';
import { type BackendChange, type DrainSpec, type RuntimeChanges, NO_CHANGES, vipSettings } from '../model/desired-state.js';
import { type CheckOptions, type CheckSettings, type CheckSpec, checkOverrides, formatCheck, parseAllDownPolicy } from '../model/check.js';
import { InputError } from '../model/errors.js';
import { privateDirectoryProblem, writeFileAtomic } from '../util/atomic-write.js';

const FILE = 'runtime.json';
const KILL_SWITCH_FILE = 'kill-switch.json';
const FORMAT_VERSION = 1;

export function runtimeStatePath(stateDir: string): string {
  return join(stateDir, FILE);
}

/** Refuses a state directory others could write to: they could replace what the daemon restores. */
export function requireSafeStateDir(stateDir: string): void {
  const problem = privateDirectoryProblem(stateDir);
  if (problem) throw new InputError(`refusing the state directory: ${problem}`);
}

export function saveRuntimeChanges(stateDir: string, changes: RuntimeChanges): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  requireSafeStateDir(stateDir);
  writeFileAtomic(runtimeStatePath(stateDir), `${JSON.stringify({ version: FORMAT_VERSION, ...changes }, null, 2)}\n`);
}

/** No file means no changes; a file that does not validate is an error, never ignored. */
export function loadRuntimeChanges(stateDir: string): RuntimeChanges {
  requireSafeStateDir(stateDir);
  const path = runtimeStatePath(stateDir);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return NO_CHANGES;
    throw error;
  }
  try {
    return validateChanges(JSON.parse(text));
  } catch (error) {
    throw new InputError(`runtime state ${path} is unreadable (${(error as Error).message}); move it away to start from the config alone`);
  }
}

/** When the kill-switch was engaged by an operator, or null: it survives restarts. */
export function saveKillSwitch(stateDir: string, engagedSince: string | null): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  requireSafeStateDir(stateDir);
  writeFileAtomic(join(stateDir, KILL_SWITCH_FILE), `${JSON.stringify({ version: FORMAT_VERSION, engagedSince })}\n`);
}

export function loadKillSwitch(stateDir: string): string | null {
  requireSafeStateDir(stateDir);
  const path = join(stateDir, KILL_SWITCH_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  try {
    const data = object(JSON.parse(text), 'file');
    if (data.version !== FORMAT_VERSION) throw new Error(`unsupported version ${JSON.stringify(data.version)}`);
    if (data.engagedSince === null) return null;
    if (typeof data.engagedSince !== 'string' || Number.isNaN(Date.parse(data.engagedSince)))
      throw new Error('engagedSince must be a date or null');
    return data.engagedSince;
  } catch (error) {
    throw new InputError(
      `kill-switch state ${path} is unreadable (${(error as Error).message}); move it away to start with the kill-switch released`,
    );
  }
}

function validateChanges(data: unknown): RuntimeChanges {
  const root = object(data, 'file');
  if (root.version !== FORMAT_VERSION) throw new Error(`unsupported version ${JSON.stringify(root.version)}`);
  const vips: Record<string, RuntimeChanges['vips'][string]> = {};
  for (const [key, raw] of Object.entries(object(root.vips, 'vips'))) {
    const vip = parseVip(key);
    if (formatVip(vip) !== key) throw new Error(`VIP key ${key} is not in canonical form`);
    const change = object(raw, key);
    if (change.op === 'remove') {
      vips[key] = { op: 'remove' };
      continue;
    }
    const backends: Record<string, BackendChange> = {};
    for (const [address, rawBackend] of Object.entries(object(change.backends, `${key}.backends`))) {
      const parsed = parseIpAddress(address);
      if (parsed.address !== address) throw new Error(`backend key ${address} is not in canonical form`);
      const b = object(rawBackend, address);
      if (b.op === 'remove') {
        backends[address] = { op: 'remove' };
      } else if (b.op === 'add') {
        const spec = object(b.backend, `${address}.backend`);
        if (spec.address !== parsed.address || spec.family !== parsed.family) throw new Error(`backend ${address} does not match its key`);
        if (typeof spec.weight !== 'number') throw new Error(`backend ${address}: weight must be a number`);
        backends[address] = {
          op: 'add',
          backend: {
            address: parsed.address,
            family: parsed.family,
            weight: parseWeight(spec.weight as number),
            ...(spec.forward !== undefined ? { forward: parseForward(String(spec.forward)) } : {}),
            ...(spec.drain !== undefined ? { drain: validateDrain(spec.drain, address) } : {}),
            ...(spec.check !== undefined ? { check: validateCheck(spec.check, address) } : {}),
          },
        };
      } else if (b.op === 'set') {
        if (b.weight !== undefined && typeof b.weight !== 'number') throw new Error(`backend ${address}: weight must be a number`);
        backends[address] = {
          op: 'set',
          ...(b.weight !== undefined ? { weight: parseWeight(b.weight as number) } : {}),
          ...(b.drain !== undefined ? { drain: validateDrain(b.drain, address) } : {}),
        };
      } else {
        throw new Error(`backend ${address}: unknown op ${JSON.stringify(b.op)}`);
      }
    }
    if (change.op === 'add') {
      const settings = vipSettings(vip, {
        forward: parseForward(String(change.forward)),
        tableSize: validateTableSize(change.tableSize as number),
        check: validateCheck(change.check, key),
        onAllDown: parseAllDownPolicy(String(change.onAllDown)),
        ...(change.need !== undefined ? { need: change.need as number } : {}),
        ...(change.hash !== undefined ? { hash: parseVipHash(String(change.hash)) } : {}),
      });
      vips[key] = { op: 'add', ...settings, backends };
    } else if (change.op === 'modify') {
      vips[key] = { op: 'modify', backends };
    } else {
      throw new Error(`${key}: unknown op ${JSON.stringify(change.op)}`);
    }
  }
  return { vips };
}

/** Check settings as saved (whole or as overrides): read back through the same parser as the CLI's. */
function validateCheck(value: unknown, where: string): Partial<CheckSettings> {
  const check = object(value, `${where}.check`);
  const { spec, ...rest } = check;
  const options: CheckOptions = {
    ...(rest as CheckOptions),
    ...(spec !== undefined ? { check: formatCheck(object(spec, `${where}.check.spec`) as unknown as CheckSpec) } : {}),
  };
  try {
    return checkOverrides(options);
  } catch (error) {
    throw new Error(`${where}.check: ${(error as Error).message}`);
  }
}

function validateDrain(value: unknown, address: string): DrainSpec {
  const drain = object(value, `${address}.drain`);
  const { since, timeoutSeconds, idleSeconds } = drain;
  if (typeof since !== 'string' || Number.isNaN(Date.parse(since))) throw new Error(`backend ${address}: drain.since must be a date`);
  for (const [name, seconds] of [
    ['timeoutSeconds', timeoutSeconds],
    ['idleSeconds', idleSeconds],
  ] as const) {
    if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds <= 0)
      throw new Error(`backend ${address}: drain.${name} must be a positive number`);
  }
  return { since, timeoutSeconds: timeoutSeconds as number, idleSeconds: idleSeconds as number };
}

function object(value: unknown, where: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${where} must be an object`);
  return value as Record<string, unknown>;
}
