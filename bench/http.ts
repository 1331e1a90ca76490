/**
 * Part 3: HTTP through the balancer in the lab. wrk in the client namespace
 * (fixed duration and connections), against the lab's nginx backends
 * be1..be3 through each system, both with keep-alive and with a new
 * connection per request (`Connection: close`). Systems are interleaved
 * (A B C ..., then B C ... A, ...) and the figures are medians over rounds.
 *
 *   lbctl-l2dsr     lbctl, VIP 10.100.0.100, l2dsr (replies go straight to the client)
 *   lbctl-ipip      lbctl, VIP 10.100.0.101, ipip, xdp_decap on the backends
 *   iptables-dnat   VIP 10.100.0.102: DNAT + statistic nth round robin in the
 *                   balancer namespace, ip_forward; the backends route the
 *                   client via the balancer for these runs (replies are
 *                   un-NATed there; the client address is kept)
 *   nginx-stream    nginx `stream` proxy on 10.100.0.103:80 in the balancer namespace
 *   haproxy-tcp     HAProxy `mode tcp` on 10.100.0.104:80 in the balancer namespace
 *   direct          straight to be1 alone, no balancer
 *   direct-ecmp     straight to be1..be3, no balancer: the client's own ECMP
 *                   route (L4 hash) spreads connections over them; the same
 *                   backend capacity as the balanced systems, so the limit
 *
 * CPU: /proc/stat busy time of the whole host during each run, per request
 * (XDP and iptables work in softirq, where no process owns it), and the CPU
 * time of the processes in the balancer namespace (the proxies; lbctl's
 * daemon), per request.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, LAB } from '../test/lab/lab.js';
import { LabBalancer } from '../test/support/balancer.js';
import { allResolved, dnatRules, removeNat } from './packet-rate.js';
import { CLOCK_TICKS, type Log, cpuTimes, median, namespaceCpuSeconds, sh, sleep } from './common.js';

export const HTTP_SYSTEMS = ['lbctl-l2dsr', 'lbctl-ipip', 'iptables-dnat', 'nginx-stream', 'haproxy-tcp', 'direct', 'direct-ecmp'] as const;
export type HttpSystem = (typeof HTTP_SYSTEMS)[number];
export const HTTP_VARIANTS = ['keep-alive', 'new-connection'] as const;
export type HttpVariant = (typeof HTTP_VARIANTS)[number];

export interface HttpOptions {
  /** Rounds (default 5). */
  rounds?: number;
  /** wrk duration per run (default 6 s). */
  seconds?: number;
  connections?: number;
  threads?: number;
  log?: Log;
}

export interface HttpSample {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly requests: number;
  readonly errors: number;
  /** Host CPU (all CPUs, busy time) per request, µs. */
  readonly hostCpuUsPerRequest: number;
  /** CPU of the processes in the balancer namespace per request, µs. */
  readonly lbProcessCpuUsPerRequest: number;
}

export interface HttpRow extends Omit<HttpSample, 'requests'> {
  readonly system: HttpSystem;
  readonly variant: HttpVariant;
  readonly description: string;
  readonly samples: HttpSample[];
}

export interface HttpResult {
  readonly rows: HttpRow[];
  readonly rounds: number;
  readonly seconds: number;
  readonly connections: number;
  readonly threads: number;
}

const BACKENDS = ['be1', 'be2', 'be3'] as const;
const address = (b: string) => LAB.backends.find((x) => x.name === b)!.address;
const ADDR: Record<HttpSystem, string> = {
  'lbctl-l2dsr': LAB.vips[0],
  'lbctl-ipip': LAB.vips[1],
  'iptables-dnat': LAB.vips[2],
  'nginx-stream': '10.100.0.103',
  'haproxy-tcp': '10.100.0.104',
  direct: address('be1'),
  'direct-ecmp': '10.100.0.105',
};
const DESCRIPTIONS: Record<HttpSystem, string> = {
  'lbctl-l2dsr': 'lbctl, l2dsr',
  'lbctl-ipip': 'lbctl, ipip (+ xdp_decap on the backends)',
  'iptables-dnat': 'iptables DNAT, statistic nth, replies via the balancer',
  'nginx-stream': 'nginx stream proxy (TCP)',
  'haproxy-tcp': 'HAProxy mode tcp',
  direct: 'straight to be1 alone, no balancer',
  'direct-ecmp': 'straight to be1..be3 (client-side ECMP), no balancer',
};

/** wrk's durations: "812.00us", "1.23ms", "2.00s". */
function durationMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (!m) return NaN;
  const scale = { us: 1e-3, ms: 1, s: 1e3, m: 60e3 }[m[2] as 'us' | 'ms' | 's' | 'm'];
  return Number(m[1]) * scale;
}

export function parseWrk(output: string): { requestsPerSecond: number; requests: number; p50Ms: number; p99Ms: number; errors: number } {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(output);
  const total = /(\d+) requests in/.exec(output);
  const p50 = /^\s+50%\s+(\S+)/m.exec(output);
  const p99 = /^\s+99%\s+(\S+)/m.exec(output);
  if (!rps || !total || !p50 || !p99) throw new Error(`cannot read wrk's output:\n${output}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  const errors = (socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return { requestsPerSecond: Number(rps[1]), requests: Number(total[1]), p50Ms: durationMs(p50[1]!), p99Ms: durationMs(p99[1]!), errors };
}

function nginxStreamConfig(dir: string): string {
  return `# bench/http.ts: nginx as a TCP (stream) proxy, round robin
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
user root;
daemon on;
worker_processes auto;
worker_rlimit_nofile 16384;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 8192; }
stream {
    upstream backends {
${BACKENDS.map((b) => `        server ${address(b)}:80;`).join('\n')}
    }
    server {
        listen ${ADDR['nginx-stream']}:80 reuseport backlog=4096;
        proxy_pass backends;
    }
}
`;
}

function haproxyConfig(dir: string): string {
  return `# bench/http.ts: HAProxy in mode tcp, round robin
global
    daemon
    pidfile ${dir}/haproxy.pid
    maxconn 8192
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend vip
    bind ${ADDR['haproxy-tcp']}:80
    default_backend backends
backend backends
    balance roundrobin
${BACKENDS.map((b) => `    server ${b} ${address(b)}:80`).join('\n')}
`;
}

export async function measureHttp(options: HttpOptions = {}): Promise<HttpResult> {
  const rounds = options.rounds ?? 5;
  const seconds = options.seconds ?? 6;
  const connections = options.connections ?? 64;
  const threads = options.threads ?? 1;
  const log = options.log ?? (() => undefined);

  // The backends also hold direct-ecmp's address.
  const lab = await Lab.up({ vips: [...LAB.vips, ADDR['direct-ecmp']] });
  const lb = new LabBalancer(lab);
  try {
    const dir = join(lab.runtimeDir, 'bench-http');
    mkdirSync(dir, { recursive: true });
    // Room for many short connections on both ends of the proxies.
    for (const role of ['client', 'lb']) await sh(lab, role, ['sysctl', '-qw', 'net.ipv4.ip_local_port_range=1024 65535']);
    await sh(lab, 'lb', ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.core.somaxconn=4096']);
    await sh(lab, 'client', ['sysctl', '-qw', 'net.ipv4.fib_multipath_hash_policy=1']);
    await sh(lab, 'client', [
      'ip',
      'route',
      'replace',
      `${ADDR['direct-ecmp']}/32`,
      ...BACKENDS.flatMap((b) => ['nexthop', 'via', address(b), 'dev', 'eth0']),
    ]);
    for (const system of ['nginx-stream', 'haproxy-tcp'] as const)
      await sh(lab, 'lb', ['ip', 'addr', 'add', `${ADDR[system]}/32`, 'dev', 'lo']);
    writeFileSync(join(dir, 'nginx.conf'), nginxStreamConfig(dir));
    writeFileSync(join(dir, 'haproxy.cfg'), haproxyConfig(dir));
    await sh(lab, 'lb', ['nginx', '-c', join(dir, 'nginx.conf'), '-p', `${dir}/`, '-e', join(dir, 'error.log')]);
    await sh(lab, 'lb', ['haproxy', '-f', join(dir, 'haproxy.cfg')]);
    const config = join(dir, 'lbctl.yaml');
    writeFileSync(
      config,
      [
        'vips:',
        ...(['l2dsr', 'ipip'] as const).flatMap((mode, i) => [
          `  - vip: ${LAB.vips[i]}:80/tcp`,
          `    forward: ${mode}`,
          '    backends:',
          ...BACKENDS.map((b) => `      - address: ${address(b)}`),
        ]),
        '',
      ].join('\n'),
    );

    const wrk = async (system: HttpSystem, variant: HttpVariant): Promise<HttpSample> => {
      const argv = [
        'wrk',
        `-t${threads}`,
        `-c${connections}`,
        `-d${seconds}s`,
        '--latency',
        ...(variant === 'new-connection' ? ['-H', 'Connection: close'] : []),
        `http://${ADDR[system]}/`,
      ];
      const cpu0 = cpuTimes();
      const ns0 = await namespaceCpuSeconds(lab, 'lb');
      const r = await lab.exec('client', argv, { timeoutMs: (seconds + 30) * 1000 });
      const cpu1 = cpuTimes();
      const ns1 = await namespaceCpuSeconds(lab, 'lb');
      if (r.code !== 0) throw new Error(`wrk against ${system} failed (${r.code}): ${r.stderr.trim()}`);
      const w = parseWrk(r.stdout);
      if (w.requests === 0) throw new Error(`wrk against ${system} (${variant}) completed no request:\n${r.stdout}`);
      return {
        ...w,
        hostCpuUsPerRequest: (((cpu1.busy - cpu0.busy) / CLOCK_TICKS) * 1e6) / w.requests,
        lbProcessCpuUsPerRequest: ((ns1 - ns0) * 1e6) / w.requests,
      };
    };

    const viaBalancerRoute = async (on: boolean) => {
      for (const b of BACKENDS)
        await sh(lab, b, ['ip', 'route', on ? 'replace' : 'del', `${LAB.client}/32`, ...(on ? ['via', LAB.balancer] : [])]);
    };

    const samples = new Map<string, HttpSample[]>();
    const record = async (system: HttpSystem) => {
      for (const variant of HTTP_VARIANTS) {
        const key = `${system} ${variant}`;
        const s = await wrk(system, variant);
        samples.set(key, [...(samples.get(key) ?? []), s]);
      }
    };
    // Groups of systems that share a set-up; each round starts one group
    // later than the previous, so that no system always runs first (right
    // after a set-up) or last.
    const groups: Array<() => Promise<void>> = [
      async () => {
        await lb.start(['--config', config]);
        await allResolved(lb);
        await sleep(1000); // the daemon's start-up work (first network refresh) settles
        try {
          await record('lbctl-l2dsr');
          await record('lbctl-ipip');
        } finally {
          await lb.stop();
        }
      },
      async () => {
        await dnatRules(lab, ADDR['iptables-dnat'], 'tcp', 80, BACKENDS.map(address));
        await viaBalancerRoute(true);
        try {
          await record('iptables-dnat');
        } finally {
          await viaBalancerRoute(false);
          await removeNat(lab);
        }
      },
      () => record('nginx-stream'),
      () => record('haproxy-tcp'),
      () => record('direct'),
      () => record('direct-ecmp'),
    ];
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < groups.length; i++) await groups[(round + i) % groups.length]!();
      log(
        `http round ${round + 1}/${rounds}: ${HTTP_SYSTEMS.map((s) => `${s} ${HTTP_VARIANTS.map((v) => Math.round(samples.get(`${s} ${v}`)!.at(-1)!.requestsPerSecond)).join('/')}`).join(', ')} req/s (keep-alive/new-connection)`,
      );
    }
    const rows: HttpRow[] = [];
    for (const variant of HTTP_VARIANTS) {
      for (const system of HTTP_SYSTEMS) {
        const s = samples.get(`${system} ${variant}`)!;
        const m = (f: (x: HttpSample) => number) => median(s.map(f));
        rows.push({
          system,
          variant,
          description: DESCRIPTIONS[system],
          samples: s,
          requestsPerSecond: m((x) => x.requestsPerSecond),
          p50Ms: m((x) => x.p50Ms),
          p99Ms: m((x) => x.p99Ms),
          errors: s.reduce((sum, x) => sum + x.errors, 0),
          hostCpuUsPerRequest: m((x) => x.hostCpuUsPerRequest),
          lbProcessCpuUsPerRequest: m((x) => x.lbProcessCpuUsPerRequest),
        });
      }
    }
    return { rows, rounds, seconds, connections, threads };
  } finally {
    await lb.stop().catch(() => undefined);
    await lab.down(); // also stops the proxies (every process in the namespaces)
  }
}

export function httpTable(result: HttpResult): string {
  const lines: string[] = [];
  for (const variant of HTTP_VARIANTS) {
    const rows = result.rows.filter((r) => r.variant === variant);
    const direct = rows.find((r) => r.system === 'direct')!;
    const limit = rows.find((r) => r.system === 'direct-ecmp')!;
    lines.push(
      `**${variant === 'keep-alive' ? 'Keep-alive' : 'New connection per request (`Connection: close`)'}**`,
      '',
      '| system | requests/s | × direct-ecmp | × direct (be1) | p50 ms | p99 ms | host CPU µs/req | Δ vs direct-ecmp µs/req | balancer-ns processes µs/req | errors |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map(
        (r) =>
          `| ${r.system}: ${r.description} | ${Math.round(r.requestsPerSecond)} | ${(r.requestsPerSecond / limit.requestsPerSecond).toFixed(2)} | ${(r.requestsPerSecond / direct.requestsPerSecond).toFixed(2)} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} | ${r.hostCpuUsPerRequest.toFixed(1)} | ${r.system === 'direct-ecmp' ? '-' : (r.hostCpuUsPerRequest - limit.hostCpuUsPerRequest).toFixed(1)} | ${r.lbProcessCpuUsPerRequest.toFixed(1)} | ${r.errors} |`,
      ),
      '',
    );
  }
  return lines.join('\n');
}

/** Bars of requests/s per system: one panel (with its own scale) per variant. */
export function httpSvg(result: HttpResult, title: string): string {
  const W = 900;
  const H = 440;
  const colors: Record<HttpSystem, string> = {
    'lbctl-l2dsr': '#1f77b4',
    'lbctl-ipip': '#6baed6',
    'iptables-dnat': '#d62728',
    'nginx-stream': '#2ca02c',
    'haproxy-tcp': '#9467bd',
    direct: '#bdbdbd',
    'direct-ecmp': '#7f7f7f',
  };
  const esc = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const top = 60;
  const plotH = H - top - 130;
  const panelW = (W - 40) / HTTP_VARIANTS.length;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${W / 2}" y="40" text-anchor="middle" fill="#555">requests/s (higher is better), median of ${result.rounds} interleaved round${result.rounds > 1 ? 's' : ''}; wrk -t${result.threads} -c${result.connections} -d${result.seconds}s</text>`,
  ];
  HTTP_VARIANTS.forEach((variant, g) => {
    const rows = HTTP_SYSTEMS.map((system) => result.rows.find((r) => r.system === system && r.variant === variant));
    const max = Math.max(...rows.map((r) => r?.requestsPerSecond ?? 0), 1);
    const step = 10 ** Math.floor(Math.log10(max));
    const scaleTop = Math.ceil((max * 1.08) / step) * step;
    const left = 20 + g * panelW + 55;
    const width = panelW - 75;
    const y = (v: number) => top + plotH - (v / scaleTop) * plotH;
    for (let i = 0; i <= 4; i++) {
      const v = (scaleTop / 4) * i;
      out.push(`<line x1="${left}" x2="${left + width}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
      out.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${Math.round(v).toLocaleString('en-US')}</text>`);
    }
    const barW = width / HTTP_SYSTEMS.length;
    rows.forEach((row, i) => {
      if (!row) return;
      const x = left + i * barW + barW * 0.1;
      out.push(
        `<rect x="${x.toFixed(1)}" y="${y(row.requestsPerSecond).toFixed(1)}" width="${(barW * 0.8).toFixed(1)}" height="${(top + plotH - y(row.requestsPerSecond)).toFixed(1)}" fill="${colors[row.system]}"><title>${row.system} ${variant}: ${Math.round(row.requestsPerSecond)} req/s</title></rect>`,
      );
      out.push(
        `<text x="${(x + barW * 0.4).toFixed(1)}" y="${(y(row.requestsPerSecond) - 4).toFixed(1)}" text-anchor="middle" font-size="10">${(row.requestsPerSecond / 1000).toFixed(1)}k</text>`,
      );
    });
    out.push(`<line x1="${left}" x2="${left + width}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`);
    out.push(
      `<text x="${(left + width / 2).toFixed(1)}" y="${top + plotH + 20}" text-anchor="middle" font-weight="bold">${variant === 'keep-alive' ? 'keep-alive' : 'new connection per request'}</text>`,
    );
  });
  HTTP_SYSTEMS.forEach((system, i) => {
    const lx = 30 + (i % 2) * 440;
    const ly = H - 80 + Math.floor(i / 2) * 18;
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${colors[system]}"/>`);
    out.push(`<text x="${lx + 18}" y="${ly}">${esc(`${system}: ${DESCRIPTIONS[system]}`)}</text>`);
  });
  out.push('</svg>', '');
  return out.join('\n');
}
