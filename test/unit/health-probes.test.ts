/**
 * src/health/probes.ts against real servers on 127.0.0.1 started here.
 *
 * The TCP timeout is made deterministic with a listener whose accept queue
 * is full: a child process listens with backlog 1 and then blocks its only
 * thread (Atomics.wait) so it never accepts; once two connections fill the
 * queue, the kernel drops every further SYN, so a connect neither succeeds
 * nor is refused.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseVip } from '../../src/model/address.js';
import { defaultCheck } from '../../src/model/check.js';
import { dnsProbe, dnsQuery, httpProbe, httpsProbe, noneProbe, runProbe, tcpProbe, udpProbe } from '../../src/health/probes.js';

const HOST = '127.0.0.1';
const TIMEOUT = 300;

function listen(server: net.Server | dgram.Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    if (server instanceof dgram.Socket) {
      server.once('error', reject);
      server.bind(0, HOST, () => resolve(server.address().port));
    } else {
      server.once('error', reject);
      server.listen(0, HOST, () => resolve((server.address() as net.AddressInfo).port));
    }
  });
}

function closeServer(server: net.Server | dgram.Socket | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (!server) return resolve();
    if (server instanceof dgram.Socket) {
      try {
        server.close(() => resolve());
      } catch {
        resolve();
      }
      return;
    }
    (server as http.Server).closeAllConnections?.();
    server.close(() => resolve());
  });
}

/** A port nothing listens on (TCP and UDP): bound, then released. */
async function freePort(): Promise<number> {
  const udp = dgram.createSocket('udp4');
  const port = await listen(udp);
  await closeServer(udp);
  const tcp = net.createServer();
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(port, HOST, () => resolve());
  });
  await closeServer(tcp);
  return port;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = Date.now();
  const value = await fn();
  return { value, ms: Date.now() - start };
}

describe('tcp probe', () => {
  let server: net.Server;
  let port: number;
  const sockets = new Set<net.Socket>();

  before(async () => {
    server = net.createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    });
    port = await listen(server);
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await closeServer(server);
  });

  test('ok when the connection is accepted; it is closed at once', async () => {
    const { value, ms } = await timed(() => tcpProbe({ address: HOST, port, timeoutMs: TIMEOUT }));
    assert.deepEqual(value, { ok: true });
    assert.ok(ms < TIMEOUT, `took ${ms} ms`);
    const deadline = Date.now() + 1000;
    while (sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(sockets.size, 0, 'the probe closed its connection');
  });

  test('connection refused', async () => {
    const { value, ms } = await timed(async () => tcpProbe({ address: HOST, port: await freePort(), timeoutMs: TIMEOUT }));
    assert.deepEqual(value, { ok: false, reason: 'connection refused' });
    assert.ok(ms < TIMEOUT, `refused at once, took ${ms} ms`);
  });

  test('timeout against a listener whose accept queue is full', async () => {
    const script = [
      "const s = require('net').createServer();",
      "s.listen({ host: '127.0.0.1', port: 0, backlog: 1 }, () => {",
      "  process.stdout.write(s.address().port + '\\n');",
      '  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);', // never accepts
      '});',
    ].join('\n');
    let child: ChildProcess | undefined;
    const fillers: net.Socket[] = [];
    try {
      child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const stuckPort = await new Promise<number>((resolve, reject) => {
        child!.once('error', reject);
        child!.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      });
      // Fill the accept queue: connect until a connection no longer completes.
      let full = false;
      for (let i = 0; i < 8 && !full; i++) {
        const s = net.connect(stuckPort, HOST);
        s.on('error', () => undefined);
        fillers.push(s);
        full = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(true), 200);
          s.once('connect', () => {
            clearTimeout(timer);
            resolve(false);
          });
        });
      }
      assert.ok(full, 'the accept queue filled up');
      const { value, ms } = await timed(() => tcpProbe({ address: HOST, port: stuckPort, timeoutMs: TIMEOUT }));
      assert.deepEqual(value, { ok: false, reason: `timeout after ${TIMEOUT} ms` });
      assert.ok(ms >= TIMEOUT - 5 && ms < TIMEOUT + 200, `took ${ms} ms`);
    } finally {
      for (const s of fillers) s.destroy();
      child?.kill('SIGKILL');
    }
  });

  test('an abort signal ends the probe at once', async () => {
    const script =
      "require('net').createServer().listen({ host: '127.0.0.1', port: 0, backlog: 1 }, function () { process.stdout.write(this.address().port + '\\n'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); });";
    let child: ChildProcess | undefined;
    const fillers: net.Socket[] = [];
    try {
      child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const stuckPort = await new Promise<number>((resolve) =>
        child!.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
      );
      for (let i = 0; i < 3; i++) {
        const s = net.connect(stuckPort, HOST);
        s.on('error', () => undefined);
        fillers.push(s);
      }
      await new Promise((r) => setTimeout(r, 100));
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 50);
      const { value, ms } = await timed(() => tcpProbe({ address: HOST, port: stuckPort, timeoutMs: 5000, signal: controller.signal }));
      assert.deepEqual(value, { ok: false, reason: 'cancelled' });
      assert.ok(ms < 1000, `took ${ms} ms`);
      assert.deepEqual(await tcpProbe({ address: HOST, port: stuckPort, timeoutMs: 5000, signal: controller.signal }), {
        ok: false,
        reason: 'cancelled',
      });
    } finally {
      for (const s of fillers) s.destroy();
      child?.kill('SIGKILL');
    }
  });
});

interface SeenRequest {
  url: string;
  headers: http.IncomingHttpHeaders;
}

function handler(seen: SeenRequest[]): http.RequestListener {
  return (req, res) => {
    seen.push({ url: req.url ?? '', headers: req.headers });
    switch (req.url) {
      case '/ok':
        res.end('fine\n');
        return;
      case '/nocontent':
        res.writeHead(204).end();
        return;
      case '/moved':
        res.writeHead(301, { Location: '/ok' }).end();
        return;
      case '/fail':
        res.writeHead(503).end('overloaded\n');
        return;
      case '/big': {
        // An endless body: the probe must stop reading and close.
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
        const chunk = Buffer.alloc(16 * 1024, 120);
        const write = () => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', write);
        };
        res.on('error', () => undefined);
        write();
        return;
      }
      case '/hang':
        return; // never answers
      default:
        res.writeHead(404).end('no such page\n');
    }
  };
}

describe('http and https probes', () => {
  const seen: SeenRequest[] = [];
  let plain: http.Server;
  let secure: https.Server;
  let httpPort: number;
  let httpsPort: number;
  let certDir: string | undefined;

  before(async () => {
    plain = http.createServer(handler(seen));
    httpPort = await listen(plain);
    certDir = mkdtempSync(join(tmpdir(), 'lbctl-probe-cert-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(certDir, 'key.pem'),
        '-out',
        join(certDir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=lbctl-test',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    secure = https.createServer(
      { key: readFileSync(join(certDir, 'key.pem')), cert: readFileSync(join(certDir, 'cert.pem')) },
      handler(seen),
    );
    httpsPort = await listen(secure);
  });
  after(async () => {
    await closeServer(plain);
    await closeServer(secure);
    if (certDir) rmSync(certDir, { recursive: true, force: true });
  });

  const opts = (port: number, path: string, extra: { expectStatus?: number; timeoutMs?: number } = {}) => ({
    address: HOST,
    port,
    path,
    host: '10.100.0.100',
    timeoutMs: extra.timeoutMs ?? TIMEOUT,
    ...(extra.expectStatus !== undefined ? { expectStatus: extra.expectStatus } : {}),
  });

  test('200 is ok; the request names the VIP as Host, asks to close, sends no agent', async () => {
    seen.length = 0;
    assert.deepEqual(await httpProbe(opts(httpPort, '/ok')), { ok: true });
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.url, '/ok');
    assert.equal(seen[0]!.headers.host, '10.100.0.100');
    assert.equal(seen[0]!.headers.connection, 'close');
    assert.equal(seen[0]!.headers['user-agent'], undefined);
  });

  test('any 200-399 is ok by default', async () => {
    assert.deepEqual(await httpProbe(opts(httpPort, '/nocontent')), { ok: true });
    assert.deepEqual(await httpProbe(opts(httpPort, '/moved')), { ok: true });
  });

  test('503 and 404 (a bad path) fail with the status', async () => {
    assert.deepEqual(await httpProbe(opts(httpPort, '/fail')), { ok: false, reason: 'HTTP 503' });
    assert.deepEqual(await httpProbe(opts(httpPort, '/no/such/path')), { ok: false, reason: 'HTTP 404' });
  });

  test('expectStatus: only that status is ok', async () => {
    assert.deepEqual(await httpProbe(opts(httpPort, '/nocontent', { expectStatus: 204 })), { ok: true });
    assert.deepEqual(await httpProbe(opts(httpPort, '/ok', { expectStatus: 204 })), { ok: false, reason: 'HTTP 200, expected 204' });
    assert.deepEqual(await httpProbe(opts(httpPort, '/fail', { expectStatus: 503 })), { ok: true });
  });

  test('an endless body is read up to the limit, then the connection is closed', async () => {
    const { value, ms } = await timed(() => httpProbe(opts(httpPort, '/big', { timeoutMs: 2000 })));
    assert.deepEqual(value, { ok: true });
    assert.ok(ms < 1000, `took ${ms} ms`);
  });

  test('no answer: timeout; nobody listening: connection refused', async () => {
    const { value, ms } = await timed(() => httpProbe(opts(httpPort, '/hang')));
    assert.deepEqual(value, { ok: false, reason: `timeout after ${TIMEOUT} ms` });
    assert.ok(ms >= TIMEOUT - 5 && ms < TIMEOUT + 200, `took ${ms} ms`);
    assert.deepEqual(await httpProbe(opts(await freePort(), '/ok')), { ok: false, reason: 'connection refused' });
  });

  test('https with a self-signed certificate: ok, status checked as for http', async () => {
    seen.length = 0;
    assert.deepEqual(await httpsProbe(opts(httpsPort, '/ok')), { ok: true });
    assert.equal(seen[0]?.headers.host, '10.100.0.100');
    assert.deepEqual(await httpsProbe(opts(httpsPort, '/fail')), { ok: false, reason: 'HTTP 503' });
    assert.deepEqual(await httpsProbe(opts(httpsPort, '/ok', { expectStatus: 204 })), { ok: false, reason: 'HTTP 200, expected 204' });
  });

  test('https to a plain HTTP server: TLS handshake failed', async () => {
    const result = await httpsProbe(opts(httpPort, '/ok'));
    assert.equal(result.ok, false);
    assert.match((result as { reason: string }).reason, /^TLS handshake failed: \S/);
    assert.ok(!(result as { reason: string }).reason.includes('\n'));
  });

  test("runProbe picks the probe of the settings' kind and uses the check port", async () => {
    const vip = parseVip('10.100.0.100:80/tcp');
    const base = defaultCheck(vip);
    assert.deepEqual(await runProbe(vip, HOST, { ...base, port: httpPort, spec: { kind: 'http', path: '/fail' } }), {
      ok: false,
      reason: 'HTTP 503',
    });
    assert.deepEqual(await runProbe(vip, HOST, { ...base, port: httpsPort, spec: { kind: 'https', path: '/ok' } }), { ok: true });
    assert.deepEqual(await runProbe(vip, HOST, { ...base, port: httpPort }), { ok: true });
    assert.deepEqual(await runProbe(vip, HOST, { ...base, port: await freePort() }), { ok: false, reason: 'connection refused' });
    assert.deepEqual(await runProbe(vip, HOST, { ...base, spec: { kind: 'none' } }), { ok: true });
    assert.deepEqual(await noneProbe(), { ok: true });
  });
});

type DnsMode = 'noerror' | 'nxdomain' | 'refused' | 'servfail' | 'silent' | 'wrong-id-then-noerror' | 'query-flag';

describe('dns probe', () => {
  let server: dgram.Socket;
  let port: number;
  let mode: DnsMode = 'noerror';
  const queries: Buffer[] = [];

  before(async () => {
    server = dgram.createSocket('udp4');
    server.on('message', (query, peer) => {
      queries.push(query);
      const answer = (id: number, flags: number) => {
        const response = Buffer.from(query);
        response.writeUInt16BE(id, 0);
        response.writeUInt16BE(flags, 2);
        server.send(response, peer.port, peer.address);
      };
      const id = query.readUInt16BE(0);
      const rcode = { noerror: 0, nxdomain: 3, servfail: 2, refused: 5 } as Record<string, number>;
      if (mode === 'silent') return;
      if (mode === 'query-flag') return answer(id, 0x0000); // QR=0: not a response
      if (mode === 'wrong-id-then-noerror') {
        answer((id + 1) & 0xffff, 0x8005);
        setTimeout(() => answer(id, 0x8000), 20);
        return;
      }
      answer(id, 0x8000 | rcode[mode]!);
    });
    port = await listen(server);
  });
  after(() => closeServer(server));

  const probe = (name = 'example.com') => dnsProbe({ address: HOST, port, name, timeoutMs: TIMEOUT });

  test('NOERROR and NXDOMAIN are ok', async () => {
    mode = 'noerror';
    assert.deepEqual(await probe(), { ok: true });
    mode = 'nxdomain';
    assert.deepEqual(await probe(), { ok: true });
  });

  test('the query: type A, class IN, RD=0, one question, the name in labels', async () => {
    mode = 'noerror';
    queries.length = 0;
    await probe('www.example.com');
    await probe('.');
    assert.equal(queries.length, 2);
    const [q1, q2] = queries as [Buffer, Buffer];
    assert.equal(q1.readUInt16BE(2), 0, 'QR=0, opcode 0, RD=0');
    assert.equal(q1.readUInt16BE(4), 1, 'QDCOUNT');
    assert.deepEqual(q1.subarray(12), Buffer.from('\x03www\x07example\x03com\x00\x00\x01\x00\x01', 'latin1'));
    assert.deepEqual(q2.subarray(12), Buffer.from([0, 0, 1, 0, 1]));
    assert.deepEqual(dnsQuery('example.com.', 0x1234).subarray(12), dnsQuery('example.com', 0x1234).subarray(12));
    assert.equal(dnsQuery('x', 0xbeef).readUInt16BE(0), 0xbeef);
  });

  test('REFUSED and SERVFAIL fail with the rcode', async () => {
    mode = 'refused';
    assert.deepEqual(await probe(), { ok: false, reason: 'DNS REFUSED' });
    mode = 'servfail';
    assert.deepEqual(await probe(), { ok: false, reason: 'DNS SERVFAIL' });
  });

  test('a response with another id, or without QR, is ignored', async () => {
    mode = 'wrong-id-then-noerror';
    assert.deepEqual(await probe(), { ok: true });
    mode = 'query-flag';
    assert.deepEqual(await probe(), { ok: false, reason: `timeout after ${TIMEOUT} ms` });
  });

  test('no answer: timeout; nobody listening: port unreachable', async () => {
    mode = 'silent';
    const { value, ms } = await timed(() => probe());
    assert.deepEqual(value, { ok: false, reason: `timeout after ${TIMEOUT} ms` });
    assert.ok(ms >= TIMEOUT - 5, `took ${ms} ms`);
    const closed = await timed(async () => dnsProbe({ address: HOST, port: await freePort(), name: '.', timeoutMs: TIMEOUT }));
    assert.deepEqual(closed.value, { ok: false, reason: 'port unreachable' });
    assert.ok(closed.ms < TIMEOUT, `took ${closed.ms} ms`);
  });
});

describe('udp probe', () => {
  let echo: dgram.Socket;
  let silent: dgram.Socket;
  let echoPort: number;
  let silentPort: number;
  let received = 0;

  before(async () => {
    echo = dgram.createSocket('udp4');
    echo.on('message', (m, peer) => echo.send(m, peer.port, peer.address));
    echoPort = await listen(echo);
    silent = dgram.createSocket('udp4');
    silent.on('message', () => received++);
    silentPort = await listen(silent);
  });
  after(async () => {
    await closeServer(echo);
    await closeServer(silent);
  });

  test('a reply is ok at once', async () => {
    const { value, ms } = await timed(() => udpProbe({ address: HOST, port: echoPort, timeoutMs: TIMEOUT }));
    assert.deepEqual(value, { ok: true });
    assert.ok(ms < TIMEOUT, `took ${ms} ms`);
  });

  test('silence until the timeout is ok (keepalived semantics), after an empty datagram arrived', async () => {
    received = 0;
    const { value, ms } = await timed(() => udpProbe({ address: HOST, port: silentPort, timeoutMs: TIMEOUT }));
    assert.deepEqual(value, { ok: true });
    assert.ok(ms >= TIMEOUT - 5, `waited for the timeout, took ${ms} ms`);
    assert.equal(received, 1);
  });

  test('ICMP port unreachable fails', async () => {
    const { value, ms } = await timed(async () => udpProbe({ address: HOST, port: await freePort(), timeoutMs: TIMEOUT }));
    assert.deepEqual(value, { ok: false, reason: 'port unreachable' });
    assert.ok(ms < TIMEOUT, `took ${ms} ms`);
  });

  test('runProbe: udp and dns kinds', async () => {
    const vip = parseVip('10.100.0.100:5000/udp');
    const base = { ...defaultCheck(vip), timeoutMs: TIMEOUT };
    assert.deepEqual(await runProbe(vip, HOST, { ...base, port: echoPort }), { ok: true });
    assert.deepEqual(await runProbe(vip, HOST, { ...base, port: await freePort() }), { ok: false, reason: 'port unreachable' });
    // An echo of the query is not a response (QR=0): the dns probe keeps waiting.
    assert.deepEqual(await runProbe(vip, HOST, { ...base, port: echoPort, spec: { kind: 'dns', name: '.' } }), {
      ok: false,
      reason: `timeout after ${TIMEOUT} ms`,
    });
  });
});
