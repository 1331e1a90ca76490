import type {
  AnnounceStatus,
  BackendSummary,
  ChangePreview,
  ConfigDiff,
  ExplainResult,
  KillSwitchStatus,
  StatsResult,
  StatusResult,
  TrafficStats,
  VipSummary,
} from '../api/protocol.js';
import { parseTunnelSource } from '../model/address.js';
import { type StateDifference, formatDifference } from '../model/state-diff.js';

/** Plain-text tables for terminals: columns padded, numbers right-aligned. */
export function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => /^\d+(\.\d+)?[%kMGTP]?$/.test(r[i] ?? '') || r[i] === '-'));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (numeric[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)}%`;
}

/** 1234567 -> "1.2M": counters stay readable at any size. */
export function compact(value: number): string {
  const n = Number(value);
  if (n < 1000) return String(value);
  const units = ['k', 'M', 'G', 'T', 'P'];
  let scaled = n;
  let unit = -1;
  while (scaled >= 1000 && unit < units.length - 1) {
    scaled /= 1000;
    unit++;
  }
  return `${scaled.toFixed(scaled < 10 ? 1 : 0)}${units[unit]}`;
}

/** How long ago an ISO time was: "12s", "5m", "3h", "2d". */
export function age(iso: string, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86_400)}d`;
}

const share = (fraction: number | undefined) => (fraction === undefined ? '-' : percent(fraction));

/** A dry run: shares before and after, and what moves. */
export function formatPreview(p: ChangePreview): string {
  const rows = p.backends.map((b) => [
    b.address,
    b.before ? `${b.before.weight}${b.before.draining ? ' (draining)' : ''}` : '-',
    b.after ? `${b.after.weight}${b.after.draining ? ' (draining)' : ''}` : 'removed',
    share(b.before?.share),
    share(b.after?.share),
  ]);
  return [
    table(['BACKEND', 'WEIGHT NOW', 'WEIGHT AFTER', 'SHARE NOW', 'SHARE AFTER'], rows),
    `new-flow slots that change backend: ${p.slotsMoved} of ${p.tableSize} (${percent(p.fractionMoved)})`,
    `tracked flows: ${p.trackedFlows}; moved to another backend because theirs goes away: ${p.flowsToMove} ` +
      `(${p.activeFlowsToMove} live connections, which break); ` +
      `on slots that change owner but staying on their backend while tracked: ${p.flowsOnMovedSlots}`,
  ].join('\n');
}

export function formatExplain(e: ExplainResult): string {
  const to = /:0\/(tcp|udp)$/.test(e.vip) ? `${e.vip} (port ${e.port})` : e.vip;
  const lines = [`flow ${e.client} -> ${to}: goes to ${e.backend ?? 'nowhere (dropped)'}, decided by the ${e.decidedBy}`];
  if (e.tracked) {
    lines.push(
      `  tracked:  backend ${e.tracked.backend} (${e.tracked.state}), last packet ${e.tracked.lastSeenSecondsAgo} s ago${e.tracked.closing ? ', client closing' : ''}`,
    );
    if (e.decidedBy !== 'tracked flow') lines.push("            its backend can no longer take it: the flow moves to the table's choice");
  } else {
    lines.push('  tracked:  no (a new flow)');
  }
  lines.push(
    `  table:    ${e.table.hashOf === 'source' ? "hash of the client's address" : 'hash'} ${e.table.hash} -> slot ${e.table.slot} of ${e.table.tableSize} -> ${e.table.owner ?? 'no usable backend'}` +
      (e.table.owner ? ` (owns ${percent(e.table.ownerShare)} of the table)` : ''),
  );
  if (e.tracked && e.decidedBy === 'tracked flow' && e.table.owner !== e.backend) {
    lines.push(
      e.table.hashOf === 'source'
        ? '            a new connection from this address (a TCP SYN, any port) would follow the table'
        : '            a new connection from this address and port (a TCP SYN) would follow the table',
    );
  }
  return lines.join('\n');
}

export function formatKillSwitch(k: KillSwitchStatus): string {
  const passed =
    k.passedPackets > 0 ? `; ${compact(k.passedPackets)} VIP packets passed to the kernel while it was engaged or tripped` : '';
  if (k.engaged) return `ENGAGED since ${k.engagedSince}: NOT BALANCING (lbctl kill-switch release resumes)${passed}`;
  if (k.secondsLeft <= 0) return `TRIPPED ${Math.round(-k.secondsLeft)} s ago (the daemon was silent): NOT BALANCING${passed}`;
  return `ready: fails open if the daemon is silent for ${k.timeoutMs / 1000} s${passed}`;
}

/** `lbctl stats`: traffic per VIP with its backends beneath, then what was not balanced and why. */
export function formatStats(s: StatsResult): string {
  const counters = (c: TrafficStats) => [
    compact(c.packets),
    compact(c.bytes),
    compact(c.newFlows),
    compact(c.trackedPackets),
    compact(c.movedFlows),
  ];
  const rows: string[][] = [];
  for (const vip of s.vips) {
    rows.push([vip.vip, '', '', ...counters(vip)]);
    for (const b of vip.backends)
      rows.push([`  ${b.address}`, b.health ? `${b.state}/${b.health}` : b.state, percent(b.share), ...counters(b)]);
  }
  const traffic =
    rows.length > 0
      ? table(['VIP / BACKEND', 'STATE', 'SHARE', 'PACKETS', 'BYTES', 'NEW FLOWS', 'TRACKED PKTS', 'MOVED'], rows)
      : 'no VIPs';
  const reasons = table(
    ['NOT BALANCED', 'FATE', 'PACKETS', 'MEANING'],
    s.reasons.map((r) => [r.reason, r.fate, compact(r.packets), r.meaning]),
  );
  const d = s.daemon;
  const average = d.reconciles > 0 ? d.reconcileMsTotal / d.reconciles : 0;
  return [
    traffic,
    '',
    reasons,
    '',
    `daemon: ${d.reconciles} reconciles (last ${d.lastReconcileMs.toFixed(1)} ms, average ${average.toFixed(1)} ms), ` +
      `${d.tablesBuilt} Maglev tables built, ${d.tablesWritten} written; health transitions: ${d.healthTransitions.down} down, ${d.healthTransitions.up} up`,
  ].join('\n');
}

/** A range of outer sources says how many addresses each flow's source is picked from. */
function formatTunnelSourceLine(text: string): string {
  const source = parseTunnelSource(text);
  return source.hostBits === 0 ? text : `${text} (${2 ** source.hostBits} addresses, spread by flow)`;
}

export function formatStatus(s: StatusResult): string {
  const attached = s.dataplane.state === 'attached';
  const lines = [
    `lbctl ${s.version}: running, pid ${s.pid}, since ${s.startedAt}`,
    `interface  ${s.interface} (ifindex ${s.ifindex}), ${s.xdpMode} XDP, program id ${s.programId}` +
      (attached ? '' : `: ${s.dataplane.state.toUpperCase().replace('_', ' ')}: NOTHING IS BALANCED: ${s.dataplane.detail}`),
    `vips       ${s.vips} with ${s.backends} backends${s.unresolvedBackends ? ` (${s.unresolvedBackends} without a usable path)` : ''}` +
      (s.downBackends.length ? `, ${s.downBackends.length} down` : '') +
      (s.vipsWithoutHealthyBackend.length ? `; ${s.vipsWithoutHealthyBackend.length} without a healthy backend` : ''),
    ...s.vipsWithoutHealthyBackend.map((v) => `           ${v}: no backend takes new flows`),
    ...s.downBackends.map((b) => `           ${b.vip} ${b.address}: down since ${b.since}${b.reason ? `: ${b.reason}` : ''}`),
    `flows      up to ${s.flowTableSize} tracked`,
    `metrics    ${s.metricsAddress ? `http://${s.metricsAddress}/metrics, status page http://${s.metricsAddress}/` : '(off: lbctl start --metrics-address ADDRESS:PORT)'}`,
    `kill-switch ${formatKillSwitch(s.killSwitch)}`,
    `announce   ${formatAnnounce(s.announce)}`,
    `tunnels    from ${s.tunnelSources.map(formatTunnelSourceLine).join(', ') || '(no address on the interface: ipip backends unusable)'}`,
    `netns      ${s.netns.name ?? `(unnamed) inode ${s.netns.inode}`}`,
    `config     ${s.configPath ?? '(none)'}`,
    `state      ${s.stateDir}`,
    `pins       ${s.pinDir}`,
    `socket     ${s.socket}`,
  ];
  return lines.join('\n');
}

/** `lbctl vip list`: a row per VIP; on a fleet node, whether it is announced, and why not. */
export function formatVips(vips: readonly VipSummary[]): string {
  if (vips.length === 0) return 'no VIPs';
  const announcing = vips.some((v) => v.announce.reason?.code !== 'off');
  const rows = vips.map((v) => [
    v.vip,
    ...(announcing ? [v.announce.announced ? 'yes' : 'no'] : []),
    v.forward,
    `${v.activeBackends}/${v.backends}`,
    String(v.tableSize),
    v.hash,
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
        `${v.vip}: every backend fails its check: ${v.onAllDown === 'drop' && !announcing ? 'dropping its packets' : 'still sending to the last healthy ones'}`,
    );
  if (announcing) {
    for (const v of vips) if (v.announce.reason) notes.push(`${v.vip}: not announced: ${v.announce.reason.text}`);
  }
  return [
    table(
      [
        'VIP',
        ...(announcing ? ['ANNOUNCED'] : []),
        'FORWARD',
        'BACKENDS',
        'TABLE',
        'HASH',
        'CHECK',
        'ALL DOWN',
        'PACKETS',
        'BYTES',
        'NEW FLOWS',
        'MOVED',
      ],
      rows,
    ),
    ...notes,
  ].join('\n');
}

export function formatBackends(backends: readonly BackendSummary[]): string {
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

/** `lbctl status`: how the node announces its VIPs to a fleet's router. */
export function formatAnnounce(a: AnnounceStatus | null): string {
  if (!a) return '(off: lbctl start --announce, or announce in the config)';
  const device = a.device ?? '(none: the watchdog withdrew every VIP)';
  const announced = a.announced.length > 0 ? a.announced.join(', ') : 'nothing';
  return (
    `${announced} through ${device} (table ${a.table}, proto ${a.proto}); need ${a.need}, hold-down ${a.holdDownMs / 1000} s, ` +
    `withdraw delay ${a.withdrawDelayMs / 1000} s, watchdog ${a.watchdogStallMs / 1000} s${a.interfaceUp ? '' : '; the interface is down'}`
  );
}

/** After a reload: the runtime changes that still override the file (lbctl config export makes them part of it). */
export function formatOverrides(overrides: readonly StateDifference[]): string {
  return [
    'runtime changes kept over the file (lbctl reload --discard-runtime-changes forgets them; lbctl config export writes them out):',
    ...overrides.map((d) => `  ${formatDifference(d)}`),
  ].join('\n');
}

/** `lbctl config diff`: from the file to what runs. */
export function formatConfigDiff(diff: ConfigDiff): string {
  if (diff.differences.length === 0 && diff.settings.length === 0) return `${diff.file}: what runs is what the file says`;
  return [
    `from ${diff.file} to what runs (+ only running, - only in the file, ~ differs):`,
    ...diff.differences.map((d) => `  ${formatDifference(d)}`),
    ...diff.settings.map((s) => `  settings: ${s}`),
  ].join('\n');
}
