/**
 * Outages an operator must not meet (issue 14), reproduced in the lab with
 * the real daemon: a full disk under the log, a config path that is a
 * FIFO, next hops that never answer, idle API connections and a daemon
 * out of file descriptors, a second daemon on the same interface, a
 * program detached or replaced, an interface deleted and created again,
 * and `lbctl restart` run from another network namespace.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { call } from '../../src/api/client.js';
import type { BackendSummary, StatsResult, StatusResult } from '../../src/api/protocol.js';
import { LBCTL, LabBalancer } from '../support/balancer.js';
import { waitFor } from '../support/wait.js';
import { LAB, Lab } from './lab.js';

const VIP = `${LAB.vips[0]}:80/tcp`;
const OTHER_VIP = `${LAB.vips[1]}:80/tcp`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The program attached to an interface of the balancer's namespace, if any. */
async function attachedId(lab: Lab, ifname: string): Promise<number | undefined> {
  const link = JSON.parse((await lab.exec('lb', ['ip', '-j', 'link', 'show', ifname])).stdout)[0] as { xdp?: { prog?: { id: number } } };
  return link?.xdp?.prog?.id;
}

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Idle connections to a socket; the ones the server closed are dropped from the list. */
async function idleConnections(path: string, count: number): Promise<Socket[]> {
  const sockets = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Socket>((resolve) => {
          const socket = connect(path);
          socket.on('error', () => undefined);
          socket.once('connect', () => resolve(socket));
          socket.once('close', () => resolve(socket));
        }),
    ),
  );
  return sockets;
}

describe('an operator can trust it', () => {
  let lab: Lab;
  let lb: LabBalancer;
  const extra: LabBalancer[] = [];
  const pinDirs = new Set<string>();

  before(async () => {
    lab = await Lab.up();
    lb = new LabBalancer(lab);
  });

  after(async () => {
    for (const daemon of [lb, ...extra]) await daemon?.stop().catch(() => undefined);
    // A daemon that failed half way may have left pins: they are this test's.
    for (const dir of pinDirs) rmSync(dir, { recursive: true, force: true });
    await lab?.down();
  });

  const status = (daemon = lb) => daemon.json<StatusResult>(['status']);
  /** Each test starts from no runtime changes. */
  beforeEach(() => rmSync(lb.stateDir, { recursive: true, force: true }));
  const second = (name: string) => {
    const daemon = new LabBalancer(lab, 'lb', name);
    extra.push(daemon);
    return daemon;
  };
  const veth = async (name: string) => {
    const r = await lab.exec('lb', ['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`]);
    assert.equal(r.code, 0, r.stderr);
    await lab.exec('lb', ['ip', 'link', 'set', name, 'up']);
    await lab.exec('lb', ['ip', 'link', 'set', `${name}p`, 'up']);
  };
  /** A daemon of its own on a veth of its own in the balancer's namespace; stopped, and the veth deleted, afterwards. */
  const onOwnInterface = async (ifname: string, body: (daemon: LabBalancer, started: StatusResult) => Promise<void>) => {
    await veth(ifname);
    const daemon = second(ifname);
    try {
      await daemon.ok(['start', '--interface', ifname, '--state-dir', daemon.stateDir]);
      const started = await status(daemon);
      pinDirs.add(started.pinDir);
      assert.equal(await attachedId(lab, ifname), started.programId);
      await body(daemon, started);
    } finally {
      await daemon.stop();
      await lab.exec('lb', ['ip', 'link', 'del', ifname]);
    }
  };

  test('1: a full disk under the log: lines are dropped and counted, the kill-switch keeps being refreshed', async (t) => {
    const disk = join(lab.runtimeDir, 'full-disk');
    mkdirSync(disk, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', disk]);
    try {
      const logFile = openSync(join(disk, 'lbctl.log'), 'a');
      const daemon = lab.spawn(
        'lb',
        [
          LBCTL,
          'start',
          '--foreground',
          '--interface',
          'eth0',
          '--state-dir',
          lb.stateDir,
          '--socket',
          lb.socket,
          '--kill-switch-timeout',
          '2s',
        ],
        { stdio: ['ignore', logFile, logFile] },
      );
      closeSync(logFile);
      const exited = new Promise<number | null>((resolve) => daemon.once('exit', (code) => resolve(code)));
      await waitFor('the daemon', () => call(lb.socket, 'status', {}).catch(() => undefined));
      await call(lb.socket, 'vip.add', { vip: VIP });
      await call(lb.socket, 'backend.add', { vip: VIP, address: '10.10.0.11' });
      // Fill the disk to the last byte.
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${join(disk, 'filler')}`, 'bs=4k'], { stdio: 'ignore' });
      } catch {
        // "No space left on device": the point
      }
      let lowest = Infinity;
      for (let i = 0; i < 300; i++) {
        await call(lb.socket, 'backend.weight', { vip: VIP, address: '10.10.0.11', weight: (i % 9) + 1 }); // one log line each
        if (i % 20 === 0) lowest = Math.min(lowest, (await call(lb.socket, 'killswitch.status', {})).secondsLeft);
      }
      const stats = await call(lb.socket, 'stats', {});
      t.diagnostic(`dropped ${stats.daemon.logLinesDropped} lines; kill-switch at least ${lowest.toFixed(2)} s from its deadline`);
      // The log file's last page may take a few more lines.
      assert.ok(stats.daemon.logLinesDropped >= 250, `lines dropped and counted (${stats.daemon.logLinesDropped})`);
      assert.ok(lowest > 0.5, `the 2 s kill-switch deadline kept being pushed forward (lowest ${lowest} s left)`);
      assert.deepEqual((await lb.httpFromClient(`http://${LAB.vips[0]}/`, 5)).failures, [], 'still balancing');
      // Room again: the log says what it missed.
      rmSync(join(disk, 'filler'));
      await waitFor(
        'the log.dropped line',
        () => (readFileSync(join(disk, 'lbctl.log'), 'utf8').includes('"event":"log.dropped"') ? true : undefined),
        15_000,
      );
      await lb.stop();
      assert.equal(await exited, 0);
    } finally {
      await lb.stop();
      try {
        execFileSync('umount', [disk]);
      } catch {
        execFileSync('umount', ['--lazy', disk]); // a daemon that hung still holds its log open
      }
    }
  });

  test('3: a config path that is a FIFO is refused at once; changes and health go on', async () => {
    const config = join(lab.runtimeDir, 'fifo.yaml');
    await writeFile(config, `interface: eth0\nvips:\n  - vip: ${VIP}\n    backends:\n      - address: 10.10.0.11\n`);
    await lb.ok(['start', '--config', config, '--state-dir', lb.stateDir]);
    try {
      rmSync(config);
      execFileSync('mkfifo', [config]);
      const reload = await lb.cli(['reload']);
      assert.equal(reload.code, 3, 'refused: invalid input');
      assert.equal(reload.stderr, `lbctl: cannot read config ${config}: it is a FIFO, not a regular file\n`);
      await lb.ok(['backend', 'add', VIP, '10.10.0.12']);
      assert.equal((await lb.json<BackendSummary[]>(['backend', 'list', VIP])).length, 2);
    } finally {
      await lb.stop();
      rmSync(config, { force: true });
    }
  });

  test('4: next hops that never answer hold nothing up; a backend is used once its next hop answers', async (t) => {
    await lb.start();
    try {
      const timeChanges = async () => {
        const started = Date.now();
        for (let i = 1; i <= 5; i++) await lb.ok(['backend', 'weight', OTHER_VIP, '10.10.0.12', String(i)]);
        return (Date.now() - started) / 5;
      };
      await lb.ok(['vip', 'add', OTHER_VIP]);
      await lb.ok(['backend', 'add', OTHER_VIP, '10.10.0.12']);
      const before = await timeChanges();
      await lb.ok(['vip', 'add', VIP]);
      for (let i = 0; i < 20; i++) {
        // On the balancer's segment, where nobody holds these addresses.
        const r = await lb.cli(['backend', 'add', VIP, `10.10.0.${200 + i}`]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, /not usable yet: next hop .* does not answer ARP/);
      }
      // Long enough for every one of them to have been given up on by the kernel and probed again.
      await sleep(4000);
      const during = await timeChanges();
      t.diagnostic(`a change took ${before.toFixed(0)} ms, and ${during.toFixed(0)} ms with 20 next hops that never answer`);
      const backends = await lb.json<BackendSummary[]>(['backend', 'list', OTHER_VIP]);
      assert.equal(backends[0]!.weight, 5, 'every change answered ok was made');

      // A backend whose address appears only after the kernel gave up on it.
      const late = '10.10.0.77';
      const added = await lb.cli(['backend', 'add', VIP, late]);
      assert.match(added.stderr, /backend 10\.10\.0\.77 is not usable yet/);
      await waitFor(
        'the kernel to give up on 10.10.0.77',
        async () => {
          const entry = JSON.parse((await lab.exec('lb', ['ip', '-j', 'neigh', 'show', 'to', late])).stdout)[0] as { state?: string[] };
          return entry?.state?.includes('FAILED') ? true : undefined;
        },
        30_000,
      );
      const since = Date.now();
      await lab.exec('be1', ['ip', 'addr', 'add', `${late}/${LAB.front.prefixLength}`, 'dev', 'eth0']);
      await waitFor(
        `${late} to become active by itself`,
        async () =>
          (await lb.json<BackendSummary[]>(['backend', 'list', VIP])).find((b) => b.address === late)?.state === 'active'
            ? true
            : undefined,
        20_000,
      );
      t.diagnostic(`${late} became active ${Date.now() - since} ms after its address appeared`);
    } finally {
      await lb.stop();
      await lab.exec('be1', ['ip', 'addr', 'del', `10.10.0.77/${LAB.front.prefixLength}`, 'dev', 'eth0']);
    }
  });

  test('5: idle API connections are capped; a daemon out of file descriptors marks no backend down', async (t) => {
    const config = join(lab.runtimeDir, 'checked.yaml');
    await writeFile(
      config,
      `interface: eth0\nvips:\n  - vip: ${VIP}\n    check_interval: 200ms\n    check_timeout: 100ms\n    fall: 1\n    backends:\n      - address: 10.10.0.11\n      - address: 10.10.0.12\n`,
    );
    await lb.ok(['start', '--config', config, '--state-dir', lb.stateDir]);
    const { pid } = await status();
    const held: Socket[] = [];
    try {
      await waitFor('backends up', async () =>
        (await lb.json<BackendSummary[]>(['backend', 'list', VIP])).every((b) => b.health?.state === 'up') ? true : undefined,
      );
      const base = openFds(pid);
      held.push(...(await idleConnections(lb.socket, 500)));
      await sleep(500);
      const withIdle = openFds(pid);
      t.diagnostic(`daemon fds: ${base} before, ${withIdle} with 500 idle connections`);
      assert.ok(withIdle <= base + 64 + 4, `at most 64 connections held (${withIdle - base} more fds)`);
      for (const socket of held.splice(0)) socket.destroy();
      // The limit below is set from the daemon's descriptors now: wait until it has closed the idle connections' (probes come and go).
      await waitFor('the daemon to close the idle connections', () => (openFds(pid) <= base + 4 ? true : undefined));

      // Now a daemon with no descriptor left: its health probes cannot run.
      const [soft, hard] = execFileSync('prlimit', ['--pid', String(pid), '--nofile', '-o', 'SOFT,HARD', '--raw', '--noheadings'], {
        encoding: 'utf8',
      })
        .trim()
        .split(/\s+/);
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${openFds(pid) + 10}:${hard}`]);
      try {
        held.push(...(await idleConnections(lb.socket, 60)));
        await sleep(2000);
      } finally {
        for (const socket of held.splice(0)) socket.destroy();
        execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:${hard}`]);
      }
      await sleep(500);
      const stats = await lb.json<StatsResult>(['stats']);
      t.diagnostic(
        `probes without verdict: ${stats.daemon.healthProbesWithoutVerdict}; connections refused: ${stats.daemon.apiConnectionsRefused}`,
      );
      assert.ok(stats.daemon.healthProbesWithoutVerdict > 0, 'probes ran into EMFILE');
      assert.equal(stats.daemon.healthTransitions.down, 0, 'and no backend was marked down for it');
      assert.ok(stats.daemon.apiConnectionsRefused > 0);
      assert.deepEqual((await lb.httpFromClient(`http://${LAB.vips[0]}/`, 10)).failures, []);
    } finally {
      for (const socket of held) socket.destroy();
      await lb.stop();
    }
  });

  test('6: one daemon per interface and per pin directory; a detached or replaced program is reported', async () => {
    await lb.start(['--metrics-address', '127.0.0.1:9640']);
    const first = await status();
    pinDirs.add(first.pinDir);
    try {
      const other = second('second');
      const refused = await other.cli(['start', '--interface', 'eth0', '--state-dir', other.stateDir]);
      assert.equal(refused.code, 3, 'refused');
      assert.match(
        refused.stderr,
        new RegExp(
          `^lbctl: interface eth0 \\(network namespace ${first.netns.inode}\\) is in use by the lbctl daemon with pid ${first.pid} \\(lock /run/lock/lbctl/interface-.*\\.lock\\); stop it first\\n$`,
        ),
      );
      await veth('trs6');
      const sharedPins = await other.cli(['start', '--interface', 'trs6', '--state-dir', other.stateDir, '--pin-dir', first.pinDir]);
      assert.equal(sharedPins.code, 3, 'refused');
      assert.match(
        sharedPins.stderr,
        new RegExp(`^lbctl: pin directory ${first.pinDir} is in use by the lbctl daemon with pid ${first.pid}`),
      );
      assert.equal(await attachedId(lab, 'eth0'), first.programId, 'the first daemon keeps its interface');
      assert.ok(existsSync(join(first.pinDir, 'flows_v4')), 'and its pins');

      // Someone detaches the program: the daemon says so (status, metric, log), and restart attaches it again.
      await lab.exec('lb', ['ip', 'link', 'set', 'dev', 'eth0', 'xdp', 'off']);
      const detached = await waitFor('the daemon to notice', async () => {
        const s = await status();
        return s.dataplane.state === 'detached' ? s : undefined;
      });
      assert.match(detached.dataplane.detail, /^the program was detached from eth0: nothing is balanced/);
      const metrics = await lab.exec('lb', ['curl', '-sS', 'http://127.0.0.1:9640/metrics']);
      assert.match(metrics.stdout, /^lbctl_dataplane_attached 0$/m);
      const added = await lb.cli(['vip', 'add', OTHER_VIP]);
      assert.match(added.stderr, /warning: the program was detached from eth0/, 'a change says it reaches no packet');
      await lab.exec('lb', [LBCTL, 'decap', 'attach', '--interface', 'eth0']);
      const replaced = await waitFor('the daemon to see the other program', async () => {
        const s = await status();
        return s.dataplane.state === 'replaced' ? s : undefined;
      });
      assert.match(replaced.dataplane.detail, /^eth0 runs another XDP program \(xdp_decap, id \d+\)/);
      await lab.exec('lb', [LBCTL, 'decap', 'detach', '--interface', 'eth0']);
      const log = readFileSync(join(lb.stateDir, 'lbctl.log'), 'utf8');
      assert.match(log, /"event":"dataplane.detached".*"state":"detached"/);
      assert.match(log, /"event":"dataplane.detached".*"state":"replaced"/);
      await lb.ok(['restart']);
      const restarted = await status();
      assert.equal(restarted.dataplane.state, 'attached');
      assert.equal(await attachedId(lab, 'eth0'), restarted.programId);
      await lb.stop();

      // Two starts at the same moment: one wins, the other changes nothing of the winner's.
      const racers = [second('race1'), second('race2')];
      const results = await Promise.all(racers.map((d) => d.cli(['start', '--interface', 'eth0', '--state-dir', d.stateDir])));
      assert.deepEqual(results.map((r) => r.code).sort(), [0, 3], results.map((r) => r.stderr).join(''));
      const winner = racers[results.findIndex((r) => r.code === 0)]!;
      const won = await status(winner);
      assert.equal(await attachedId(lab, 'eth0'), won.programId);
      assert.ok(existsSync(join(won.pinDir, 'flows_v4')), "the winner's pins are there");
      await winner.stop();
    } finally {
      await lb.stop();
      await lab.exec('lb', ['ip', 'link', 'del', 'trs6']);
    }
  });

  test('7: an interface deleted and created again gets the program back', () =>
    onOwnInterface('trs7', async (daemon, before) => {
      await lab.exec('lb', ['ip', 'link', 'del', 'trs7']);
      await waitFor('the daemon to notice', async () =>
        (await status(daemon)).dataplane.state === 'interface_missing' ? true : undefined,
      );
      await veth('trs7');
      const after = await waitFor('the program on the new interface', async () => {
        const s = await status(daemon);
        return s.dataplane.state === 'attached' && s.ifindex !== before.ifindex ? s : undefined;
      });
      assert.equal(await attachedId(lab, 'trs7'), after.programId);
      assert.match(readFileSync(join(daemon.stateDir, 'lbctl.log'), 'utf8'), /"event":"dataplane.reattached"/);
      await daemon.ok(['vip', 'add', VIP]);
    }));

  test('9: lbctl restart run from another network namespace starts the daemon where it ran', () =>
    onOwnInterface('trs9', async (daemon, before) => {
      // From this process's namespace, not the balancer's.
      const restarted = spawnSync(LBCTL, ['restart', '--socket', daemon.socket], { encoding: 'utf8' });
      assert.equal(restarted.status, 0, restarted.stderr);
      assert.match(restarted.stdout, /^lbctl: started \(pid \d+\)/);
      assert.equal(before.netns.inode, statSync(`/run/netns/${lab.ns('lb')}`).ino);
      assert.equal(before.netns.name, lab.ns('lb'));
      const after = await status(daemon);
      assert.notEqual(after.pid, before.pid);
      assert.equal(after.netns.inode, before.netns.inode, 'in the namespace it ran in');
      assert.equal(after.pinDir, before.pinDir);
      assert.equal(await attachedId(lab, 'trs9'), after.programId);
      assert.ok(existsSync(join(after.pinDir, 'flows_v4')));
    }));
});
