/** Opening, sizing, loading and pinning a compiled BPF object. */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap, PerCpuBpfMap } from './bpf-map.js';
import { BpfError, PER_CPU_MAP_TYPES, type Pointer, orThrow, native, takeLibbpfLog } from './libbpf.js';
import { summarizeLoadLog } from './load-log.js';

export interface LoadedObject {
  /** The main program (the one named when loading). */
  readonly programFd: number;
  /** Any other program of the object, by name. */
  program(name: string): number;
  map(name: string): BpfMap;
  perCpuMap(name: string): PerCpuBpfMap;
  /** Pins every map and the program under dir (created if missing). */
  pin(dir: string): void;
  /** Releases the object's fds; pinned or attached objects stay in the kernel. */
  close(): void;
}

export interface MapDefinition {
  readonly name: string;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
}

/** The maps an object declares, as compiled (before any resizing). */
export function mapDefinitions(path: string): MapDefinition[] {
  const obj = openObject(path);
  try {
    const definitions: MapDefinition[] = [];
    for (let handle = native.objectNextMap(obj, null); handle; handle = native.objectNextMap(obj, handle)) {
      const name = native.mapName(handle) as string;
      if (name.startsWith('.')) continue;
      definitions.push({
        name,
        type: native.mapType(handle),
        keySize: native.mapKeySize(handle),
        valueSize: native.mapValueSize(handle),
        maxEntries: native.mapMaxEntries(handle),
        flags: native.mapFlags(handle),
      });
    }
    return definitions;
  } finally {
    native.objectClose(obj);
  }
}

function openObject(path: string): Pointer {
  takeLibbpfLog();
  const obj = native.objectOpenFile(path, null) as Pointer | null;
  if (!obj) throw new BpfError(`cannot open ${path}: ${summarizeLoadLog(takeLibbpfLog()) || 'not a BPF object'}`);
  return obj;
}

/**
 * Loads one program and its maps. maxEntries resizes maps before the load;
 * reuse gives maps that already exist (fds of pinned maps), which the
 * program then uses instead of new ones. The caller checks they fit.
 */
export function loadBpfObject(
  path: string,
  programName: string,
  maxEntries: Record<string, number> = {},
  reuse: Record<string, number> = {},
): LoadedObject {
  const obj = openObject(path);
  try {
    for (const [name, entries] of Object.entries(maxEntries)) {
      if (name in reuse) continue;
      orThrow(native.mapSetMaxEntries(findMap(obj, name), entries), `sizing map ${name}`);
    }
    for (const [name, fd] of Object.entries(reuse)) {
      orThrow(native.mapReuseFd(findMap(obj, name), fd), `reusing map ${name}`);
    }
    const err = native.objectLoad(obj) as number;
    if (err < 0) throw new BpfError(`the kernel rejected ${programName}:\n${summarizeLoadLog(takeLibbpfLog())}`, -err);
    const program = native.objectFindProgram(obj, programName);
    if (!program) throw new BpfError(`${path} has no program ${programName}`);
    const programFd = orThrow(native.programFd(program), `program ${programName}`);
    const maps = wrapMaps(obj);

    const get = (name: string): BpfMap => {
      const map = maps.get(name);
      if (!map) throw new BpfError(`${path} has no map ${name}`);
      return map;
    };
    return {
      programFd,
      program(name) {
        const other = native.objectFindProgram(obj, name);
        if (!other) throw new BpfError(`${path} has no program ${name}`);
        return orThrow(native.programFd(other), `program ${name}`);
      },
      map: get,
      perCpuMap(name) {
        const map = get(name);
        if (!(map instanceof PerCpuBpfMap)) throw new BpfError(`map ${name} is not per-CPU`);
        return map;
      },
      pin(dir) {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        for (const [name, map] of maps) pinFd(map.fd, join(dir, name));
        pinFd(programFd, join(dir, programName));
      },
      close() {
        native.objectClose(obj);
      },
    };
  } catch (error) {
    native.objectClose(obj);
    throw error;
  }
}

function wrapMaps(obj: Pointer): Map<string, BpfMap> {
  const maps = new Map<string, BpfMap>();
  for (let handle = native.objectNextMap(obj, null); handle; handle = native.objectNextMap(obj, handle)) {
    const name = native.mapName(handle) as string;
    if (name.startsWith('.')) continue; // .rodata, .bss: not ours to manage
    const Kind = PER_CPU_MAP_TYPES.includes(native.mapType(handle)) ? PerCpuBpfMap : BpfMap;
    maps.set(
      name,
      new Kind(
        name,
        orThrow(native.mapFd(handle), `map ${name}`),
        native.mapKeySize(handle),
        native.mapValueSize(handle),
        native.mapMaxEntries(handle),
      ),
    );
  }
  return maps;
}

function findMap(obj: Pointer, name: string): Pointer {
  const map = native.objectFindMap(obj, name);
  if (!map) throw new BpfError(`BPF object has no map ${name}`);
  return map;
}

function pinFd(fd: number, path: string): void {
  rmSync(path, { force: true });
  orThrow(native.objPin(fd, path), `pinning ${path}`);
}
