/**
 * src/health/checker.ts: the state machine against a real TCP server on
 * 127.0.0.1 that the tests stop and start (refused connections fail at
 * once, so results come at the pace of the 100 ms interval).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { createLogger } from '../../src/log.js';
import { parseVip } from '../../src/model/address.js';
import { type CheckSettings, defaultCheck } from '../../src/model/check.js';
import { type CheckTarget, HealthChecker, type Transition } from '../../src/health/checker.js';
import type { DsrProbeTarget } from '../../src/health/dsr-probe.js';

const HOST = '127.0.0.1';
const VIP = parseVip('10.100.0.100:80/tcp');
const INTERVAL = 100;

/** A TCP server that can be stopped and started again on the same port; counts connections. */
class Backend {
  connections = 0;
  port = 0;
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();

  get open(): number {
    return this.sockets.size;
  }

  async start(): Promise<void> {
    const server = net.createServer((s) => {
      this.connections++;
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => this.sockets.delete(s));
      s.resume(); // read (and drop) requests, and see the peer's FIN
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, HOST, () => resolve());
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

interface LogLine {
  level: number;
  msg: string;
  vip?: string;
  backend?: string;
  from?: string;
  to?: string;
  reason?: string;
}

function capture(): { lines: LogLine[]; stream: Writable } {
  const lines: LogLine[] = [];
  let pending = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      pending += chunk.toString();
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(pending.slice(0, nl)) as LogLine);
        pending = pending.slice(nl + 1);
      }
      callback();
    },
  });
  return { lines, stream };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('HealthChecker', () => {
  let backend: Backend;
  let checker: HealthChecker;
  let transitions: Transition[];
  let log: ReturnType<typeof capture>;

  const settings = (over: Partial<CheckSettings> = {}): CheckSettings => ({
    ...defaultCheck(VIP),
    // The state machine on its own; the DSR-path check has tests of its own below.
    dsr: false,
    intervalMs: INTERVAL,
    timeoutMs: 50,
    rise: 2,
    fall: 3,
    port: backend.port,
    ...over,
  });
  const target = (over: Partial<CheckSettings> = {}, key = 'vip be', address = HOST): CheckTarget => ({
    key,
    vip: VIP,
    address,
    settings: settings(over),
  });
  const states = () => transitions.map((t) => `${t.from}->${t.to}`);

  beforeEach(async () => {
    backend = new Backend();
    await backend.start();
    transitions = [];
    log = capture();
    checker = new HealthChecker(createLogger('debug', false, log.stream), (t) => transitions.push(t));
  });

  afterEach(async () => {
    checker.stop();
    await backend.stop();
  });

  test('starts unknown, goes up at the first success, logs the transition at info', async () => {
    checker.update([target()]);
    const start = checker.health('vip be');
    assert.equal(start?.state, 'unknown');
    assert.equal(start?.consecutive, 0);
    assert.ok(!Number.isNaN(Date.parse(start!.since)));
    await waitFor('up', () => checker.health('vip be')?.state === 'up', 1000);
    assert.deepEqual(transitions, [{ key: 'vip be', vip: VIP, address: HOST, from: 'unknown', to: 'up', reason: 'check passed' }]);
    const h = checker.health('vip be')!;
    assert.ok(h.lastCheck && Date.parse(h.lastCheck) >= Date.parse(start!.since));
    assert.ok(Date.parse(h.since) >= Date.parse(start!.since));
    assert.equal(h.lastError, undefined);
    assert.equal(log.lines.length, 1);
    assert.equal(log.lines[0]!.level, 30);
    assert.deepEqual(
      {
        vip: log.lines[0]!.vip,
        backend: log.lines[0]!.backend,
        from: log.lines[0]!.from,
        to: log.lines[0]!.to,
        reason: log.lines[0]!.reason,
      },
      { vip: '10.100.0.100:80/tcp', backend: HOST, from: 'unknown', to: 'up', reason: 'check passed' },
    );
  });

  test('the first probe runs at once; later ones every interval, with no log line per probe', async () => {
    const started = Date.now();
    checker.update([target()]);
    await waitFor('first probe', () => backend.connections === 1, 1000);
    assert.ok(Date.now() - started < INTERVAL / 2, `first probe after ${Date.now() - started} ms`);
    await sleep(INTERVAL * 5 + 50);
    // 1 + about 5 more (first interval jittered by up to 10%)
    assert.ok(backend.connections >= 5 && backend.connections <= 7, `${backend.connections} probes in ${Date.now() - started} ms`);
    assert.equal(log.lines.length, 1, 'only the transition is logged');
  });

  test('down at once from unknown: the first failure decides', async () => {
    await backend.stop();
    checker.update([target()]);
    await waitFor('down', () => transitions.length > 0, 1000);
    assert.deepEqual(transitions, [{ key: 'vip be', vip: VIP, address: HOST, from: 'unknown', to: 'down', reason: 'connection refused' }]);
    const h = checker.health('vip be')!;
    assert.equal(h.state, 'down');
    assert.equal(h.lastError, 'connection refused');
    assert.equal(h.consecutive, 0);
    assert.equal(log.lines.length, 1);
    assert.equal(log.lines[0]!.level, 40, 'down is a warning');
    assert.equal(log.lines[0]!.reason, 'connection refused');
  });

  test('fall: up stays up until `fall` failures in a row, then down once', async () => {
    checker.update([target({ fall: 3 })]);
    await waitFor('up', () => checker.health('vip be')?.state === 'up', 1000);
    await backend.stop();
    const seen: number[] = [];
    const stoppedAt = Date.now();
    while (checker.health('vip be')!.state === 'up') {
      const c = checker.health('vip be')!.consecutive;
      if (seen.at(-1) !== c) seen.push(c);
      if (Date.now() - stoppedAt > 2000) assert.fail('never went down');
      await sleep(5);
    }
    assert.deepEqual(seen, [0, 1, 2], 'failures counted while up');
    const elapsed = Date.now() - stoppedAt;
    assert.ok(elapsed >= INTERVAL * 2, `down after ${elapsed} ms: 3 probes take at least 2 intervals`);
    assert.deepEqual(states(), ['unknown->up', 'up->down']);
    assert.equal(transitions[1]!.reason, 'connection refused (3 checks in a row)');
    assert.equal(checker.health('vip be')!.consecutive, 0);
    assert.equal(checker.health('vip be')!.lastError, 'connection refused');
    await sleep(INTERVAL * 3);
    assert.deepEqual(states(), ['unknown->up', 'up->down'], 'reported once');
  });

  test('a success while up resets the failure count', async () => {
    checker.update([target({ fall: 3 })]);
    await waitFor('up', () => checker.health('vip be')?.state === 'up', 1000);
    for (let round = 0; round < 3; round++) {
      await backend.stop();
      await waitFor('a failure', () => checker.health('vip be')!.consecutive === 1, 1000);
      await backend.start();
      await waitFor('a success', () => checker.health('vip be')!.consecutive === 0, 1000);
    }
    assert.deepEqual(states(), ['unknown->up'], 'never 3 failures in a row');
    assert.equal(checker.health('vip be')!.lastError, 'connection refused', 'the last failure is remembered');
  });

  test('assumeUp (a backend a restarted daemon found in service): up at once, down only after `fall` failures', async () => {
    await backend.stop();
    checker.update([{ ...target({ fall: 3 }), assumeUp: true }]);
    assert.equal(checker.health('vip be')?.state, 'up', 'up before any probe');
    await waitFor('two failures', () => checker.health('vip be')!.consecutive === 2, 1000);
    assert.equal(checker.health('vip be')!.state, 'up', 'one or two failed probes do not take it out');
    await waitFor('down', () => checker.health('vip be')?.state === 'down', 1000);
    assert.deepEqual(states(), ['up->down']);
    assert.equal(transitions[0]!.reason, 'connection refused (3 checks in a row)');
  });

  test('rise: down comes up after `rise` successes in a row; a failure in between restarts the count', async () => {
    await backend.stop();
    checker.update([target({ rise: 3 })]);
    await waitFor('down', () => checker.health('vip be')?.state === 'down', 1000);
    await backend.start();
    await waitFor('one success', () => checker.health('vip be')!.consecutive === 1, 1000);
    await backend.stop();
    await waitFor('count reset', () => checker.health('vip be')!.consecutive === 0, 1000);
    assert.equal(checker.health('vip be')!.state, 'down');
    await backend.start();
    const seen: number[] = [];
    while (checker.health('vip be')!.state === 'down') {
      const c = checker.health('vip be')!.consecutive;
      if (seen.at(-1) !== c) seen.push(c);
      await sleep(5);
    }
    assert.deepEqual(
      seen.filter((c) => c > 0),
      [1, 2],
      'successes counted while down',
    );
    assert.deepEqual(states(), ['unknown->down', 'down->up']);
    assert.equal(transitions[1]!.reason, '3 checks passed in a row');
    assert.equal(log.lines.filter((l) => l.level === 30).length, 1);
    assert.equal(log.lines.filter((l) => l.level === 40).length, 1);
  });

  test('kind none: up at once, never probed', async () => {
    checker.update([target({ spec: { kind: 'none' } })]);
    assert.equal(checker.health('vip be')?.state, 'up', 'up during update()');
    assert.deepEqual(transitions, [
      { key: 'vip be', vip: VIP, address: HOST, from: 'unknown', to: 'up', reason: 'health checking disabled (check none)' },
    ]);
    await sleep(INTERVAL * 3);
    assert.equal(backend.connections, 0);
    assert.equal(transitions.length, 1);
  });

  test('update() adds and removes targets', async () => {
    const other = new Backend();
    await other.start();
    try {
      checker.update([target({}, 'a'), { ...target({}, 'b'), settings: settings({ port: other.port }) }]);
      await waitFor('both up', () => checker.health('a')?.state === 'up' && checker.health('b')?.state === 'up', 1000);
      checker.update([target({}, 'a')]);
      assert.equal(checker.health('b'), undefined, 'removed at once');
      const probesOfB = other.connections;
      await sleep(INTERVAL * 3);
      assert.equal(other.connections, probesOfB, 'a removed target is not probed any more');
      assert.ok(backend.connections >= 3, 'the other one still is');
      checker.update([target({}, 'a'), target({}, 'c')]);
      assert.equal(checker.health('c')?.state, 'unknown');
      assert.equal(checker.health('a')?.state, 'up', 'kept');
      await waitFor('c up', () => checker.health('c')?.state === 'up', 1000);
      assert.deepEqual(transitions.map((t) => `${t.key}:${t.to}`).sort(), ['a:up', 'b:up', 'c:up']);
      checker.update([]);
      assert.equal(checker.health('a'), undefined);
    } finally {
      await other.stop();
    }
  });

  test('changed timings keep the state; a changed check restarts, and its first result decides', async () => {
    checker.update([target({ fall: 3 })]);
    await waitFor('up', () => checker.health('vip be')?.state === 'up', 1000);
    const since = checker.health('vip be')!.since;
    checker.update([target({ fall: 5, rise: 1, intervalMs: 150, timeoutMs: 100 })]);
    assert.equal(checker.health('vip be')!.state, 'up');
    assert.equal(checker.health('vip be')!.since, since);
    // A different port where nothing listens: the new check's first failure takes it down at once (not after `fall`).
    await backend.stop();
    await backend.start();
    const closed = new Backend();
    await closed.start();
    const closedPort = closed.port;
    await closed.stop();
    checker.update([target({ fall: 5, port: closedPort })]);
    await waitFor('down', () => checker.health('vip be')?.state === 'down', 1000);
    assert.deepEqual(states(), ['unknown->up', 'up->down']);
    assert.equal(transitions[1]!.reason, 'connection refused');
  });

  test('stop() silences everything', async () => {
    checker.update([target({ fall: 1 })]);
    await waitFor('up', () => checker.health('vip be')?.state === 'up', 1000);
    checker.stop();
    const probes = backend.connections;
    await backend.stop();
    await sleep(INTERVAL * 3);
    assert.deepEqual(states(), ['unknown->up']);
    assert.equal(backend.connections, probes);
    assert.equal(checker.health('vip be'), undefined);
    checker.update([target()]);
    assert.equal(checker.health('vip be'), undefined, 'a stopped checker takes no targets');
    assert.equal(log.lines.length, 1);
  });

  test('stop() during a probe: the probe is cancelled and its result dropped', async () => {
    // An http check against the TCP server, which accepts and never answers: the probe stays in flight until its timeout.
    checker.update([target({ spec: { kind: 'http', path: '/' }, timeoutMs: 80 })]);
    await waitFor('probe connected', () => backend.connections === 1 && backend.open === 1, 1000);
    checker.stop();
    await waitFor('probe connection closed', () => backend.open === 0, 50);
    await sleep(INTERVAL * 2);
    assert.deepEqual(transitions, []);
    assert.equal(log.lines.length, 0);
    assert.equal(backend.connections, 1);
  });

  test('a throwing transition handler is logged, the checker keeps going', async () => {
    checker.stop();
    let calls = 0;
    checker = new HealthChecker(createLogger('debug', false, log.stream), () => {
      calls++;
      throw new Error('boom');
    });
    await backend.stop();
    checker.update([target({ rise: 1 })]);
    await waitFor('down', () => checker.health('vip be')?.state === 'down', 1000);
    await backend.start();
    await waitFor('up', () => checker.health('vip be')?.state === 'up', 1000);
    assert.equal(calls, 2);
    assert.equal(log.lines.filter((l) => l.msg === 'health transition handler failed').length, 2);
  });

  test('dsr without a path: the DSR probe is skipped and says so once', async () => {
    checker.update([target({ dsr: true })]);
    await waitFor('up', () => checker.health('vip be')?.state === 'up', 1000);
    await sleep(INTERVAL * 3);
    const skipped = log.lines.filter((l) => /DSR-path check skipped/.test(l.msg));
    assert.equal(skipped.length, 1);
    assert.equal(skipped[0]!.level, 40);
    assert.deepEqual(states(), ['unknown->up']);
  });

  test('dsr with a path but no balancer address of the VIP family: skipped and said once, the backend stays up', async () => {
    const path = { forward: 'l2dsr' as const, ifindex: 7, srcMac: '02:00:00:00:00:02', dstMac: '02:00:00:00:00:11' };
    let probes = 0;
    checker.stop();
    checker = new HealthChecker(
      createLogger('debug', false, log.stream),
      (t) => transitions.push(t),
      async () => {
        probes++;
        return { ok: false, reason: 'never sent' };
      },
    );
    checker.update([{ ...target({ dsr: true }), path }]);
    await waitFor('up', () => checker.health('vip be')?.state === 'up', 1000);
    await sleep(INTERVAL * 3);
    assert.equal(probes, 0);
    const skipped = log.lines.filter((l) => /DSR-path check skipped/.test(l.msg));
    assert.deepEqual(
      skipped.map((l) => l.msg),
      ['DSR-path check skipped: the balancer has no IPv4 address to send it from'],
    );
    assert.deepEqual(states(), ['unknown->up']);
  });

  test('dsr with a path: the DSR probe runs after a successful regular probe and its reason wins', async () => {
    const path = {
      forward: 'l2dsr' as const,
      ifindex: 7,
      srcMac: '02:00:00:00:00:02',
      dstMac: '02:00:00:00:00:11',
      source: '10.10.0.2',
    };
    const sent: DsrProbeTarget[] = [];
    checker.stop();
    checker = new HealthChecker(
      createLogger('debug', false, log.stream),
      (t) => transitions.push(t),
      async (probe) => {
        sent.push(probe);
        assert.ok(backend.connections >= 1, 'the regular probe ran first');
        return { ok: false, reason: 'backend 127.0.0.1 does not accept traffic for VIP: add it to lo' };
      },
    );
    checker.update([{ ...target({ dsr: true }), path }]);
    await waitFor('down', () => checker.health('vip be')?.state === 'down', 2000);
    assert.match(transitions[0]!.reason, /does not accept traffic for VIP: add it to lo$/);
    assert.deepEqual(
      sent[0],
      { ...path, vip: VIP, port: backend.port, backend: HOST, timeoutMs: 50 },
      'the probe goes where the path says',
    );
    // A failing regular probe skips the DSR probe: its reason is the regular one.
    await backend.stop();
    await waitFor('regular failure', () => checker.health('vip be')?.lastError === 'connection refused', 1000);
  });
});

test(
  'a probe the balancer cannot run for want of file descriptors (EMFILE) is no verdict: the backend stays up',
  { timeout: 30_000 },
  async () => {
    // In a process of its own with 256 descriptors at most, all taken once the backend is up.
    const url = (path: string) => JSON.stringify(new URL(path, import.meta.url).href);
    const script = `
    import net from 'node:net';
    import { closeSync, openSync } from 'node:fs';
    import { HealthChecker } from ${url('../../src/health/checker.js')};
    import { createLogger } from ${url('../../src/log.js')};
    import { parseVip } from ${url('../../src/model/address.js')};
    import { defaultCheck } from ${url('../../src/model/check.js')};
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const server = net.createServer((s) => s.destroy());
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const vip = parseVip('10.100.0.100:80/tcp');
    const transitions = [];
    const lines = [];
    const checker = new HealthChecker(createLogger('info', false, { write: (l) => lines.push(JSON.parse(l)) }), (t) => transitions.push(t.from + '->' + t.to));
    const settings = { ...defaultCheck(vip), intervalMs: 50, timeoutMs: 200, rise: 1, fall: 1, port: server.address().port };
    checker.update([{ key: 'k', vip, address: '127.0.0.1', settings }]);
    while (!transitions.length) await sleep(10);
    const fds = [];
    let error = '';
    try { for (;;) fds.push(openSync('/dev/null', 'r')); } catch (e) { error = e.code; }
    await sleep(600);
    const during = [...transitions];
    const withoutVerdict = checker.probesWithoutVerdict;
    for (const fd of fds) closeSync(fd);
    await sleep(300);
    checker.stop();
    server.close();
    const logged = lines.filter((l) => l.event === 'health.probe_without_verdict').map((l) => l.reason);
    process.stdout.write(JSON.stringify({ error, during, withoutVerdict, after: transitions, logged, state: checker.health('k') }));
    process.exit(0);`;
    const child = spawnSync('prlimit', ['--nofile=256', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    const report = JSON.parse(child.stdout) as {
      error: string;
      during: string[];
      withoutVerdict: number;
      after: string[];
      logged: string[];
    };
    assert.equal(report.error, 'EMFILE', 'every descriptor was taken');
    assert.deepEqual(report.during, ['unknown->up'], 'no verdict while the balancer had no descriptor');
    assert.ok(report.withoutVerdict >= 3, `probes without verdict counted (${report.withoutVerdict})`);
    assert.deepEqual(report.logged, ['the balancer could not probe: too many open files'], 'logged once');
    assert.deepEqual(report.after, ['unknown->up']);
  },
);
