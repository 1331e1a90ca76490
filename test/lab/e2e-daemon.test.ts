/**
 * The daemon's life and the CLI's contract, in the lab: start and its
 * refusals, invalid input that changes nothing, state that survives stop,
 * restart and a crash, `ip netns exec`, and a clean stop.
 */
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LAB, Lab } from './lab.js';
import type { BackendSummary, ConfigDiff, StatusResult, VipSummary } from '../../src/api/protocol.js';
import { LBCTL, LabBalancer } from '../support/balancer.js';

const VIP = `${LAB.vips[0]}:80/tcp`;
const OTHER_VIP = `${LAB.vips[1]}:80/tcp`;

async function snapshot(lb: LabBalancer): Promise<string> {
  const vips = await lb.json<VipSummary[]>(['vip', 'list']);
  const backends = await Promise.all(vips.map((v) => lb.json<BackendSummary[]>(['backend', 'list', v.vip])));
  const runtime = existsSync(join(lb.stateDir, 'runtime.json')) ? await readFile(join(lb.stateDir, 'runtime.json'), 'utf8') : '';
  const strip = (b: BackendSummary) => ({
    ...b,
    packets: undefined,
    bytes: undefined,
    health: b.health ? { state: b.health.state, since: b.health.since } : undefined,
  });
  return JSON.stringify({
    vips: vips.map((v) => ({ ...v, packets: undefined, bytes: undefined })),
    backends: backends.map((list) => list.map(strip)),
    runtime,
  });
}

function definitions(vips: VipSummary[], backends: BackendSummary[][]) {
  return vips.map((v, i) => ({
    vip: v.vip,
    forward: v.forward,
    backends: backends[i]!.map((b) => `${b.address} w${b.weight} ${b.forward}`),
  }));
}

async function definitionsOf(lb: LabBalancer) {
  const vips = await lb.json<VipSummary[]>(['vip', 'list']);
  return definitions(vips, await Promise.all(vips.map((v) => lb.json<BackendSummary[]>(['backend', 'list', v.vip]))));
}

describe('the daemon and the CLI', () => {
  let lab: Lab;
  let lb: LabBalancer;

  before(async () => {
    lab = await Lab.up();
    lb = new LabBalancer(lab);
  });

  after(async () => {
    await lb?.stop();
    await lab?.down();
  });

  test('start refuses with one clear line: not root, no interface, bad config', async () => {
    const notRoot = await lab.exec('lb', [
      'setpriv',
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      LBCTL,
      'start',
      '--interface',
      'eth0',
      '--socket',
      lb.socket,
    ]);
    assert.equal(notRoot.code, 3);
    assert.equal(notRoot.stderr, 'lbctl: lbctl start must run as root\n');

    const noInterface = await lb.cli(['start', '--interface', 'nope0', '--state-dir', lb.stateDir]);
    assert.equal(noInterface.code, 3);
    assert.equal(noInterface.stderr, 'lbctl: no such interface: nope0\n');

    const config = join(lab.runtimeDir, 'bad.yaml');
    await writeFile(config, 'vips:\n  - vip: 10.100.0.100:80/tcp\n    backends:\n      - address: 10.10.0.11\n        weight: 65536\n');
    const badConfig = await lb.cli(['start', '--interface', 'eth0', '--state-dir', lb.stateDir, '--config', config]);
    assert.equal(badConfig.code, 3);
    assert.equal(
      badConfig.stderr,
      `lbctl: ${config}:5:17: vips[0].backends[0].weight: invalid weight "65536": must be an integer from 0 to 65535\n`,
    );

    const status = await lb.cli(['status']);
    assert.equal(status.code, 4, 'no daemon answers');
    assert.match(status.stderr, /^lbctl: no lbctl daemon is listening on .*\n$/);
    const xdp = JSON.parse((await lab.exec('lb', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0];
    assert.equal(xdp.xdp, undefined, 'nothing attached after failed starts');
  });

  test('start answers only once attached; a second start on the same socket is refused', async () => {
    await lb.start();
    const status = await lb.json<StatusResult>(['status']);
    assert.equal(status.interface, 'eth0');
    assert.equal(status.xdpMode, 'native');
    const link = JSON.parse((await lab.exec('lb', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0];
    assert.equal(link.xdp?.prog?.id, status.programId, 'xdp_balancer is attached in native mode');
    assert.equal((await stat(lb.socket)).mode & 0o777, 0o600, 'socket is mode 0600');
    assert.ok(existsSync(join(status.pinDir, 'vips_v4')), 'maps are pinned');

    const again = await lb.cli(['start', '--interface', 'eth0', '--state-dir', lb.stateDir]);
    assert.equal(again.code, 3);
    assert.match(again.stderr, new RegExp(`^lbctl: an lbctl daemon \\(pid ${status.pid}, interface eth0\\) already listens on .*\\n$`));
  });

  test('invalid input exits non-zero with one line and changes nothing', async () => {
    await lb.ok(['vip', 'add', VIP]);
    await lb.ok(['backend', 'add', VIP, '10.10.0.11', '--weight', '3']);
    const before = await snapshot(lb);
    // Exit code 3 (refused, nothing changed) unless given: 2 is a command-line (usage) error.
    const cases: Array<[string[], RegExp, number?]> = [
      [['vip', 'add', '10.100.0.300:80/tcp'], /invalid VIP "10.100.0.300:80\/tcp"/],
      [['vip', 'add', '10.100.0.100:99999/tcp'], /port must be from 1 to 65535/],
      [['vip', 'add', '10.100.0.100:80/sctp'], /protocol must be tcp or udp/],
      [['vip', 'add', VIP], /VIP 10.100.0.100:80\/tcp already exists/],
      [['vip', 'add', '10.10.0.2:22/tcp'], /10\.10\.0\.2 is an address of this host \(on eth0\); only the backends hold a VIP/],
      [['vip', 'add', '127.0.0.1:80/tcp'], /127\.0\.0\.1 is a loopback address/],
      [['vip', 'add', '[fe80::1%eth0]:80/tcp'], /zone IDs \(%INTERFACE\) are not accepted/],
      [['vip', 'add', '10.100.0.105:80/tcp', '--forward', 'gre'], /argument 'gre' is invalid/, 2],
      [['vip', 'add', '10.100.0.105:80/tcp', '--table-size', '65536'], /invalid Maglev table size 65536/],
      [['vip', 'remove', OTHER_VIP], /unknown VIP 10.100.0.101:80\/tcp/],
      [['backend', 'add', OTHER_VIP, '10.10.0.12'], /unknown VIP 10.100.0.101:80\/tcp/],
      [['backend', 'add', VIP, '10.10.0'], /invalid backend address "10.10.0"/],
      [['backend', 'add', VIP, '10.10.0.12', '--weight', '70000'], /invalid weight "70000"/],
      [['backend', 'add', VIP, '10.10.0.12', '--weight', 'six'], /invalid weight "six"/],
      [['backend', 'add', VIP, '10.10.0.11'], /backend 10.10.0.11 already exists in VIP 10.100.0.100:80\/tcp/],
      [
        ['backend', 'add', VIP, '10.20.0.14'],
        /10.20.0.14 is behind router 10.10.0.1: l2dsr needs the backend on the balancer's own segment/,
      ],
      [['backend', 'add', VIP, '10.10.0.2'], /10.10.0.2 is an address of this host/],
      [['backend', 'remove', VIP, '10.10.0.13'], /VIP 10.100.0.100:80\/tcp has no backend 10.10.0.13/],
      [['backend', 'list', OTHER_VIP], /unknown VIP/],
    ];
    for (const [args, reason, code = 3] of cases) {
      const r = await lb.cli(args);
      assert.equal(r.code, code, `lbctl ${args.join(' ')} exits ${code}`);
      assert.equal(r.stdout, '', `lbctl ${args.join(' ')} prints nothing on stdout`);
      assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
      assert.match(r.stderr, /^lbctl: /);
      assert.match(r.stderr, reason);
    }
    const asJson = await lb.cli(['vip', 'remove', OTHER_VIP, '--json']);
    assert.equal(asJson.code, 3);
    assert.equal(asJson.stderr, '', 'with --json the error is on stdout only');
    assert.deepEqual(JSON.parse(asJson.stdout), { error: { kind: 'input', message: `unknown VIP ${OTHER_VIP}`, exitCode: 3 } });
    assert.equal(await snapshot(lb), before, 'VIPs, backends and saved state are unchanged');
  });

  test('runtime changes survive stop and start, on top of the config file', async () => {
    const config = join(lab.runtimeDir, 'lbctl.yaml');
    await writeFile(
      config,
      `interface: eth0\nvips:\n  - vip: ${OTHER_VIP}\n    forward: ipip\n    backends:\n      - address: 10.20.0.14\n      - address: 10.20.0.15\n        weight: 2\n`,
    );
    await lb.stop();
    await lb.ok(['start', '--config', config, '--state-dir', lb.stateDir]);
    await lb.ok(['backend', 'remove', OTHER_VIP, '10.20.0.14']);
    await lb.ok(['backend', 'add', OTHER_VIP, '10.10.0.12', '--weight', '5', '--forward', 'l2dsr']);
    const expected = await definitionsOf(lb);
    assert.deepEqual(expected, [
      { vip: OTHER_VIP, forward: 'ipip', backends: ['10.20.0.15 w2 ipip', '10.10.0.12 w5 l2dsr'] },
      { vip: VIP, forward: 'l2dsr', backends: ['10.10.0.11 w3 l2dsr'] },
    ]);

    await lb.stop();
    await lb.ok(['start', '--config', config, '--state-dir', lb.stateDir]);
    assert.deepEqual(await definitionsOf(lb), expected);
    const answers = await lb.httpFromClient(`http://${LAB.vips[1]}/`, 50);
    assert.deepEqual(answers.failures, []);
    assert.deepEqual([...new Set(answers.answers.map((a) => a.backend))].sort(), ['be2', 'be5']);
  });

  test('after a crash (SIGKILL) start takes the interface back and restores the state', async () => {
    const expected = await definitionsOf(lb);
    const { pid } = await lb.json<StatusResult>(['status']);
    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    const leftover = JSON.parse((await lab.exec('lb', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0];
    assert.ok(leftover.xdp, 'the data plane outlives the daemon');
    await lb.ok(['start', '--config', join(lab.runtimeDir, 'lbctl.yaml'), '--state-dir', lb.stateDir]);
    assert.deepEqual(await definitionsOf(lb), expected);
    const answers = await lb.httpFromClient(`http://${LAB.vips[0]}/`, 20);
    assert.deepEqual(answers.failures, []);
  });

  test('the file and the runtime changes: reload lists what overrides the file, config diff and export show it, --discard-runtime-changes drops it', async () => {
    const config = join(lab.runtimeDir, 'lbctl.yaml');
    const reload = await lb.ok(['reload']);
    assert.match(reload, /^lbctl: reloaded .*lbctl\.yaml: 2 VIPs; 4 runtime changes override it\n/);
    for (const line of [
      `  + vip ${VIP}: `,
      `  + backend ${VIP} 10.10.0.11: weight 3, forward l2dsr`,
      `  + backend ${OTHER_VIP} 10.10.0.12: weight 5, forward l2dsr`,
      `  - backend ${OTHER_VIP} 10.20.0.14: weight 1, forward ipip`,
    ]) {
      assert.ok(reload.includes(line), `reload lists ${line.trim()}:\n${reload}`);
    }

    const exported = join(lab.runtimeDir, 'exported.yaml');
    await writeFile(exported, await lb.ok(['config', 'export']));
    const check = await lb.cli(['config', 'check', exported], { socket: false });
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /: valid, 2 VIPs with 3 backends\n$/);

    // An edit not reloaded yet shows too, from the file's side.
    await writeFile(config, (await readFile(config, 'utf8')).replace('weight: 2', 'weight: 4'));
    const diff = await lb.json<ConfigDiff>(['config', 'diff']);
    assert.deepEqual(
      diff.differences.filter((d) => d.backend === '10.20.0.15'),
      [{ vip: OTHER_VIP, backend: '10.20.0.15', change: 'changed', detail: 'weight 4 -> 2' }],
    );
    assert.equal(diff.differences.length, 5);

    assert.match(await lb.ok(['reload', '--discard-runtime-changes']), /: 1 VIPs; runtime changes discarded\n$/);
    const fileAlone = [{ vip: OTHER_VIP, forward: 'ipip', backends: ['10.20.0.14 w1 ipip', '10.20.0.15 w4 ipip'] }];
    assert.deepEqual(await definitionsOf(lb), fileAlone);
    assert.deepEqual((await lb.json<ConfigDiff>(['config', 'diff'])).differences, []);
    await lb.stop();
    await lb.ok(['start', '--config', config, '--state-dir', lb.stateDir]);
    assert.deepEqual(await definitionsOf(lb), fileAlone, 'forgotten on disk too');

    // Back to the runtime changes the later tests start from.
    await lb.ok(['vip', 'add', VIP]);
    await lb.ok(['backend', 'add', VIP, '10.10.0.11', '--weight', '3']);
    await lb.ok(['backend', 'remove', OTHER_VIP, '10.20.0.14']);
    await lb.ok(['backend', 'add', OTHER_VIP, '10.10.0.12', '--weight', '5', '--forward', 'l2dsr']);
  });

  test('stop detaches the program and removes its pins', async () => {
    const status = await lb.json<StatusResult>(['status']);
    const r = await lb.cli(['stop']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `lbctl: stopped (was pid ${status.pid} on eth0)\n`);
    const link = JSON.parse((await lab.exec('lb', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0];
    assert.equal(link.xdp, undefined);
    assert.equal(existsSync(status.pinDir), false);
    assert.equal(existsSync(lb.socket), false);
  });

  test('works when started through `ip netns exec` (which hides /sys/fs/bpf)', async () => {
    const r = await lab.exec('client', ['true']); // the lab is up
    assert.equal(r.code, 0);
    const netnsExec = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        import('node:child_process').then(({ execFile }) => {
          execFile(
            'ip',
            ['netns', 'exec', lab.ns('lb'), LBCTL, ...args, '--socket', lb.socket],
            { timeout: 30_000 },
            (error, stdout, stderr) => {
              resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
            },
          );
        });
      });
    const started = await netnsExec(['start', '--interface', 'eth0', '--state-dir', lb.stateDir]);
    assert.equal(started.code, 0, started.stderr);
    const status = await netnsExec(['status', '--json']);
    assert.equal(JSON.parse(status.stdout).interface, 'eth0');
    const answers = await lb.httpFromClient(`http://${LAB.vips[0]}/`, 20);
    assert.deepEqual(answers.failures, []);
    const stopped = await netnsExec(['stop']);
    assert.equal(stopped.code, 0, stopped.stderr);
  });

  test('--foreground: SIGINT stops everything, SIGTERM keeps the data plane; LBCTL_SOCKET selects the daemon', async () => {
    const runForeground = async (signal: 'SIGINT' | 'SIGTERM') => {
      const daemon = lab.spawn('lb', [LBCTL, 'start', '--foreground', '--interface', 'eth0', '--state-dir', lb.stateDir], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, LBCTL_SOCKET: lb.socket },
      });
      let output = '';
      daemon.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      const deadline = Date.now() + 10_000;
      while (!output.includes('lbctl daemon started') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const status = await lab.exec('lb', ['env', `LBCTL_SOCKET=${lb.socket}`, LBCTL, 'status', '--json']);
      assert.equal(status.code, 0, status.stderr);
      assert.equal(JSON.parse(status.stdout).pid, daemon.pid, 'the daemon is this process (nsenter execs it)');
      const exited = new Promise<number | null>((resolve) => daemon.once('exit', (code) => resolve(code)));
      daemon.kill(signal);
      assert.equal(await exited, 0);
      const messages = output
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => (JSON.parse(l) as { msg: string }).msg);
      assert.equal(messages.filter((m) => /^lbctl daemon st/.test(m)).length, 2, 'started and stopped, as JSON lines');
      return JSON.parse((await lab.exec('lb', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0] as { xdp?: { prog?: { id: number } } };
    };
    assert.equal((await runForeground('SIGINT')).xdp, undefined, 'detached on SIGINT');
    assert.ok((await runForeground('SIGTERM')).xdp?.prog, 'still balancing after SIGTERM, for the next daemon to take over');
    await lb.start();
    await lb.stop();
  });
});
