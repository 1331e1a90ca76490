/**
 * The announcer (src/fleet/announcer.ts) against the real kernel, in a
 * network namespace of its own: host routes of both families in lbctl's
 * table through its TUN device, gone with the process that holds it (also
 * when that process has a long-lived child), refused when the device name is
 * taken, and learned by BIRD's kernel protocol as packaging/bird/node.conf.in
 * configures it. Needs root and bird2 (scripts/install-deps.sh).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { announceDevice } from '../../src/fleet/announcer.js';
import { validateAnnounceProto, validateAnnounceTable } from '../../src/model/announce.js';
import { ROOT } from '../lab/lab.js';
import { AnnouncerHolder } from '../support/announcer-holder.js';
import { waitForHops, wallClock } from '../support/route-wait.js';

const execFileP = promisify(execFile);
const NS = `lbfa${process.pid}`;
const VIP = '10.100.0.100';
const VIP6 = 'fd00:100::100';

/** argv run in the test's namespace. */
const inNs = (argv: string[]) => ['nsenter', `--net=/run/netns/${NS}`, '--', ...argv];
const spawnInNs = (argv: string[]): ChildProcess => {
  const [file, ...args] = inNs(argv);
  return spawn(file!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
};
const ip = async (...args: string[]) => (await execFileP('ip', ['-n', NS, ...args])).stdout;
const tableRoutes = async (family: 4 | 6, table = 100) =>
  JSON.parse((await ip('-j', `-${family}`, 'route', 'show', 'table', String(table))) || '[]') as {
    dst: string;
    dev: string;
    protocol: string;
  }[];
const links = async () => (JSON.parse(await ip('-j', 'link', 'show')) as { ifname: string }[]).map((l) => l.ifname);

const holders: AnnouncerHolder[] = [];
const strays: number[] = [];
async function holder(options: Parameters<typeof AnnouncerHolder.start>[0]): Promise<AnnouncerHolder> {
  const h = await AnnouncerHolder.start(options, spawnInNs);
  holders.push(h);
  if (h.ready.childPid) strays.push(h.ready.childPid);
  return h;
}

before(async () => {
  await execFileP('ip', ['netns', 'add', NS]);
  await ip('link', 'set', 'dev', 'lo', 'up');
});

after(async () => {
  for (const h of holders) await h.kill();
  for (const pid of strays) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await execFileP('ip', ['netns', 'del', NS]);
});

describe('options', () => {
  test('the device is named after the interface, at most 15 characters, distinct for distinct interfaces', () => {
    assert.equal(announceDevice('eth0'), 'lbv-eth0');
    assert.equal(announceDevice('enp0s31f6'), 'lbv-enp0s31f6');
    const long = ['enx0123456789ab', 'enx0123456789ac', 'verylongname123'];
    const names = long.map(announceDevice);
    for (const n of names) assert.ok(n.length <= 15 && n.startsWith('lbv-'), n);
    assert.equal(new Set(names).size, names.length, names.join(' '));
    assert.equal(announceDevice('enx0123456789ab'), names[0], 'stable');
    assert.throws(() => announceDevice('bad/name'), /invalid interface "bad\/name"/);
  });

  test('tables and protos of the kernel or of routing daemons are refused with the reason', () => {
    assert.equal(validateAnnounceTable(100), 100);
    assert.equal(validateAnnounceProto(201), 201);
    for (const table of [0, 253, 254, 255, -1, 1.5, 2 ** 32]) assert.throws(() => validateAnnounceTable(table), /invalid announce table/);
    assert.throws(() => validateAnnounceProto(12), /it is "bird"'s/);
    assert.throws(() => validateAnnounceProto(186), /it is "bgp"'s/);
    assert.throws(() => validateAnnounceProto(2), /it is "kernel"'s/);
    assert.throws(() => validateAnnounceProto(256), /route protocol number 1-255/);
  });
});

describe('in a namespace', () => {
  test('announces IPv4 and IPv6 VIPs as host routes in its table through its device, idempotently, and withdraws them', async (t) => {
    const h = await holder({ interface: 'eth0' });
    assert.equal(h.ready.device, 'lbv-eth0');
    const timings: string[] = [];
    const timed = async (line: string) => {
      const answer = await h.ok(line);
      timings.push(`${line.split(' ')[0]} ${answer.ms!.toFixed(1)} ms`);
      return answer;
    };
    await timed(`announce ${VIP}`);
    await timed(`announce ${VIP}`);
    assert.deepEqual((await timed('announce fd00:100:0:0::100')).list, [VIP, VIP6]);
    assert.deepEqual(
      (await tableRoutes(4)).map((r) => [r.dst, r.dev, r.protocol]),
      [[VIP, 'lbv-eth0', '201']],
    );
    assert.deepEqual(
      (await tableRoutes(6)).map((r) => [r.dst, r.dev, r.protocol]),
      [[VIP6, 'lbv-eth0', '201']],
    );
    // Never in the node's own tables, and no rule leads to this one.
    assert.doesNotMatch(await ip('route', 'show', 'table', 'all'), /10\.100\.0\.100.*table (main|local)/);
    assert.doesNotMatch(await ip('rule', 'show'), /lookup 100/);
    assert.doesNotMatch(await ip('-6', 'rule', 'show'), /lookup 100/);
    // The device: up, no address of either family (nothing is ever sent through it).
    const [dev] = JSON.parse(await ip('-j', '-d', 'addr', 'show', 'dev', 'lbv-eth0')) as {
      flags: string[];
      addr_info: unknown[];
      linkinfo: { info_kind: string; info_data: { persist: boolean } };
    }[];
    assert.ok(dev!.flags.includes('UP'));
    assert.deepEqual(dev!.addr_info, []);
    assert.equal(dev!.linkinfo.info_kind, 'tun');
    assert.equal(dev!.linkinfo.info_data.persist, false);

    await timed(`withdraw ${VIP}`);
    await timed(`withdraw ${VIP}`);
    assert.deepEqual(await tableRoutes(4), []);
    assert.deepEqual((await h.ok(`withdraw 10.100.0.199`)).list, [VIP6]);
    await h.ok(`announce ${VIP}`);
    // withdraw-all also takes routes through the device that the announcer did not add.
    await ip('route', 'add', '10.100.0.150/32', 'dev', 'lbv-eth0', 'table', '100');
    assert.deepEqual((await timed('withdraw-all')).list, []);
    assert.deepEqual([...(await tableRoutes(4)), ...(await tableRoutes(6))], []);
    t.diagnostic(timings.join(', '));

    const bad = await h.command('announce 10.100.0.300');
    assert.equal(bad.ok, false);
    assert.equal(bad.error, 'invalid VIP "10.100.0.300": expected an IPv4 or IPv6 address');
    assert.deepEqual((await h.ok('close')).list, []);
    assert.ok(!(await links()).includes('lbv-eth0'), 'close() deletes the device');
    assert.match((await h.command(`announce ${VIP}`)).error!, /announcer: lbv-eth0 is closed/);
    await h.ok('close');
  });

  test('update: many VIPs of both families with one ip process, withdrawals first; a failure names the VIP', async (t) => {
    const h = await holder({ interface: 'eth3' });
    const many = Array.from({ length: 50 }, (_, i) => `10.100.1.${i + 1}`);
    const started = performance.now();
    const answer = await h.ok(`update ${[...many, VIP6].map((a) => `+${a}`).join(' ')}`);
    t.diagnostic(`51 routes in ${(performance.now() - started).toFixed(1)} ms (one ip -batch)`);
    assert.equal(answer.list!.length, 51);
    assert.equal((await tableRoutes(4)).length, 50);
    // A withdrawal of something not announced is fine; withdraw and announce together.
    assert.deepEqual((await h.ok(`update -10.100.1.1 -10.100.9.9 -${VIP6} +${VIP}`)).list!.includes(VIP), true);
    assert.deepEqual(
      (await tableRoutes(4)).map((r) => r.dst).filter((d) => d === '10.100.1.1' || d === VIP),
      [VIP],
    );
    assert.deepEqual(await tableRoutes(6), []);
    // The device deleted under the announcer: every line fails, the error names the first.
    await ip('link', 'del', 'lbv-eth3');
    const failed = await h.command('update +10.100.2.1 +10.100.2.2');
    assert.equal(failed.ok, false);
    assert.match(failed.error!, /^announcer: cannot announce 10\.100\.2\.1: Cannot find device "lbv-eth3"$/);
    await h.kill();
  });

  test('withdraw-all before anything was announced: the table does not exist yet, nothing to do', async () => {
    const h = await holder({ interface: 'eth7', table: 4242 });
    assert.deepEqual((await h.ok('withdraw-all')).list, []);
    await h.ok(`announce ${VIP}`);
    assert.deepEqual(
      (await tableRoutes(4, 4242)).map((r) => r.dst),
      [VIP],
    );
    await h.ok('withdraw-all');
    assert.deepEqual(await tableRoutes(4, 4242), []);
    await h.kill();
  });

  test('the descriptor that holds the device is close-on-exec', async () => {
    const h = await holder({ interface: 'eth1' });
    const fdinfo = readFileSync(`/proc/${h.ready.pid}/fdinfo/${h.ready.fd}`, 'utf8');
    assert.match(fdinfo, /^iff:\s+lbv-eth1$/m);
    const flags = parseInt(/^flags:\s+(\d+)$/m.exec(fdinfo)![1]!, 8);
    assert.ok(flags & 0o2000000, `O_CLOEXEC missing: flags ${flags.toString(8)}`);
    await h.kill();
  });

  test('SIGKILL of the holder, which has a long-lived child, takes its routes with it', async (t) => {
    const h = await holder({ interface: 'eth2', child: true });
    await h.ok(`announce ${VIP}`);
    await h.ok(`announce ${VIP6}`);
    const gone4 = await waitForHops(spawnInNs, '100', `${VIP}/32`, 0, 5000);
    const gone6 = await waitForHops(spawnInNs, '100', `${VIP6}/128`, 0, 5000);
    const killedAt = wallClock();
    await h.kill();
    const [v4, v6] = await Promise.all([gone4.done, gone6.done]);
    const ms = [v4.at - killedAt, v6.at - killedAt];
    t.diagnostic(`SIGKILL -> routes gone: IPv4 ${ms[0]!.toFixed(1)} ms (${v4.polls} polls), IPv6 ${ms[1]!.toFixed(1)} ms`);
    assert.ok(Math.max(...ms) < 1000, `routes outlived the holder by ${Math.max(...ms).toFixed(0)} ms`);
    assert.ok(!(await links()).includes('lbv-eth2'), 'the device is gone');
    // The child inherited nothing that keeps the device: it still runs.
    assert.doesNotThrow(() => process.kill(h.ready.childPid!, 0), 'the child should outlive the holder');
  });

  test('a second announcer for the same interface is refused with the reason; the first keeps its routes', async () => {
    const first = await holder({ interface: 'eth3' });
    await first.ok(`announce ${VIP}`);
    await assert.rejects(
      holder({ interface: 'eth3' }),
      /^Error: announcer: the announce device lbv-eth3 exists already \(a TUN device that some process holds open \(another lbctl announcing for the same interface\?\)\); refusing to share it/,
    );
    assert.deepEqual(
      (await tableRoutes(4)).map((r) => r.dev),
      ['lbv-eth3'],
    );
    // A device of that name that is no TUN device is refused too, and left alone.
    await ip('link', 'add', 'lbv-eth4', 'type', 'veth', 'peer', 'name', 'lbv-peer');
    await assert.rejects(holder({ interface: 'eth4' }), /the announce device lbv-eth4 exists already \(a veth interface\)/);
    assert.ok((await links()).includes('lbv-eth4'));
    await ip('link', 'del', 'lbv-eth4');
    await first.kill();
  });

  test('bad options fail with one line and leave no device behind', async () => {
    const before = await links();
    await assert.rejects(holder({ interface: 'eth5', table: 254 }), /^Error: invalid announce table 254:/);
    await assert.rejects(holder({ interface: 'eth5', proto: 12 }), /^Error: invalid announce proto 12: it is "bird"'s/);
    await assert.rejects(holder({ interface: 'eth5', device: 'this-name-is-too-long' }), /invalid announce device "this-name-is-too-long"/);
    assert.deepEqual(await links(), before);
  });

  test("BIRD's kernel protocol, configured by packaging/bird/node.conf.in, learns the routes and drops them with the holder", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lbctl-bird-'));
    try {
      const { stdout: config } = await execFileP('bash', [
        '-c',
        '. "$1/vagrant/provision/common.sh" && bird_config node ROUTER_ID=192.0.2.1 LOCAL_AS=65001 PEER_AS=65000 PEER4=192.0.2.254 PEER6=2001:db8::fe TABLE=100 PROTO=201',
        'bash',
        ROOT,
      ]);
      writeFileSync(join(dir, 'bird.conf'), config);
      const socket = join(dir, 'bird.ctl');
      const [nsenter, ...birdArgs] = inNs(['bird', '-c', join(dir, 'bird.conf'), '-s', socket, '-P', join(dir, 'bird.pid')]);
      await execFileP(nsenter!, birdArgs);
      // BIRD's daemon writes its pid file after the command that started it returned.
      const pidFile = join(dir, 'bird.pid');
      for (const deadline = Date.now() + 5000; !existsSync(pidFile) && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 10));
      const bird = Number(readFileSync(pidFile, 'utf8'));
      strays.push(bird);
      const learned = async () => {
        const { stdout } = await execFileP('birdc', ['-s', socket, 'show', 'route']);
        return [...stdout.matchAll(/^(\S+\/\d+)\s+unicast \[(\S+) /gm)].map((m) => `${m[1]} ${m[2]}`).sort();
      };
      const h = await holder({ interface: 'eth6' });
      await h.ok(`announce ${VIP}`);
      await h.ok(`announce ${VIP6}`);
      // Another proto in the same table: not lbctl's, not learned.
      await ip('route', 'add', '10.100.0.101/32', 'dev', 'lbv-eth6', 'table', '100', 'proto', '202');
      const want = [`${VIP}/32 vips4`, `${VIP6}/128 vips6`];
      const deadline = Date.now() + 5000;
      while ((await learned()).join() !== want.join() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await learned(), want);
      await h.kill();
      const gone = Date.now() + 5000;
      while ((await learned()).length > 0 && Date.now() < gone) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await learned(), []);
      process.kill(bird, 'SIGTERM');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
