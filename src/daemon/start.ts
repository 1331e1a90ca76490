/** `lbctl start --foreground`: settings from flags, config file and defaults, then the daemon in this process. */
import { DEFAULT_LIMITS } from '../model/limits.js';
import { runDaemon, type StartOutcome } from './run.js';
import { EXIT } from '../api/exit-codes.js';
import { createLogger } from '../log.js';
import { loadConfigFile } from '../model/config.js';
import type { LogLevel } from '../log-levels.js';
import { EMPTY_STATE } from '../model/desired-state.js';
import { InputError } from '../model/errors.js';
import { parseListenAddress, parseTunnelSources } from '../model/address.js';
import { parseKillSwitchTimeout } from '../model/duration.js';
import { DEFAULT_KILL_SWITCH_TIMEOUT_MS } from './kill-switch.js';
import { ANNOUNCE_DEFAULTS } from '../model/announce.js';

export interface StartFlags {
  interface?: string;
  config?: string;
  xdpMode?: 'native' | 'generic';
  socket: string;
  stateDir: string;
  bpffs: string;
  pinDir?: string;
  tunnelSource?: string[];
  flowTableSize?: number;
  maxVips?: number;
  maxBackends?: number;
  killSwitchTimeout?: string;
  metricsAddress?: string;
  logLevel?: LogLevel;
  announce?: boolean;
  announceTable?: number;
  announceProto?: number;
}

/** startArgs: the `lbctl start` arguments as given, kept for `lbctl restart`. */
export async function startForeground(flags: StartFlags, startArgs: readonly string[]): Promise<number> {
  let options;
  let logLevel: LogLevel;
  try {
    const config = flags.config ? await loadConfigFile(flags.config) : undefined;
    const settings = config?.settings ?? {};
    logLevel = flags.logLevel ?? settings.logLevel ?? 'info';
    const metricsAddress = flags.metricsAddress ?? settings.metricsAddress;
    const interfaceName = flags.interface ?? settings.interface;
    if (!interfaceName) throw new InputError('no interface: pass --interface IFACE or set `interface` in the config file');
    const announceFlags = {
      ...(flags.announceTable !== undefined ? { table: flags.announceTable } : {}),
      ...(flags.announceProto !== undefined ? { proto: flags.announceProto } : {}),
    };
    const announce =
      flags.announce || settings.announce || Object.keys(announceFlags).length > 0
        ? { ...ANNOUNCE_DEFAULTS, ...settings.announce, ...announceFlags }
        : undefined;
    const tunnelSources = flags.tunnelSource ? parseTunnelSources(flags.tunnelSource) : (settings.tunnelSources ?? []);
    options = {
      interface: interfaceName,
      xdpMode: flags.xdpMode ?? settings.xdpMode ?? 'native',
      socketPath: flags.socket,
      stateDir: flags.stateDir,
      bpffsRoot: flags.bpffs,
      ...(flags.pinDir ? { pinDir: flags.pinDir } : {}),
      tunnelSources,
      ...(config ? { configPath: config.path } : {}),
      limits: {
        maxVips: flags.maxVips ?? settings.maxVips ?? DEFAULT_LIMITS.maxVips,
        maxBackends: flags.maxBackends ?? settings.maxBackends ?? DEFAULT_LIMITS.maxBackends,
        flowTableSize: flags.flowTableSize ?? settings.flowTableSize ?? DEFAULT_LIMITS.flowTableSize,
      },
      killSwitchTimeoutMs: flags.killSwitchTimeout
        ? parseKillSwitchTimeout(flags.killSwitchTimeout)
        : (settings.killSwitchTimeoutMs ?? DEFAULT_KILL_SWITCH_TIMEOUT_MS),
      config: config?.state ?? EMPTY_STATE,
      ...(metricsAddress ? { metricsAddress: parseListenAddress(metricsAddress, 'metrics address') } : {}),
      ...(announce ? { announce } : {}),
      startArgs,
    } as const;
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    process.send?.({ type: 'failed', kind: 'input', message: error.message } satisfies StartOutcome);
    if (!process.send) process.stderr.write(`lbctl: ${error.message}\n`);
    return EXIT.invalid;
  }
  return runDaemon(options, createLogger(logLevel));
}
