/**
 * The daemon follows the network: next-hop MACs come from the kernel and
 * are rewritten when they change; generic XDP and a chosen pin directory.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { LAB, Lab } from './lab.js';
import type { BackendSummary, StatusResult } from '../../src/api/protocol.js';
import { LBCTL, LabBalancer } from '../support/balancer.js';

const VIP = `${LAB.vips[0]}:80/tcp`;

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('following the network', () => {
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

  test('generic XDP mode and an explicit pin directory', async () => {
    const pinDir = `/sys/fs/bpf/lbctl-test-${lab.prefix}`;
    try {
      await lb.start(['--xdp-mode', 'generic', '--pin-dir', pinDir]);
      const status = await lb.json<StatusResult>(['status']);
      assert.equal(status.xdpMode, 'generic');
      assert.equal(status.pinDir, pinDir);
      assert.ok(existsSync(`${pinDir}/flows_v4`));
      const link = JSON.parse((await lab.exec('lb', ['ip', '-j', '-d', 'link', 'show', 'eth0'])).stdout)[0];
      assert.equal(link.xdp?.mode, 2, 'attached in generic (skb) mode');
      await lb.ok(['vip', 'add', VIP]);
      await lb.ok(['backend', 'add', VIP, '10.10.0.12']);
      const result = await lb.httpFromClient(`http://${LAB.vips[0]}/`, 30);
      assert.deepEqual(result.failures, []);
      assert.ok(result.answers.every((a) => a.backend === 'be2'));
      await lb.stop();
      assert.equal(existsSync(pinDir), false, 'pins removed on stop');
    } finally {
      await lb.stop();
    }
  });

  test('a backend that changes its MAC keeps getting traffic once the kernel learns the new one', async () => {
    await lb.start();
    const list = await lb.json<BackendSummary[]>(['backend', 'list', VIP]);
    const oldMac = list[0]!.nextHopMac!;
    assert.equal(oldMac, JSON.parse((await lab.exec('be2', ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0].address);

    const newMac = '02:42:be:02:00:02';
    await lab.exec('be2', ['ip', 'link', 'set', 'dev', 'eth0', 'address', newMac]);
    // A gratuitous announcement, as a host does when its NIC changes: the
    // balancer's kernel updates its neighbour entry, the daemon follows.
    await lab.exec('lb', ['ip', 'neigh', 'replace', '10.10.0.12', 'lladdr', newMac, 'dev', 'eth0', 'nud', 'reachable']);
    const learnt = await waitFor('the daemon to write the new MAC', async () => {
      const now = await lb.json<BackendSummary[]>(['backend', 'list', VIP]);
      return now[0]!.nextHopMac === newMac ? now[0] : undefined;
    });
    assert.equal(learnt.state, 'active');
    const result = await lb.httpFromClient(`http://${LAB.vips[0]}/`, 30);
    assert.deepEqual(result.failures, [], 'traffic reaches the backend at its new MAC');
  });

  test('ipip packets leave from --tunnel-source, and xdp_decap on the backend can be detached and attached', async () => {
    await lb.stop();
    await lab.exec('lb', ['ip', 'addr', 'add', '10.10.0.200/32', 'dev', 'lo']);
    await lb.start(['--tunnel-source', '10.10.0.200']);
    // One source per family: the IPv6 one stays the interface's (the lab is dual stack).
    assert.deepEqual((await lb.json<StatusResult>(['status'])).tunnelSources, ['10.10.0.200', LAB.balancer6]);
    const vip = `${LAB.vips[1]}:80/tcp`;
    await lb.ok(['vip', 'add', vip, '--forward', 'ipip']);
    await lb.ok(['backend', 'add', vip, '10.20.0.14']);

    // On the router: on be4 itself xdp_decap unwraps packets before any capture sees them.
    const capture = lab.spawn('router', ['tcpdump', '--immediate-mode', '-i', 'eth1', '-n', '-l', 'ip proto 4'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let seen = '';
    capture.stdout!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
    });
    capture.stderr!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
    });
    await new Promise((r) => setTimeout(r, 400));
    const result = await lb.httpFromClient(`http://${LAB.vips[1]}/`, 10, 2);
    const exited = new Promise((r) => capture.once('exit', r));
    capture.kill('SIGINT');
    await exited;
    assert.deepEqual(result.failures, []);
    assert.match(
      seen,
      /IP 10\.10\.0\.200 > 10\.20\.0\.14: IP 10\.10\.0\.10\.\d+ > 10\.100\.0\.101\.80/,
      'outer source is the tunnel source',
    );

    const lbctlOn = (role: string, args: string[]) => lab.exec(role, [LBCTL, ...args]);
    const detached = await lbctlOn('be4', ['decap', 'detach', '--interface', 'eth0']);
    assert.equal(detached.stdout, 'lbctl: xdp_decap detached from eth0\n');
    assert.equal((await lbctlOn('be4', ['decap', 'detach', '--interface', 'eth0'])).stdout, 'lbctl: no XDP program on eth0\n');
    const without = await lb.httpFromClient(`http://${LAB.vips[1]}/`, 3, 3);
    assert.equal(without.answers.length, 0, 'without decapsulation the backend cannot answer');
    // The lab is dual stack: be4's tunnel endpoints are both of its addresses.
    const be4 = lab.backend('be4');
    const attached = await lbctlOn('be4', ['decap', 'attach', '--interface', 'eth0']);
    assert.equal(attached.stdout, `lbctl: xdp_decap attached on eth0 for ${be4.address}, ${be4.address6}\n`);
    const refreshed = await lbctlOn('be4', ['decap', 'attach', '--interface', 'eth0']);
    assert.equal(refreshed.stdout, `lbctl: xdp_decap refreshed on eth0 for ${be4.address}, ${be4.address6}\n`);
    assert.deepEqual((await lb.httpFromClient(`http://${LAB.vips[1]}/`, 10, 2)).failures, []);

    const foreign = await lbctlOn('lb', ['decap', 'detach', '--interface', 'eth0']);
    assert.equal(foreign.code, 3, 'refused');
    assert.equal(foreign.stderr, 'lbctl: interface eth0 runs XDP program xdp_balancer, not xdp_decap: not detaching it\n');
    const busy = await lbctlOn('lb', ['decap', 'attach', '--interface', 'eth0']);
    assert.equal(busy.code, 3, 'refused');
    assert.match(busy.stderr, /^lbctl: interface eth0 already runs XDP program xdp_balancer \(id \d+\): detach it first\n$/);
  });
});
