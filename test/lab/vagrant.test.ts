// The Vagrant topology (vagrant/Vagrantfile): `vagrant validate` with and
// without the libvirt plugin, the machines it defines against
// vagrant/topology.json, and its provisioning arguments against the lab's, then
// run for real in a lab (the hosts cannot boot VMs).
// Needs `vagrant` and `vagrant-libvirt` (scripts/install-deps.sh), root and
// `make` for the lab part. Offline: nothing is downloaded.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { StatusResult } from '../../src/api/protocol.js';
import { LAB, Lab, ROOT, TOPOLOGY, segmentPrefixLength, topologyArgs, type TopologyHost } from './lab.js';
import { LabBalancer } from '../support/balancer.js';
import { nextHops, waitUntil } from '../support/fleet.js';

const execFileP = promisify(execFile);
const VAGRANT_DIR = join(ROOT, 'vagrant');

interface DumpedMachine {
  name: string;
  role: TopologyHost['role'];
  script: string;
  autostart: boolean;
  memory: number;
  cpus: number;
  networks: {
    segment: string;
    network: string;
    ip: string;
    prefix_length: number;
    netmask: string;
    ip6: string | null;
    prefix_length6: number | null;
    libvirt_host_ip: string;
  }[];
  provision_args: string[];
}

interface Dump {
  box: string;
  project_dir: string;
  machines: DumpedMachine[];
}

const scratch = mkdtempSync(join(tmpdir(), 'lbctl-vagrant-test-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

interface VagrantRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `vagrant ARGS` in vagrant/ with its own VAGRANT_HOME and dotfile
 * directory (nothing is written to the repository or ~/.vagrant.d), no update
 * checks, and extra environment.
 */
async function vagrant(name: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<VagrantRun> {
  const home = join(scratch, name);
  try {
    const { stdout, stderr } = await execFileP('vagrant', args, {
      cwd: VAGRANT_DIR,
      timeout: 120_000,
      env: {
        ...process.env,
        VAGRANT_HOME: join(home, 'home'),
        VAGRANT_DOTFILE_PATH: join(home, 'dotfile'),
        VAGRANT_CHECKPOINT_DISABLE: '1',
        VAGRANT_NO_COLOR: '1',
        ...env,
      },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { code?: number | string; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error('vagrant is not installed (scripts/install-deps.sh installs the Debian package)');
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? e.message };
  }
}

function assertValidated(r: VagrantRun, what: string): void {
  assert.equal(r.code, 0, `${what} failed:\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^Vagrantfile validated successfully\.$/m, `${what}:\n${r.stdout}${r.stderr}`);
}

/** The machines the Vagrantfile defines (LBCTL_VAGRANT_DUMP), from the plain `vagrant validate`. */
let dumpPromise: Promise<{ run: VagrantRun; dump: Dump | undefined }> | undefined;
function validateAndDump(): Promise<{ run: VagrantRun; dump: Dump | undefined }> {
  dumpPromise ??= (async () => {
    const file = join(scratch, 'machines.json');
    const run = await vagrant('default', ['validate'], { LBCTL_VAGRANT_DUMP: file });
    return { run, dump: existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Dump) : undefined };
  })();
  return dumpPromise;
}

async function machines(): Promise<DumpedMachine[]> {
  const { run, dump } = await validateAndDump();
  assert.ok(dump, `the Vagrantfile wrote no LBCTL_VAGRANT_DUMP:\n${run.stdout}${run.stderr}`);
  return dump.machines;
}

/** Options whose value differs between a VM and the lab by design, and flags only one world passes. */
const WORLD_OPTIONS = new Set([
  '--mtu',
  '--gateway',
  '--runtime-dir',
  '--root',
  '--decap',
  '--lbctl',
  '--socket',
  '--state-dir',
  '--xdp-mode',
  '--bird-dir',
]);
const WORLD_FLAGS = new Set(['--no-decap', '--install', '--start']);

/** The topology's part of a role script's arguments: world-specific options dropped, interface names blanked. */
function topologyPart(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (WORLD_FLAGS.has(a)) continue;
    if (WORLD_OPTIONS.has(a)) {
      i++;
      continue;
    }
    if (a === '--interface') {
      out.push(a, 'IFACE');
      i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

function optionValue(args: readonly string[], option: string): string | undefined {
  const i = args.indexOf(option);
  return i >= 0 ? args[i + 1] : undefined;
}

describe('vagrant validate (offline, no VM)', () => {
  test('validates the Vagrantfile with what is installed', async (t) => {
    const { run } = await validateAndDump();
    assertValidated(run, 'vagrant validate');
    t.diagnostic(run.stdout.trim().split('\n').at(-1)!);
  });

  test('validates the libvirt provider settings (vagrant-libvirt)', async (t) => {
    const plugins = await vagrant('plugins', ['plugin', 'list']);
    if (!/^vagrant-libvirt /m.test(plugins.stdout)) {
      t.skip('the vagrant-libvirt plugin is not installed (Debian package vagrant-libvirt)');
      return;
    }
    assertValidated(await vagrant('libvirt', ['validate'], { VAGRANT_DEFAULT_PROVIDER: 'libvirt' }), 'vagrant validate (libvirt)');
  });

  test('validates the VirtualBox provider settings without any plugin', async () => {
    // VirtualBox is not installed here: a stand-in VBoxManage answers the
    // version query that makes the provider usable, nothing else. With no
    // plugins loaded the libvirt block must be skipped, not fail.
    const bin = join(scratch, 'vbox-bin');
    const log = join(scratch, 'vboxmanage.log');
    await execFileP('mkdir', ['-p', bin]);
    writeFileSync(
      join(bin, 'VBoxManage'),
      `#!/bin/sh\necho "$*" >>${JSON.stringify(log)}\n[ "$1" = --version ] && echo 7.0.14r161095\nexit 0\n`,
      { mode: 0o755 },
    );
    const r = await vagrant('virtualbox', ['validate'], {
      VAGRANT_NO_PLUGINS: '1',
      VAGRANT_DEFAULT_PROVIDER: 'virtualbox',
      PATH: `${bin}:${process.env.PATH}`,
    });
    assertValidated(r, 'vagrant validate (virtualbox, no plugins)');
    assert.deepEqual(
      [...new Set(readFileSync(log, 'utf8').trim().split('\n'))],
      ['--version'],
      'VBoxManage was asked for more than its version',
    );
  });

  test('validates without any provider (--ignore-provider, no plugins)', async () => {
    assertValidated(
      await vagrant('noprovider', ['validate', '--ignore-provider'], { VAGRANT_NO_PLUGINS: '1' }),
      'vagrant validate --ignore-provider',
    );
  });

  test('a broken topology fails validation with the reason', async () => {
    const dir = join(scratch, 'broken');
    await execFileP('mkdir', ['-p', join(dir, 'vagrant')]);
    const topology = structuredClone(TOPOLOGY) as unknown as { hosts: { interfaces: { segment: string }[] }[] };
    topology.hosts[0]!.interfaces[0]!.segment = 'nowhere';
    writeFileSync(join(dir, 'vagrant', 'topology.json'), JSON.stringify(topology));
    writeFileSync(join(dir, 'vagrant', 'Vagrantfile'), readFileSync(join(VAGRANT_DIR, 'Vagrantfile')));
    const home = join(scratch, 'broken-home');
    const r = await execFileP('vagrant', ['validate', '--ignore-provider'], {
      cwd: join(dir, 'vagrant'),
      env: {
        ...process.env,
        VAGRANT_HOME: home,
        VAGRANT_DOTFILE_PATH: join(home, 'dot'),
        VAGRANT_CHECKPOINT_DISABLE: '1',
        VAGRANT_NO_PLUGINS: '1',
      },
    }).then(
      () => ({ code: 0, out: '' }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: `${e.stdout}${e.stderr}` }),
    );
    assert.notEqual(r.code, 0);
    assert.match(r.out, /no segment nowhere/);
  });
});

describe('the machines of the Vagrantfile are the hosts of vagrant/topology.json', () => {
  test('names, roles, role scripts, networks and fixed addresses', async () => {
    const list = await machines();
    assert.deepEqual(
      list.map((m) => [m.name, m.role]),
      TOPOLOGY.hosts.map((h) => [h.name, h.role]),
    );
    for (const m of list) {
      const host = TOPOLOGY.hosts.find((h) => h.name === m.name)!;
      assert.equal(m.script, `/vagrant/vagrant/provision/${host.role}.sh`);
      assert.ok(existsSync(join(ROOT, 'vagrant', 'provision', `${host.role}.sh`)), `no role script for ${host.role}`);
      assert.deepEqual(
        m.networks.map((n) => [n.network, n.ip, n.prefix_length, n.ip6, n.prefix_length6]),
        host.interfaces.map((i) => [
          TOPOLOGY.segments[i.segment]!.network,
          i.address,
          segmentPrefixLength(i.segment),
          i.address6 ?? null,
          i.address6 ? segmentPrefixLength(i.segment, 6) : null,
        ]),
        `${m.name}: private networks`,
      );
      // Vagrant configures the IPv4 address; the role script adds the IPv6 one.
      for (const n of m.networks) {
        if (n.ip6)
          assert.ok(m.provision_args.includes(`${n.ip6}/${n.prefix_length6}`), `${m.name}: --address ${n.ip6}/${n.prefix_length6}`);
      }
      assert.equal(m.autostart, host.vagrant?.autostart ?? true, `${m.name}: autostart`);
      for (const n of m.networks) {
        assert.ok(
          !TOPOLOGY.hosts.some((h) => h.interfaces.some((i) => i.address === n.libvirt_host_ip)),
          `${n.libvirt_host_ip} (the laptop on ${n.network}) is a host's address`,
        );
      }
    }
    // What the issue asks of the topology: two l2dsr backends on the balancer's
    // segment, at least one ipip backend behind the router.
    const balancerSegment = TOPOLOGY.hosts.find((h) => h.role === 'balancer')!.interfaces[0]!.segment;
    const backends = TOPOLOGY.hosts.filter((h) => h.role === 'backend');
    const l2 = backends.filter((h) => h.forward === 'l2dsr');
    assert.ok(l2.length >= 2 && l2.every((h) => h.interfaces[0]!.segment === balancerSegment), 'l2dsr backends on the balancer segment');
    assert.ok(
      backends.some((h) => h.forward === 'ipip' && h.interfaces[0]!.segment !== balancerSegment),
      'an ipip backend behind the router',
    );
    const started = list.filter((m) => m.autostart).map((m) => m.name);
    assert.ok(started.includes('balancer') && started.includes('client') && started.includes('router'));
    // The fleet (docs/fleet.md): a second balancer on the first one's segment
    // and a client behind the router, both started on demand.
    const balancers = TOPOLOGY.hosts.filter((h) => h.role === 'balancer');
    assert.ok(balancers.length >= 2 && balancers.every((h) => h.interfaces[0]!.segment === balancerSegment), 'two balancers');
    const fleetClient = TOPOLOGY.hosts.find((h) => h.fleet && h.role === 'client')!;
    assert.notEqual(fleetClient.interfaces[0]!.segment, balancerSegment, 'the fleet client is behind the router');
    for (const h of TOPOLOGY.hosts.filter((x) => x.fleet)) assert.ok(!started.includes(h.name), `${h.name} starts on demand`);
    assert.ok(
      backends.filter((h) => h.forward === 'l2dsr' && started.includes(h.name)).length >= 2,
      'vagrant up starts two l2dsr backends',
    );
    assert.ok(
      backends.some((h) => h.forward === 'ipip' && started.includes(h.name)),
      'vagrant up starts an ipip backend',
    );
  });

  test('every VM installs (--install), finds its NIC by address, the balancer starts lbctl', async () => {
    for (const m of await machines()) {
      assert.ok(m.provision_args.includes('--install'), `${m.name}: --install`);
      assert.ok(!m.provision_args.includes('--gateway'), `${m.name}: keeps Vagrant's default route`);
      const ifaces = m.provision_args.filter((_, i) => m.provision_args[i - 1] === '--interface');
      assert.deepEqual(
        ifaces,
        m.networks.map(() => 'auto'),
        `${m.name}: --interface auto per network`,
      );
      if (m.role === 'balancer') assert.ok(m.provision_args.includes('--start'), 'the balancer starts lbctl');
      // Every VM is part of the fleet: BIRD on the balancers and the router.
      assert.equal(m.provision_args.includes('--bgp-as'), m.role === 'balancer' || m.role === 'router', `${m.name}: BGP`);
      assert.ok(!m.provision_args.includes('--bird-dir'), `${m.name}: the VM's BIRD is bird.service`);
      if (m.role === 'backend') assert.equal(optionValue(m.provision_args, '--decap'), 'auto', `${m.name}: kernel ipip or lbctl decap`);
    }
  });
});

describe('the Vagrant provisioning in the lab', () => {
  let lab: Lab;
  /** One lbctl per balancer (the VMs' --start starts each), by host name; lb is the first's. */
  let balancers: Map<string, LabBalancer>;
  let lb: LabBalancer;

  before(async () => {
    // The VMs are a fleet: the lab's fleet has every host of the topology.
    lab = await Lab.up({ decap: false, fleet: true });
    balancers = new Map(TOPOLOGY.hosts.filter((h) => h.role === 'balancer').map((h) => [h.name, new LabBalancer(lab, h.namespace)]));
    lb = balancers.get('balancer')!;
  });

  after(async () => {
    for (const b of balancers?.values() ?? []) await b.stop().catch(() => undefined);
    await lab?.down();
  });

  test('the Vagrantfile and the lab give every role script the same topology arguments', async () => {
    const list = await machines();
    for (const host of TOPOLOGY.hosts) {
      const m = list.find((x) => x.name === host.name)!;
      const labArgs = await lab.provisionArgs(host.namespace);
      assert.deepEqual(topologyPart(labArgs), topologyPart(m.provision_args), `${host.name}: lab vs Vagrantfile`);
      assert.deepEqual(
        topologyPart(m.provision_args),
        topologyPart(topologyArgs(host, () => 'auto', TOPOLOGY.vips, TOPOLOGY.vips6, true)),
        `${host.name}: Vagrantfile vs topology.json`,
      );
    }
  });

  test("the VMs' arguments (--interface auto, --decap auto, --start) give a working balancer here", async (t) => {
    // Each role script again, with the VM's arguments except for what only a
    // VM can do (--install) and where the lab keeps its files.
    const list = await machines();
    const runs = TOPOLOGY.hosts.map(async (host) => {
      const m = list.find((x) => x.name === host.name)!;
      const args = m.provision_args.filter((a) => a !== '--install').map((a, i, all) => (all[i - 1] === '--root' ? ROOT : a));
      const balancer = balancers.get(host.name);
      if (balancer) args.push('--socket', balancer.socket, '--state-dir', balancer.stateDir);
      if (host.role === 'backend') args.push('--runtime-dir', join(lab.runtimeDir, host.name));
      // The lab's BIRD of this host (a VM's is bird.service): it re-reads the file.
      if (host.role === 'balancer' || host.role === 'router') args.push('--bird-dir', join(lab.runtimeDir, host.name));
      const r = await lab.exec(host.namespace, [join(ROOT, 'vagrant', 'provision', `${host.role}.sh`), ...args], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, `${host.name}: ${host.role}.sh ${args.join(' ')}\n${r.stderr}`);
      const label = host.role === 'backend' ? `backend ${host.name}` : host.role;
      assert.equal(r.stderr.trim().split('\n').at(-1), `${label}: provisioned with: ${args.join(' ')}`);
      return `${host.name}: ${r.stderr.trim().split('\n').at(-2)}`;
    });
    for (const line of await Promise.all(runs)) t.diagnostic(line);

    const status = await lb.json<StatusResult>(['status']);
    assert.equal(status.interface, LAB.interface);
    assert.equal(status.xdpMode, 'native', 'veth takes native XDP: --xdp-mode auto picks it');
    const mtu = JSON.parse((await lab.exec('client', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0].mtu as number;
    assert.equal(mtu, TOPOLOGY.mtu.vagrant.client);

    // The walkthrough's VIP: two l2dsr backends on the segment, one ipip behind the router.
    const vip = `${LAB.vips[0]}:80/tcp`;
    const chosen = [...LAB.backends.filter((b) => b.forward === 'l2dsr').slice(0, 2), LAB.backends.find((b) => b.forward === 'ipip')!];
    await lb.ok(['vip', 'add', vip]);
    for (const b of chosen) await lb.ok(['backend', 'add', vip, b.address, '--forward', b.forward]);
    const result = await lb.httpFromClient(`http://${LAB.vips[0]}/`, 60);
    assert.deepEqual(result.failures, []);
    assert.deepEqual([...new Set(result.answers.map((a) => a.backend))].sort(), chosen.map((b) => b.name).sort());

    // A fleet's node: each VM's lbctl announces what it serves where the VM's
    // BIRD learns it; the router routes the VIP to the one balancer serving it.
    for (const b of balancers.values()) {
      const announce = (await b.json<StatusResult>(['status'])).announce;
      assert.deepEqual([announce?.table, announce?.proto], [TOPOLOGY.fleet.announce_table, TOPOLOGY.fleet.announce_proto]);
    }
    const routedMs = await waitUntil(
      async () => (await nextHops(lab, 'router', `${LAB.vips[0]}/32`)).join() === LAB.balancer,
      20_000,
      `the router's route to ${LAB.vips[0]} through ${LAB.balancer}`,
      50,
    );
    t.diagnostic(`the VIP reached the router's routes ${routedMs.toFixed(0)} ms after the load (default hold-down 5 s)`);

    // The same over IPv6: addresses the scripts added themselves (Vagrant only
    // sets the IPv4 ones), 6in6 unwrapped by the decapsulator --decap auto chose.
    const vip6 = `[${LAB.vips6[0]}]:80/tcp`;
    await lb.ok(['vip', 'add', vip6]);
    for (const b of chosen) await lb.ok(['backend', 'add', vip6, b.address6, '--forward', b.forward]);
    const result6 = await lb.httpFromClient(`http://[${LAB.vips6[0]}]/`, 60);
    assert.deepEqual(result6.failures, []);
    assert.deepEqual([...new Set(result6.answers.map((a) => a.backend))].sort(), chosen.map((b) => b.name).sort());
    assert.ok(
      result6.answers.every((a) => a.client === LAB.client6),
      "the backends saw the client's IPv6 address",
    );

    // Provisioning again leaves the running balancer alone.
    const again = await lab.exec('lb', [
      join(ROOT, 'vagrant', 'provision', 'balancer.sh'),
      ...list
        .find((m) => m.role === 'balancer')!
        .provision_args.filter((a) => a !== '--install')
        .map((a, i, all) => (all[i - 1] === '--root' ? ROOT : a)),
      '--socket',
      lb.socket,
      '--state-dir',
      lb.stateDir,
      '--bird-dir',
      join(lab.runtimeDir, 'balancer'),
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /lbctl runs already/);
    assert.match(again.stderr, /bird \(pid \d+\) reconfigured/);
    assert.equal((await lb.json<StatusResult>(['status'])).pid, status.pid);
  });
});
