/**
 * The system libbpf (libbpf.so.1), called through koffi, plus the few
 * adapters of native/libbpf_adapters.c (build/native/liblbctl.so).
 * Functions here return raw results; the typed wrappers in this folder turn
 * them into exceptions. What only tests and benchmarks call is bound in
 * test/support/native-testing.ts, from a library that is not installed.
 */
import koffi from 'koffi';
import { constants as osConstants } from 'node:os';
import { NATIVE_SHIM } from '../paths.js';

const libbpf = koffi.load('libbpf.so.1');
const shim = koffi.load(NATIVE_SHIM);

koffi.opaque('bpf_object');
koffi.opaque('bpf_map');
koffi.opaque('bpf_program');
koffi.opaque('btf');

export type Pointer = unknown;

export const native = {
  objectOpenFile: libbpf.func('bpf_object *bpf_object__open_file(const char *path, void *opts)'),
  objectLoad: libbpf.func('int bpf_object__load(bpf_object *obj)'),
  objectClose: libbpf.func('void bpf_object__close(bpf_object *obj)'),
  objectFindMap: libbpf.func('bpf_map *bpf_object__find_map_by_name(bpf_object *obj, const char *name)'),
  objectFindProgram: libbpf.func('bpf_program *bpf_object__find_program_by_name(bpf_object *obj, const char *name)'),
  objectNextMap: libbpf.func('bpf_map *bpf_object__next_map(bpf_object *obj, bpf_map *prev)'),
  mapName: libbpf.func('const char *bpf_map__name(bpf_map *map)'),
  mapType: libbpf.func('int bpf_map__type(bpf_map *map)'),
  mapFd: libbpf.func('int bpf_map__fd(bpf_map *map)'),
  mapSetMaxEntries: libbpf.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)'),
  mapReuseFd: libbpf.func('int bpf_map__reuse_fd(bpf_map *map, int fd)'),
  mapKeySize: libbpf.func('uint32_t bpf_map__key_size(bpf_map *map)'),
  mapValueSize: libbpf.func('uint32_t bpf_map__value_size(bpf_map *map)'),
  mapMaxEntries: libbpf.func('uint32_t bpf_map__max_entries(bpf_map *map)'),
  programFd: libbpf.func('int bpf_program__fd(bpf_program *prog)'),
  programSetLogLevel: libbpf.func('int bpf_program__set_log_level(bpf_program *prog, uint32_t level)'),

  mapLookup: libbpf.func('int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)'),
  mapUpdate: libbpf.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  mapDelete: libbpf.func('int bpf_map_delete_elem(int fd, const void *key)'),
  mapNextKey: libbpf.func('int bpf_map_get_next_key(int fd, const void *key, _Out_ void *next_key)'),
  mapFdById: libbpf.func('int bpf_map_get_fd_by_id(uint32_t id)'),
  progFdById: libbpf.func('int bpf_prog_get_fd_by_id(uint32_t id)'),
  objPin: libbpf.func('int bpf_obj_pin(int fd, const char *path)'),
  objGet: libbpf.func('int bpf_obj_get(const char *path)'),
  numPossibleCpus: libbpf.func('int libbpf_num_possible_cpus(void)'),
  xdpDetach: libbpf.func('int bpf_xdp_detach(int ifindex, uint32_t flags, void *opts)'),

  btfParse: libbpf.func('btf *btf__parse(const char *path, void *btf_ext)'),
  btfFree: libbpf.func('void btf__free(btf *btf)'),
  btfFindByNameKind: libbpf.func('int btf__find_by_name_kind(btf *btf, const char *name, uint32_t kind)'),
  btfTypeById: libbpf.func('const void *btf__type_by_id(btf *btf, uint32_t id)'),
  btfNameByOffset: libbpf.func('const char *btf__name_by_offset(btf *btf, uint32_t offset)'),
  btfResolveSize: libbpf.func('int64_t btf__resolve_size(btf *btf, uint32_t type_id)'),

  logCapture: shim.func('void lbctl_log_capture(void)'),
  logTake: shim.func('size_t lbctl_log_take(_Out_ uint8_t *out, size_t capacity)'),
  mapCreate: shim.func(
    'int lbctl_map_create(int type, const char *name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, uint32_t flags)',
  ),
  mapUpdateBatch: shim.func(
    'int lbctl_map_update_batch(int fd, const void *keys, const void *values, uint32_t count, uint64_t elem_flags)',
  ),
  arrayFillU32: shim.func('int lbctl_array_fill_u32(int fd, const uint32_t *values, uint32_t count)'),
  mapLookupBatch: shim.func(
    'int lbctl_map_lookup_batch(int fd, const void *in_batch, _Out_ uint8_t *out_batch, _Out_ uint8_t *keys, _Out_ uint8_t *values, _Inout_ uint32_t *count)',
  ),
  /** One BPF_PROG_TEST_RUN, repeat 1 (src/dataplane/xdp.ts testRun). */
  testRun: shim.func(
    'int lbctl_test_run(int prog_fd, const void *in, uint32_t in_len, _Out_ uint8_t *out, _Inout_ uint32_t *out_len, _Out_ uint32_t *retval)',
  ),
  xdpAttach: shim.func('int lbctl_xdp_attach(int ifindex, int prog_fd, uint32_t flags, int old_prog_fd)'),
  xdpQuery: shim.func(
    'int lbctl_xdp_query(int ifindex, _Out_ uint32_t *drv_prog_id, _Out_ uint32_t *skb_prog_id, _Out_ uint32_t *attach_mode)',
  ),
  progInfo: shim.func('int lbctl_prog_info(int fd, _Out_ uint32_t *id, _Out_ uint8_t *name, uint32_t name_capacity)'),
  mapInfo: shim.func('int lbctl_map_info(int fd, _Out_ uint32_t *fields, _Out_ uint8_t *name, uint32_t name_capacity)'),
  mapFlags: libbpf.func('uint32_t bpf_map__map_flags(bpf_map *map)'),
  close: koffi.load('libc.so.6').func('int close(int fd)'),
};

native.logCapture();

/** What libbpf printed (warnings, verifier logs) since the last call. */
export function takeLibbpfLog(): string {
  const buf = Buffer.alloc(256 * 1024);
  const n = Number(native.logTake(buf, buf.length));
  return buf.subarray(0, n).toString('utf8');
}

export class BpfError extends Error {
  override readonly name = 'BpfError';
  constructor(
    message: string,
    readonly errno?: number,
    readonly log?: string,
  ) {
    super(message);
  }
}

/** libbpf returns -errno; turns that into a readable error. */
export function orThrow(result: number, what: string): number {
  if (result >= 0) return result;
  throw new BpfError(`${what}: ${errnoText(-result)}`, -result);
}

export function errnoText(errno: number): string {
  const name = Object.entries(osConstants.errno).find(([, value]) => value === errno)?.[0];
  return name ? `${name} (errno ${errno})` : `errno ${errno}`;
}

export function closeFd(fd: number): void {
  if (fd >= 0) native.close(fd);
}

export const BPF_MAP_TYPE = {
  HASH: 1,
  ARRAY: 2,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  ARRAY_OF_MAPS: 12,
} as const;
export const PER_CPU_MAP_TYPES: readonly number[] = [BPF_MAP_TYPE.PERCPU_HASH, BPF_MAP_TYPE.PERCPU_ARRAY, BPF_MAP_TYPE.LRU_PERCPU_HASH];
export const BPF_F_INNER_MAP = 1 << 12;
export const BPF_F_MMAPABLE = 1 << 10;
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const XDP_FLAGS = { UPDATE_IF_NOEXIST: 1 << 0, SKB_MODE: 1 << 1, DRV_MODE: 1 << 2, REPLACE: 1 << 4 } as const;
export const XDP_ATTACHED = { NONE: 0, DRV: 1, SKB: 2, HW: 3, MULTI: 4 } as const;
export const BTF_KIND_STRUCT = 4;
export const BTF_KIND_ENUM = 6;

export interface MapInfo {
  readonly id: number;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  readonly name: string;
}

export function mapInfo(fd: number): MapInfo {
  const fields = new Uint32Array(6);
  const name = Buffer.alloc(64);
  orThrow(native.mapInfo(fd, fields, name, name.length), 'reading map info');
  const [id, type, keySize, valueSize, maxEntries, flags] = fields as unknown as number[];
  return {
    id: id!,
    type: type!,
    keySize: keySize!,
    valueSize: valueSize!,
    maxEntries: maxEntries!,
    flags: flags!,
    name: name.subarray(0, name.indexOf(0)).toString(),
  };
}
