/**
 * What differs between two desired states, VIP by VIP and backend by
 * backend: `lbctl config diff` (the file against the running state) and the
 * runtime changes a reload keeps on top of the file.
 */
import { DEFAULT_VIP_HASH, formatVip } from './address.js';
import { effectiveCheck, formatCheck } from './check.js';
import type { BackendSpec, DesiredState, VipSpec } from './desired-state.js';
import { formatDuration } from './duration.js';

export interface StateDifference {
  readonly vip: string;
  readonly backend?: string;
  readonly change: 'added' | 'removed' | 'changed';
  /** For a change: "weight 6 -> 9"; for an addition: what it is. */
  readonly detail: string;
}

export function diffStates(from: DesiredState, to: DesiredState): StateDifference[] {
  const before = new Map(from.vips.map((v) => [formatVip(v.vip), v]));
  const after = new Map(to.vips.map((v) => [formatVip(v.vip), v]));
  const out: StateDifference[] = [];
  for (const [vip, spec] of after) {
    const old = before.get(vip);
    if (!old) {
      out.push({ vip, change: 'added', detail: describeVip(spec) });
      for (const b of spec.backends) out.push({ vip, backend: b.address, change: 'added', detail: describeBackend(spec, b) });
      continue;
    }
    const vipChanges = changes(describeVipFields(old), describeVipFields(spec));
    if (vipChanges) out.push({ vip, change: 'changed', detail: vipChanges });
    const oldBackends = new Map(old.backends.map((b) => [b.address, b]));
    for (const b of spec.backends) {
      const was = oldBackends.get(b.address);
      if (!was) {
        out.push({ vip, backend: b.address, change: 'added', detail: describeBackend(spec, b) });
        continue;
      }
      const backendChanges = changes(backendFields(old, was), backendFields(spec, b));
      if (backendChanges) out.push({ vip, backend: b.address, change: 'changed', detail: backendChanges });
    }
    for (const b of old.backends) {
      if (!spec.backends.some((x) => x.address === b.address))
        out.push({ vip, backend: b.address, change: 'removed', detail: describeBackend(old, b) });
    }
  }
  for (const [vip, spec] of before) if (!after.has(vip)) out.push({ vip, change: 'removed', detail: describeVip(spec) });
  return out;
}

/** "+ backend 10.0.0.100:80/tcp 10.0.0.13 weight 1" */
export function formatDifference(d: StateDifference): string {
  const sign = d.change === 'added' ? '+' : d.change === 'removed' ? '-' : '~';
  return `${sign} ${d.backend ? `backend ${d.vip} ${d.backend}` : `vip ${d.vip}`}: ${d.detail}`;
}

function describeVip(spec: VipSpec): string {
  return Object.entries(describeVipFields(spec))
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

function describeBackend(vip: VipSpec, b: BackendSpec): string {
  return Object.entries(backendFields(vip, b))
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

function describeVipFields(spec: VipSpec): Record<string, string> {
  const c = spec.check;
  return {
    forward: spec.forward,
    'table size': String(spec.tableSize),
    check: `${formatCheck(c.spec)}${c.port ? ` port ${c.port}` : ''}${c.expectStatus ? ` status ${c.expectStatus}` : ''} every ${formatDuration(c.intervalMs)} timeout ${formatDuration(c.timeoutMs)} rise ${c.rise} fall ${c.fall}${c.dsr ? ' +dsr' : ''}`,
    'on all down': spec.onAllDown,
    ...(spec.need !== undefined ? { need: String(spec.need) } : {}),
    hash: spec.hash ?? DEFAULT_VIP_HASH,
  };
}

function backendFields(vip: VipSpec, b: BackendSpec): Record<string, string> {
  const c = effectiveCheck(vip, b);
  const own = describeVipFields({ ...vip, check: c }).check!;
  return {
    weight: String(b.weight),
    forward: b.forward ?? vip.forward,
    ...(b.check ? { check: own } : {}),
    ...(b.drain ? { draining: `since ${b.drain.since}` } : {}),
  };
}

/** "weight 6 -> 9, forward l2dsr -> ipip", or '' when nothing differs. */
function changes(before: Record<string, string>, after: Record<string, string>): string {
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  return keys
    .filter((k) => before[k] !== after[k])
    .map((k) => `${k} ${before[k] ?? '(none)'} -> ${after[k] ?? '(none)'}`)
    .join(', ');
}
