/**
 * A one-page view of the balancer for a browser: VIPs, their backends,
 * health, share of the Maglev table and rates. The page carries its first
 * snapshot and then polls stats.json; rates are the difference between
 * two snapshots, so they appear from the second one on.
 */
import type { MetricsSnapshot } from './prometheus.js';

/** JSON inside a <script> element: nothing in it may close the element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

export const STATUS_REFRESH_MS = 2000;

export function statusPage(first: MetricsSnapshot): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lbctl on ${escapeHtml(first.info.interface)}</title>
<style>
  :root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #6e7781; --bar: #0969da; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; max-width: 72rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  h2 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; font-family: ui-monospace, monospace; }
  .meta { color: var(--muted); }
  table { border-collapse: collapse; width: 100%; }
  th, td { padding: .25rem .6rem; border-bottom: 1px solid #d0d7de55; text-align: left; white-space: nowrap; }
  th { font-weight: 600; color: var(--muted); }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
  .active, .up { color: var(--ok); } .down, .unresolved { color: var(--bad); } .draining, .unknown { color: var(--warn); }
  .bar { display: inline-block; height: .7rem; background: var(--bar); vertical-align: middle; margin-right: .4rem; }
  .alert { color: var(--bad); font-weight: 600; }
</style>
</head>
<body>
<h1>lbctl</h1>
<div class="meta" id="meta"></div>
<div id="vips"></div>
<h2>Packets not balanced</h2>
<table id="reasons"></table>
<script>
const REFRESH_MS = ${STATUS_REFRESH_MS};
let previous = null;
let current = ${scriptJson(first)};
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
function si(n, unit) {
  if (n === null || !isFinite(n)) return '–';
  const units = ['', 'k', 'M', 'G', 'T'];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)) + ' ' + units[i] + unit;
}
function rate(now, before, field) {
  if (!before) return null;
  const seconds = (Date.parse(current.stats.at) - Date.parse(previous.stats.at)) / 1000;
  return seconds > 0 ? Math.max(0, (Number(now[field]) - Number(before[field])) / seconds) : null;
}
function rates(now, before) {
  const bytes = rate(now, before, 'bytes');
  return '<td class="n">' + si(rate(now, before, 'packets'), 'pps') + '</td><td class="n">' + si(bytes === null ? null : bytes * 8, 'bit/s') +
    '</td><td class="n">' + si(rate(now, before, 'newFlows'), 'flows/s') + '</td><td class="n">' + si(Number(now.packets), '') + '</td>';
}
function render() {
  const { stats, killSwitch, info } = current;
  const ks = killSwitch.engaged ? '<span class="alert">kill-switch engaged: not balancing</span>'
    : killSwitch.secondsLeft <= 0 ? '<span class="alert">kill-switch tripped: not balancing</span>' : 'kill-switch armed';
  document.getElementById('meta').innerHTML = esc('lbctl ' + info.version + ' on ' + info.interface + ' (' + info.xdpMode + ' XDP)') +
    ' · ' + ks + ' · updated ' + esc(new Date(stats.at).toLocaleTimeString());
  const before = previous ? new Map(previous.stats.vips.map((v) => [v.vip, v])) : new Map();
  document.getElementById('vips').innerHTML = stats.vips.length === 0 ? '<p>No VIPs.</p>' : stats.vips.map((vip) => {
    const old = before.get(vip.vip);
    const oldBackends = new Map((old ? old.backends : []).map((b) => [b.address, b]));
    const rows = vip.backends.map((b) => '<tr><td>' + esc(b.address) + '</td><td class="' + esc(b.state) + '">' + esc(b.state) + '</td><td class="' +
      esc(b.health || '') + '">' + esc(b.health || 'not checked') + (b.healthError ? ': ' + esc(b.healthError) : '') + '</td><td class="n"><span class="bar" style="width:' + (b.share * 8).toFixed(2) + 'rem"></span>' +
      (b.share * 100).toFixed(1) + ' %</td>' + rates(b, oldBackends.get(b.address)) + '</tr>').join('');
    const active = vip.backends.filter((b) => b.state === 'active').length;
    const announce = vip.notAnnounced === null ? '<p class="up">announced</p>'
      : vip.notAnnounced.code === 'off' ? '' : '<p class="' + (vip.notAnnounced.code === 'hold_down' ? 'unknown' : 'down') + '">not announced: ' + esc(vip.notAnnounced.text) + '</p>';
    return '<h2>' + esc(vip.vip) + '</h2>' + announce + '<table><tr><th>backend</th><th>state</th><th>health</th><th class="n">table share</th><th class="n">packets/s</th>' +
      '<th class="n">bits/s</th><th class="n">new flows/s</th><th class="n">packets</th></tr>' + rows +
      '<tr><th>VIP (' + active + ' of ' + vip.backends.length + ' active)</th><th></th><th></th><th></th>' + rates(vip, old).replace(/td/g, 'th') + '</tr></table>';
  }).join('');
  const oldReasons = new Map((previous ? previous.stats.reasons : []).map((r) => [r.reason, r]));
  document.getElementById('reasons').innerHTML = '<tr><th>reason</th><th>fate</th><th class="n">packets/s</th><th class="n">packets</th><th>meaning</th></tr>' +
    stats.reasons.filter((r) => r.packets !== '0').map((r) => '<tr><td>' + esc(r.reason) + '</td><td>' + esc(r.fate) + '</td><td class="n">' +
      si(rate(r, oldReasons.get(r.reason), 'packets'), 'pps') + '</td><td class="n">' + si(Number(r.packets), '') + '</td><td>' + esc(r.meaning) + '</td></tr>').join('');
}
async function refresh() {
  try {
    const response = await fetch('stats.json', { cache: 'no-store' });
    if (response.ok) { previous = current; current = await response.json(); render(); }
  } catch (error) {
    document.getElementById('meta').innerHTML = '<span class="alert">cannot reach the daemon: ' + esc(error.message) + '</span>';
  }
  setTimeout(refresh, REFRESH_MS);
}
render();
setTimeout(refresh, REFRESH_MS);
</script>
</body>
</html>
`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
