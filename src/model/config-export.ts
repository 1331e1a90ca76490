/**
 * The running state written back as a config file (`lbctl config export`):
 * what `lbctl start --config` would run with the runtime changes folded in.
 * Only what differs from the defaults is written, with the config file's
 * own field names; parsing the text gives the same state back.
 */
import { stringify } from 'yaml';
import { DEFAULT_VIP_HASH, formatVip } from './address.js';
import { type CheckSettings, defaultCheck, formatCheck } from './check.js';
import type { DaemonSettings } from './config.js';
import { DEFAULT_FORWARD, DEFAULT_WEIGHT, type BackendSpec, type DesiredState, type VipSpec } from './desired-state.js';
import { formatDuration } from './duration.js';
import { DEFAULT_TABLE_SIZE } from '../maglev/maglev.js';
import { DEFAULT_ALL_DOWN } from './check.js';

export function exportConfig(settings: DaemonSettings, desired: DesiredState, header: string): string {
  const top: Record<string, unknown> = {
    ...(settings.interface !== undefined ? { interface: settings.interface } : {}),
    ...(settings.xdpMode !== undefined ? { xdp_mode: settings.xdpMode } : {}),
    ...(settings.tunnelSources?.length ? { tunnel_source: settings.tunnelSources } : {}),
    ...(settings.killSwitchTimeoutMs !== undefined ? { kill_switch_timeout: formatDuration(settings.killSwitchTimeoutMs) } : {}),
    ...(settings.flowTableSize !== undefined ? { flow_table_size: settings.flowTableSize } : {}),
    ...(settings.maxVips !== undefined ? { max_vips: settings.maxVips } : {}),
    ...(settings.maxBackends !== undefined ? { max_backends: settings.maxBackends } : {}),
    ...(settings.metricsAddress !== undefined ? { metrics_address: settings.metricsAddress } : {}),
    ...(settings.logLevel !== undefined ? { log_level: settings.logLevel } : {}),
    vips: desired.vips.map(exportVip),
  };
  const drains = desired.vips.flatMap((v) =>
    v.backends.filter((b) => b.drain).map((b) => `#   ${formatVip(v.vip)} ${b.address}: draining since ${b.drain!.since}`),
  );
  const notes = drains.length ? ['# Drains in progress (runtime only, not written below):', ...drains] : [];
  return `${[...header.split('\n').map((line) => `# ${line}`.trimEnd()), ...notes].join('\n')}\n${stringify(top, { lineWidth: 0 })}`;
}

function exportVip(spec: VipSpec): Record<string, unknown> {
  return {
    vip: formatVip(spec.vip),
    ...(spec.forward !== DEFAULT_FORWARD ? { forward: spec.forward } : {}),
    ...(spec.tableSize !== DEFAULT_TABLE_SIZE ? { table_size: spec.tableSize } : {}),
    ...checkFields(spec.check, defaultCheck(spec.vip)),
    ...(spec.onAllDown !== DEFAULT_ALL_DOWN ? { on_all_down: spec.onAllDown } : {}),
    ...(spec.need !== undefined ? { need: spec.need } : {}),
    ...((spec.hash ?? DEFAULT_VIP_HASH) !== DEFAULT_VIP_HASH ? { hash: spec.hash } : {}),
    backends: spec.backends.map((b) => exportBackend(b, spec.check)),
  };
}

function exportBackend(backend: BackendSpec, vipCheck: CheckSettings): Record<string, unknown> {
  return {
    address: backend.address,
    ...(backend.weight !== DEFAULT_WEIGHT ? { weight: backend.weight } : {}),
    ...(backend.forward ? { forward: backend.forward } : {}),
    ...(backend.check ? checkFields({ ...vipCheck, ...backend.check }, vipCheck) : {}),
  };
}

/** The check fields whose value differs from the base's. */
function checkFields(check: Partial<CheckSettings>, base: CheckSettings): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  if (check.spec && formatCheck(check.spec) !== formatCheck(base.spec)) fields.check = formatCheck(check.spec);
  if (check.intervalMs !== undefined && check.intervalMs !== base.intervalMs) fields.check_interval = formatDuration(check.intervalMs);
  if (check.timeoutMs !== undefined && check.timeoutMs !== base.timeoutMs) fields.check_timeout = formatDuration(check.timeoutMs);
  if (check.rise !== undefined && check.rise !== base.rise) fields.rise = check.rise;
  if (check.fall !== undefined && check.fall !== base.fall) fields.fall = check.fall;
  if (check.dsr !== undefined && check.dsr !== base.dsr) fields.check_dsr = check.dsr;
  if (check.port !== undefined && check.port !== base.port) fields.check_port = check.port;
  if (check.expectStatus !== undefined && check.expectStatus !== base.expectStatus) fields.check_status = check.expectStatus;
  return fields;
}
