/**
 * lbctl: the command line. Daemon commands talk to it over its socket.
 * Each call is a new process, so this module loads only what defines the
 * commands (commander and the small parsers of src/model); an action loads
 * what it needs when it runs (the socket client, the formatting, the daemon).
 * bin/lbctl runs it bundled into one file (scripts/bundle-cli.mjs).
 */
import { fork, spawnSync } from 'node:child_process';
import { mkdirSync, openSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import type { ChangeResult, MethodName, Methods } from '../api/protocol.js';
import type * as Format from './format.js';
import { DEFAULT_BPFFS, DEFAULT_SOCKET, DEFAULT_STATE_DIR } from '../paths.js';
import {
  DEFAULT_VIP_HASH,
  FORWARD_METHODS,
  type ForwardMethod,
  VIP_HASHES,
  parseForward,
  parseListenAddress,
  parseVipHash,
  parseWeight,
} from '../model/address.js';
import { LOG_LEVELS } from '../log-levels.js';
import { NEED_LIMITS, validateAnnounceProto, validateAnnounceTable, validateNeed } from '../model/announce.js';
import { InputError } from '../model/errors.js';
import { parseDuration, parseKillSwitchTimeout } from '../model/duration.js';
import { ALL_DOWN_POLICIES, CHECK_LIMITS, type CheckOptions, DEFAULT_ALL_DOWN, parseAllDownPolicy, parseCheck } from '../model/check.js';
import { VERSION } from '../version.js';
import { EXIT, EXIT_BY_KIND, errorKind } from '../api/exit-codes.js';
import type { StartOutcome } from '../daemon/run.js';

const EXIT_CODES_HELP = `
Exit codes: ${EXIT.ok} done; ${EXIT.internal} internal error; ${EXIT.usage} usage error (command line); ${EXIT.invalid} invalid input or refused (nothing changed); ${EXIT.unreachable} no daemon answers.`;

/** One request to the daemon; the socket client is loaded by the commands that talk to it. */
async function call<M extends MethodName>(socket: string, method: M, params: Methods[M]['params']): Promise<Methods[M]['result']> {
  const client = await import('../api/client.js');
  return client.call(socket, method, params);
}

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
    .option(
      '--check-dsr',
      'also check through the VIP path (the forwarding the data plane does): finds a backend without the VIP on lo (default for TCP VIPs)',
    )
    .option('--no-check-dsr', 'only probe the backend itself, not through the VIP path');
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
    ...(opts.checkDsr !== undefined ? { dsr: opts.checkDsr as boolean } : {}),
  };
  if (options.check !== undefined) parseCheck(options.check);
  return Object.keys(options).length > 0 ? options : undefined;
}

/** The answer as JSON, or as text made by format.ts (loaded only then). */
async function print(json: boolean | undefined, data: unknown, text: (format: typeof Format) => string): Promise<void> {
  process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${text(await import('./format.js'))}\n`);
}

function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new InputError(`${what} must run as root`);
}

/** json: errors are reported by main() as JSON on stdout, so commander prints none itself. */
export function buildProgram(json = false): Command {
  const program = new Command('lbctl')
    .description('XDP layer-4 load balancer with Maglev hashing and direct server return')
    .version(VERSION)
    .addHelpText('after', EXIT_CODES_HELP)
    // Errors become exceptions for main() (exit codes, --json); subcommands inherit both settings.
    .exitOverride()
    .configureOutput({ outputError: (text, write) => (json ? undefined : write(`lbctl: ${text.replace(/^error: /, '')}`)) });

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
      "outer source of ipip packets, or a range ADDRESS/LEN spreading flows over a backend's receive queues; once per family (default: the interface's primary addresses)",
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option('--flow-table-size <n>', 'connection-tracking entries', integer('flow table size', 1024, 67_108_864))
    .option('--max-vips <n>', 'VIP capacity', integer('VIP capacity', 1, 65_536))
    .option('--max-backends <n>', 'backend capacity across all VIPs', integer('backend capacity', 16, 1_048_576))
    .option('--kill-switch-timeout <duration>', 'stop balancing (fail open) when the daemon is silent this long (default 30s)')
    .option('--metrics-address <address>', 'serve Prometheus metrics and a status page here, e.g. 127.0.0.1:9640 (default: off)')
    .option('--announce', "announce the VIPs to a fleet's router through the routing daemon (docs/fleet.md; default: off)")
    .option('--announce-table <n>', 'kernel table of the announced host routes (implies --announce; default 100)', (text: string) =>
      validateAnnounceTable(integer('announce table', 1, 0xffffffff)(text)),
    )
    .option('--announce-proto <n>', 'route protocol number of the announced routes (implies --announce; default 201)', (text: string) =>
      validateAnnounceProto(integer('announce proto', 1, 255)(text)),
    )
    .addOption(new Option('--log-level <level>', 'log level (default info)').choices(LOG_LEVELS))
    .option('--foreground', 'stay in the foreground, logging to stdout (the default under systemd)')
    .action(async (opts) => {
      requireRoot('lbctl start');
      if (opts.killSwitchTimeout) parseKillSwitchTimeout(opts.killSwitchTimeout);
      if (opts.metricsAddress) parseListenAddress(opts.metricsAddress, 'metrics address');
      // Under systemd the service manager is the supervisor: no fork.
      const { underSystemd } = await import('../daemon/systemd.js');
      if (opts.foreground || underSystemd()) {
        const { startForeground } = await import('../daemon/start.js');
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
      const { restartPlace } = await import('../daemon/restart-place.js');
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
    .description('read the config file again and apply it; runtime changes stay on top, and the answer lists where they override it')
    .option('--discard-runtime-changes', 'forget every runtime change (CLI/API): the file alone is the state')
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (opts) =>
      reportChange(await call(opts.socket, 'reload', opts.discardRuntimeChanges ? { discardRuntimeChanges: true } : {}), opts.json),
    );

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
        await print(opts.json, status, (f) => f.formatKillSwitch(status));
      });
  }

  program
    .command('status')
    .description('show what the daemon is doing')
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (opts) => {
      const s = await call(opts.socket, 'status', {});
      await print(opts.json, s, (f) => f.formatStatus(s));
    });

  const vip = program.command('vip').description('virtual services');
  withCheckOptions(vip.command('add <vip>'), 'of its backends')
    .description('add a VIP, e.g. 10.0.0.100:80/tcp or [2001:db8::10]:80/tcp; port 0 takes every port without a VIP of its own')
    .addOption(forwardOption('for its backends').default('l2dsr'))
    .option('--table-size <n>', 'Maglev table size (a prime)', integer('table size', 1, 1_048_573))
    .addOption(
      new Option('--on-all-down <policy>', 'when every backend fails its check: keep sending to the last healthy ones, or drop')
        .choices(ALL_DOWN_POLICIES)
        .default(DEFAULT_ALL_DOWN),
    )
    .option('--need <n>', "fewest healthy backends to announce it (a fleet node; default the daemon's announce need)", (text: string) =>
      validateNeed(integer('need', 1, NEED_LIMITS.max)(text)),
    )
    .addOption(
      new Option('--hash <what>', "what picks a new flow's backend: the whole flow, or the client's address alone (client stickiness)")
        .choices(VIP_HASHES)
        .default(DEFAULT_VIP_HASH),
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
        ...(opts.need ? { need: opts.need as number } : {}),
        ...(opts.hash !== DEFAULT_VIP_HASH ? { hash: parseVipHash(opts.hash) } : {}),
        ...(check ? { check } : {}),
      });
      await reportChange(result, opts.json);
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
      await print(opts.json, vips, (f) => f.formatVips(vips));
    });

  const backend = program.command('backend').description('backends of a VIP');
  const dryRun = () => new Option('--dry-run', 'show what the change would do, change nothing');
  withCheckOptions(backend.command('add <vip> <address>'), "for this backend, overriding the VIP's")
    .description('add a backend to a VIP')
    .option('--weight <n>', 'share relative to the other backends (0-65535; 0 quiesces: no new flows, its flows continue)', (text) =>
      parseWeight(text),
    )
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
        ...(opts.weight !== undefined ? { weight: opts.weight as number } : {}),
        ...(opts.forward ? { forward: opts.forward as ForwardMethod } : {}),
        ...(check ? { check } : {}),
      };
      await reportChange(await call(opts.socket, 'backend.add', params), opts.json);
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
      await reportChange(
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
      await reportChange(
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
      await print(opts.json, backends, (f) => f.formatBackends(backends));
    });

  program
    .command('stats')
    .description("counters: per VIP and backend, packets not balanced by reason, and the daemon's own")
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (opts) => {
      const stats = await call(opts.socket, 'stats', {});
      await print(opts.json, stats, (f) => f.formatStats(stats));
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
    .option('--port <port>', 'the port the client connects to, for a VIP of all ports (port 0)', integer('port', 1, 65535))
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (client: string, vipText: string, opts) => {
      const result = await call(opts.socket, 'explain', { client, vip: vipText, ...(opts.port ? { port: opts.port as number } : {}) });
      await print(opts.json, result, (f) => f.formatExplain(result));
    });

  const config = program.command('config').description('the config file, and how the running state differs from it');
  config
    .command('diff')
    .description('the config file as it is now against what runs: runtime changes, and edits not reloaded yet')
    .addOption(socketOption())
    .addOption(jsonOption())
    .action(async (opts) => {
      const diff = await call(opts.socket, 'config.diff', {});
      await print(opts.json, diff, (f) => f.formatConfigDiff(diff));
    });
  config
    .command('export')
    .description('what runs, as a config file (runtime changes folded in): save it to make them part of the file')
    .addOption(socketOption())
    .action(async (opts) => {
      process.stdout.write((await call(opts.socket, 'config.export', {})).text);
    });
  config
    .command('check <file>')
    .description('validate a config file without a daemon (like haproxy -c): exit 0 if lbctl start or reload would take it')
    .addOption(jsonOption())
    .action(async (file: string, opts) => {
      const { loadConfigFile } = await import('../model/config.js');
      const loaded = await loadConfigFile(file);
      const backends = loaded.state.vips.reduce((n, v) => n + v.backends.length, 0);
      const summary = { file, valid: true, vips: loaded.state.vips.length, backends };
      await print(opts.json, summary, () => `lbctl: ${file}: valid, ${summary.vips} VIPs with ${backends} backends`);
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

async function reportChange(result: ChangeResult, json?: boolean): Promise<void> {
  if (json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  process.stdout.write(`lbctl: ${result.message}\n`);
  if (result.preview) {
    const { formatPreview } = await import('./format.js');
    process.stdout.write(`${formatPreview(result.preview)}\n`);
  }
  if (result.overrides?.length) {
    const { formatOverrides } = await import('./format.js');
    process.stdout.write(`${formatOverrides(result.overrides)}\n`);
  }
  for (const warning of result.warnings) process.stderr.write(`lbctl: warning: ${warning}\n`);
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
  const outcome = await new Promise<StartOutcome>((done) => {
    child.once('message', (message) => done(message as never));
    child.once('exit', (code, signal) =>
      done({
        type: 'failed',
        kind: 'internal',
        message: `the daemon exited before it was ready (${signal ?? `code ${code}`}); see ${logPath}`,
      }),
    );
  });
  if (outcome.type === 'failed') {
    if (outcome.kind === 'input') throw new InputError(outcome.message);
    throw Object.assign(new Error(outcome.message), { name: 'DaemonError' }); // the message is for the user, the CLI's stack is not
  }
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
  // With --json, an error is a JSON object on stdout too, not a line on stderr.
  const json = argv.includes('--json');
  try {
    await buildProgram(json).parseAsync(argv);
  } catch (error) {
    // --help and --version end as "errors" with exit code 0 once they have printed.
    if (errorKind(error) === 'usage' && (error as { exitCode?: number }).exitCode === 0) {
      process.exitCode = EXIT.ok;
      return;
    }
    const kind = errorKind(error);
    process.exitCode = EXIT_BY_KIND[kind];
    const message = (error as Error).message.replace(/^error: /, '');
    if (json) {
      process.stdout.write(`${JSON.stringify({ error: { kind, message, exitCode: process.exitCode } }, null, 2)}\n`);
    } else if (kind === 'internal' && (error as Error).name !== 'DaemonError' && (error as Error).name !== 'BpfError') {
      process.stderr.write(`lbctl: internal error: ${(error as Error).stack ?? String(error)}\n`);
    } else if (kind !== 'usage') {
      process.stderr.write(`lbctl: ${message}\n`); // commander has printed usage errors itself
    }
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void main(process.argv);
}
