/**
 * RSS-friendly IP-in-IP, end to end in network namespaces: a backend with
 * four receive queues behind the lab's switch, xdp_decap on it, and
 * xdp_balancer in the balancer's namespace tunnelling a UDP VIP to it. A
 * NIC's receive-side scaling hashes only the outer addresses of a
 * tunnelled packet; veth does not (the kernel's hash looks inside
 * IP-in-IP), so bench/tc_rss.bpf.c on the switch port towards the backend
 * picks the queue from the outer addresses as such a NIC would. The
 * balancer is the real daemon (a config file with the VIP): from one outer
 * source (the interface's address) every flow lands on one queue; started
 * with `--tunnel-source PREFIX`, the flows spread over all of them, and
 * xdp_decap hands every packet to the stack.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { LAB, Lab, ROOT } from './lab.js';
import type { BackendSummary, ConfigDiff, StatusResult } from '../../src/api/protocol.js';
import { LBCTL, LabBalancer } from '../support/balancer.js';
import { waitFor } from '../support/wait.js';

const NS = `lbtrss-${randomBytes(3).toString('hex')}`;
const PORT = 'rss0'; // the backend's port on the switch
const QUEUES = 4;
const ADDRESS = { 4: '10.10.0.60', 6: 'fd00:10::60' } as const;
const VIP = { 4: LAB.vips[0]!, 6: LAB.vips6[0]! } as const;
/** Outer source ranges of 64 addresses, not assigned to the balancer. */
const RANGE = { 4: '10.10.0.128/26', 6: 'fd00:10::8:0/122' } as const;
const FLOWS = 64;
const PACKETS_PER_FLOW = 5;
const TC_RSS = join(ROOT, 'build', 'bench', 'tc_rss.bpf.o');

let lab: Lab;
let lb: LabBalancer;

/** Runs a command in the backend's namespace (nsenter: network only, bpffs stays visible). */
function inBackend(argv: string[]): string {
  return execFileSync('nsenter', [`--net=/run/netns/${NS}`, '--', ...argv], { encoding: 'utf8' });
}

async function sh(role: string, argv: string[]): Promise<string> {
  const r = await lab.exec(role, argv);
  if (r.code !== 0) throw new Error(`${role}: ${argv.join(' ')}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

before(async () => {
  lab = await Lab.up({ decap: false });
  const sw = lab.ns('sw');
  const ip = (...args: string[]) => execFileSync('ip', args);
  ip('netns', 'add', NS);
  // One end on the switch, the other the backend's eth0: QUEUES queues each, the interior MTU.
  const end = (name: string, ns: string) => [
    name,
    'netns',
    ns,
    'numrxqueues',
    `${QUEUES}`,
    'numtxqueues',
    `${QUEUES}`,
    'mtu',
    `${LAB.mtu.interior}`,
  ];
  ip('link', 'add', ...end(PORT, sw), 'type', 'veth', 'peer', 'name', ...end('eth0', NS));
  inBackend(['ethtool', '-K', 'eth0', 'rx', 'off', 'tx', 'off']);
  inBackend(['ip', 'link', 'set', 'lo', 'up']);
  inBackend(['ip', 'link', 'set', 'eth0', 'up']);
  inBackend(['ip', 'addr', 'add', `${ADDRESS[4]}/${LAB.front.prefixLength}`, 'dev', 'eth0']);
  inBackend(['ip', 'addr', 'add', `${ADDRESS[6]}/${LAB.front.prefixLength6}`, 'dev', 'eth0', 'nodad']);
  inBackend(['ip', 'addr', 'add', `${VIP[4]}/32`, 'dev', 'lo']);
  inBackend(['ip', 'addr', 'add', `${VIP[6]}/128`, 'dev', 'lo']);
  const backendMac = (JSON.parse(inBackend(['ip', '-j', 'link', 'show', 'dev', 'eth0'])) as Array<{ address: string }>)[0]!.address;
  // The tunnels' endpoint: xdp_decap, as on any backend; then the queues (the end running XDP first).
  inBackend([LBCTL, 'decap', 'attach', '--interface', 'eth0']);
  inBackend(['ethtool', '-L', 'eth0', 'rx', `${QUEUES}`, 'tx', `${QUEUES}`]);
  await sh('sw', ['ethtool', '-L', PORT, 'rx', `${QUEUES}`, 'tx', `${QUEUES}`]);
  await sh('sw', ['ethtool', '-K', PORT, 'rx', 'off', 'tx', 'off']);
  await sh('sw', ['ip', 'link', 'set', PORT, 'master', LAB.front.bridge, 'up']);
  await sh('sw', ['bridge', 'fdb', 'add', backendMac, 'dev', PORT, 'master', 'static']);
  // tc -n: in a mount namespace of its own, so that its loader leaves nothing in the host's bpffs.
  execFileSync('tc', ['-n', sw, 'qdisc', 'add', 'dev', PORT, 'clsact']);
  execFileSync('tc', ['-n', sw, 'filter', 'add', 'dev', PORT, 'egress', 'bpf', 'direct-action', 'obj', TC_RSS, 'sec', 'tc']);
  lb = new LabBalancer(lab);
});

after(async () => {
  try {
    await lb?.stop();
  } finally {
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    } catch {
      // not created
    }
    // Also kills a daemon that would not stop, and removes its pins.
    await lab?.down();
  }
});

function queueCounts(): number[] {
  const stats = inBackend(['ethtool', '-S', 'eth0']);
  return Array.from({ length: QUEUES }, (_, q) => Number(new RegExp(`rx_queue_${q}_xdp_packets: (\\d+)`).exec(stats)![1]));
}

/** UDP datagrams the backend's stack took (to the VIP's closed port: counted as such). */
function udpReceived(family: 4 | 6): number {
  if (family === 4) {
    const lines = inBackend(['cat', '/proc/net/snmp'])
      .split('\n')
      .filter((l) => l.startsWith('Udp:'));
    const [names, values] = lines.map((l) => l.trim().split(/\s+/));
    const field = (name: string) => Number(values![names!.indexOf(name)]);
    return field('InDatagrams') + field('NoPorts');
  }
  const snmp6 = inBackend(['cat', '/proc/net/snmp6']);
  const field = (name: string) => Number(new RegExp(`^${name}\\s+(\\d+)`, 'm').exec(snmp6)![1]);
  return field('Udp6InDatagrams') + field('Udp6NoPorts');
}

/** FLOWS UDP flows (one source port each) from the client to the VIP, PACKETS_PER_FLOW datagrams each. */
async function sendFlows(family: 4 | 6): Promise<void> {
  const script = [
    'import socket, sys',
    `for p in range(${FLOWS}):`,
    `    s = socket.socket(socket.AF_INET${family === 6 ? '6' : ''}, socket.SOCK_DGRAM)`,
    `    s.bind(("", 21000 + p))`,
    `    for i in range(${PACKETS_PER_FLOW}): s.sendto(b"rss", ("${VIP[family]}", 9))`,
    '    s.close()',
  ].join('\n');
  await sh('client', ['python3', '-c', script]);
}

const vipOf = (family: 4 | 6) => (family === 6 ? `[${VIP[6]}]:9/udp` : `${VIP[4]}:9/udp`);

/** A config file with the VIP of the family tunnelled to the backend (and tunnel_source when given); returns its path. */
function writeConfig(family: 4 | 6, tunnelSource?: string): string {
  const config = join(lab.runtimeDir, `rss-${family}.yaml`);
  writeFileSync(
    config,
    [
      ...(tunnelSource ? [`tunnel_source: [${tunnelSource}]`] : []),
      'vips:',
      `  - vip: "${vipOf(family)}"`,
      '    forward: ipip',
      '    check: none',
      '    backends:',
      `      - address: ${ADDRESS[family]}`,
      '',
    ].join('\n'),
  );
  return config;
}

/** Runs the daemon with writeConfig's file (and --tunnel-source when given) while `body` runs. */
async function withBalancer<T>(
  family: 4 | 6,
  sources: { flag?: string; config?: string },
  body: (status: StatusResult) => Promise<T>,
): Promise<T> {
  const config = writeConfig(family, sources.config);
  await lb.start(['--config', config, ...(sources.flag ? ['--tunnel-source', sources.flag] : [])]);
  try {
    await waitFor(`${ADDRESS[family]} active`, async () =>
      (await lb.json<BackendSummary[]>(['backend', 'list', vipOf(family)]))[0]?.state === 'active' ? true : undefined,
    );
    return await body(await lb.json<StatusResult>(['status']));
  } finally {
    await lb.stop();
  }
}

async function spread(family: 4 | 6, tunnelSource?: string): Promise<{ perQueue: number[]; received: number; sources: readonly string[] }> {
  return withBalancer(family, { flag: tunnelSource }, async (status) => {
    const queuesBefore = queueCounts();
    const receivedBefore = udpReceived(family);
    await sendFlows(family);
    await new Promise((resolve) => setTimeout(resolve, 200));
    return {
      perQueue: queueCounts().map((n, q) => n - queuesBefore[q]!),
      received: udpReceived(family) - receivedBefore,
      sources: status.tunnelSources,
    };
  });
}

const SENT = FLOWS * PACKETS_PER_FLOW;

for (const family of [4, 6] as const) {
  test(`IPv${family}: from one outer source every flow reaches one receive queue of the backend; from a range they spread over all ${QUEUES}, every packet decapsulated`, async (t) => {
    const fixed = await spread(family);
    const range = await spread(family, RANGE[family]);
    t.diagnostic(`packets per receive queue: one source ${fixed.perQueue.join(' ')}, ${RANGE[family]} ${range.perQueue.join(' ')}`);
    assert.deepEqual(fixed.sources, [LAB.balancer, LAB.balancer6], "by default the interface's addresses");
    assert.deepEqual(
      range.sources,
      family === 4 ? [RANGE[4], LAB.balancer6] : [LAB.balancer, RANGE[6]],
      'status shows the range of that family',
    );
    for (const [name, r] of [
      ['one source', fixed],
      ['a range', range],
    ] as const) {
      const tunnelled = r.perQueue.reduce((a, b) => a + b, 0);
      assert.ok(tunnelled >= SENT, `${name}: ${tunnelled} packets reached the backend's queues, ${SENT} sent`);
      assert.equal(r.received, SENT, `${name}: the backend's stack took every datagram, decapsulated`);
    }
    assert.ok(Math.max(...fixed.perQueue) >= SENT, `one source: one queue takes every flow (${fixed.perQueue.join(' ')})`);
    assert.ok(
      range.perQueue.every((n) => n >= SENT / QUEUES / 3 && n <= SENT / 2),
      `a range: every queue takes a share, none half (${range.perQueue.join(' ')})`,
    );
  });
}

test('ranges from the config file: status shows them; config diff says another range takes a restart, the same ones spelled otherwise do not', async () => {
  await withBalancer(4, { config: `${RANGE[4]}, ${RANGE[6]}` }, async (status) => {
    assert.deepEqual(status.tunnelSources, [RANGE[4], RANGE[6]]);
    assert.ok((await lb.ok(['status'])).includes(`tunnels    from ${RANGE[4]} (64 addresses, spread by flow), ${RANGE[6]} (64 addresses`));
    const restartNeeded = async () => (await lb.json<ConfigDiff>(['config', 'diff'])).settings;
    writeConfig(4, 'FD00:10:0:0::8:0/122, 10.10.0.128/26');
    assert.deepEqual(await restartNeeded(), []);
    writeConfig(4, `10.10.0.64/26, ${RANGE[6]}`);
    assert.deepEqual(await restartNeeded(), ['tunnel_source changed in the config: it takes effect at the next lbctl restart']);
  });
});
