/**
 * The daemon's config file: YAML (so JSON too), validated field by field.
 * Every error is one line naming the file, line, column and field path:
 *
 *   /etc/lbctl/config.yaml:12:17: vips[1].backends[0].weight: invalid weight "65536": must be an integer from 0 to 65535
 *
 * yaml's document nodes carry source ranges, so validation walks the nodes
 * (not the plain JS value) and always knows where it is in the file.
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { LineCounter, type Node, isAlias, isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { DEFAULT_TABLE_SIZE, validateTableSize } from '../maglev/maglev.js';
import {
  formatListenAddress,
  formatVip,
  parseForward,
  parseVipHash,
  parseIpAddress,
  parseListenAddress,
  parseTunnelSources,
  parseVip,
  parseWeight,
} from './address.js';
import {
  ANNOUNCE_DEFAULTS,
  type AnnounceSettings,
  validateAnnounceProto,
  validateAnnounceTable,
  validateNeed,
  parseHoldDown,
  parseWithdrawDelay,
} from './announce.js';
import { parseDuration, parseKillSwitchTimeout } from './duration.js';
import {
  type BackendSpec,
  validateFamilies,
  DEFAULT_FORWARD,
  DEFAULT_WEIGHT,
  type DesiredState,
  type VipSpec,
  vipSettings,
} from './desired-state.js';
import {
  CHECK_LIMITS,
  type CheckOptions,
  type CheckSettings,
  checkOverrides,
  parseAllDownPolicy,
  validateCheckSettings,
  withCheckOverrides,
} from './check.js';
import { InputError, quote } from './errors.js';
import { DEFAULT_LIMITS } from './limits.js';
import { LOG_LEVELS, type LogLevel } from '../log-levels.js';

/** The same list as XDP_MODES in src/dataplane/xdp.ts, which cannot be imported here: it loads native code. */
export const CONFIG_XDP_MODES = ['native', 'generic'] as const;

export interface DaemonSettings {
  interface?: string;
  /** Outer source addresses of ipip packets, one per family (default: the interface's primary ones). */
  tunnelSources?: string[];
  /** How long the data plane keeps balancing without hearing from the daemon. */
  killSwitchTimeoutMs?: number;
  xdpMode?: (typeof CONFIG_XDP_MODES)[number];
  flowTableSize?: number;
  maxVips?: number;
  maxBackends?: number;
  /** Where the Prometheus endpoint and the status page listen; off without it. */
  metricsAddress?: string;
  logLevel?: LogLevel;
  /** Announce the VIPs to a fleet's router (docs/fleet.md); off without it. */
  announce?: AnnounceSettings;
}

export interface LoadedConfig {
  readonly settings: DaemonSettings;
  readonly state: DesiredState;
  readonly path: string;
}

/** [min, max] of the integer settings. */
const LIMITS = {
  flow_table_size: [1024, 67108864],
  max_vips: [1, 65536],
  max_backends: [16, 1048576],
} as const;

const TOP_FIELDS = [
  'interface',
  'xdp_mode',
  'tunnel_source',
  'kill_switch_timeout',
  'flow_table_size',
  'max_vips',
  'max_backends',
  'metrics_address',
  'log_level',
  'announce',
  'vips',
] as const;
const ANNOUNCE_FIELDS = ['table', 'proto', 'need', 'hold_down', 'withdraw_delay'] as const;
const CHECK_FIELDS = ['check', 'check_interval', 'check_timeout', 'rise', 'fall', 'check_dsr', 'check_port', 'check_status'] as const;
const VIP_FIELDS = ['vip', 'forward', 'table_size', ...CHECK_FIELDS, 'on_all_down', 'need', 'hash', 'backends'] as const;
const BACKEND_FIELDS = ['address', 'weight', 'forward', ...CHECK_FIELDS] as const;

/**
 * A config error. `message` (as passed) is the reason; Error.message is the
 * full line "FILE:LINE:COLUMN: FIELD: reason". Without a line the message is
 * the reason alone, which then names the file itself.
 */
export class ConfigError extends InputError {
  readonly reason: string;

  constructor(
    message: string,
    readonly path: string,
    readonly line?: number,
    readonly column?: number,
    readonly field?: string,
  ) {
    const where = line === undefined ? '' : `${path}:${line}:${column ?? 1}: `;
    super(`${where}${field ? `${field}: ` : ''}${message}`);
    this.reason = message;
  }
}

/**
 * Largest config file read (about 140,000 backends written one per line):
 * YAML parsing costs about 100 bytes of memory and a microsecond of CPU per
 * byte of file. A larger file is refused before it is parsed.
 */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** A config not read and checked within this long is refused (a file system that does not answer). */
export const CONFIG_LOAD_TIMEOUT_MS = 60_000;
/** Heap of the thread that parses a config: a file within MAX_CONFIG_BYTES needs less than half. */
const CONFIG_PARSER_HEAP_MB = 1024;

/**
 * Reads and checks a config file on a thread of its own, so that the
 * caller's event loop (the daemon's kill-switch, health checks, API) never
 * waits for it; the memory parsing takes is freed with the thread.
 */
export function loadConfigFile(path: string, timeoutMs = CONFIG_LOAD_TIMEOUT_MS): Promise<LoadedConfig> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./config-worker.js', import.meta.url), {
      workerData: { path },
      resourceLimits: { maxOldGenerationSizeMb: CONFIG_PARSER_HEAP_MB },
    });
    let settled = false;
    const settle = (done: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void worker.terminate();
      done();
    };
    const timer = setTimeout(
      () => settle(() => reject(new ConfigError(`reading config ${path} took more than ${timeoutMs / 1000} s: refused`, path))),
      timeoutMs,
    );
    worker.once('message', (answer: ConfigAnswer) =>
      settle(() => ('config' in answer ? resolve(answer.config) : reject(configErrorFrom(answer.error)))),
    );
    worker.once('error', (error: Error & { code?: string }) =>
      settle(() =>
        reject(
          error.code === 'ERR_WORKER_OUT_OF_MEMORY'
            ? new ConfigError(`config ${path} needs more than ${CONFIG_PARSER_HEAP_MB} MiB to parse: refused`, path)
            : error,
        ),
      ),
    );
    worker.once('exit', (code) => settle(() => reject(new Error(`the config reader stopped (exit code ${code}) before answering`))));
  });
}

/** What the config thread answers: the config, or the error's fields (an Error does not cross threads whole). */
export type ConfigAnswer =
  | { readonly config: LoadedConfig }
  | {
      readonly error: {
        readonly config: boolean;
        readonly message: string;
        readonly path?: string;
        readonly line?: number;
        readonly column?: number;
        readonly field?: string;
      };
    };

export function configErrorFields(error: unknown): Extract<ConfigAnswer, { error: unknown }>['error'] {
  if (error instanceof ConfigError) {
    const { reason: message, path, line, column, field } = error;
    return { config: true, message, path, ...(line !== undefined ? { line, column: column ?? 1 } : {}), ...(field ? { field } : {}) };
  }
  return { config: false, message: (error as Error).message ?? String(error) };
}

function configErrorFrom(fields: Extract<ConfigAnswer, { error: unknown }>['error']): Error {
  if (!fields.config) return new Error(fields.message);
  return new ConfigError(fields.message, fields.path ?? '', fields.line, fields.column, fields.field);
}

/**
 * The text of a config file: a regular file (not a FIFO or a device, which
 * could block a reader forever) of at most MAX_CONFIG_BYTES.
 */
export function readConfigText(path: string): string {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO does not wait for a writer.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    // "ENOENT: no such file or directory, open '/x'" -> "ENOENT: no such file or directory"
    const reason = (error as Error).message.replace(/, \w+ '.*'$/, '');
    throw new ConfigError(`cannot read config ${path}: ${reason}`, path);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ConfigError(`cannot read config ${path}: it is ${fileKind(stat)}, not a regular file`, path);
    const tooBig = () =>
      new ConfigError(`config ${path} is larger than ${MAX_CONFIG_BYTES} bytes (${MAX_CONFIG_BYTES / 1024 / 1024} MiB): refused`, path);
    if (stat.size > MAX_CONFIG_BYTES) throw tooBig();
    const buffer = Buffer.alloc(stat.size + 1);
    let length = 0;
    for (let n; length < buffer.length && (n = readSync(fd, buffer, length, buffer.length - length, null)) > 0;) length += n;
    // It grew since: read what it is now, within the limit.
    if (length > stat.size) {
      const grown = Buffer.alloc(MAX_CONFIG_BYTES + 1);
      buffer.copy(grown, 0, 0, length);
      for (let n; length < grown.length && (n = readSync(fd, grown, length, grown.length - length, null)) > 0;) length += n;
      if (length > MAX_CONFIG_BYTES) throw tooBig();
      return grown.toString('utf8', 0, length);
    }
    return buffer.toString('utf8', 0, length);
  } finally {
    closeSync(fd);
  }
}

function fileKind(stat: Stats): string {
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isDirectory()) return 'a directory';
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return 'a device';
  if (stat.isSocket()) return 'a socket';
  return 'not a file';
}

export function parseConfig(text: string, path: string): LoadedConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  const file: SourceFile = {
    path,
    linePos: (offset) => lineCounter.linePos(offset),
    resolve: (node) => (isAlias(node) ? (node.resolve(doc) ?? null) : (node as Node | null)),
  };
  const syntaxError = doc.errors[0];
  if (syntaxError) {
    new Cursor(file, null, '', syntaxError.pos[0]).fail(`YAML syntax error: ${syntaxError.message.split('\n')[0]}`);
  }
  const settings: DaemonSettings = {};
  if (doc.contents === null) return { settings, state: { vips: [] }, path }; // empty, or only comments

  const top = new Cursor(file, file.resolve(doc.contents), '', doc.contents.range?.[0] ?? 0).fields(TOP_FIELDS);
  if (top.interface) settings.interface = top.interface.interfaceName();
  if (top.xdp_mode) settings.xdpMode = top.xdp_mode.oneOf(CONFIG_XDP_MODES, 'XDP mode');
  if (top.tunnel_source) settings.tunnelSources = top.tunnel_source.stringOrList(parseTunnelSources);
  if (top.kill_switch_timeout) settings.killSwitchTimeoutMs = top.kill_switch_timeout.duration(parseKillSwitchTimeout);
  if (top.flow_table_size) settings.flowTableSize = top.flow_table_size.integer(...LIMITS.flow_table_size);
  if (top.max_vips) settings.maxVips = top.max_vips.integer(...LIMITS.max_vips);
  if (top.max_backends) settings.maxBackends = top.max_backends.integer(...LIMITS.max_backends);
  if (top.metrics_address) {
    const field = top.metrics_address;
    settings.metricsAddress = formatListenAddress(field.guard(() => parseListenAddress(field.string(), 'metrics address')));
  }
  if (top.log_level) settings.logLevel = top.log_level.oneOf(LOG_LEVELS, 'log level');
  if (top.announce) settings.announce = readAnnounce(top.announce);

  // Counted as they are read: a file with far too many is refused at the first one too many.
  const byDefault = (set: number | undefined) => (set === undefined ? ' (the default)' : '');
  const maxVips = settings.maxVips ?? DEFAULT_LIMITS.maxVips;
  const maxBackends = settings.maxBackends ?? DEFAULT_LIMITS.maxBackends;
  const tooManyVips = `too many VIPs: max_vips is ${maxVips}${byDefault(settings.maxVips)}`;
  const tooManyBackends =
    `too many backends across all VIPs: max_backends ${maxBackends}${byDefault(settings.maxBackends)}` +
    ` allows at most ${maxBackends - 1} (backend id 0 is reserved)`;
  const vips: VipSpec[] = [];
  const vipsSeen = new Map<string, Cursor>();
  let backendCount = 0;
  for (const vipAt of top.vips?.items() ?? []) {
    if (vips.length === maxVips) top.vips!.fail(tooManyVips);
    const fields = vipAt.fields(VIP_FIELDS);
    const vipField = vipAt.require(fields, 'vip');
    const vip = vipField.parse(parseVip);
    const key = formatVip(vip);
    const first = vipsSeen.get(key);
    if (first) vipField.fail(`duplicate VIP ${key} (first defined at ${first.where()})`);
    vipsSeen.set(key, vipField);
    const vipCheck = readCheck(fields);
    const settings = vipAt.guard(() =>
      vipSettings(vip, {
        forward: fields.forward?.parse(parseForward) ?? DEFAULT_FORWARD,
        tableSize: fields.table_size?.integerWith(validateTableSize) ?? DEFAULT_TABLE_SIZE,
        ...(vipCheck ? { check: vipCheck } : {}),
        ...(fields.on_all_down ? { onAllDown: fields.on_all_down.parse(parseAllDownPolicy) } : {}),
        ...(fields.need ? { need: fields.need.integerWith(validateNeed) } : {}),
        ...(fields.hash ? { hash: fields.hash.parse(parseVipHash) } : {}),
      }),
    );

    const backends: BackendSpec[] = [];
    const addressesSeen = new Map<string, Cursor>();
    for (const backendAt of fields.backends?.items() ?? []) {
      if (backendCount + backends.length === maxBackends - 1) top.vips!.fail(tooManyBackends);
      const b = backendAt.fields(BACKEND_FIELDS);
      const addressField = backendAt.require(b, 'address');
      const { family, address } = addressField.parse((s) => parseIpAddress(s, 'backend address'));
      const firstBackend = addressesSeen.get(address);
      if (firstBackend) addressField.fail(`duplicate backend ${address} (first defined at ${firstBackend.where()})`);
      addressesSeen.set(address, addressField);
      const weight = b.weight?.weight() ?? DEFAULT_WEIGHT;
      const forward = b.forward?.parse(parseForward);
      addressField.guard(() => validateFamilies(vip, { address, family, ...(forward ? { forward } : {}) }, settings.forward));
      const check = readCheck(b);
      if (check) backendAt.guard(() => validateCheckSettings(withCheckOverrides(settings.check, check), vip));
      backends.push({ address, family, weight, ...(forward ? { forward } : {}), ...(check ? { check } : {}) });
    }
    backendCount += backends.length;
    vips.push({ vip, ...settings, backends });
  }

  /** The health-check keys of a VIP or a backend, as overrides; undefined when there are none. */
  function readCheck(fields: Partial<Record<(typeof CHECK_FIELDS)[number], Cursor>>): Partial<CheckSettings> | undefined {
    if (!CHECK_FIELDS.some((name) => fields[name] !== undefined)) return undefined;
    const options: CheckOptions = {
      ...(fields.check ? { check: fields.check.string() } : {}),
      ...(fields.check_interval ? { intervalMs: fields.check_interval.duration((text) => parseDuration(text, 'check interval')) } : {}),
      ...(fields.check_timeout ? { timeoutMs: fields.check_timeout.duration((text) => parseDuration(text, 'check timeout')) } : {}),
      ...(fields.rise ? { rise: fields.rise.integer(CHECK_LIMITS.count.min, CHECK_LIMITS.count.max) } : {}),
      ...(fields.fall ? { fall: fields.fall.integer(CHECK_LIMITS.count.min, CHECK_LIMITS.count.max) } : {}),
      ...(fields.check_dsr ? { dsr: fields.check_dsr.boolean() } : {}),
      ...(fields.check_port ? { port: fields.check_port.integer(CHECK_LIMITS.port.min, CHECK_LIMITS.port.max) } : {}),
      ...(fields.check_status ? { expectStatus: fields.check_status.integer(CHECK_LIMITS.status.min, CHECK_LIMITS.status.max) } : {}),
    };
    const cursor = fields.check ?? Object.values(fields).find((f) => f !== undefined)!;
    return cursor.guard(() => checkOverrides(options));
  }

  return { settings, state: { vips }, path };
}

/** The announce block: an empty one (or none under the key) announces with the defaults. */
function readAnnounce(at: Cursor): AnnounceSettings {
  const empty = isScalar(at.node) && at.node.value === null;
  const fields = empty ? {} : at.fields(ANNOUNCE_FIELDS);
  return {
    table: fields.table?.integerWith(validateAnnounceTable) ?? ANNOUNCE_DEFAULTS.table,
    proto: fields.proto?.integerWith(validateAnnounceProto) ?? ANNOUNCE_DEFAULTS.proto,
    need: fields.need?.integerWith(validateNeed) ?? ANNOUNCE_DEFAULTS.need,
    holdDownMs: fields.hold_down?.duration(parseHoldDown) ?? ANNOUNCE_DEFAULTS.holdDownMs,
    withdrawDelayMs: fields.withdraw_delay?.duration(parseWithdrawDelay) ?? ANNOUNCE_DEFAULTS.withdrawDelayMs,
  };
}

interface SourceFile {
  readonly path: string;
  linePos(offset: number): { line: number; col: number };
  /** The node an alias stands for; other nodes as they are. */
  resolve(node: unknown): Node | null;
}

/** A node of the document with its field path ("vips[1].backends[0].weight") and source offset. */
class Cursor {
  constructor(
    private readonly file: SourceFile,
    readonly node: Node | null,
    readonly path: string,
    readonly offset: number,
  ) {}

  fail(reason: string): never {
    const { line, col } = this.file.linePos(this.offset);
    throw new ConfigError(reason, this.file.path, line, col, this.path || undefined);
  }

  /** "vips[0].vip, line 3", for messages about a second occurrence. */
  where(): string {
    return `${this.path}, line ${this.file.linePos(this.offset).line}`;
  }

  private child(node: unknown, path: string, fallbackOffset: number): Cursor {
    // An alias is located where it is used; a missing value (`{a}`) at its key.
    const offset = (node as Node | null)?.range?.[0] ?? fallbackOffset;
    return new Cursor(this.file, this.file.resolve(node), path, offset);
  }

  /** The fields of a mapping by name; unknown names are errors. */
  fields<K extends string>(allowed: readonly K[]): Partial<Record<K, Cursor>> {
    const map = this.node;
    if (!isMap(map)) this.fail(`expected a mapping with fields ${allowed.join(', ')}, got ${this.kind()}`);
    const fields: Partial<Record<string, Cursor>> = {};
    for (const pair of map.items) {
      const keyAt: Cursor = this.child(pair.key, this.path, this.offset);
      const name = isScalar(keyAt.node) ? keyAt.node.value : undefined;
      if (typeof name !== 'string') keyAt.fail(`field names must be strings, got ${keyAt.kind()}`);
      if (!(allowed as readonly string[]).includes(name)) {
        // A misspelt field is worth naming; anything else may be a line of
        // whatever file the path points to, and is not echoed.
        const named = /^[A-Za-z_][A-Za-z0-9_-]{0,40}$/.test(name) ? `unknown field ${quote(name)}` : 'a field that is not an lbctl setting';
        keyAt.fail(`${named} (expected ${allowed.join(', ')})`);
      }
      fields[name] = this.child(pair.value, this.path ? `${this.path}.${name}` : name, keyAt.offset);
    }
    return fields;
  }

  /** A field this mapping must have; the error points at the mapping. */
  require<K extends string>(fields: Partial<Record<K, Cursor>>, name: K): Cursor {
    return fields[name] ?? this.fail(`missing required field ${quote(name)}`);
  }

  /** The entries of a sequence; an empty value (every entry commented out) is an empty sequence. */
  items(): Cursor[] {
    const seq = this.node;
    if (isScalar(seq) && seq.value === null) return [];
    if (!isSeq(seq)) this.fail(`expected a sequence (a list of "- " entries), got ${this.kind()}`);
    return seq.items.map((item, i) => this.child(item, `${this.path}[${i}]`, this.offset));
  }

  string(): string {
    const value = isScalar(this.node) ? this.node.value : undefined;
    if (typeof value !== 'string') this.fail(`expected a string, got ${this.kind()}`);
    return value;
  }

  /** A string field read by one of the model's parsers. */
  parse<T>(parser: (text: string) => T): T {
    const text = this.string();
    return this.guard(() => parser(text));
  }

  /** One string or a sequence of strings, read together by a model parser. */
  stringOrList<T>(parser: (texts: string[]) => T): T {
    const texts = isSeq(this.node) ? this.items().map((item) => item.string()) : [this.string()];
    return this.guard(() => parser(texts));
  }

  /** A duration: "500ms", "2s", "5m", "1h30m" (a YAML number is read as the bare number it is: refused unless 0). */
  duration<T>(parser: (text: string) => T): T {
    const value = isScalar(this.node) ? this.node.value : undefined;
    if (typeof value === 'number') return this.guard(() => parser(String(value)));
    return this.parse(parser);
  }

  boolean(): boolean {
    const value = isScalar(this.node) ? this.node.value : undefined;
    if (typeof value !== 'boolean') this.fail(`expected true or false, got ${this.kind()}`);
    return value;
  }

  integerWith<T>(check: (n: number) => T): T {
    const value = isScalar(this.node) ? this.node.value : undefined;
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) this.fail(`expected an integer, got ${this.kind()}`);
    return this.guard(() => check(value));
  }

  integer(min: number, max: number): number {
    return this.integerWith((n) => {
      if (n < min || n > max) throw new InputError(`invalid value ${n}: must be an integer from ${min} to ${max}`);
      return n;
    });
  }

  /** A YAML integer or a numeric string, as on the command line. */
  weight(): number {
    const value = isScalar(this.node) ? this.node.value : undefined;
    if (typeof value !== 'number' && typeof value !== 'string') this.fail(`expected an integer weight, got ${this.kind()}`);
    return this.guard(() => parseWeight(value));
  }

  oneOf<T extends string>(choices: readonly T[], what: string): T {
    const value = this.string();
    if (!(choices as readonly string[]).includes(value)) this.fail(`invalid ${what} ${quote(value)}: expected ${choices.join(' or ')}`);
    return value as T;
  }

  interfaceName(): string {
    const value = this.string();
    // Linux allows IFNAMSIZ - 1 = 15 bytes, without "/" or whitespace.
    if (!/^[^\s/]{1,15}$/.test(value)) this.fail(`invalid interface name ${quote(value)}: expected a network interface name such as eth0`);
    return value;
  }

  /** Runs a model parser or check; its InputError becomes this field's error. */
  guard<T>(run: () => T): T {
    try {
      return run();
    } catch (error) {
      if (error instanceof InputError && !(error instanceof ConfigError)) this.fail(error.message);
      throw error;
    }
  }

  /** What the node holds, for "expected X, got Y". */
  private kind(): string {
    const node = this.node;
    if (isMap(node)) return 'a mapping';
    if (isSeq(node)) return 'a sequence';
    if (!isScalar(node)) return 'nothing';
    const value = node.value;
    if (value === null || value === undefined) return 'an empty value (null)';
    // The file as a whole is never echoed: it may be anything a path points
    // to (a symlink to /etc/shadow), and errors travel back to the caller.
    if (this.path === '' && typeof value === 'string') return 'a string (is this an lbctl config file?)';
    if (typeof value === 'string') return `the string ${quote(value)}`;
    return `${typeof value} ${quote(String(value)).slice(1, -1)}`;
  }
}
