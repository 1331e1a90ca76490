/**
 * What an operator sees, in the lab: the Prometheus endpoint scraped from
 * the client and checked against the requests actually sent, the status
 * page rendered by headless Chromium (screenshot in test-output/), lbctl
 * stats and lbctl top, and the daemon under systemd's readiness protocol.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LAB, Lab, ROOT } from './lab.js';
import type { StatsResult, StatusResult } from '../../src/api/protocol.js';
import { REASONS } from '../../src/dataplane/abi.js';
import { LBCTL, LabBalancer } from '../support/balancer.js';

const VIP = `${LAB.vips[0]}:80/tcp`;
const BACKENDS = ['10.10.0.11', '10.10.0.12', '10.20.0.14'];
const METRICS = `${LAB.balancer}:9640`;
const CONNECTIONS = 300;
const OUTPUT_DIR = join(ROOT, 'test-output');

const nameOf = (address: string) => LAB.backends.find((b) => b.address === address)!.name;

/** `name{labels} value` lines of an exposition, as a map from `name{labels}` to the value. */
function parseExposition(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

describe('observability in the lab', () => {
  let lab: Lab;
  let lb: LabBalancer;
  let answersByBackend: Map<string, number>;

  const scrape = async (path: string, extra: string[] = []) => {
    const r = await lab.exec('client', ['curl', '-sS', '-o', '-', '-w', '\n%{http_code}', ...extra, `http://${METRICS}${path}`]);
    assert.equal(r.code, 0, r.stderr);
    const cut = r.stdout.lastIndexOf('\n');
    return { body: r.stdout.slice(0, cut), status: Number(r.stdout.slice(cut + 1)) };
  };

  before(async () => {
    lab = await Lab.up();
    lb = new LabBalancer(lab);
    await lb.start(['--metrics-address', METRICS]);
    await lb.ok(['vip', 'add', VIP]);
    for (const address of BACKENDS)
      await lb.ok(['backend', 'add', VIP, address, ...(address.startsWith('10.20.') ? ['--forward', 'ipip'] : [])]);
    const load = await lb.httpFromClient(`http://${LAB.vips[0]}/`, CONNECTIONS, 8);
    assert.deepEqual(load.failures, []);
    answersByBackend = new Map(BACKENDS.map((a) => [a, load.answers.filter((x) => x.backend === nameOf(a)).length]));
  });

  after(async () => {
    await lb?.stop();
    await lab?.down();
  });

  test('the Prometheus endpoint counts exactly the connections the client made, per backend', async () => {
    const { body, status } = await scrape('/metrics');
    assert.equal(status, 200);
    const samples = parseExposition(body);
    const label = (address: string) => `{vip="${VIP}",backend="${address}"}`;
    let newFlows = 0;
    for (const address of BACKENDS) {
      const flows = samples.get(`lbctl_backend_new_flows_total${label(address)}`);
      assert.equal(flows, answersByBackend.get(address), `new flows of ${address} = connections it answered`);
      newFlows += flows!;
      const packets = samples.get(`lbctl_backend_packets_total${label(address)}`)!;
      assert.ok(packets >= 3 * flows!, `${address}: at least SYN, ACK and request per connection (${packets} packets)`);
      assert.equal(samples.get(`lbctl_backend_tracked_packets_total${label(address)}`), packets - flows!);
      assert.ok(samples.get(`lbctl_backend_bytes_total${label(address)}`)! > packets * 40, 'bytes are IP bytes');
      assert.equal(samples.get(`lbctl_backend_state{vip="${VIP}",backend="${address}",state="active"}`), 1);
      assert.equal(samples.get(`lbctl_backend_health{vip="${VIP}",backend="${address}",state="up"}`), 1);
      assert.ok(Math.abs(samples.get(`lbctl_backend_table_share_ratio${label(address)}`)! - 1 / 3) < 0.001);
    }
    assert.equal(newFlows, CONNECTIONS);
    assert.equal(samples.get(`lbctl_vip_new_flows_total{vip="${VIP}"}`), CONNECTIONS);
    assert.equal(
      samples.get(`lbctl_vip_packets_total{vip="${VIP}"}`),
      BACKENDS.reduce((sum, a) => sum + samples.get(`lbctl_backend_packets_total${label(a)}`)!, 0),
    );
    assert.ok(
      samples.get('lbctl_packets_not_balanced_total{reason="not_vip",fate="passed"}')! > 0,
      'the scrape itself is a packet for no VIP',
    );
    assert.ok(samples.get('lbctl_reconcile_duration_seconds_count')! >= 4, 'every change was a reconcile');
    assert.ok(samples.get('lbctl_maglev_tables_built_total')! >= 3);
    assert.equal(samples.get('lbctl_kill_switch_engaged'), 0);
    // Not a fleet node: nothing is announced, and the reason says why.
    assert.equal(samples.get(`lbctl_vip_announced{vip="${VIP}"}`), 0);
    assert.equal(samples.get(`lbctl_vip_not_announced{vip="${VIP}",reason="off"}`), 1);
    assert.ok(samples.get('lbctl_kill_switch_remaining_seconds')! > 0);
    assert.equal(samples.get('lbctl_health_transitions_total{to="down"}'), 0);
    assert.ok([...samples.keys()].some((k) => k.startsWith('lbctl_info{version=')));
    assert.ok(samples.has('process_resident_memory_bytes'), 'process metrics');
    for (const name of ['lbctl_backend_packets_total', 'lbctl_packets_not_balanced_total', 'lbctl_reconcile_duration_seconds']) {
      assert.match(body, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} has help`);
    }
  });

  test('lbctl stats agrees with the metrics; the endpoint is read-only', async () => {
    const stats = await lb.json<StatsResult>(['stats']);
    const vip = stats.vips.find((v) => v.vip === VIP)!;
    assert.equal(vip.newFlows, CONNECTIONS);
    for (const b of vip.backends) assert.equal(b.newFlows, answersByBackend.get(b.address));
    assert.equal(stats.reasons.length, REASONS.length);
    assert.ok(stats.daemon.reconciles >= 4);
    const text = await lb.ok(['stats']);
    assert.match(text, new RegExp(`^${VIP.replaceAll('.', '\\.')}\\s`, 'm'));
    assert.match(text, /^NOT BALANCED\s+FATE\s+PACKETS\s+MEANING/m);
    assert.match(text, /^daemon: \d+ reconciles/m);

    for (const method of ['POST', 'PUT', 'DELETE']) {
      assert.equal((await scrape('/metrics', ['-X', method])).status, 405, `${method} is refused`);
    }
    assert.equal((await scrape('/nothing')).status, 404);
    const json = JSON.parse((await scrape('/stats.json')).body) as { stats: StatsResult; info: { interface: string } };
    assert.equal(json.info.interface, 'eth0');
    assert.equal(json.stats.vips[0]!.newFlows, CONNECTIONS, 'counters are JSON numbers');
    const status = await lb.json<StatusResult>(['status']);
    assert.equal(status.metricsAddress, METRICS);
  });

  test('the status page shows VIPs, backends, health, shares and rates in headless Chromium', async (t) => {
    mkdirSync(OUTPUT_DIR, { recursive: true });
    const screenshot = join(OUTPUT_DIR, 'status-page.png');
    rmSync(screenshot, { force: true });
    const profile = join(lab.runtimeDir, 'chromium');
    // Traffic while the page refreshes, so that rates are not zero.
    const traffic = lb.httpFromClient(`http://${LAB.vips[0]}/`, 200, 2);
    const chromium = (mode: string[]) =>
      lab.exec(
        'client',
        [
          'chromium',
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--hide-scrollbars',
          `--user-data-dir=${profile}`,
          '--window-size=1100,820',
          '--virtual-time-budget=6000',
          ...mode,
          `http://${METRICS}/`,
        ],
        { timeoutMs: 90_000 },
      );
    const dom = await chromium(['--dump-dom']);
    assert.equal(dom.code, 0, dom.stderr);
    const shot = await chromium([`--screenshot=${screenshot}`]);
    assert.equal(shot.code, 0, shot.stderr);
    await traffic;

    for (const address of BACKENDS)
      assert.match(
        dom.stdout,
        new RegExp(`<td>${address.replaceAll('.', '\\.')}</td><td class="active">active</td><td class="up">up</td>`),
      );
    assert.match(dom.stdout, new RegExp(`<h2>${VIP.replaceAll('.', '\\.')}</h2>`));
    assert.match(dom.stdout, /33\.3 %/, 'shares');
    assert.match(dom.stdout, /\d+(\.\d)? k?pps/, 'rates after the first refresh');
    assert.match(dom.stdout, /kill-switch armed/);
    const png = readFileSync(screenshot);
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
    t.diagnostic(
      `status page screenshot: ${screenshot} (${png.readUInt32BE(16)}x${png.readUInt32BE(20)}, ${statSync(screenshot).size} bytes)`,
    );
  });

  test('lbctl top draws a live table in a terminal and quits on q; without a terminal it prints frames', async () => {
    const frames = await lb.ok(['top', '--interval', '200ms', '--count', '2']);
    const parts = frames.split(/\n(?=lbctl \S+ on eth0)/);
    assert.equal(parts.length, 2, frames);
    assert.match(parts[0]!, /VIP \/ BACKEND\s+STATE\s+SHARE\s+PKT\/S/);
    assert.match(parts[0]!, new RegExp(`^  10\\.10\\.0\\.11\\s+active/up\\s+33\\.3%\\s+-`, 'm'), 'no rate before a second sample');
    assert.match(parts[1]!, new RegExp(`^  10\\.10\\.0\\.11\\s+active/up\\s+33\\.3%\\s+\\d`, 'm'), 'rates from the second frame');

    // `script` gives lbctl top a pseudo-terminal, as an SSH session would.
    const command = `${LBCTL} top --interval 200ms --socket ${lb.socket}`;
    const child: ChildProcess = lab.spawn('lb', ['script', '-qfec', command, '/dev/null'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, TERM: 'xterm', COLUMNS: '120', LINES: '40' },
    });
    let screen = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      screen += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const deadline = Date.now() + 15_000;
    while (!screen.includes('10.10.0.12') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.match(screen, /\x1b\[\?1049h/, 'switches to the alternate screen');
    assert.match(screen, /q quits/);
    child.stdin!.write('q');
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    assert.equal(code, 0, 'q quits');
    assert.match(screen, /\x1b\[\?1049l/, 'restores the screen');
  });

  test('under systemd: lbctl start stays in the foreground and notifies readiness and stopping', async () => {
    const notify = join(lab.runtimeDir, 'notify.sock');
    const receiver = spawn('socat', ['-u', `UNIX-RECV:${notify}`, 'STDOUT'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let received = '';
    let pinDir: string | undefined;
    receiver.stdout!.on('data', (chunk: Buffer) => {
      received += `${chunk.toString()}\n`;
    });
    try {
      while (!statSync(notify, { throwIfNoEntry: false })) await new Promise((r) => setTimeout(r, 20));
      const socket = join(lab.runtimeDir, 'systemd.sock');
      // Another interface of the lab's balancer namespace would do; eth0 is taken by the other daemon.
      await lab.exec('lb', ['ip', 'link', 'add', 'sd0', 'type', 'veth', 'peer', 'name', 'sd1']);
      const daemon = lab.spawn(
        'lb',
        [
          LBCTL,
          'start',
          '--interface',
          'sd0',
          '--xdp-mode',
          'generic',
          '--socket',
          socket,
          '--state-dir',
          join(lab.runtimeDir, 'systemd-state'),
        ],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, NOTIFY_SOCKET: notify, INVOCATION_ID: '0123456789abcdef' },
        },
      );
      let output = '';
      daemon.stdout!.on('data', (c: Buffer) => {
        output += c.toString();
      });
      const exited = new Promise<number | null>((resolve) => daemon.once('exit', (code) => resolve(code)));
      const deadline = Date.now() + 20_000;
      while (!received.includes('READY=1') && Date.now() < deadline && daemon.exitCode === null)
        await new Promise((r) => setTimeout(r, 50));
      assert.match(received, /READY=1\nSTATUS=balancing on sd0\nMAINPID=\d+/, `notified: ${received} / ${output}`);
      const status = JSON.parse((await lab.exec('lb', [LBCTL, 'status', '--json', '--socket', socket])).stdout) as StatusResult;
      assert.equal(status.pid, daemon.pid, 'the process systemd started is the daemon (no fork)');
      assert.match(received, new RegExp(`MAINPID=${daemon.pid}`));
      assert.match(output, /"event":"daemon.started"/, 'logs JSON lines to standard output (the journal)');
      pinDir = status.pinDir;
      daemon.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.match(received, /STOPPING=1/);
    } finally {
      receiver.kill();
      // SIGTERM keeps the data plane for the next start: deleting the link detaches it, the pins go by hand.
      await lab.exec('lb', ['ip', 'link', 'del', 'sd0']);
      if (pinDir) rmSync(pinDir, { recursive: true, force: true });
    }
  });
});
