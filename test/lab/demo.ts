/**
 * The demo (`sudo make demo`): builds the lab, runs lbctl in the balancer's
 * namespace, spreads real HTTP connections over three backends and shows
 * where they went and that the answers skipped the balancer.
 */
import { LAB, Lab } from './lab.js';
import { LabBalancer, backendPredictor } from '../support/balancer.js';
import type { BackendSummary } from '../../src/api/protocol.js';

const VIP = `${LAB.vips[0]}:80/tcp`;
const URL = `http://${LAB.vips[0]}/`;
const BACKENDS = [
  { address: '10.10.0.11', weight: 6, forward: 'l2dsr' },
  { address: '10.10.0.12', weight: 4, forward: 'l2dsr' },
  { address: '10.20.0.14', weight: 2, forward: 'ipip' },
];

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = '') => process.stdout.write(`${s}\n`);
const nameOf = (address: string) => LAB.backends.find((b) => b.address === address)?.name ?? address;

async function lbctl(lb: LabBalancer, args: string[]): Promise<void> {
  say(bold(`$ lbctl ${args.join(' ')}`));
  const r = await lb.cli(args);
  if (r.stdout.trim()) say(r.stdout.trimEnd());
  if (r.stderr.trim()) say(r.stderr.trimEnd());
  if (r.code !== 0) throw new Error(`lbctl ${args[0]} failed`);
}

async function spread(lb: LabBalancer, lab: Lab, connections: number, backends: typeof BACKENDS): Promise<void> {
  say(bold(`\nOpening ${connections} new HTTP connections from the client (${LAB.client}) to ${URL}`));
  const macOf = async (role: string) =>
    JSON.parse((await lab.exec(role, ['ip', '-j', 'link', 'show', 'eth0'])).stdout)[0].address as string;
  const capture = lab.spawn('client', ['tcpdump', '--immediate-mode', '-i', 'eth0', '-e', '-n', '-l', `src host ${LAB.vips[0]}`], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let captured = '';
  capture.stdout!.on('data', (chunk: Buffer) => {
    captured += chunk.toString();
  });
  await new Promise((r) => setTimeout(r, 400));
  const result = await lb.httpFromClient(URL, connections);
  await new Promise((r) => setTimeout(r, 200));
  const exited = new Promise((r) => capture.once('exit', r));
  capture.kill('SIGINT');
  await exited;

  const list = JSON.parse((await lb.cli(['backend', 'list', VIP, '--json'])).stdout) as BackendSummary[];
  const predict = backendPredictor(backends, LAB.client, LAB.vips[0]);
  const rows = backends.map((b) => {
    const name = nameOf(b.address);
    const answers = result.answers.filter((a) => a.backend === name);
    const share = list.find((x) => x.address === b.address)?.share ?? 0;
    return [
      name,
      b.address,
      b.forward,
      String(b.weight),
      String(answers.length),
      `${((answers.length / connections) * 100).toFixed(1)}%`,
      `${(share * 100).toFixed(1)}%`,
    ];
  });
  const header = ['BACKEND', 'ADDRESS', 'FORWARD', 'WEIGHT', 'CONNECTIONS', 'SHARE', 'MAGLEV SHARE'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const row of [header, ...rows])
    say(
      row
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    );

  const clients = [...new Set(result.answers.map((a) => a.client))];
  const exact = result.answers.filter((a) => a.backend === nameOf(predict(a.port))).length;
  say(`failed connections: ${result.failures.length}`);
  say(`client address seen by the backends: ${clients.join(', ')} (the client's own: no NAT on the way)`);
  say(`connections on the backend their Maglev slot names: ${exact} of ${result.answers.length}`);
  const macs = new Map<string, string>();
  for (const role of ['be1', 'be2', 'be3', 'router', 'lb']) macs.set(await macOf(role), role === 'lb' ? 'the balancer' : role);
  const senders = new Map<string, number>();
  for (const line of captured.split('\n').filter((l) => l.trim())) {
    const mac = line.split(' ')[1]!;
    senders.set(mac, (senders.get(mac) ?? 0) + 1);
  }
  say(`reply frames seen at the client, by sender: ${[...senders].map(([mac, n]) => `${macs.get(mac) ?? mac} ${n}`).join(', ')}`);
  say(`  (be4 answers through the router; none came from the balancer: direct server return)`);
}

async function main(): Promise<void> {
  say(bold('lbctl demo: an XDP load balancer with Maglev hashing and direct server return'));
  say(`lab: client ${LAB.client} and balancer ${LAB.balancer} on ${LAB.front.subnet} with backends be1-be3;`);
  say(`     backends be4-be5 on ${LAB.remote.subnet} behind router ${LAB.router.front}; every backend holds the VIPs on lo\n`);
  const lab = await Lab.up({ prefix: `demo${process.pid % 10000}` });
  const lb = new LabBalancer(lab);
  try {
    await lbctl(lb, ['start', '--interface', 'eth0', '--state-dir', lb.stateDir]);
    await lbctl(lb, ['vip', 'add', VIP, '--forward', 'l2dsr']);
    for (const b of BACKENDS) {
      await lbctl(lb, [
        'backend',
        'add',
        VIP,
        b.address,
        '--weight',
        String(b.weight),
        ...(b.forward === 'ipip' ? ['--forward', 'ipip'] : []),
      ]);
    }
    await lbctl(lb, ['backend', 'list', VIP]);
    await spread(lb, lab, 600, BACKENDS);

    say();
    await lbctl(lb, ['backend', 'remove', VIP, '10.10.0.12']);
    await spread(
      lb,
      lab,
      300,
      BACKENDS.filter((b) => b.address !== '10.10.0.12'),
    );
    say();
    await lbctl(lb, ['vip', 'list']);
    await lbctl(lb, ['stop']);
  } finally {
    await lb.stop().catch(() => undefined);
    await lab.down();
    say('\nlab torn down');
  }
}

main().catch((error: Error) => {
  process.stderr.write(`demo failed: ${error.message}\n`);
  process.exitCode = 1;
});
