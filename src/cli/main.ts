/** lbctl: the command line. Daemon commands talk to it over its socket. */
import { fork, spawnSync } from 'node:child_process';
import { mkdirSync, openSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { call, DaemonUnreachableError } from '../api/client.js';
import { type BackendSummary, type ChangeResult, type VipSummary } from '../api/protocol.js';
import { DEFAULT_BPFFS, DEFAULT_SOCKET, DEFAULT_STATE_DIR } from '../paths.js';
import { FORWARD_METHODS, type ForwardMethod, parseForward, parseListenAddress, parseWeight } from '../model/address.js';
import { LOG_LEVELS } from '../model/config.js';
import { InputError } from '../model/errors.js';
import { parseDuration, parseKillSwitchTimeout } from '../model/duration.js';
import { ALL_DOWN_POLICIES, CHECK_LIMITS, type CheckOptions, DEFAULT_ALL_DOWN, parseAllDownPolicy, parseCheck } from '../model/check.js';
import { VERSION } from '../version.js';
import { underSystemd } from '../daemon/systemd.js';
import { restartPlace } from '../daemon/restart-place.js';
import { age, compact, formatExplain, formatKillSwitch, formatPreview, formatStats, percent, table } from './format.js';

const socketOption = () => new Option('--socket <path>', 'daemon socket').env('LBCTL_SOCKET').default(DEFAULT_SOCKET);
const jsonOption = () => new Option('--json', 'machine-readable output');
const forwardOption = (what: string) => new Option('--forward <method>', `forwarding method ${what}`).choices(FORWARD_METHODS);

function integer(name: string, min: number, max: number) {
  return (text: string): number => {
    const value = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max)
      throw new InputError(`invalid ${name} "${text}": must be an integer from ${min} to ${max}`);
    return value;
  };
}

/** The health-check flags, the same on `vip add` and (as overrides) on `backend add`. */
function withCheckOptions(command: Command, whose: string): Command {
  return command
    .option('--check <kind>', `health check ${whose}: tcp, http:/PATH, https:/PATH, dns:NAME, udp or none`)
    .option('--check-interval <duration>', `time between checks ${whose} (default 2s)`)
    .option('--check-timeout <duration>', `a check slower than this fails (default 1s)`)
    .option(
      '--rise <n>',
      'passed checks in a row that bring a backend back (default 2)',
      integer('rise', CHECK_LIMITS.count.min, CHECK_LIMITS.count.max),
    )
    .option(
      '--fall <n>',
      'failed checks in a row that take a backend out (default 3)',
      integer('fall', CHECK_LIMITS.count.min, CHECK_LIMITS.count.max),
    )
    .option('--check-port <port>', "port to check (default the VIP's)", integer('check port', CHECK_LIMITS.port.min, CHECK_LIMITS.port.max))
    .option(
      '--check-status <code>',
      'http(s): the status expected (default any 2xx or 3xx)',
      integer('expected status', CHECK_LIMITS.status.min, CHECK_LIMITS.status.max),
    )
    .option('--check-dsr', 'also check through the VIP path (the forwarding the data plane does): finds a backend without the VIP on lo');
}

function checkOptions(opts: Record<string, unknown>): CheckOptions | undefined {
  const options: CheckOptions = {
    ...(opts.check !== undefined ? { check: opts.check as string } : {}),
    ...(opts.checkInterval !== undefined ? { intervalMs: parseDuration(opts.checkInterval as string, 'check interval') } : {}),
    ...(opts.checkTimeout !== undefined ? { timeoutMs: parseDuration(opts.checkTimeout as string, 'check timeout') } : {}),
    ...(opts.rise !== undefined ? { rise: opts.rise as number } : {}),
    ...(opts.fall !== undefined ? { fall: opts.fall as number } : {}),
    ...(opts.checkPort !== undefined ? { port: opts.checkPort as number } : {}),
    ...(opts.checkStatus !== undefined ? { expectStatus: opts.checkStatus as number } : {}),
    ...(opts.checkDsr ? { dsr: true } : {}),
  };
  if (options.check !== undefined) parseCheck(options.check);
  return Object.keys(options).length > 0 ? options : undefined;
}

function print(json: boolean | undefined, data: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${text()}\n`);
}

function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new InputError(`${what} must run as root`);
}

export function buildProgram(): Command {
  const program = new Command('lbctl')
    .description('XDP layer-4 load balancer with Maglev hashing and direct server return')
    .version(VERSION)
    .configureOutput({ outputError: (text, write) => write(`lbctl: ${text.replace(/^error: /, '')}`) });

  program
    .command('start')
    .description('load the balancer onto an interface and run the daemon')
    .option('-i, --interface <name>', 'interface that receives VIP traffic (or `interface` in the config)')
    .option('-c, --config <file>', 'YAML config file with VIPs and backends')
    .addOption(new Option('--xdp-mode <mode>', 'native (driver) or generic (skb) XDP').choices(['native', 'generic']))
    .addOption(socketOption())
    .option('--state-dir <dir>', 'where runtime changes are kept', DEFAULT_STATE_DIR)
    .option('--bpffs <dir>', 'bpffs mount point', DEFAULT_BPFFS)
    .option('--pin-dir <dir>', 'where maps are pinned (default: BPFFS/lbctl/<netns>/<interface>)')
    .option(
      '--tunnel-source <address>',
      "outer source of ipip packets, once per family (default: the interface's primary addresses)",
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option('--flow-table-size <n>', 'connection-tracking entries', integer('flow table size', 1024, 67_108_864))
    .option('--max-vips <n>', 'VIP capacity', integer('VIP capacity', 1, 65_536))
    .option('--max-backends <n>', 'backend capacity across all VIPs', integer('backend capacity', 16, 1_048_576))
    .option('--kill-switch-timeout <duration>', 'stop balancing (fail open) when the daemon is silent this long (default 30s)')
    .option('--metrics-address <address>', 'serve Prometheus metrics and a status page here, e.g. 127.0.0.1:9640 (default: off)')
    .addOption(new Option('--log-level <level>', 'log level (default info)').choices(LOG_LEVELS))
    .option('--foreground', 'stay in the foreground, logging to stdout (the default under systemd)')
    .action(async (opts) => {
      requireRoot('lbctl start');
      if (opts.killSwitchTimeout) parseKillSwitchTimeout(opts.killSwitchTimeout);
      if (opts.metricsAddress) parseListenAddress(opts.metricsAddress, 'metrics address');
      // Under systemd the service manager is the supervisor: no fork.
      if (opts.foreground || underSystemd()) {
        const { startForeground } = await import('./start.js');
        const args = process.argv.slice(process.argv.indexOf('start') + 1).filter((a) => a !== '--foreground');
        process.exitCode = await startForeground(opts, args);
        return;
      }
      await startInBackground(opts);
    });

  program
    .command('stop')
    .description('detach the balancer and stop the daemon')
    .option('--keep-dataplane', 'leave the balancer running for the next daemon to take over (until the kill-switch deadline)')
    .addOption(socketOption())
    .action(async (opts) => {
      const status = await call(opts.socket, 'status', {});
      await call(opts.socket, 'stop', { keepDataplane: opts.keepDataplane === true });
      await waitUntilExited(status.pid, 15_000);
      process.stdout.write(
        `lbctl: stopped (was pid ${status.pid} on ${status.interface})${opts.keepDataplane ? '; the data plane keeps balancing' : ''}\n`,
      );
    });

  program
    .command('restart')
    .description('restart the daemon the way it was started; the data plane keeps balancing throughout')
    .addOption(socketOption())
    .action(async (opts) => {
      requireRoot('lbctl restart');
      const status = await call(opts.socket, 'status', {});
      // The new daemon starts where the old one ran, even when this command runs in another namespace.
      const place = restartPlace(status);
      try {
        await call(opts.socket, 'stop', { keepDataplane: true });
        await waitUntilExited(status.pid, 15_000);
        const args = status.startArgs.includes('--socket') ? [...status.startArgs] : [...status.startArgs, '--socket', status.socket];
        const [command, ...prefix] = [...place.prefix, process.execPath];
        const child = spawnSync(command!, [...prefix, fileURLToPath(import.meta.url), 'start', ...args], { stdio: 'inherit' });
        process.exitCode = child.status ?? 1;
      } finally {
        place.release();
      }
    });

  program
    .command('reload')
    .description('read the config file again and apply it (runtime changes stay on top)')
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (opts) => reportChange(await call(opts.socket, 'reload', {}), opts.json));

  const killSwitch = program
    .command('kill-switch')
    .description('the data plane stops balancing (fail open) when told to or when the daemon goes silent');
  for (const [name, method, description] of [
    ['engage', 'killswitch.engage', 'stop balancing now: VIP packets go to the kernel untouched'],
    ['release', 'killswitch.release', 'balance again'],
    ['status', 'killswitch.status', 'show the kill-switch'],
  ] as const) {
    killSwitch
      .command(name)
      .description(description)
      .addOption(socketOption())
      .addOption(jsonOption())
      .action(async (opts) => {
        const status = await call(opts.socket, method, {});
        print(opts.json, status, () => formatKillSwitch(status));
      });
  }

  program
    .command('status')
    .description('show what the daemon is doing')
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (opts) => {
      const s = await call(opts.socket, 'status', {});
      print(opts.json, s, () =>
        [
          `lbctl ${s.version}: running, pid ${s.pid}, since ${s.startedAt}`,
          `interface  ${s.interface} (ifindex ${s.ifindex}), ${s.xdpMode} XDP, program id ${s.programId}`,
          `vips       ${s.vips} with ${s.backends} backends${s.unresolvedBackends ? ` (${s.unresolvedBackends} without a usable path)` : ''}`,
          `flows      up to ${s.flowTableSize} tracked`,
          `metrics    ${s.metricsAddress ? `http://${s.metricsAddress}/metrics, status page http://${s.metricsAddress}/` : '(off: lbctl start --metrics-address ADDRESS:PORT)'}`,
          `kill-switch ${formatKillSwitch(s.killSwitch)}`,
          `tunnels    from ${s.tunnelSources.join(', ') || '(no address on the interface: ipip backends unusable)'}`,
          `config     ${s.configPath ?? '(none)'}`,
          `state      ${s.stateDir}`,
          `pins       ${s.pinDir}`,
          `socket     ${s.socket}`,
        ].join('\n'),
      );
    });

  const vip = program.command('vip').description('virtual services');
  withCheckOptions(vip.command('add <vip>'), 'of its backends')
    .description('add a VIP, e.g. 10.0.0.100:80/tcp or [2001:db8::10]:80/tcp')
    .addOption(forwardOption('for its backends').default('l2dsr'))
    .option('--table-size <n>', 'Maglev table size (a prime)', integer('table size', 1, 1_048_573))
    .addOption(
      new Option('--on-all-down <policy>', 'when every backend fails its check: keep sending to the last healthy ones, or drop')
        .choices(ALL_DOWN_POLICIES)
        .default(DEFAULT_ALL_DOWN),
    )
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (vipText: string, opts) => {
      const check = checkOptions(opts);
      const result = await call(opts.socket, 'vip.add', {
        vip: vipText,
        forward: parseForward(opts.forward),
        onAllDown: parseAllDownPolicy(opts.onAllDown),
        ...(opts.tableSize ? { tableSize: opts.tableSize } : {}),
        ...(check ? { check } : {}),
      });
      reportChange(result, opts.json);
    });
  vip
    .command('remove <vip>')
    .description('remove a VIP and its backends')
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (vipText: string, opts) => reportChange(await call(opts.socket, 'vip.remove', { vip: vipText }), opts.json));
  vip
    .command('list')
    .description('list VIPs')
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (opts) => {
      const vips = await call(opts.socket, 'vip.list', {});
      print(opts.json, vips, () => formatVips(vips));
    });

  const backend = program.command('backend').description('backends of a VIP');
  const dryRun = () => new Option('--dry-run', 'show what the change would do, change nothing');
  withCheckOptions(backend.command('add <vip> <address>'), "for this backend, overriding the VIP's")
    .description('add a backend to a VIP')
    .option('--weight <n>', 'share relative to the other backends (1-65535)', (text) => parseWeight(text))
    .addOption(forwardOption("overriding the VIP's"))
    .addOption(dryRun())
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (vipText: string, address: string, opts) => {
      const check = checkOptions(opts);
      const params = {
        vip: vipText,
        address,
        dryRun: opts.dryRun === true,
        ...(opts.weight ? { weight: opts.weight as number } : {}),
        ...(opts.forward ? { forward: opts.forward as ForwardMethod } : {}),
        ...(check ? { check } : {}),
      };
      reportChange(await call(opts.socket, 'backend.add', params), opts.json);
    });
  backend
    .command('remove <vip> <address>')
    .description('remove a backend from a VIP (its tracked flows move to other backends)')
    .addOption(dryRun())
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (vipText: string, address: string, opts) =>
      reportChange(await call(opts.socket, 'backend.remove', { vip: vipText, address, dryRun: opts.dryRun === true }), opts.json),
    );
  backend
    .command('weight <vip> <address> <weight>')
    .description("change a backend's weight")
    .addOption(dryRun())
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (vipText: string, address: string, weight: string, opts) => {
      reportChange(
        await call(opts.socket, 'backend.weight', { vip: vipText, address, weight: parseWeight(weight), dryRun: opts.dryRun === true }),
        opts.json,
      );
    });
  backend
    .command('drain <vip> <address>')
    .description('stop sending new flows to a backend; remove it once its tracked flows have ended or the timeout passed')
    .option('--timeout <duration>', 'remove it after this long at the latest', '5m')
    .option('--idle <duration>', 'a tracked flow without packets for this long counts as ended', '30s')
    .addOption(dryRun())
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (vipText: string, address: string, opts) => {
      const timeoutSeconds = parseDuration(opts.timeout, 'drain timeout') / 1000;
      const idleSeconds = parseDuration(opts.idle, 'idle time') / 1000;
      reportChange(
        await call(opts.socket, 'backend.drain', { vip: vipText, address, timeoutSeconds, idleSeconds, dryRun: opts.dryRun === true }),
        opts.json,
      );
    });
  backend
    .command('undrain <vip> <address>')
    .description('cancel a drain: the backend takes new flows again')
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (vipText: string, address: string, opts) =>
      reportChange(await call(opts.socket, 'backend.undrain', { vip: vipText, address }), opts.json),
    );
  backend
    .command('list <vip>')
    .description("list a VIP's backends with their share of the Maglev table")
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (vipText: string, opts) => {
      const backends = await call(opts.socket, 'backend.list', { vip: vipText });
      print(opts.json, backends, () => formatBackends(backends));
    });

  program
    .command('stats')
    .description("counters: per VIP and backend, packets not balanced by reason, and the daemon's own")
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (opts) => {
      const stats = await call(opts.socket, 'stats', {});
      print(opts.json, stats, () => formatStats(stats));
    });

  program
    .command('top')
    .description('live view of VIPs and backends: rates, health, share of the table (q quits)')
    .option('--interval <duration>', 'time between refreshes', '1s')
    .option('--count <n>', 'stop after this many refreshes', integer('count', 1, 1_000_000))
    .addOption(socketOption())
    .action(async (opts) => {
      const intervalMs = parseDuration(opts.interval, 'interval');
      if (intervalMs < 100) throw new InputError(`invalid interval "${opts.interval}": at least 100ms`);
      const { runTop } = await import('./top.js');
      await runTop({ socket: opts.socket, intervalMs, ...(opts.count ? { count: opts.count as number } : {}) });
    });

  program
    .command('explain <client> <vip>')
    .description('which backend a flow from CLIENT (ADDRESS:PORT) to VIP goes to, and why')
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (client: string, vipText: string, opts) => {
      const result = await call(opts.socket, 'explain', { client, vip: vipText });
      print(opts.json, result, () => formatExplain(result));
    });

  const decap = program.command('decap').description('IP-in-IP decapsulation on a backend host');
  decap
    .command('attach')
    .description("attach xdp_decap: tunnelled packets to this host's addresses are unwrapped")
    .requiredOption('-i, --interface <name>', 'interface the tunnelled packets arrive on')
    .addOption(new Option('--xdp-mode <mode>', 'native or generic XDP').choices(['native', 'generic']).default('native'))
    .action(async (opts) => {
      requireRoot('lbctl decap attach');
      const { attachDecap } = await import('../dataplane/decap.js');
      const result = await attachDecap(opts.interface, opts.xdpMode);
      process.stdout.write(
        `lbctl: xdp_decap ${result.replaced ? 'refreshed' : 'attached'} on ${result.interface} for ${result.endpoints.join(', ')}\n`,
      );
    });
  decap
    .command('detach')
    .description('detach xdp_decap')
    .requiredOption('-i, --interface <name>', 'interface')
    .action(async (opts) => {
      requireRoot('lbctl decap detach');
      const { detachDecap } = await import('../dataplane/decap.js');
      const detached = await detachDecap(opts.interface);
      process.stdout.write(
        detached ? `lbctl: xdp_decap detached from ${opts.interface}\n` : `lbctl: no XDP program on ${opts.interface}\n`,
      );
    });

  return program;
}

function reportChange(result: ChangeResult, json?: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  process.stdout.write(`lbctl: ${result.message}\n`);
  if (result.preview) process.stdout.write(`${formatPreview(result.preview)}\n`);
  for (const warning of result.warnings) process.stderr.write(`lbctl: warning: ${warning}\n`);
}

function formatVips(vips: readonly VipSummary[]): string {
  if (vips.length === 0) return 'no VIPs';
  const rows = vips.map((v) => [
    v.vip,
    v.forward,
    `${v.activeBackends}/${v.backends}`,
    String(v.tableSize),
    v.check.split(' ')[0]!,
    v.onAllDown,
    compact(v.packets),
    compact(v.bytes),
    compact(v.newFlows),
    compact(v.movedFlows),
  ]);
  const notes = vips
    .filter((v) => v.allDown)
    .map(
      (v) =>
        `${v.vip}: every backend fails its check: ${v.onAllDown === 'drop' ? 'dropping its packets' : 'still sending to the last healthy ones'}`,
    );
  return [
    table(['VIP', 'FORWARD', 'BACKENDS', 'TABLE', 'CHECK', 'ALL DOWN', 'PACKETS', 'BYTES', 'NEW FLOWS', 'MOVED'], rows),
    ...notes,
  ].join('\n');
}

function formatBackends(backends: readonly BackendSummary[]): string {
  if (backends.length === 0) return 'no backends';
  const now = Date.now();
  const rows = backends.map((b) => [
    b.address,
    String(b.weight),
    b.forward,
    b.state,
    b.health ? `${b.health.state} ${age(b.health.since, now)}` : '-',
    percent(b.share),
    String(b.slots),
    b.nextHop ? `${b.nextHop} ${b.nextHopMac}` : '-',
    compact(b.packets),
    compact(b.bytes),
  ]);
  const checks = new Set(backends.map((b) => b.check));
  const notes = [
    ...(checks.size === 1 ? [`check: ${[...checks][0]}`] : backends.map((b) => `${b.address}: check ${b.check}`)),
    ...backends.filter((b) => b.reason).map((b) => `${b.address}: ${b.reason}`),
    ...backends
      .filter((b) => b.health?.lastError && b.health.state !== 'up')
      .map((b) => `${b.address}: ${b.health!.state} since ${b.health!.since}: ${b.health!.lastError}`),
    ...backends
      .filter((b) => b.keptWhileAllDown)
      .map((b) => `${b.address}: down, kept in the table because every backend of the VIP is down (on-all-down keep)`),
    ...backends
      .filter((b) => b.drain)
      .map(
        (b) =>
          `${b.address}: draining since ${b.drain!.since}, removed when its flows end (idle ${b.drain!.idleSeconds} s) or after ${b.drain!.timeoutSeconds} s`,
      ),
  ];
  return [
    table(['BACKEND', 'WEIGHT', 'FORWARD', 'STATE', 'HEALTH', 'SHARE', 'SLOTS', 'NEXT HOP', 'PACKETS', 'BYTES'], rows),
    ...notes,
  ].join('\n');
}

/** Re-runs this CLI as `start --foreground` in the background; waits for it to be ready. */
async function startInBackground(opts: { stateDir: string; socket: string }): Promise<void> {
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  const logPath = join(opts.stateDir, 'lbctl.log');
  const log = openSync(logPath, 'a', 0o600);
  const args = process.argv.slice(2).filter((a) => a !== '--foreground');
  const child = fork(fileURLToPath(import.meta.url), [...args, '--foreground'], {
    detached: true,
    stdio: ['ignore', log, log, 'ipc'],
    env: { ...process.env, LBCTL_SOCKET: opts.socket },
  });
  const outcome = await new Promise<{ type: 'ready'; pid: number } | { type: 'failed'; message: string }>((done) => {
    child.once('message', (message) => done(message as never));
    child.once('exit', (code, signal) =>
      done({ type: 'failed', message: `the daemon exited before it was ready (${signal ?? `code ${code}`}); see ${logPath}` }),
    );
  });
  if (outcome.type === 'failed') throw new InputError(outcome.message);
  child.unref();
  child.disconnect();
  process.stdout.write(`lbctl: started (pid ${outcome.pid}), socket ${resolve(opts.socket)}, log ${logPath}\n`);
}

/** The daemon is stopped when its process is gone (it detaches and unpins first). */
async function waitUntilExited(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isRunning(pid)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the daemon (pid ${pid}) did not stop within ${timeoutMs / 1000} s`);
}

/** Alive and not a zombie waiting for its (new) parent to reap it. */
function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    const known =
      error instanceof InputError ||
      error instanceof DaemonUnreachableError ||
      (error as Error).name === 'BpfError' ||
      (error as Error).name === 'DaemonError';
    process.stderr.write(`lbctl: ${known ? (error as Error).message : ((error as Error).stack ?? String(error))}\n`);
    process.exitCode = 1;
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void main(process.argv);
}
