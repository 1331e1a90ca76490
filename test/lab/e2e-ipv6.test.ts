/**
 * IPv6 in the dual-stack lab, through the real daemon and CLI, with real
 * clients (curl, node's http) and real servers (the backends' nginx):
 *
 * - HTTP to an IPv6 VIP with l2dsr backends on the segment, and to one with
 *   IPv6-in-IPv6 backends behind the router;
 * - VIPs whose backends are of the other family: IPv4-in-IPv6 and
 *   IPv6-in-IPv4 (only --forward ipip can cross families);
 * - path MTU discovery through the balancer: in a lab whose links are all
 *   1500 bytes, a full-size client packet plus the tunnel header does not
 *   fit; the balancer answers with ICMP too-big (IPv4 "fragmentation
 *   needed", ICMPv6 "packet too big"), the client learns the smaller path
 *   MTU and a large upload goes through whole. (A large response would not
 *   show it: responses go straight from the backend to the client.)
 *
 * Every backend nginx answers "backend=NAME client=ADDRESS port=PORT ..."
 * and stores PUT /upload/FILE (vagrant/provision/backend.sh).
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LAB, Lab } from './lab.js';
import type { BackendSummary, StatsResult, StatusResult } from '../../src/api/protocol.js';
import { LabBalancer, backendPredictor } from '../support/balancer.js';
import type { LoadResult } from '../support/http-load.js';

const CONNECTIONS = 300;
const L2DSR = LAB.backends.filter((b) => b.forward === 'l2dsr');
const REMOTE = LAB.backends.filter((b) => b.forward === 'ipip');
const nameOf = (address: string) => LAB.backends.find((b) => b.address === address || b.address6 === address)!.name;
const url = (vip: string, path = '/') => (vip.includes(':') ? `http://[${vip}]${path}` : `http://${vip}${path}`);
const key = (vip: string) => (vip.includes(':') ? `[${vip}]:80/tcp` : `${vip}:80/tcp`);

/** Brings up a lab and an lbctl daemon in its balancer namespace; tears both down even if the other step fails. */
function labWithBalancer(options: Parameters<typeof Lab.up>[0] = {}) {
  const ctx: { lab?: Lab; lb?: LabBalancer } = {};
  before(async () => {
    ctx.lab = await Lab.up(options);
    ctx.lb = new LabBalancer(ctx.lab);
    await ctx.lb.start();
  });
  after(async () => {
    try {
      await ctx.lb?.stop();
    } finally {
      // Also kills a daemon that would not stop, and removes its pins.
      await ctx.lab?.down();
    }
  });
  return ctx as { lab: Lab; lb: LabBalancer };
}

/**
 * Runs tcpdump in a namespace while `during` runs; returns the lines it
 * printed. Waits for tcpdump to listen first; bounded by `during` itself.
 */
async function capture(lab: Lab, role: string, iface: string, filter: string, during: () => Promise<unknown>): Promise<string[]> {
  const child: ChildProcess = lab.spawn(role, ['tcpdump', '--immediate-mode', '-i', iface, '-n', '-l', filter], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('tcpdump did not start listening within 5 s')), 5000);
      child.stderr!.on('data', (d: Buffer) => {
        if (d.toString().includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`tcpdump exited (${code})`));
      });
    });
    await during();
    await new Promise((resolve) => setTimeout(resolve, 200)); // the last frames reach tcpdump
  } finally {
    child.kill('SIGINT');
    await exited;
  }
  return out.split('\n').filter((l) => l.trim() !== '');
}

/** Asserts no connection failed, every answer came from the backend Maglev names for it and saw the client's own address; returns answers per backend. */
function checkAnswers(
  result: LoadResult,
  vip: string,
  backends: readonly string[],
  client: string,
  diagnostic: (s: string) => void,
): Map<string, number> {
  assert.deepEqual(result.failures, [], 'every connection succeeded');
  assert.equal(result.answers.length, CONNECTIONS);
  const predict = backendPredictor(
    backends.map((address) => ({ address, weight: 1 })),
    client,
    vip,
  );
  const counts = new Map<string, number>(backends.map((b) => [nameOf(b), 0]));
  for (const answer of result.answers) {
    assert.equal(answer.client, client, "the backend saw the client's own address");
    assert.equal(
      answer.backend,
      nameOf(predict(answer.port)),
      `connection from port ${answer.port} reached the backend its Maglev slot names`,
    );
    counts.set(answer.backend, (counts.get(answer.backend) ?? 0) + 1);
  }
  diagnostic(`${vip}: ${[...counts].map(([name, n]) => `${name} ${n}`).join(', ')}`);
  assert.deepEqual(
    [...counts].filter(([, n]) => n === 0),
    [],
    'every backend answered',
  );
  return counts;
}

describe('IPv6 through the balancer', () => {
  const ctx = labWithBalancer();

  test("the daemon has a tunnel source of each family: the balancer's own addresses", async () => {
    const status = await ctx.lb.json<StatusResult>(['status']);
    assert.deepEqual([...status.tunnelSources].sort(), [LAB.balancer, LAB.balancer6].sort());
  });

  test(`l2dsr: HTTP to ${key(LAB.vips6[0]!)} spreads over the backends on the segment`, async (t) => {
    const vip = LAB.vips6[0]!;
    const backends = L2DSR.map((b) => b.address6);
    await ctx.lb.ok(['vip', 'add', key(vip), '--forward', 'l2dsr']);
    for (const b of backends) await ctx.lb.ok(['backend', 'add', key(vip), b]);
    const list = await ctx.lb.json<BackendSummary[]>(['backend', 'list', key(vip)]);
    assert.deepEqual(
      list.map((b) => [b.address, b.state, b.forward, b.nextHop]),
      backends.map((b) => [b, 'active', 'l2dsr', b]),
    );

    const result = await ctx.lb.httpFromClient(url(vip), CONNECTIONS);
    checkAnswers(result, vip, backends, LAB.client6, (s) => t.diagnostic(s));
    // nginx's own record: each access log line starts with the client address it saw.
    for (const b of L2DSR) {
      const lines = (await ctx.lab.backendAccessLog(b.name)).filter((l) => l.includes(` [${vip}]:80 `) || l.includes(` ${vip}:80 `));
      assert.ok(lines.length > 0, `${b.name} logged no request to ${vip}`);
      assert.deepEqual(
        lines.filter((l) => l.split(' ')[0] !== LAB.client6),
        [],
        `${b.name} logged another client`,
      );
    }
    // And with curl -6, the client everyone uses.
    const curl = await ctx.lab.exec('client', ['curl', '-6', '-sS', '--max-time', '5', url(vip)]);
    assert.equal(curl.code, 0, curl.stderr);
    assert.match(curl.stdout, new RegExp(`^backend=be[1-3] client=${LAB.client6} port=\\d+ server=${vip}\n$`));
  });

  test(`ipip 6-in-6: HTTP to ${key(LAB.vips6[1]!)} reaches the backends behind the router in IPv6-in-IPv6`, async (t) => {
    const vip = LAB.vips6[1]!;
    const backends = REMOTE.map((b) => b.address6);
    // The capture below checks every tunnelled packet is a client's: no DSR-path check SYNs from the balancer.
    await ctx.lb.ok(['vip', 'add', key(vip), '--forward', 'ipip', '--no-check-dsr']);
    for (const b of backends) await ctx.lb.ok(['backend', 'add', key(vip), b]);
    const list = await ctx.lb.json<BackendSummary[]>(['backend', 'list', key(vip)]);
    assert.deepEqual(
      list.map((b) => [b.address, b.forward, b.nextHop]),
      backends.map((b) => [b, 'ipip', LAB.router.front6]),
      'next hop: the router',
    );

    let result: LoadResult | undefined;
    // On the router: on be4/be5 xdp_decap unwraps packets before a capture there sees them.
    const seen = await capture(ctx.lab, 'router', 'eth1', 'ip6 proto 41', async () => {
      result = await ctx.lb.httpFromClient(url(vip), CONNECTIONS);
    });
    checkAnswers(result!, vip, backends, LAB.client6, (s) => t.diagnostic(s));
    const outer = new RegExp(`^\\S+ IP6 ${LAB.balancer6} > (${backends.join('|')}): IP6 ${LAB.client6}\\.\\d+ > ${vip}\\.80: `);
    assert.ok(seen.length >= CONNECTIONS, `captured ${seen.length} IPv6-in-IPv6 packets`);
    assert.deepEqual(
      seen.filter((l) => !outer.test(l)),
      [],
      'every tunnelled packet: outer balancer -> backend, inner client -> VIP',
    );
  });

  test('across families: an IPv4 VIP with IPv6 backends (4-in-6), an IPv6 VIP with IPv4 backends (6-in-4)', async (t) => {
    const cases = [
      {
        vip: LAB.vips[2]!,
        backends: REMOTE.map((b) => b.address6),
        client: LAB.client,
        filter: 'ip6 proto 4',
        outer: `IP6 ${LAB.balancer6}`,
        inner: `IP ${LAB.client}`,
      },
      {
        vip: LAB.vips6[2]!,
        backends: REMOTE.map((b) => b.address),
        client: LAB.client6,
        filter: 'ip proto 41',
        outer: `IP ${LAB.balancer}`,
        inner: `IP6 ${LAB.client6}`,
      },
    ];
    for (const c of cases) {
      // Without ipip the control plane refuses a backend of the other family.
      await ctx.lb.ok(['vip', 'add', key(c.vip), '--no-check-dsr']); // the capture checks the client's packets only
      const refused = await ctx.lb.cli(['backend', 'add', key(c.vip), c.backends[0]!]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /only --forward ipip can cross address families/);
      for (const b of c.backends) await ctx.lb.ok(['backend', 'add', key(c.vip), b, '--forward', 'ipip']);

      let result: LoadResult | undefined;
      const seen = await capture(ctx.lab, 'router', 'eth1', c.filter, async () => {
        result = await ctx.lb.httpFromClient(url(c.vip), CONNECTIONS);
      });
      checkAnswers(result!, c.vip, c.backends, c.client, (s) => t.diagnostic(s));
      const outer = new RegExp(
        `^\\S+ ${c.outer.replace(/\./g, '\\.')} > (${c.backends.join('|').replace(/\./g, '\\.')}): ${c.inner.replace(/\./g, '\\.')}\\.\\d+ > ${c.vip.replace(/\./g, '\\.')}\\.80: `,
      );
      assert.ok(seen.length >= CONNECTIONS, `${c.vip}: captured ${seen.length} tunnelled packets`);
      assert.deepEqual(
        seen.filter((l) => !outer.test(l)),
        [],
        `${c.vip}: every packet tunnelled as ${c.filter}`,
      );
    }
  });

  test('the balancer counted every request it balanced and dropped none', async () => {
    const stats = await ctx.lb.json<StatsResult>(['stats']);
    const dropped = stats.reasons.filter((r) => r.fate === 'dropped' && r.packets !== 0);
    assert.deepEqual(dropped, [], 'packets dropped by the data plane');
    for (const vip of [LAB.vips6[0]!, LAB.vips6[1]!, LAB.vips[2]!, LAB.vips6[2]!]) {
      const v = stats.vips.find((x) => x.vip === key(vip));
      assert.ok(v, `${key(vip)} in stats`);
      assert.ok(v.newFlows >= CONNECTIONS, `${key(vip)}: ${v.newFlows} new flows`);
      assert.ok(
        v.backends.every((b) => b.packets > 0),
        `${key(vip)}: every backend got packets`,
      );
    }
  });
});

describe('path MTU discovery through the balancer (every link 1500: no room for the tunnel header)', () => {
  const ctx = labWithBalancer({ mtu: 1500 });
  const BODY = randomBytes(200_000);
  const BODY_SHA256 = createHash('sha256').update(BODY).digest('hex');
  let bodyFile = '';

  before(async () => {
    bodyFile = join(ctx.lab.runtimeDir, 'body.bin'); // removed with the lab
    await writeFile(bodyFile, BODY);
  });

  const tooBigReplied = async () =>
    (await ctx.lb.json<StatsResult>(['stats'])).reasons.find((r) => r.reason === 'too_big_replied')!.packets;

  /** The path MTU the client's kernel holds for an address (its route cache), if any. */
  const learnedMtu = async (address: string): Promise<number | undefined> => {
    const r = await ctx.lab.exec('client', ['ip', address.includes(':') ? '-6' : '-4', 'route', 'get', address]);
    assert.equal(r.code, 0, r.stderr);
    const m = / mtu (\d+)/.exec(r.stdout);
    return m ? Number(m[1]) : undefined;
  };

  // outer: the tunnel header's family; the MTU the client must learn is the
  // balancer's link MTU (1500) minus that header (20 or 40 bytes).
  const cases = [
    { name: 'IPv4 (4-in-4)', vip: LAB.vips[1]!, backends: REMOTE.map((b) => b.address), pmtu: 1480 },
    { name: 'IPv6 (6-in-6)', vip: LAB.vips6[1]!, backends: REMOTE.map((b) => b.address6), pmtu: 1460 },
    { name: 'IPv4 VIP, IPv6 backends (4-in-6)', vip: LAB.vips[2]!, backends: REMOTE.map((b) => b.address6), pmtu: 1460 },
  ];

  for (const c of cases) {
    test(`${c.name}: a 200 kB upload through ${key(c.vip)} succeeds; the balancer sent ICMP too-big, the client learned MTU ${c.pmtu}`, async (t) => {
      await ctx.lb.ok(['vip', 'add', key(c.vip), '--forward', 'ipip']);
      for (const b of c.backends) await ctx.lb.ok(['backend', 'add', key(c.vip), b]);
      assert.equal(await learnedMtu(c.vip), undefined, 'a fresh lab: no path MTU learned yet');
      const before = await tooBigReplied();

      const file = `pmtu-${c.vip.replace(/[.:]/g, '-')}`;
      const r = await ctx.lab.exec(
        'client',
        [
          'curl',
          '-sS',
          '--max-time',
          '20',
          '-T',
          bodyFile,
          '-o',
          '/dev/null',
          '-D',
          '-',
          '-w',
          'status=%{http_code} sent=%{size_upload}\n',
          url(c.vip, `/upload/${file}`),
        ],
        { timeoutMs: 30_000 },
      );
      assert.equal(r.code, 0, `curl: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`status=201 sent=${BODY.length}\n$`));
      const backend = /^X-Backend: (\S+)\r?$/im.exec(r.stdout)?.[1];
      assert.ok(backend && REMOTE.some((b) => b.name === backend), `answered by ${backend}:\n${r.stdout}`);
      const stored = await readFile(join(ctx.lab.runtimeDir, backend, 'upload', file));
      assert.equal(stored.length, BODY.length, 'the backend stored the whole body');
      assert.equal(createHash('sha256').update(stored).digest('hex'), BODY_SHA256, 'the backend stored the body intact');

      const replied = (await tooBigReplied()) - before;
      const pmtu = await learnedMtu(c.vip);
      t.diagnostic(
        `${c.name}: ${backend} stored ${stored.length} bytes; too_big_replied +${replied}; client's path MTU to ${c.vip}: ${pmtu}`,
      );
      assert.ok(replied > 0, 'the balancer answered too-big packets with ICMP');
      assert.equal(pmtu, c.pmtu, `the client's route cache for ${c.vip}`);
    });
  }

  test('nothing was dropped for being too big: every too-big packet was answered', async () => {
    const stats = await ctx.lb.json<StatsResult>(['stats']);
    const count = (reason: string) => stats.reasons.find((r) => r.reason === reason)!.packets;
    assert.equal(count('too_big_dropped'), 0);
    assert.equal(count('encap_failed'), 0);
  });
});
