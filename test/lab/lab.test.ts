// Tests of the namespace lab itself (test/lab/lab.sh, test/lab/lab.ts).
// Needs root and `make`; run: node --test dist/test/lab/lab.test.js
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { LAB, LAB_SH, Lab, ROOT, TOPOLOGY, labHosts, segmentPrefixLength, topologyArgs, type TopologyHost } from './lab.js';
import { birdc, birdProtocols, establishedSessions, nextHops, waitUntil } from '../support/fleet.js';

const execFileP = promisify(execFile);

async function labNamespaces(prefix: string): Promise<string[]> {
  const { stdout } = await execFileP('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`${prefix}-`));
}

function alive(pid: number): boolean {
  try {
    // A zombie waiting for its reaper does not run any more.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Best-effort teardown for tests that bring labs up outside a Lab object. */
function labShDown(prefix: string): void {
  try {
    execFileSync(LAB_SH, ['down', prefix], { stdio: 'ignore', timeout: 60_000 });
  } catch {
    /* reported by the assertions */
  }
}

/** The arguments lab.sh adds to the topology's for a host (lab.sh up, with --mtu MTU when given; --fleet: BIRD's directory). */
function labExtras(host: TopologyHost, runtimeDir: string, decap: boolean, mtu: number = LAB.mtu.interior, fleet = false): string[] {
  const extra = [host.gateway, host.gateway6].flatMap((g) => (g ? ['--gateway', g] : []));
  const bird = fleet ? ['--bird-dir', `${runtimeDir}/${host.name}`] : [];
  switch (host.role) {
    case 'client':
      return [...extra, '--mtu', String(LAB.mtu.client)];
    case 'balancer':
      return [...extra, '--mtu', String(mtu), '--root', ROOT, ...bird];
    case 'router':
      return [...extra, '--mtu', String(mtu), ...bird];
    case 'backend':
      return [
        ...extra,
        '--mtu',
        String(mtu),
        '--runtime-dir',
        `${runtimeDir}/${host.name}`,
        '--root',
        ROOT,
        ...(decap ? ['--decap', 'xdp'] : ['--no-decap']),
      ];
  }
}

/** "14:04:23.012" (BIRD's `show protocols` since column) -> ms since midnight. */
function sinceMs(since: string): number {
  const [h, m, sec] = since.split(':').map(Number) as [number, number, number];
  return Math.round(((h * 60 + m) * 60 + sec) * 1000);
}

/** How long the plain lab took to come up, for the fleet lab's comparison. */
let plainUpMs = 0;

describe('lab topology (no decap)', () => {
  let lab: Lab | undefined;
  let upMs = 0;

  before(async () => {
    const started = Date.now();
    lab = await Lab.up({ decap: false });
    upMs = Date.now() - started;
    plainUpMs = upMs;
  });

  after(async () => {
    await lab?.down();
  });

  test('the client reaches every backend on its own addresses (IPv4 and IPv6), be4/be5 through the router', async (t) => {
    t.diagnostic(`lab ${lab!.prefix} up in ${upMs} ms`);
    for (const be of LAB.backends) {
      for (const [address, client, url] of [
        [be.address, LAB.client, `http://${be.address}/`],
        [be.address6, LAB.client6, `http://[${be.address6}]/`],
      ] as const) {
        const seen = (await lab!.backendAccessLog(be.name)).length;
        const r = await lab!.exec('client', ['curl', '-sS', '--max-time', '3', url]);
        assert.equal(r.code, 0, `curl ${be.name} (${address}): ${r.stderr}`);
        assert.match(r.stdout, new RegExp(`^backend=${be.name} client=${client} port=\\d+ server=${address}\n$`));
        const logged = await lab!.backendAccessLogAfter(be.name, seen);
        assert.equal(logged.length, 1, `${be.name} logged ${logged.length} lines for one request`);
        assert.equal(logged[0]!.split(' ')[0], client, `${be.name} saw another client: ${logged[0]}`);
      }
    }
    for (const be of LAB.backends) {
      for (const [family, address, router] of [
        ['-4', be.address, LAB.router.front],
        ['-6', be.address6, LAB.router.front6],
      ] as const) {
        const r = await lab!.exec('client', ['ip', family, '-o', 'route', 'get', address]);
        assert.equal(r.code, 0, r.stderr);
        if (be.segment === 'remote') assert.match(r.stdout, new RegExp(`via ${router.replace(/\./g, '\\.')} `));
        else assert.doesNotMatch(r.stdout, / via /);
      }
    }
  });

  test('without the fleet option: no fleet hosts, no BGP arguments, no BIRD', async () => {
    const fleetOnly = TOPOLOGY.hosts.filter((h) => h.fleet);
    assert.ok(fleetOnly.length >= 2, 'the topology has fleet hosts');
    assert.deepEqual(
      (await labNamespaces(lab!.prefix)).filter((n) => fleetOnly.some((h) => n === `${lab!.prefix}-${h.namespace}`)),
      [],
    );
    assert.throws(() => lab!.ns(fleetOnly[0]!.namespace), /exists only in a fleet lab/);
    for (const host of labHosts()) assert.ok(!(await lab!.provisionArgs(host.namespace)).some((a) => a.startsWith('--bgp')), host.name);
    for (const role of ['router', 'lb']) {
      const { stdout } = await execFileP('ip', ['netns', 'pids', lab!.ns(role)]);
      const commands = stdout
        .split('\n')
        .filter(Boolean)
        .map((pid) => readFileSync(`/proc/${pid}/comm`, 'utf8').trim());
      assert.ok(!commands.includes('bird'), `BIRD runs in ${role}`);
    }
  });

  test('every host was configured by its role script, with the arguments derived from vagrant/topology.json', async () => {
    assert.deepEqual(
      LAB.backends.map((b) => [b.name, b.address]),
      labHosts()
        .filter((h) => h.role === 'backend')
        .map((h) => [h.name, h.interfaces[0]!.address]),
    );
    for (const host of labHosts()) {
      const args = await lab!.provisionArgs(host.namespace);
      assert.deepEqual(
        args,
        [...topologyArgs(host, (i) => `eth${i}`), ...labExtras(host, lab!.runtimeDir, false)],
        `${host.name}: arguments`,
      );
      // The script's own last word: it ran to the end with exactly these arguments.
      const log = await lab!.provisionLog(host.namespace);
      const label = host.role === 'backend' ? `backend ${host.name}` : host.role;
      assert.equal(log.at(-1), `${label}: provisioned with: ${args.join(' ')}`, `${host.name}: ${log.join('\n')}`);
    }
  });

  test('the addresses and routes in every namespace are those of vagrant/topology.json (both families)', async () => {
    for (const host of labHosts()) {
      // Global addresses only: every interface also has its IPv6 link-local one
      // (iproute2's JSON leaves an empty {} in addr_info for each address the
      // filter skipped).
      const r = await lab!.exec(host.namespace, ['ip', '-j', 'addr', 'show', 'scope', 'global']);
      assert.equal(r.code, 0, r.stderr);
      const seen = (JSON.parse(r.stdout) as { ifname: string; addr_info: { local?: string; prefixlen?: number }[] }[])
        .filter((l) => l.ifname !== 'lo')
        .flatMap((l) => l.addr_info.filter((a) => a.local !== undefined).map((a) => `${l.ifname} ${a.local}/${a.prefixlen}`))
        .sort();
      const expected = host.interfaces
        .flatMap((i, index) => [
          `eth${index} ${i.address}/${segmentPrefixLength(i.segment)}`,
          `eth${index} ${i.address6}/${segmentPrefixLength(i.segment, 6)}`,
        ])
        .sort();
      assert.deepEqual(seen, expected, `${host.name}: addresses`);

      const vias: string[] = [];
      for (const family of ['-4', '-6']) {
        const routes = JSON.parse((await lab!.exec(host.namespace, ['ip', '-j', family, 'route', 'show'])).stdout) as {
          dst: string;
          gateway?: string;
        }[];
        vias.push(...routes.filter((x) => x.gateway).map((x) => `${x.dst} via ${x.gateway}`));
      }
      const gateways = [host.gateway, host.gateway6].filter((g): g is string => g !== undefined);
      const wanted = [...host.routes.map((x) => `${x.to} via ${x.via}`), ...gateways.map((g) => `default via ${g}`)].sort();
      assert.deepEqual(vias.sort(), wanted, `${host.name}: routes`);
    }
  });

  test('no address is left tentative: duplicate address detection is off, IPv6 works at once', async () => {
    // Right after up (this lab came up moments ago): with DAD, a fresh
    // namespace would hold its IPv6 addresses "tentative" for 1-2 s.
    for (const host of labHosts()) {
      const r = await lab!.exec(host.namespace, ['ip', '-6', '-o', 'addr', 'show', 'tentative']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '', `${host.name}: tentative addresses`);
      for (const [index] of host.interfaces.entries()) {
        const dad = await lab!.exec(host.namespace, ['cat', `/proc/sys/net/ipv6/conf/eth${index}/accept_dad`]);
        assert.equal(dad.stdout.trim(), '0', `${host.name} eth${index} accept_dad`);
      }
    }
  });

  test('the client routes VIPs of both families to the balancer', async () => {
    for (const [family, vip, balancer] of [
      ['-4', LAB.vips[0]!, LAB.balancer],
      ['-6', LAB.vips6[0]!, LAB.balancer6],
    ] as const) {
      const r = await lab!.exec('client', ['ip', family, '-o', 'route', 'get', vip]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`via ${balancer.replace(/\./g, '\\.')} dev eth0`));
    }
  });

  test('every backend holds the VIPs on lo and does not answer ARP for them', async () => {
    const sysctl = async (role: string, key: string) => {
      const r = await lab!.exec(role, ['cat', `/proc/sys/${key.replace(/\./g, '/')}`]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    for (const be of LAB.backends) {
      const r = await lab!.exec(be.name, ['ip', '-j', 'addr', 'show', 'dev', 'lo']);
      assert.equal(r.code, 0, r.stderr);
      const addrs = (JSON.parse(r.stdout) as { addr_info: { local: string; prefixlen: number }[] }[])[0]!.addr_info.map(
        (a) => `${a.local}/${a.prefixlen}`,
      );
      for (const vip of LAB.vips) assert.ok(addrs.includes(`${vip}/32`), `${be.name} lo lacks ${vip}/32: ${addrs.join(' ')}`);
      for (const vip of LAB.vips6) assert.ok(addrs.includes(`${vip}/128`), `${be.name} lo lacks ${vip}/128: ${addrs.join(' ')}`);
      for (const scope of ['all', 'eth0']) {
        assert.equal(await sysctl(be.name, `net.ipv4.conf.${scope}.arp_ignore`), '1', `${be.name} ${scope}.arp_ignore`);
        assert.equal(await sysctl(be.name, `net.ipv4.conf.${scope}.arp_announce`), '2', `${be.name} ${scope}.arp_announce`);
      }
      for (const scope of ['all', 'default', 'eth0', 'lo']) {
        assert.equal(await sysctl(be.name, `net.ipv4.conf.${scope}.rp_filter`), '0', `${be.name} ${scope}.rp_filter`);
      }
    }
    assert.equal(await sysctl('router', 'net.ipv4.ip_forward'), '1');
    assert.equal(await sysctl('router', 'net.ipv6.conf.all.forwarding'), '1');
    assert.equal(await sysctl('lb', 'net.ipv4.ip_forward'), '0');
    assert.equal(await sysctl('lb', 'net.ipv6.conf.all.forwarding'), '0');
    assert.equal(await sysctl('lb', 'net.ipv4.conf.all.send_redirects'), '0');
    assert.equal(await sysctl('lb', 'net.ipv4.conf.eth0.send_redirects'), '0');
  });

  test('no backend answers neighbour solicitations for an IPv6 VIP it holds on lo', async (t) => {
    // IPv6 has no arp_ignore: Linux answers a solicitation only for an address
    // of the interface it arrived on. The client asks its segment for the VIP
    // (an on-link route instead of the one through the balancer): be1-be3
    // are on that segment and hold it on lo. As a control, it asks for a
    // backend's own address the same way.
    const vip = LAB.vips6[0]!;
    const own = LAB.backends.find((b) => b.segment === 'front')!;
    const capture = lab!.spawn(
      'client',
      ['tcpdump', '--immediate-mode', '-i', 'eth0', '-n', '-l', 'icmp6 and (ip6[40] == 135 or ip6[40] == 136)'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let lines = '';
    capture.stdout!.on('data', (d: Buffer) => {
      lines += d.toString();
    });
    await new Promise<void>((resolve, reject) => {
      capture.stderr!.on('data', (d: Buffer) => {
        if (d.toString().includes('listening on')) resolve();
      });
      capture.once('exit', (code) => reject(new Error(`tcpdump exited (${code})`)));
    });
    const neighbour = async (address: string) => {
      const r = await lab!.exec('client', ['ip', '-j', '-6', 'neigh', 'show', 'to', address, 'dev', 'eth0']);
      return (JSON.parse(r.stdout || '[]') as { lladdr?: string; state?: string[] }[])[0];
    };
    await lab!.exec('client', ['ip', '-6', 'neigh', 'flush', 'to', own.address6, 'dev', 'eth0']);
    assert.equal((await lab!.exec('client', ['ip', '-6', 'route', 'replace', `${vip}/128`, 'dev', 'eth0'])).code, 0);
    try {
      const ping = await lab!.exec('client', ['ping', '-6', '-c', '1', '-W', '1', vip]);
      assert.notEqual(ping.code, 0, `something answered ${vip} on the segment:\n${ping.stdout}`);
      // The kernel gives up after its probes (3 x 1 s).
      const deadline = Date.now() + 8000;
      let entry = await neighbour(vip);
      while (!entry?.state?.includes('FAILED') && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        entry = await neighbour(vip);
      }
      assert.deepEqual(entry?.state, ['FAILED'], `neighbour entry of ${vip}: ${JSON.stringify(entry)}`);
      assert.equal(entry?.lladdr, undefined);
      const control = await lab!.exec('client', ['ping', '-6', '-c', '1', '-W', '2', own.address6]);
      assert.equal(control.code, 0, `${own.name} does not answer at ${own.address6}: ${control.stdout}${control.stderr}`);
    } finally {
      await lab!.exec('client', ['ip', '-6', 'route', 'del', `${vip}/128`, 'dev', 'eth0']);
      await lab!.exec('client', ['ip', '-6', 'neigh', 'flush', 'to', vip, 'dev', 'eth0']);
      const exited = new Promise((r) => capture.once('exit', r));
      capture.kill('SIGINT');
      await exited;
    }
    const solicited = lines.split('\n').filter((l) => l.includes(`neighbor solicitation, who has ${vip},`));
    const answered = lines.split('\n').filter((l) => l.includes(`neighbor advertisement, tgt is ${vip},`));
    t.diagnostic(`${solicited.length} solicitations for ${vip}, ${answered.length} advertisements`);
    assert.ok(solicited.length >= 2, `the client solicited ${vip}:\n${lines}`);
    assert.deepEqual(answered, [], 'a backend advertised the VIP');
    assert.ok(
      lines.includes(`neighbor advertisement, tgt is ${own.address6},`),
      `the control: ${own.name} advertised its own address:\n${lines}`,
    );
  });

  test('xdp_pass runs in native mode on the switch port of the balancer', async () => {
    const r = await lab!.exec('sw', ['ip', '-j', '-d', 'link', 'show', 'dev', 'lb']);
    assert.equal(r.code, 0, r.stderr);
    const [link] = JSON.parse(r.stdout) as { master?: string; xdp?: { mode: number; prog?: { name: string } } }[];
    assert.equal(link!.master, 'br0');
    assert.equal(link!.xdp?.mode, 1, `expected native (driver) XDP, got ${JSON.stringify(link!.xdp)}`);
    assert.equal(link!.xdp?.prog?.name, 'xdp_pass');
  });

  test('checksum offload is off on both ends of the veths', async () => {
    for (const [role, dev] of [
      ['client', 'eth0'],
      ['sw', 'client'],
      ['lb', 'eth0'],
      ['sw', 'lb'],
      ['router', 'eth1'],
      ['sw', 'be5'],
      ['be5', 'eth0'],
    ] as const) {
      const r = await lab!.exec(role, ['ethtool', '-k', dev]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^rx-checksumming: off/m, `${role} ${dev}`);
      assert.match(r.stdout, /^tx-checksumming: off/m, `${role} ${dev}`);
    }
  });

  test('spawn() runs a process in a namespace until down()', async () => {
    const child = lab!.spawn('lb', ['sleep', '600'], { stdio: 'ignore' });
    await new Promise((r) => child.once('spawn', r));
    const r = await lab!.exec('lb', ['ip', 'netns', 'identify', String(child.pid)]);
    assert.equal(r.stdout.trim(), lab!.ns('lb'));
  });

  test('down() stops nginx and everything else, deletes the namespaces, and can be repeated', async (t) => {
    const nginx: number[] = [];
    for (const be of LAB.backends) {
      nginx.push(Number(readFileSync(`${lab!.runtimeDir}/${be.name}/nginx.pid`, 'utf8')));
      const { stdout } = await execFileP('ip', ['netns', 'pids', lab!.ns(be.name)]);
      nginx.push(...stdout.split('\n').filter(Boolean).map(Number));
    }
    const { stdout: lbPids } = await execFileP('ip', ['netns', 'pids', lab!.ns('lb')]);
    const others = lbPids.split('\n').filter(Boolean).map(Number);
    assert.ok(nginx.length >= 10, `expected a master and a worker per backend, got ${nginx.join(' ')}`);
    assert.ok(others.length >= 1, 'the spawned sleep should run in the lb namespace');

    const started = Date.now();
    await lab!.down();
    t.diagnostic(`down in ${Date.now() - started} ms`);
    assert.deepEqual(await labNamespaces(lab!.prefix), []);
    assert.deepEqual(nginx.filter(alive), [], 'nginx processes survived down()');
    assert.deepEqual(others.filter(alive), [], 'processes in the lb namespace survived down()');
    assert.equal(existsSync(lab!.runtimeDir), false);
    const { stdout: ps } = await execFileP('ps', ['-eo', 'args']);
    assert.ok(!ps.includes(`/run/lbctl-lab/${lab!.prefix}/`), 'an nginx of this lab still runs');

    await lab!.down();
    execFileSync(LAB_SH, ['down', lab!.prefix]); // lab.sh down of a lab that is gone succeeds
  });
});

describe('fleet lab (Lab.up({ fleet: true })): a second balancer, a client behind the router, BIRD', () => {
  let lab: Lab | undefined;
  let upMs = 0;
  let upAt = 0;

  before(async () => {
    const started = Date.now();
    lab = await Lab.up({ decap: false, fleet: true });
    upAt = Date.now();
    upMs = upAt - started;
  });

  after(async () => {
    await lab?.down();
  });

  test("every host, the fleet's too, was configured with the topology's arguments and BGP on the balancers and the router", async (t) => {
    t.diagnostic(`fleet lab ${lab!.prefix} up in ${upMs} ms (the plain lab: ${plainUpMs} ms)`);
    const hosts = labHosts(true);
    assert.deepEqual(
      hosts.filter((h) => h.role === 'balancer').map((h) => h.namespace),
      LAB.fleet.balancers.map((b) => b.namespaceSuffix),
    );
    assert.ok(LAB.fleet.balancers.length >= 2, 'two balancers or more');
    for (const host of hosts) {
      const args = await lab!.provisionArgs(host.namespace);
      assert.deepEqual(
        args,
        [
          ...topologyArgs(host, (i) => `eth${i}`, TOPOLOGY.vips, TOPOLOGY.vips6, true),
          ...labExtras(host, lab!.runtimeDir, false, undefined, true),
        ],
        `${host.name}: arguments`,
      );
      assert.equal(args.includes('--bgp-as'), host.role === 'balancer' || host.role === 'router', `${host.name}: BGP`);
      const log = await lab!.provisionLog(host.namespace);
      const label = host.role === 'backend' ? `backend ${host.name}` : host.role;
      assert.equal(log.at(-1), `${label}: provisioned with: ${args.join(' ')}`, `${host.name}: ${log.join('\n')}`);
      if (args.includes('--bgp-as')) assert.match(log.at(-2)!, /bird started with /, host.name);
    }
  });

  test('BGP comes up: the router peers with every balancer in both families', async (t) => {
    const balancers = LAB.fleet.balancers.map((b) => b.name);
    const waited = await waitUntil(
      async () => {
        const router = await establishedSessions(lab!, 'router');
        const nodes = await Promise.all(balancers.map((b) => establishedSessions(lab!, b)));
        return router.length === 2 * balancers.length && nodes.every((n) => n.sort().join() === 'router4,router6');
      },
      15_000,
      'every BGP session established',
      50,
    );
    // BIRD's own clock: from the first BIRD's start to the last session up.
    const protocols = await Promise.all(['router', ...balancers].map((h) => birdProtocols(lab!, h)));
    const started = Math.min(...protocols.map((list) => sinceMs(list.find((p) => p.proto === 'Device')!.since)));
    const established = Math.max(...protocols[0]!.filter((p) => p.proto === 'BGP' && p.name.includes('_')).map((p) => sinceMs(p.since)));
    t.diagnostic(
      `all ${2 * balancers.length} sessions established ${established - started} ms after the first BIRD started` +
        ` (seen ${waited.toFixed(0)} ms after the test began, ${Date.now() - upAt} ms after the lab was up)`,
    );
    const router = (await establishedSessions(lab!, 'router')).sort();
    assert.deepEqual(
      router.map((n) => n.replace(/_\d+$/, '')),
      [...balancers.map(() => 'node4'), ...balancers.map(() => 'node6')],
    );
  });

  test("a host route in the announce table with lbctl's proto reaches the router as one route over both balancers; nothing else does", async (t) => {
    const { announceTable: table, announceProto: proto } = LAB.fleet;
    const [vip, vip6] = [LAB.vips[0]!, LAB.vips6[0]!];
    const balancers = LAB.fleet.balancers;
    const ip = async (role: string, args: string[]) => {
      const r = await lab!.exec(role, ['ip', ...args]);
      assert.equal(r.code, 0, `ip ${args.join(' ')} in ${role}: ${r.stderr}`);
    };
    // Decoys on the first balancer, which BIRD's filters keep: another
    // proto, a prefix that is not a host route, another table.
    const first = balancers[0]!.namespaceSuffix;
    await ip(first, ['route', 'add', 'blackhole', `${LAB.vips[1]}/32`, 'table', String(table), 'proto', String(proto + 1)]);
    await ip(first, ['route', 'add', 'blackhole', '10.100.0.128/25', 'table', String(table), 'proto', String(proto)]);
    await ip(first, ['route', 'add', 'blackhole', `${LAB.vips[2]}/32`, 'table', String(table + 1), 'proto', String(proto)]);
    const started = performance.now();
    for (const b of balancers) {
      await ip(b.namespaceSuffix, ['route', 'add', 'blackhole', `${vip}/32`, 'table', String(table), 'proto', String(proto)]);
      await ip(b.namespaceSuffix, ['-6', 'route', 'add', 'blackhole', `${vip6}/128`, 'table', String(table), 'proto', String(proto)]);
    }
    const want = balancers.map((b) => b.address).sort();
    const want6 = balancers.map((b) => b.address6).sort();
    await waitUntil(async () => (await nextHops(lab!, 'router', `${vip}/32`)).join() === want.join(), 5000, `ECMP route to ${vip}`);
    await waitUntil(async () => (await nextHops(lab!, 'router', `${vip6}/128`)).join() === want6.join(), 5000, `ECMP route to ${vip6}`);
    t.diagnostic(
      `announced on ${balancers.length} balancers -> ECMP route on the router (both families) in ${(performance.now() - started).toFixed(0)} ms`,
    );

    // What the first balancer's BIRD took from the table: the two host routes only.
    const taken = await birdc(lab!, balancers[0]!.name, ['show', 'route']);
    const prefixes = [...taken.matchAll(/^(\S+\/\d+)\s/gm)].map((m) => m[1]).sort();
    assert.deepEqual(prefixes, [`${vip}/32`, `${vip6}/128`], taken);
    const router = await lab!.exec('router', ['ip', '-4', 'route', 'show', 'proto', 'bird']);
    assert.deepEqual(router.stdout.match(/^\S+/gm), [vip], router.stdout);

    // Withdrawn on one balancer: one next hop left; on both: no route.
    const [one, ...rest] = balancers;
    await ip(one!.namespaceSuffix, ['route', 'del', `${vip}/32`, 'table', String(table)]);
    await waitUntil(
      async () =>
        (await nextHops(lab!, 'router', `${vip}/32`)).join() ===
        rest
          .map((b) => b.address)
          .sort()
          .join(),
      5000,
      `${one!.name} withdrawn`,
    );
    for (const b of rest) await ip(b.namespaceSuffix, ['route', 'del', `${vip}/32`, 'table', String(table)]);
    await waitUntil(async () => (await nextHops(lab!, 'router', `${vip}/32`)).length === 0, 5000, `${vip} withdrawn everywhere`);
  });

  test('the BIRD configurations the lab runs are those docs/fleet.md shows', async () => {
    const doc = readFileSync(`${ROOT}/docs/fleet.md`, 'utf8');
    for (const host of ['router', LAB.fleet.balancers[0]!.name]) {
      const conf = readFileSync(`${lab!.runtimeDir}/${host}/bird.conf`, 'utf8');
      assert.ok(doc.includes(`\`\`\`\n${conf}\`\`\``), `docs/fleet.md does not show ${host}'s bird.conf as the lab renders it:\n${conf}`);
    }
  });

  test('the fleet client reaches the VIPs through the router, keeps its hash; the router spreads by ports', async () => {
    const client = LAB.fleet.clientNamespace;
    for (const [family, vip, via] of [
      ['-4', LAB.vips[0]!, LAB.router.remote],
      ['-6', LAB.vips6[0]!, LAB.router.remote6],
    ] as const) {
      const r = await lab!.exec(client, ['ip', family, '-o', 'route', 'get', vip]);
      assert.match(r.stdout, new RegExp(`via ${via.replace(/\./g, '\\.')} dev eth0`), r.stdout);
    }
    const sysctl = async (role: string, key: string) =>
      (await lab!.exec(role, ['cat', `/proc/sys/${key.replace(/\./g, '/')}`])).stdout.trim();
    assert.equal(await sysctl(client, 'net.core.txrehash'), '0');
    assert.equal(await sysctl('router', 'net.ipv4.fib_multipath_hash_policy'), '1');
    assert.equal(await sysctl('router', 'net.ipv6.fib_multipath_hash_policy'), '1');
    for (const b of LAB.fleet.balancers) {
      const r = await lab!.exec('sw', ['ip', '-j', '-d', 'link', 'show', 'dev', b.namespaceSuffix]);
      const [link] = JSON.parse(r.stdout) as { xdp?: { mode: number; prog?: { name: string } } }[];
      assert.equal(link!.xdp?.prog?.name, 'xdp_pass', `switch port of ${b.name}`);
    }
  });

  test('down() stops every BIRD of the lab', async () => {
    const hosts = ['router', ...LAB.fleet.balancers.map((b) => b.name)];
    const pids = hosts.map((h) => Number(readFileSync(`${lab!.runtimeDir}/${h}/bird.pid`, 'utf8')));
    assert.ok(pids.every(alive), `BIRD runs: ${pids.join(' ')}`);
    await lab!.down();
    assert.deepEqual(pids.filter(alive), []);
    assert.deepEqual(await labNamespaces(lab!.prefix), []);
  });
});

describe('lab with the decapsulator and every link at 1500 (Lab.up({ mtu: 1500 }))', () => {
  // What the path-MTU tests (e2e-ipv6) build on: no room for a tunnel header
  // anywhere, and xdp_decap on every backend for both of its addresses.
  let lab: Lab | undefined;

  before(async () => {
    lab = await Lab.up({ mtu: 1500 });
  });

  after(async () => {
    await lab?.down();
  });

  test('every interface of every host and every switch port has MTU 1500', async () => {
    assert.equal(LAB.mtu.client, 1500, 'the client keeps 1500 in every lab');
    const mtus: string[] = [];
    for (const role of ['sw', ...labHosts().map((h) => h.namespace)]) {
      const r = await lab!.exec(role, ['ip', '-j', 'link', 'show']);
      assert.equal(r.code, 0, r.stderr);
      for (const link of JSON.parse(r.stdout) as { ifname: string; mtu: number }[]) {
        if (link.ifname !== 'lo') mtus.push(`${role} ${link.ifname} ${link.mtu}`);
      }
    }
    // Per host one veth per interface, on the switch its peer, plus the bridges.
    const links = labHosts().reduce((n, h) => n + h.interfaces.length, 0) * 2 + Object.keys(TOPOLOGY.segments).length;
    assert.equal(mtus.length, links, mtus.join('\n'));
    assert.deepEqual(
      mtus.filter((m) => !m.endsWith(' 1500')),
      [],
      'links not at 1500',
    );
  });

  test('the backends were provisioned with --mtu 1500 --decap xdp; xdp_decap runs natively for both of their addresses', async () => {
    for (const host of labHosts()) {
      assert.deepEqual(
        await lab!.provisionArgs(host.namespace),
        [...topologyArgs(host, (i) => `eth${i}`), ...labExtras(host, lab!.runtimeDir, true, 1500)],
        `${host.name}: arguments`,
      );
    }
    for (const be of LAB.backends) {
      const log = await lab!.provisionLog(be.name);
      assert.ok(log.includes(`lbctl: xdp_decap attached on eth0 for ${be.address}, ${be.address6}`), `${be.name}: ${log.join('\n')}`);
      const r = await lab!.exec(be.name, ['ip', '-j', '-d', 'link', 'show', 'dev', 'eth0']);
      const [link] = JSON.parse(r.stdout) as { xdp?: { mode: number; prog?: { name: string } } }[];
      assert.equal(link!.xdp?.mode, 1, `${be.name}: native XDP, got ${JSON.stringify(link!.xdp)}`);
      assert.equal(link!.xdp?.prog?.name, 'xdp_decap', be.name);
    }
  });
});

describe('lab failures and cleanup', () => {
  test('a failed up tears down what it created and reports why', async () => {
    const prefix = `lbf${Date.now().toString(36).slice(-5)}`;
    try {
      // lab.sh passes the list on; backend.sh rejects it after the topology exists.
      await assert.rejects(Lab.up({ prefix, decap: false, vips: ['10.100.0.100', '10.100.0.999'] }), (err: Error) => {
        assert.match(err.message, /10\.100\.0\.999/);
        assert.match(err.message, /tearing down/);
        return true;
      });
      assert.deepEqual(await labNamespaces(prefix), []);
      assert.equal(existsSync(`${LAB.runtimeBase}/${prefix}`), false);
    } finally {
      labShDown(prefix);
    }
  });

  test('a bad IPv6 VIP fails up the same way', async () => {
    const prefix = `lbg${Date.now().toString(36).slice(-5)}`;
    try {
      await assert.rejects(Lab.up({ prefix, decap: false, vips6: ['fd00:100::100', 'fd00:100::1::2'] }), (err: Error) => {
        assert.match(err.message, /fd00:100::1::2" is not an IPv4 or IPv6 address/);
        assert.match(err.message, /tearing down/);
        return true;
      });
      assert.deepEqual(await labNamespaces(prefix), []);
    } finally {
      labShDown(prefix);
    }
  });

  test('lab.sh up refuses an existing prefix and keeps that lab', async () => {
    const lab = await Lab.up({ decap: false });
    try {
      await assert.rejects(execFileP(LAB_SH, ['up', lab.prefix, '--no-decap']), /exists already/);
      const r = await lab.exec('client', ['curl', '-sS', '--max-time', '3', 'http://10.10.0.13/']);
      assert.match(r.stdout, new RegExp(`^backend=be3 client=${LAB.client} port=\\d+ server=10.10.0.13\n$`));
    } finally {
      await lab.down();
    }
  });

  test('a lab is torn down when its process gets SIGTERM', async () => {
    const labModule = new URL('./lab.js', import.meta.url).href;
    const script = `
      import { Lab } from ${JSON.stringify(labModule)};
      const lab = await Lab.up({ decap: false });
      lab.spawn('client', ['sleep', '600'], { stdio: 'ignore' });
      process.stdout.write(lab.prefix + '\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let prefix = '';
    try {
      prefix = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(out.trim());
        });
        child.once('exit', (code) => reject(new Error(`child exited (${code}) before its lab was up`)));
      });
      assert.equal((await labNamespaces(prefix)).length, 9);
      const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_code, signal) => r(signal)));
      child.kill('SIGTERM');
      assert.equal(await exited, 'SIGTERM', 'the child should still die of the signal');
      assert.deepEqual(await labNamespaces(prefix), []);
      assert.equal(existsSync(`${LAB.runtimeBase}/${prefix}`), false);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      if (prefix) labShDown(prefix);
    }
  });
});
