/**
 * Many iproute2 queries in one process (`ip -batch`), so that resolving
 * thousands of backends costs a handful of process starts, not thousands.
 */
import { execFile } from 'node:child_process';
import { type InterfaceAddress, type RawAddress, interfaceAddresses } from './iproute.js';

function runBatch(args: string[], commands: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('ip', [...args, '-force', '-batch', '-'], { maxBuffer: 256 * 1024 * 1024 }, (error, stdout) => {
      // -force keeps going past failed commands (an unreachable address);
      // their absence from the output is the answer.
      if (error && stdout === '') reject(error);
      else resolve(stdout);
    });
    child.stdin!.end(commands.map((c) => `${c}\n`).join(''));
  });
}

export interface RouteAnswer {
  readonly dst: string;
  readonly type?: string;
  readonly gateway?: string;
  readonly dev: string;
  readonly prefsrc?: string;
  /** A route or learnt path MTU, when there is one. */
  readonly mtu?: number;
}

interface RawRoute extends Omit<RouteAnswer, 'mtu'> {
  readonly mtu?: number;
  readonly metrics?: ReadonlyArray<{ readonly mtu?: number }>;
}

/** `ip route get` for each address; unreachable ones are missing. */
export async function routesTo(addresses: readonly string[]): Promise<Map<string, RouteAnswer>> {
  const result = new Map<string, RouteAnswer>();
  if (addresses.length === 0) return result;
  const stdout = await runBatch(
    ['-j'],
    addresses.map((a) => `route get ${a}`),
  );
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('[')) continue;
    for (const route of JSON.parse(line) as RawRoute[]) {
      const mtu = route.mtu ?? route.metrics?.find((m) => m.mtu !== undefined)?.mtu;
      result.set(route.dst, {
        dst: route.dst,
        dev: route.dev,
        ...(route.type ? { type: route.type } : {}),
        ...(route.gateway ? { gateway: route.gateway } : {}),
        ...(route.prefsrc ? { prefsrc: route.prefsrc } : {}),
        ...(mtu ? { mtu } : {}),
      });
    }
  }
  return result;
}

export interface NeighbourAnswer {
  readonly dst: string;
  readonly dev: string;
  readonly lladdr?: string;
  readonly state?: readonly string[];
  /** Present (null) on entries another control plane installed. */
  readonly extern_learn?: null;
}

/** Every neighbour entry, NOARP ones included (`ip neigh show` leaves them out without `nud all`). */
export async function neighbours(): Promise<NeighbourAnswer[]> {
  const stdout = await runBatch(['-j'], ['neigh show nud all']);
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('['))
    .flatMap((l) => JSON.parse(l) as NeighbourAnswer[]);
}

export interface LinkAnswer {
  readonly ifindex: number;
  readonly ifname: string;
  readonly address?: string;
  readonly mtu: number;
  readonly addresses: InterfaceAddress[];
}

/** Every interface with its addresses (one process: a refresh needs both). */
export async function links(): Promise<LinkAnswer[]> {
  const stdout = await runBatch(['-j'], ['addr show']);
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('['))
    .flatMap((l) => JSON.parse(l) as Array<Omit<LinkAnswer, 'addresses'> & { addr_info?: RawAddress[] }>)
    .map(({ addr_info, ...link }) => ({ ...link, addresses: interfaceAddresses(addr_info) }));
}

/** Makes the kernel (re)resolve each neighbour as if a packet waited for it. */
export async function probeNeighbours(targets: ReadonlyArray<{ address: string; dev: string }>): Promise<void> {
  if (targets.length === 0) return;
  await runBatch(
    [],
    targets.map((t) => `neigh replace ${t.address} dev ${t.dev} use`),
  );
}
