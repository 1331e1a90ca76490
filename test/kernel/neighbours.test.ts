/**
 * Forwarding paths against the kernel's neighbour table, in a namespace of
 * their own (a veth pair whose far end, in a second namespace, answers ARP
 * for the addresses it holds): entries an operator made static are used
 * and never probed; a next hop the kernel does not know yet is probed and
 * resolved in the background, waited for only when asked. And the
 * tunnel sources and local addresses paths are given.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

const ns = `lbn${randomBytes(4).toString('hex')}`;
const peer = `${ns}p`;
const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });
const PERMANENT_MAC = '02:00:00:00:00:11';
const NOARP_MAC = '02:00:00:00:00:12';

before(() => {
  ip('netns', 'add', ns);
  ip('netns', 'add', peer);
  ip('-n', ns, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1', 'netns', peer);
  ip('-n', ns, 'addr', 'add', '10.99.0.1/24', 'dev', 'v0');
  ip('-n', peer, 'addr', 'add', '10.99.0.15/24', 'dev', 'v1');
  ip('-n', ns, 'link', 'set', 'v0', 'up');
  ip('-n', peer, 'link', 'set', 'v1', 'up');
  ip('-n', ns, 'neigh', 'replace', '10.99.0.11', 'lladdr', PERMANENT_MAC, 'dev', 'v0', 'nud', 'permanent');
  ip('-n', ns, 'neigh', 'replace', '10.99.0.12', 'lladdr', NOARP_MAC, 'dev', 'v0', 'nud', 'noarp');
});

after(() => {
  for (const name of [ns, peer]) {
    try {
      ip('netns', 'del', name);
    } catch {
      // not created
    }
  }
});

/** Runs `body` (module code using `paths`, a ForwardingPaths on v0 with these tunnel sources) in the namespace; returns what it prints as JSON. */
function inNamespace(body: string, tunnelSources: string[] = []): unknown {
  const module = JSON.stringify(new URL('../../src/net/forwarding-paths.js', import.meta.url).href);
  const script = `import { ForwardingPaths } from ${module};
    const paths = new ForwardingPaths('v0', ${JSON.stringify(tunnelSources)});
    const out = (value) => process.stdout.write(JSON.stringify(value));
    ${body}
    process.exit(0);`;
  return JSON.parse(execFileSync('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' }));
}

function neighbour(address: string): { lladdr?: string; state?: string[] } | undefined {
  const entries = JSON.parse(ip('-n', ns, '-j', 'neigh', 'show', 'nud', 'all')) as Array<{
    dst: string;
    lladdr?: string;
    state?: string[];
  }>;
  return entries.find((e) => e.dst === address);
}

test('static neighbours (PERMANENT, NOARP) are used as they are and survive the periodic probe', () => {
  const results = inNamespace(`
    const targets = [{ address: '10.99.0.11', forward: 'l2dsr' }, { address: '10.99.0.12', forward: 'l2dsr' }];
    await paths.refresh(targets);
    await paths.probeAll();
    await paths.probeAll();
    out(targets.map((t) => paths.get(t)));`) as Array<{ ok: boolean; path?: { dstMac: string } }>;
  assert.deepEqual(
    results.map((r) => r.path?.dstMac),
    [PERMANENT_MAC, NOARP_MAC],
  );
  assert.deepEqual(neighbour('10.99.0.11'), { dst: '10.99.0.11', dev: 'v0', lladdr: PERMANENT_MAC, state: ['PERMANENT'] });
  assert.deepEqual(neighbour('10.99.0.12'), { dst: '10.99.0.12', dev: 'v0', lladdr: NOARP_MAC, state: ['NOARP'] });
});

test('a next hop the kernel does not know is probed and left to resolve; waited for only when asked', () => {
  const [unknown, waited] = inNamespace(`
    const quiet = { address: '10.99.0.14', forward: 'l2dsr' };
    const answering = { address: '10.99.0.15', forward: 'l2dsr' };
    await paths.refresh([quiet]);
    const first = paths.get(quiet);
    await paths.refresh([answering], { waitMs: 3000 });
    out([first, paths.get(answering)]);`) as Array<{ ok: boolean; reason?: string; path?: { dstMac: string } }>;
  assert.equal(unknown!.ok, false);
  assert.equal(unknown!.reason, 'next hop 10.99.0.14 on v0 does not answer ARP');
  assert.ok(neighbour('10.99.0.14'), 'the kernel was asked to resolve it');
  const peerMac = (JSON.parse(ip('-n', peer, '-j', 'link', 'show', 'v1')) as Array<{ address: string }>)[0]!.address;
  assert.equal(waited!.path?.dstMac, peerMac);
});

test(
  'a next hop that did not answer is probed again soon, by itself (onRetryDue), and resolves once it answers',
  { timeout: 60_000 },
  () => {
    const result = inNamespace(`
    const { execFileSync } = await import('node:child_process');
    const target = { address: '10.99.0.16', forward: 'l2dsr' };
    const retried = () => new Promise((resolve) => (paths.onRetryDue = resolve));
    let retry = retried();
    await paths.refresh([target]);
    const before = paths.get(target).ok;
    // The kernel gives up on its own (FAILED) before the address appears: only a new probe finds it.
    const state = () => JSON.parse(execFileSync('ip', ['-j', 'neigh', 'show', 'nud', 'all', 'to', '10.99.0.16'], { encoding: 'utf8' }))[0]?.state ?? [];
    while (!state().includes('FAILED')) await new Promise((r) => setTimeout(r, 100));
    execFileSync('ip', ['-n', ${JSON.stringify(peer)}, 'addr', 'add', '10.99.0.16/24', 'dev', 'v1']);
    let rounds = 0;
    // As the daemon does: refresh when a retry is due (and when the kernel's neighbours change, here polled).
    while (!paths.get(target).ok && rounds++ < 25) {
      await Promise.race([retry, new Promise((r) => setTimeout(r, 200))]);
      retry = retried();
      await paths.refresh([target]);
    }
    out({ before, after: paths.get(target).ok, rounds });`) as { before: boolean; after: boolean };
    assert.deepEqual([result.before, result.after], [false, true]);
  },
);

test("an outer source range (not on the host) goes into ipip paths; the balancer's own address stays the interface's", () => {
  const body = `
    const target = { address: '10.99.0.11', forward: 'ipip' };
    await paths.refresh([target]);
    out({ path: paths.get(target).path, local: paths.localAddress(4) });`;
  const range = inNamespace(body, ['10.77.0.0/24']) as { path: { tunnelSrc: string; tunnelSourceBits?: number }; local: string };
  assert.deepEqual([range.path.tunnelSrc, range.path.tunnelSourceBits, range.local], ['10.77.0.0', 8, '10.99.0.1']);
  const single = inNamespace(body, ['10.77.0.9']) as typeof range;
  assert.deepEqual([single.path.tunnelSrc, single.path.tunnelSourceBits, single.local], ['10.77.0.9', undefined, '10.77.0.9']);
  const primary = inNamespace(body) as typeof range;
  assert.deepEqual([primary.path.tunnelSrc, primary.path.tunnelSourceBits, primary.local], ['10.99.0.1', undefined, '10.99.0.1']);
});
