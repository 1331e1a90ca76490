/**
 * Network-namespace lab for tests and the demo: brings test/lab/lab.sh labs
 * up and down, runs commands inside their namespaces and reads the backends'
 * nginx access logs. The hosts and addresses (LAB, TOPOLOGY) come from
 * vagrant/topology.json, like those of the Vagrant VMs.
 *
 *   const lab = await Lab.up({ decap: false });
 *   try {
 *     const r = await lab.exec('client', ['curl', '-sS', 'http://10.10.0.11/']);
 *     const r6 = await lab.exec('client', ['curl', '-sS', `http://[${LAB.backends[0].address6}]/`]);
 *   } finally {
 *     await lab.down();
 *   }
 *
 * Every lab that is up is torn down when the process exits, including on
 * SIGINT/SIGTERM/SIGHUP and uncaught exceptions; a lab whose owning process
 * was SIGKILLed is reaped by the next Lab.up() of any process.
 */
import { execFileSync, spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project root: the directory above test/lab/lab.sh (works from test/ and dist/test/). */
function findRoot(): string {
  if (process.env.LBCTL_ROOT) return resolve(process.env.LBCTL_ROOT);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'test', 'lab', 'lab.sh'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`lab: cannot find test/lab/lab.sh above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

export const ROOT = findRoot();
export const LAB_SH = join(ROOT, 'test', 'lab', 'lab.sh');

// ------------------------------------------------------------------ topology

/** vagrant/topology.json: the hosts of the lab and of the Vagrant VMs (docs/topology.md). */
export const TOPOLOGY_FILE = process.env.LBCTL_TOPOLOGY ?? join(ROOT, 'vagrant', 'topology.json');

export type Role = 'client' | 'balancer' | 'router' | 'backend';

export interface TopologyHost {
  /** Vagrant machine name and hostname. */
  name: string;
  role: Role;
  /** The lab's namespace is PREFIX-<namespace>. */
  namespace: string;
  /** Backends: how the balancer reaches them. */
  forward?: 'l2dsr' | 'ipip';
  /** Only in a fleet lab (Lab.up({ fleet: true })) and the VMs. */
  fleet?: boolean;
  /** In order: eth0, eth1, ... in the lab; address6 in the segment's subnet6. */
  interfaces: { segment: string; address: string; address6?: string }[];
  /** Both families. */
  routes: { to: string; via: string }[];
  /** Default routes in the lab (VMs keep Vagrant's management default route). */
  gateway?: string;
  gateway6?: string;
  vagrant?: { memory?: number; cpus?: number; autostart?: boolean };
}

export interface Topology {
  segments: Record<string, { subnet: string; subnet6?: string; bridge: string; network: string }>;
  vip_subnet: string;
  vips: string[];
  vip_subnet6?: string;
  vips6?: string[];
  backend_port: number;
  /** BGP numbers of a fleet: BIRD on every balancer and the router (docs/fleet.md). */
  fleet: { router_as: number; node_as: number; announce_table: number; announce_proto: number };
  mtu: Record<'lab' | 'vagrant', { client: number | null; interior: number | null }>;
  vagrant: { box: string; project_dir: string; memory: number; cpus: number };
  hosts: TopologyHost[];
}

export const TOPOLOGY = JSON.parse(readFileSync(TOPOLOGY_FILE, 'utf8')) as Topology;

/** The hosts of a lab: with `fleet`, also those marked "fleet" (a second balancer, a client behind the router). */
export function labHosts(fleet = false): TopologyHost[] {
  return TOPOLOGY.hosts.filter((h) => fleet || !h.fleet);
}

/** The one host of a role outside the fleet's own. */
function onlyHost(role: Role): TopologyHost {
  const hosts = labHosts().filter((h) => h.role === role);
  if (hosts.length !== 1) throw new Error(`lab: ${TOPOLOGY_FILE} must have exactly one ${role} outside the fleet, has ${hosts.length}`);
  return hosts[0]!;
}

function segmentOf(address: string): 'front' | 'remote' {
  const host = TOPOLOGY.hosts.find((h) => h.interfaces.some((i) => i.address === address));
  const segment = host?.interfaces.find((i) => i.address === address)?.segment;
  if (segment !== 'front' && segment !== 'remote') throw new Error(`lab: ${address} is on segment ${segment}, not front or remote`);
  return segment;
}

function segment(name: 'front' | 'remote') {
  const s = TOPOLOGY.segments[name];
  if (!s) throw new Error(`lab: ${TOPOLOGY_FILE} has no segment ${name}`);
  const prefixLength = Number(s.subnet.split('/')[1]);
  const router = onlyHost('router').interfaces.find((i) => i.segment === name);
  if (!router) throw new Error(`lab: the router has no interface on ${name}`);
  return {
    subnet: s.subnet,
    prefixLength,
    bridge: s.bridge,
    gateway: router.address,
    subnet6: s.subnet6 ?? '',
    prefixLength6: s.subnet6 ? Number(s.subnet6.split('/')[1]) : 0,
    gateway6: router.address6 ?? '',
  };
}

/** Prefix length of a segment's subnet (family 6: of its subnet6). */
export function segmentPrefixLength(name: string, family: 4 | 6 = 4): number {
  const s = TOPOLOGY.segments[name];
  if (!s) throw new Error(`lab: ${TOPOLOGY_FILE} has no segment ${name}`);
  const subnet = family === 6 ? s.subnet6 : s.subnet;
  if (!subnet) throw new Error(`lab: segment ${name} has no IPv${family} subnet`);
  return Number(subnet.split('/')[1]);
}

/** "fd00:10::1" -> its 8 groups as numbers; undefined unless an IPv6 address. */
function ipv6Groups(address: string): number[] | undefined {
  if (!/^[0-9a-f:]+$/i.test(address)) return undefined;
  const halves = address.split('::');
  if (halves.length > 2) return undefined;
  const part = (s: string | undefined) => (s ? s.split(':') : []);
  const left = part(halves[0]);
  const right = part(halves[1]);
  const groups = halves.length === 2 ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  if (groups.length !== 8 || !groups.every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return undefined;
  return groups.map((g) => parseInt(g, 16));
}

/** The address lies in the prefix (either family; false across families). */
export function insidePrefix(address: string, cidr: string): boolean {
  const [net, len] = cidr.split('/') as [string, string];
  const bits = Number(len);
  if (net.includes(':') !== address.includes(':')) return false;
  if (net.includes(':')) {
    const a = ipv6Groups(address);
    const n = ipv6Groups(net);
    if (!a || !n) return false;
    return a.every((g, i) => {
      const size = 2 ** (16 - Math.min(16, Math.max(0, bits - 16 * i)));
      return Math.floor(g / size) === Math.floor(n[i]! / size);
    });
  }
  const n = (a: string) => a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const size = 2 ** (32 - bits);
  return Math.floor(n(address) / size) === Math.floor(n(net) / size);
}

/**
 * A fleet's BGP arguments: a balancer peers with the router's addresses on
 * its segment, the router with any node on the balancers' segments.
 */
function fleetArgs(host: TopologyHost): string[] {
  const { fleet } = TOPOLOGY;
  const router = TOPOLOGY.hosts.find((h) => h.role === 'router')!;
  if (host.role === 'balancer') {
    const gateway = router.interfaces.find((i) => i.segment === host.interfaces[0]!.segment)!;
    return [
      ...['--bgp-as', String(fleet.node_as), '--bgp-peer', gateway.address],
      ...(gateway.address6 ? ['--bgp-peer', gateway.address6] : []),
      ...['--bgp-peer-as', String(fleet.router_as)],
      ...['--announce-table', String(fleet.announce_table), '--announce-proto', String(fleet.announce_proto)],
    ];
  }
  if (host.role === 'router') {
    const segments = [...new Set(TOPOLOGY.hosts.filter((h) => h.role === 'balancer').map((h) => h.interfaces[0]!.segment))].sort();
    return [
      ...['--bgp-as', String(fleet.router_as)],
      ...segments.flatMap((name) => {
        const s = TOPOLOGY.segments[name]!;
        return ['--bgp-nodes', s.subnet, ...(s.subnet6 ? ['--bgp-nodes', s.subnet6] : [])];
      }),
      ...['--bgp-peer-as', String(fleet.node_as)],
    ];
  }
  return [];
}

/**
 * The role script's arguments that come from the topology (test/lab/topology.jq
 * and the Vagrantfile derive the same): --name (backends), per interface
 * --interface and --address (IPv4, then IPv6), --route per route (both
 * families; then /32 and /128 routes for VIPs outside the VIP subnets, on
 * hosts that route those), --vips (backends: IPv4 then IPv6 VIPs), and in a
 * fleet the BGP arguments of balancers and the router. `iface` names the
 * interface at an index: eth0, eth1 in the lab; "auto" in a VM.
 */
export function topologyArgs(
  host: TopologyHost,
  iface: (index: number) => string,
  vips: readonly string[] = TOPOLOGY.vips,
  vips6: readonly string[] = TOPOLOGY.vips6 ?? [],
  fleet = false,
): string[] {
  const args: string[] = [];
  if (host.role === 'backend') args.push('--name', host.name);
  host.interfaces.forEach((i, index) => {
    args.push('--interface', iface(index), '--address', `${i.address}/${segmentPrefixLength(i.segment)}`);
    if (i.address6) args.push('--address', `${i.address6}/${segmentPrefixLength(i.segment, 6)}`);
  });
  for (const r of host.routes) args.push('--route', `${r.to}=${r.via}`);
  const vipRoute = host.routes.find((r) => r.to === TOPOLOGY.vip_subnet);
  if (vipRoute) for (const v of vips) if (!insidePrefix(v, TOPOLOGY.vip_subnet)) args.push('--route', `${v}/32=${vipRoute.via}`);
  const vipRoute6 = TOPOLOGY.vip_subnet6 ? host.routes.find((r) => r.to === TOPOLOGY.vip_subnet6) : undefined;
  if (vipRoute6) for (const v of vips6) if (!insidePrefix(v, TOPOLOGY.vip_subnet6!)) args.push('--route', `${v}/128=${vipRoute6.via}`);
  if (host.role === 'backend') args.push('--vips', [...vips, ...vips6].join(','));
  if (fleet) args.push(...fleetArgs(host));
  return args;
}

function address6(host: TopologyHost, index = 0): string {
  const a = host.interfaces[index]?.address6;
  if (!a) throw new Error(`lab: ${TOPOLOGY_FILE}: ${host.name} has no address6 on interface ${index}`);
  return a;
}

/** The lab's addresses and names, from vagrant/topology.json. */
export const LAB = {
  front: segment('front'),
  remote: segment('remote'),
  vipSubnet: TOPOLOGY.vip_subnet,
  vipSubnet6: TOPOLOGY.vip_subnet6 ?? '',
  client: onlyHost('client').interfaces[0]!.address,
  client6: address6(onlyHost('client')),
  balancer: onlyHost('balancer').interfaces[0]!.address,
  balancer6: address6(onlyHost('balancer')),
  router: {
    front: onlyHost('router').interfaces.find((i) => i.segment === 'front')!.address,
    remote: onlyHost('router').interfaces.find((i) => i.segment === 'remote')!.address,
    front6: onlyHost('router').interfaces.find((i) => i.segment === 'front')!.address6 ?? '',
    remote6: onlyHost('router').interfaces.find((i) => i.segment === 'remote')!.address6 ?? '',
  },
  backends: TOPOLOGY.hosts
    .filter((h) => h.role === 'backend')
    .map((h) => ({
      name: h.name,
      namespaceSuffix: h.namespace,
      address: h.interfaces[0]!.address,
      address6: address6(h),
      segment: segmentOf(h.interfaces[0]!.address),
      forward: h.forward ?? (segmentOf(h.interfaces[0]!.address) === 'front' ? 'l2dsr' : 'ipip'),
    })),
  /** IPv4 VIPs (vips6: the IPv6 ones). */
  vips: [...TOPOLOGY.vips],
  vips6: [...(TOPOLOGY.vips6 ?? [])],
  /** Interface of every host (the router also has eth1 on the remote segment). */
  interface: 'eth0',
  /** The client keeps 1500; everything else has room for the IP-in-IP header (IPv4 or IPv6). */
  mtu: { client: TOPOLOGY.mtu.lab.client ?? 1500, interior: TOPOLOGY.mtu.lab.interior ?? 1600 },
  backendPort: TOPOLOGY.backend_port,
  runtimeBase: '/run/lbctl-lab',
  /** What a fleet lab (Lab.up({ fleet: true })) adds. */
  fleet: {
    /** Every balancer, the lab's first one (namespace lb) included. */
    balancers: TOPOLOGY.hosts
      .filter((h) => h.role === 'balancer')
      .map((h) => ({ name: h.name, namespaceSuffix: h.namespace, address: h.interfaces[0]!.address, address6: address6(h) })),
    /** The client behind the router, which reaches the VIPs through it. */
    client: fleetClient().interfaces[0]!.address,
    client6: address6(fleetClient()),
    clientNamespace: fleetClient().namespace,
    routerAs: TOPOLOGY.fleet.router_as,
    nodeAs: TOPOLOGY.fleet.node_as,
    announceTable: TOPOLOGY.fleet.announce_table,
    announceProto: TOPOLOGY.fleet.announce_proto,
  },
} as const;

function fleetClient(): TopologyHost {
  const clients = TOPOLOGY.hosts.filter((h) => h.fleet && h.role === 'client');
  if (clients.length !== 1) throw new Error(`lab: ${TOPOLOGY_FILE} must have exactly one fleet client, has ${clients.length}`);
  return clients[0]!;
}

export interface LabBackend {
  readonly name: string;
  readonly namespaceSuffix: string;
  readonly address: string;
  readonly address6: string;
  readonly segment: 'front' | 'remote';
  readonly forward: 'l2dsr' | 'ipip';
}

/** Namespace suffixes, and aliases accepted by ns()/exec()/spawn(). */
const ROLES: readonly string[] = ['sw', ...TOPOLOGY.hosts.map((h) => h.namespace)];
/** switch, and every host's name (balancer -> lb). */
const ROLE_ALIASES: Record<string, string> = { switch: 'sw', ...Object.fromEntries(TOPOLOGY.hosts.map((h) => [h.name, h.namespace])) };

export interface LabOptions {
  /** Namespace-name prefix: a lower-case letter then up to 11 letters or digits. Default: unique `lbt` + 5 chars. */
  prefix?: string;
  /** Attach the XDP decapsulator on the backends (`lbctl decap attach`). Default true. */
  decap?: boolean;
  /** IPv4 VIPs the backends hold on lo. Default LAB.vips. */
  vips?: string[];
  /** IPv6 VIPs the backends hold on lo. Default LAB.vips6. */
  vips6?: string[];
  /**
   * MTU of the lab interfaces other than the client's (which keeps
   * LAB.mtu.client, 1500). Default LAB.mtu.interior (1600: room for the tunnel
   * header). 1500 makes every link 1500: a full-size client packet no longer
   * fits once encapsulated, and path MTU discovery through the balancer matters.
   */
  mtu?: number;
  /** Give up bringing the lab up after this long (it is then torn down). Default 60 s. */
  timeoutMs?: number;
  /**
   * Also the topology's fleet hosts (a second balancer, a client behind the
   * router) and BIRD on every balancer and the router (lab.sh up --fleet).
   * Default false.
   */
  fleet?: boolean;
}

export interface ExecOptions {
  timeoutMs?: number;
  /** Written to the command's stdin. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

// ------------------------------------------------------ process-wide cleanup

/** Labs that are up or coming up, by prefix; the child is a running `lab.sh up`. */
const live = new Map<string, { upChild?: ChildProcess }>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
let handlersInstalled = false;

/** Synchronous teardown of every live lab (the only kind 'exit' handlers can do). */
function teardownAllSync(): void {
  for (const [prefix, entry] of live) {
    live.delete(prefix);
    if (entry.upChild && entry.upChild.exitCode === null && entry.upChild.signalCode === null) {
      // Its trap tears down what it built; `down` waits for it on the lab's lock.
      entry.upChild.kill('SIGTERM');
    }
    try {
      execFileSync(LAB_SH, ['down', prefix], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 60_000 });
    } catch (err) {
      process.stderr.write(`lab: teardown of ${prefix} failed (${(err as Error).message}); run: ${LAB_SH} down ${prefix}\n`);
    }
  }
}

function onExit(): void {
  teardownAllSync();
}

function onSignal(signal: NodeJS.Signals): void {
  teardownAllSync();
  uninstallHandlers();
  // Without other listeners, die of the signal as if we had never caught it.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstallHandlers(): void {
  if (!handlersInstalled) return;
  handlersInstalled = false;
  process.removeListener('exit', onExit);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
}

/** The process exists (EPERM: it does, someone else's). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Tears down labs whose owning process died without cleaning up (SIGKILL, crash of node itself). */
async function reapOrphans(): Promise<void> {
  let entries: string[];
  try {
    entries = readdirSync(LAB.runtimeBase);
  } catch {
    return;
  }
  for (const prefix of entries) {
    if (live.has(prefix) || !/^[a-z][a-z0-9]{0,11}$/.test(prefix)) continue;
    let owner: number;
    try {
      owner = Number(readFileSync(join(LAB.runtimeBase, prefix, 'owner'), 'utf8').trim());
    } catch {
      continue; // not started by lab.ts (e.g. a demo), or still coming up
    }
    if (!Number.isInteger(owner) || owner <= 0 || pidAlive(owner)) continue;
    await run(LAB_SH, ['down', prefix], { timeoutMs: 60_000 }).catch(() => undefined);
  }
}

// ------------------------------------------------------------------ helpers

function run(file: string, args: string[], opts: ExecOptions & { onSpawn?: (c: ChildProcess) => void } = {}): Promise<ExecResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawnChild(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    opts.onSpawn?.(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    let timedOut = false;
    const timer =
      opts.timeoutMs !== undefined && opts.timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs)
        : undefined;
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (timedOut) {
        const e = new Error(`${[file, ...args].join(' ')}: timed out after ${opts.timeoutMs} ms\n${stderr}`);
        Object.assign(e, { stdout, stderr });
        reject(e);
        return;
      }
      resolvePromise({ stdout, stderr, code: code ?? 128 + (signal ? signalNumber(signal) : 0) });
    });
    child.stdin!.on('error', () => undefined); // the command may not read its input
    child.stdin!.end(opts.input ?? '');
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  return (osConstants.signals as Record<string, number>)[signal] ?? 0;
}

function randomPrefix(): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
  const bytes = randomBytes(5);
  let s = 'lbt';
  for (const b of bytes) s += alphabet[b % 36];
  return s;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------- Lab

export class Lab {
  readonly prefix: string;
  readonly decap: boolean;
  /** Brought up with the fleet's hosts and BIRD (LabOptions.fleet). */
  readonly fleet: boolean;
  readonly vips: readonly string[];
  readonly vips6: readonly string[];
  /** /run/lbctl-lab/PREFIX: per-backend nginx prefixes (be1/…), provisioning logs. */
  readonly runtimeDir: string;
  private readonly children = new Set<ChildProcess>();
  private downPromise: Promise<void> | undefined;

  private constructor(prefix: string, decap: boolean, fleet: boolean, vips: readonly string[], vips6: readonly string[]) {
    this.prefix = prefix;
    this.decap = decap;
    this.fleet = fleet;
    this.vips = vips;
    this.vips6 = vips6;
    this.runtimeDir = join(LAB.runtimeBase, prefix);
  }

  static async up(options: LabOptions = {}): Promise<Lab> {
    const prefix = options.prefix ?? randomPrefix();
    if (!/^[a-z][a-z0-9]{0,11}$/.test(prefix)) {
      throw new Error(`lab: bad prefix "${prefix}": a lower-case letter then up to 11 letters or digits`);
    }
    if (live.has(prefix)) throw new Error(`lab: a lab with prefix ${prefix} is already up in this process`);
    const decap = options.decap ?? true;
    const vips = options.vips ?? [...LAB.vips];
    const vips6 = options.vips6 ?? [...LAB.vips6];
    await reapOrphans();

    const args = ['up', prefix, '--owner', String(process.pid)];
    if (!decap) args.push('--no-decap');
    if (options.fleet) args.push('--fleet');
    if (options.vips) args.push('--vips', vips.join(','));
    if (options.vips6) args.push('--vips6', vips6.length > 0 ? vips6.join(',') : 'none');
    if (options.mtu !== undefined) args.push('--mtu', String(options.mtu));

    const entry: { upChild?: ChildProcess } = {};
    live.set(prefix, entry);
    installHandlers();
    let result: ExecResult;
    try {
      result = await run(LAB_SH, args, {
        timeoutMs: options.timeoutMs ?? 60_000,
        onSpawn: (c) => (entry.upChild = c),
      });
    } catch (err) {
      // Timed out (SIGKILLed: its trap did not run) or could not start.
      await run(LAB_SH, ['down', prefix], { timeoutMs: 60_000 }).catch(() => undefined);
      forget(prefix);
      throw new Error(`lab: up ${prefix} failed: ${(err as Error).message}`);
    }
    delete entry.upChild;
    if (result.code !== 0) {
      // lab.sh tore down what it had created; make sure.
      await run(LAB_SH, ['down', prefix], { timeoutMs: 60_000 }).catch(() => undefined);
      forget(prefix);
      throw new Error(`lab: up ${prefix} failed (exit ${result.code}):\n${result.stderr.trim()}`);
    }
    return new Lab(prefix, decap, options.fleet ?? false, vips, vips6);
  }

  /** Namespace name of a role: sw, client, lb, router, be1..be5 (aliases: switch, and the host names of topology.json, e.g. balancer). */
  ns(role: string): string {
    const r = ROLE_ALIASES[role] ?? role;
    if (!(ROLES as readonly string[]).includes(r)) {
      throw new Error(`lab: unknown role "${role}" (one of ${ROLES.join(', ')})`);
    }
    if (!this.fleet && TOPOLOGY.hosts.some((h) => h.namespace === r && h.fleet)) {
      throw new Error(`lab: ${role} exists only in a fleet lab (Lab.up({ fleet: true }))`);
    }
    return `${this.prefix}-${r}`;
  }

  /** argv that runs a command in a role's namespace (network namespace only: /sys/fs/bpf stays visible). */
  nsArgv(role: string, argv: string[]): string[] {
    if (argv.length === 0) throw new Error('lab: empty command');
    return ['nsenter', `--net=/run/netns/${this.ns(role)}`, '--', ...argv];
  }

  /** Runs a command to completion in a role's namespace; rejects only if it cannot start or times out (default 30 s). */
  exec(role: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.assertUp();
    const [file, ...args] = this.nsArgv(role, argv);
    return run(file!, args, { ...opts, timeoutMs: opts.timeoutMs ?? 30_000 });
  }

  /** Starts a long-running process in a role's namespace; down() stops it (SIGTERM, then SIGKILL). */
  spawn(role: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    this.assertUp();
    const [file, ...args] = this.nsArgv(role, argv);
    const child = spawnChild(file!, args, opts);
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    child.on('error', () => this.children.delete(child));
    return child;
  }

  backend(name: string): LabBackend {
    const b = LAB.backends.find((x) => x.name === name);
    if (!b) throw new Error(`lab: unknown backend "${name}"`);
    return b;
  }

  /** Lines of a backend's nginx access log; each starts with the client address nginx saw. */
  async backendAccessLog(name: string): Promise<string[]> {
    this.backend(name);
    let text: string;
    try {
      text = await readFile(join(this.runtimeDir, name, 'logs', 'access.log'), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return text.split('\n').filter((l) => l.length > 0);
  }

  /**
   * The lines a backend logs after its first `seen` lines, once there are at
   * least `count` of them. nginx writes a line after the response has gone,
   * so a client can have its answer before the line is there: waits up to
   * `timeoutMs`, then returns what there is.
   */
  async backendAccessLogAfter(name: string, seen: number, count = 1, timeoutMs = 3000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const fresh = (await this.backendAccessLog(name)).slice(seen);
      if (fresh.length >= count || Date.now() >= deadline) return fresh;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** The arguments lab.sh passed to a host's role script (PREFIX/provision-NS.args). */
  async provisionArgs(role: string): Promise<string[]> {
    const ns = this.ns(role).slice(this.prefix.length + 1);
    const text = await readFile(join(this.runtimeDir, `provision-${ns}.args`), 'utf8');
    return text.split('\0').slice(0, -1);
  }

  /** What a host's role script printed while lab.sh provisioned it (PREFIX/provision-NS.log). */
  async provisionLog(role: string): Promise<string[]> {
    const ns = this.ns(role).slice(this.prefix.length + 1);
    const text = await readFile(join(this.runtimeDir, `provision-${ns}.log`), 'utf8');
    return text.split('\n').filter((l) => l.length > 0);
  }

  /** Stops spawned processes and deletes the lab. Idempotent; concurrent calls share one teardown. */
  down(): Promise<void> {
    this.downPromise ??= this.doDown();
    return this.downPromise;
  }

  get isUp(): boolean {
    return this.downPromise === undefined;
  }

  private async doDown(): Promise<void> {
    const running = [...this.children].filter((c) => c.exitCode === null && c.signalCode === null);
    for (const c of running) c.kill('SIGTERM');
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline && running.some((c) => c.exitCode === null && c.signalCode === null)) await sleep(20);
    for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    // lab.sh down also kills whatever else runs in the namespaces.
    let failure: string | undefined;
    try {
      const r = await run(LAB_SH, ['down', this.prefix], { timeoutMs: 60_000 });
      if (r.code !== 0) failure = `exit ${r.code}:\n${r.stderr.trim()}`;
    } catch (err) {
      failure = (err as Error).message;
    }
    if (failure !== undefined) {
      // Stay registered (the exit handler tries again) and let a later down() retry.
      this.downPromise = undefined;
      throw new Error(`lab: down ${this.prefix} failed (${failure})`);
    }
    forget(this.prefix);
  }

  private assertUp(): void {
    if (this.downPromise) throw new Error(`lab ${this.prefix} is down`);
  }
}

function forget(prefix: string): void {
  live.delete(prefix);
  if (live.size === 0) uninstallHandlers();
}
