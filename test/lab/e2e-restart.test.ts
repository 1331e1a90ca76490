/**
 * A restart that drops nothing, and a data plane that fails open when its
 * control plane is gone: long-lived connections and a request loop run
 * through the VIP while the daemon is stopped with SIGTERM, killed with
 * SIGKILL and restarted, and must see no failure and no reset.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LAB, Lab, ROOT, pidAlive } from './lab.js';
import type { BackendSummary, KillSwitchStatus, StatusResult } from '../../src/api/protocol.js';
import { LabBalancer } from '../support/balancer.js';
import type { ConnectionReport } from '../support/long-lived.js';

const VIP = `${LAB.vips[0]}:80/tcp`;
const URL = `http://${LAB.vips[0]}/`;
const LONG_LIVED = join(ROOT, 'dist', 'test', 'support', 'long-lived.js');
const REQUEST_LOOP = join(ROOT, 'dist', 'test', 'support', 'request-loop.js');

async function waitGone(pid: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(!pidAlive(pid), `pid ${pid} exited`);
}

describe('restarts and the kill-switch', () => {
  let lab: Lab;
  let lb: LabBalancer;
  let config: string;
  const start = (extra: string[] = []) =>
    lb.ok(['start', '--config', config, '--state-dir', lb.stateDir, '--kill-switch-timeout', '10s', ...extra]);

  before(async () => {
    lab = await Lab.up();
    lb = new LabBalancer(lab);
    config = join(lab.runtimeDir, 'lbctl.yaml');
    await writeFile(
      config,
      `interface: eth0\nvips:\n  - vip: ${VIP}\n    backends:\n      - address: 10.10.0.11\n      - address: 10.10.0.12\n      - address: 10.10.0.13\n`,
    );
    await start();
    await lb.ok(['backend', 'add', VIP, '10.20.0.14', '--forward', 'ipip']);
  });

  after(async () => {
    await lb?.stop();
    await lab?.down();
  });

  test('SIGTERM, SIGKILL and lbctl restart under traffic: no failed request, no reset connection', async (t) => {
    const longLived = lab.spawn('client', [process.execPath, LONG_LIVED, LAB.vips[0], '80', '30', '14000', '100'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const loop = lab.spawn('client', [process.execPath, REQUEST_LOOP, URL, '14000', '20'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let longOut = '';
    let loopOut = '';
    let progress = '';
    longLived.stdout!.on('data', (c: Buffer) => {
      longOut += c.toString();
    });
    longLived.stderr!.on('data', (c: Buffer) => {
      progress += c.toString();
    });
    loop.stdout!.on('data', (c: Buffer) => {
      loopOut += c.toString();
    });
    const done = Promise.all([longLived, loop].map((child) => new Promise((resolve) => child.once('exit', resolve))));
    while (!progress.includes('open')) await new Promise((r) => setTimeout(r, 50));

    const status = () => lb.json<StatusResult>(['status']);
    const first = await status();

    process.kill(first.pid, 'SIGTERM');
    await waitGone(first.pid);
    const link = JSON.parse((await lab.exec('lb', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0];
    assert.equal(link.xdp?.prog?.id, first.programId, 'after SIGTERM the program is still attached');
    await new Promise((r) => setTimeout(r, 1000));
    await start();
    const second = await status();
    assert.notEqual(second.programId, first.programId, 'the new daemon loaded its own program');

    await new Promise((r) => setTimeout(r, 1000));
    process.kill(second.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 1500));
    await start();

    await new Promise((r) => setTimeout(r, 1000));
    const restarted = await lb.ok(['restart']);
    assert.match(restarted, /^lbctl: started \(pid \d+\)/);
    const third = await status();
    assert.equal(third.killSwitch.timeoutMs, 10_000, 'restart kept the start options');
    assert.equal(third.configPath, config);

    await done;
    const reports = JSON.parse(longOut) as ConnectionReport[];
    const { answered, failures } = JSON.parse(loopOut) as { answered: number; failures: string[] };
    t.diagnostic(
      `request loop: ${answered} answered, ${failures.length} failed; long-lived: ${reports.map((r) => r.sent).reduce((a, b) => a + b, 0)} messages`,
    );
    assert.deepEqual(failures, [], 'no request failed');
    assert.ok(answered > 100, `the loop kept going (${answered})`);
    for (const r of reports) {
      assert.equal(r.failure, null, `connection from port ${r.port} on ${r.backend}: ${r.failure}`);
      assert.equal(r.answered, r.sent);
    }
    const backends = await lb.json<BackendSummary[]>(['backend', 'list', VIP]);
    assert.deepEqual(
      backends.map((b) => b.address),
      ['10.10.0.11', '10.10.0.12', '10.10.0.13', '10.20.0.14'],
      'runtime changes survived',
    );

    // The log tells a routine handover from a crash's aftermath, and a routine restart warns about nothing.
    const log = (await readFile(join(lb.stateDir, 'lbctl.log'), 'utf8'))
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { pid: number; level: number; event?: string; previousPid?: number; msg: string });
    const of = (pid: number) => log.filter((l) => l.pid === pid);
    assert.ok(of(second.pid).some((l) => l.event === 'dataplane.handed_over' && l.previousPid === first.pid && l.level === 30));
    const afterCrash = log.find((l) => l.event === 'dataplane.replaced');
    assert.equal(afterCrash?.level, 40, 'the takeover after SIGKILL is a warning');
    assert.ok(of(third.pid).some((l) => l.event === 'dataplane.handed_over'));
    assert.deepEqual(
      of(third.pid)
        .filter((l) => l.level >= 40)
        .map((l) => `${l.event}: ${l.msg}`),
      [],
      'a routine lbctl restart logs no warning',
    );
  });

  test('killed for good, the data plane fails open at the deadline; a new daemon resumes', async () => {
    await lb.stop();
    // The daemon refreshes the deadline every quarter of the timeout: at
    // the kill it is at least three quarters of it away.
    const timeoutMs = 4000;
    await start(['--kill-switch-timeout', `${timeoutMs / 1000}s`]);
    const { pid } = await lb.json<StatusResult>(['status']);
    process.kill(pid, 'SIGKILL');
    const killedAt = Date.now();
    await waitGone(pid);
    const before = await lb.httpFromClient(URL, 5, 1);
    assert.ok(
      Date.now() - killedAt < timeoutMs * 0.75,
      `the requests ran before the deadline (${Date.now() - killedAt} ms after the kill)`,
    );
    assert.deepEqual(before.failures, [], 'forwarding goes on until the deadline');
    await new Promise((r) => setTimeout(r, killedAt + timeoutMs + 500 - Date.now()));
    const afterDeadline = await lb.httpFromClient(URL, 3, 3);
    assert.equal(afterDeadline.answers.length, 0, 'after the deadline the balancer passes VIP packets to its own kernel, which has no VIP');
    await start();
    const resumed = await lb.httpFromClient(URL, 10, 2);
    assert.deepEqual(resumed.failures, []);
    const killSwitch = await lb.json<KillSwitchStatus>(['kill-switch', 'status']);
    assert.ok(killSwitch.passedPackets > 0, 'the packets passed while tripped were counted');
  });

  test('kill-switch engage and release, and engaged survives a restart', async () => {
    const engaged = await lb.json<KillSwitchStatus>(['kill-switch', 'engage']);
    assert.equal(engaged.engaged, true);
    assert.ok(engaged.secondsLeft <= 0);
    assert.equal((await lb.httpFromClient(URL, 2, 2)).answers.length, 0, 'nothing balanced while engaged');
    await lb.ok(['restart']);
    assert.equal((await lb.json<KillSwitchStatus>(['kill-switch', 'status'])).engaged, true, 'still engaged after a restart');
    const released = await lb.json<KillSwitchStatus>(['kill-switch', 'release']);
    assert.equal(released.engaged, false);
    assert.ok(released.secondsLeft > 5);
    assert.deepEqual((await lb.httpFromClient(URL, 5, 1)).failures, []);
  });

  test('reload applies a changed config; a config that does not validate changes nothing', async () => {
    await writeFile(config, `interface: eth0\nvips:\n  - vip: ${VIP}\n    backends:\n      - address: 10.10.0.11\n        weight: 65536\n`);
    const bad = await lb.cli(['reload']);
    assert.equal(bad.code, 3, 'invalid input');
    assert.equal(
      bad.stderr,
      `lbctl: ${config}:6:17: vips[0].backends[0].weight: invalid weight "65536": must be an integer from 0 to 65535\n`,
    );
    assert.equal((await lb.json<BackendSummary[]>(['backend', 'list', VIP])).length, 4, 'unchanged');

    await writeFile(
      config,
      `interface: eth0\nvips:\n  - vip: ${VIP}\n    backends:\n      - address: 10.10.0.11\n        weight: 3\n      - address: 10.10.0.12\n`,
    );
    const good = await lb.ok(['reload']);
    assert.equal(
      good.replace(/reloaded \S+:/, 'reloaded FILE:'),
      'lbctl: reloaded FILE: 1 VIPs; 1 runtime changes override it\n' +
        'runtime changes kept over the file (lbctl reload --discard-runtime-changes forgets them; lbctl config export writes them out):\n' +
        `  + backend ${VIP} 10.20.0.14: weight 1, forward ipip\n`,
      'the reload says which runtime change still overrides the file',
    );
    const backends = await lb.json<BackendSummary[]>(['backend', 'list', VIP]);
    assert.deepEqual(
      backends.map((b) => `${b.address} ${b.weight}`),
      ['10.10.0.11 3', '10.10.0.12 1', '10.20.0.14 1'],
      'the config, with the runtime-added backend on top',
    );
  });

  test('stop --keep-dataplane leaves program and pins; stop removes both', async () => {
    const { pinDir, programId } = await lb.json<StatusResult>(['status']);
    await lb.ok(['stop', '--keep-dataplane']);
    assert.ok(existsSync(join(pinDir, 'flows_v4')));
    assert.equal(JSON.parse((await lab.exec('lb', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0].xdp?.prog?.id, programId);
    await start();
    await lb.ok(['stop']);
    assert.equal(existsSync(pinDir), false);
    assert.equal(JSON.parse((await lab.exec('lb', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0].xdp, undefined);
  });
});
