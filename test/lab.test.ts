// Tests of the namespace lab itself (test/lab/lab.sh, test/lab/lab.ts).
// Needs root and `make`; run: node --test dist/test/lab.test.js
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { LAB, LAB_SH, Lab, ROOT, TOPOLOGY, segmentPrefixLength, topologyArgs, type TopologyHost } from './lab/lab.js';

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

/** The arguments lab.sh adds to the topology's for a host (lab.sh up without options). */
function labExtras(host: TopologyHost, runtimeDir: string, decap: boolean): string[] {
  const extra = host.gateway ? ['--gateway', host.gateway] : [];
  switch (host.role) {
    case 'client':
      return [...extra, '--mtu', String(LAB.mtu.client)];
    case 'balancer':
      return [...extra, '--mtu', String(LAB.mtu.interior), '--root', ROOT];
    case 'router':
      return [...extra, '--mtu', String(LAB.mtu.interior)];
    case 'backend':
      return [...extra, '--mtu', String(LAB.mtu.interior), '--runtime-dir', `${runtimeDir}/${host.name}`, '--root', ROOT, ...(decap ? ['--decap', 'xdp'] : ['--no-decap'])];
  }
}

describe('lab topology (no decap)', () => {
  let lab: Lab | undefined;
  let upMs = 0;

  before(async () => {
    const started = Date.now();
    lab = await Lab.up({ decap: false });
    upMs = Date.now() - started;
  });

  after(async () => {
    await lab?.down();
  });

  test('the client reaches every backend on its own address, be4/be5 through the router', async (t) => {
    t.diagnostic(`lab ${lab!.prefix} up in ${upMs} ms`);
    for (const be of LAB.backends) {
      const r = await lab!.exec('client', ['curl', '-sS', '--max-time', '3', `http://${be.address}/`]);
      assert.equal(r.code, 0, `curl ${be.name} (${be.address}): ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^backend=${be.name} client=${LAB.client} port=\\d+ server=${be.address}\n$`));
      const log = await lab!.backendAccessLog(be.name);
      assert.ok(log.length > 0, `${be.name} access log is empty`);
      assert.equal(log.at(-1)!.split(' ')[0], LAB.client, `${be.name} saw another client: ${log.at(-1)}`);
    }
    for (const be of LAB.backends) {
      const r = await lab!.exec('client', ['ip', '-4', '-o', 'route', 'get', be.address]);
      assert.equal(r.code, 0, r.stderr);
      if (be.segment === 'remote') assert.match(r.stdout, new RegExp(`via ${LAB.router.front.replace(/\./g, '\\.')} `));
      else assert.doesNotMatch(r.stdout, / via /);
    }
  });

  test('every host was configured by its role script, with the arguments derived from vagrant/topology.json', async () => {
    assert.deepEqual(
      LAB.backends.map((b) => [b.name, b.address]),
      TOPOLOGY.hosts.filter((h) => h.role === 'backend').map((h) => [h.name, h.interfaces[0]!.address]),
    );
    for (const host of TOPOLOGY.hosts) {
      const args = await lab!.provisionArgs(host.namespace);
      assert.deepEqual(args, [...topologyArgs(host, (i) => `eth${i}`), ...labExtras(host, lab!.runtimeDir, false)], `${host.name}: arguments`);
      // The script's own last word: it ran to the end with exactly these arguments.
      const log = await lab!.provisionLog(host.namespace);
      const label = host.role === 'backend' ? `backend ${host.name}` : host.role;
      assert.equal(log.at(-1), `${label}: provisioned with: ${args.join(' ')}`, `${host.name}: ${log.join('\n')}`);
    }
  });

  test('the addresses and routes in every namespace are those of vagrant/topology.json', async () => {
    for (const host of TOPOLOGY.hosts) {
      const r = await lab!.exec(host.namespace, ['ip', '-j', '-4', 'addr', 'show']);
      assert.equal(r.code, 0, r.stderr);
      const seen = (JSON.parse(r.stdout) as { ifname: string; addr_info: { local: string; prefixlen: number }[] }[])
        .filter((l) => l.ifname !== 'lo')
        .flatMap((l) => l.addr_info.map((a) => `${l.ifname} ${a.local}/${a.prefixlen}`))
        .sort();
      const expected = host.interfaces.map((i, index) => `eth${index} ${i.address}/${segmentPrefixLength(i.segment)}`).sort();
      assert.deepEqual(seen, expected, `${host.name}: addresses`);

      const routes = JSON.parse((await lab!.exec(host.namespace, ['ip', '-j', '-4', 'route', 'show'])).stdout) as { dst: string; gateway?: string }[];
      const vias = routes.filter((x) => x.gateway).map((x) => `${x.dst} via ${x.gateway}`).sort();
      const wanted = [...host.routes.map((x) => `${x.to} via ${x.via}`), ...(host.gateway ? [`default via ${host.gateway}`] : [])].sort();
      assert.deepEqual(vias, wanted, `${host.name}: routes`);
    }
  });

  test('the client routes VIPs to the balancer', async () => {
    const r = await lab!.exec('client', ['ip', '-4', '-o', 'route', 'get', LAB.vips[0]]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`via ${LAB.balancer.replace(/\./g, '\\.')} dev eth0`));
  });

  test('every backend holds the VIPs on lo and does not answer ARP for them', async () => {
    const sysctl = async (role: string, key: string) => {
      const r = await lab!.exec(role, ['cat', `/proc/sys/${key.replace(/\./g, '/')}`]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    for (const be of LAB.backends) {
      const r = await lab!.exec(be.name, ['ip', '-j', '-4', 'addr', 'show', 'dev', 'lo']);
      assert.equal(r.code, 0, r.stderr);
      const addrs = (JSON.parse(r.stdout) as { addr_info: { local: string; prefixlen: number }[] }[])[0]!.addr_info.map(
        (a) => `${a.local}/${a.prefixlen}`,
      );
      for (const vip of LAB.vips) assert.ok(addrs.includes(`${vip}/32`), `${be.name} lo lacks ${vip}/32: ${addrs.join(' ')}`);
      for (const scope of ['all', 'eth0']) {
        assert.equal(await sysctl(be.name, `net.ipv4.conf.${scope}.arp_ignore`), '1', `${be.name} ${scope}.arp_ignore`);
        assert.equal(await sysctl(be.name, `net.ipv4.conf.${scope}.arp_announce`), '2', `${be.name} ${scope}.arp_announce`);
      }
      for (const scope of ['all', 'default', 'eth0', 'lo']) {
        assert.equal(await sysctl(be.name, `net.ipv4.conf.${scope}.rp_filter`), '0', `${be.name} ${scope}.rp_filter`);
      }
    }
    assert.equal(await sysctl('router', 'net.ipv4.ip_forward'), '1');
    assert.equal(await sysctl('lb', 'net.ipv4.conf.all.send_redirects'), '0');
    assert.equal(await sysctl('lb', 'net.ipv4.conf.eth0.send_redirects'), '0');
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
    const labModule = new URL('./lab/lab.js', import.meta.url).href;
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
