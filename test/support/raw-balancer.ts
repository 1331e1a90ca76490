/**
 * xdp_balancer on an interface of the namespace it runs in, its maps written
 * directly (as the packet tests do), for lab tests of data-plane features the
 * control plane cannot configure yet. Run in a lab namespace:
 *
 *   node raw-balancer.js '{"interface":"eth0","vip":"10.100.0.100:9/udp","backend":{...}}'
 *
 * Prints "ready" once attached; detaches and exits on SIGTERM, SIGINT or when
 * stdin closes.
 */
import { execFileSync } from 'node:child_process';
import { BalancerDataplane, KILL_SWITCH_NEVER } from '../../src/dataplane/balancer.js';
import { attachXdp, detachXdp } from '../../src/dataplane/xdp.js';
import { backendEntry, putVipWithTable } from './dataplane.js';

export interface RawBalancerOptions {
  readonly interface: string;
  /** "ADDRESS:PORT/PROTOCOL", "[ADDRESS6]:PORT/PROTOCOL". */
  readonly vip: string;
  readonly backend: {
    readonly address: string;
    /** The backend's MAC (on the balancer's segment). */
    readonly mac: string;
    readonly tunnelSource: string;
    readonly tunnelSourceBits: number;
  };
}

function link(name: string): { ifindex: number; address: string } {
  return (
    JSON.parse(execFileSync('ip', ['-j', 'link', 'show', 'dev', name], { encoding: 'utf8' })) as Array<{ ifindex: number; address: string }>
  )[0]!;
}

function main(options: RawBalancerOptions): void {
  const { ifindex, address: mac } = link(options.interface);
  const dataplane = BalancerDataplane.load({ maxVips: 4, maxBackends: 16, flowTableSize: 4096 });
  dataplane.setKillSwitchDeadline(KILL_SWITCH_NEVER);
  dataplane.setInterfaceMac(mac);
  dataplane.putBackend(
    1,
    backendEntry({
      address: options.backend.address,
      forward: 'ipip',
      dstMac: options.backend.mac,
      srcMac: mac,
      ifindex,
      tunnelSource: options.backend.tunnelSource,
      tunnelSourceBits: options.backend.tunnelSourceBits,
    }),
  );
  putVipWithTable(dataplane, options.vip, [1], 0, 251);
  attachXdp(ifindex, options.interface, dataplane.programFd, 'native');
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    detachXdp(ifindex, dataplane.programFd, 'native');
    dataplane.close();
    process.exit(0);
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, stop);
  process.stdin.on('end', stop);
  process.stdin.resume();
  process.stdout.write('ready\n');
}

main(JSON.parse(process.argv[2]!) as RawBalancerOptions);
