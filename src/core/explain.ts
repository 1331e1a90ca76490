/** `lbctl explain`: which backend a client's flow goes to, and why, from the core's views and the tracked flows. */
import type { ExplainResult } from '../api/protocol.js';
import { IPPROTO, VIP_FLAG_HASH_SOURCE } from '../dataplane/abi.js';
import { type Flow, slotHash, tableSlot } from '../dataplane/flow-hash.js';
import { type Family, parseIpAddress } from '../model/address.js';
import { InputError, quote } from '../model/errors.js';
import type { TrackedFlow } from './flows.js';
import type { VipView } from './views.js';

export interface ExplainSource {
  readonly views: readonly VipView[];
  /** The backend id in a slot of a VIP's current table. */
  tableOwner(key: string, slot: number): number | undefined;
  /** The address a backend id stands for, also for a backend of another VIP. */
  backendById(id: number): { address: string } | undefined;
  lookupFlow(flow: Flow): TrackedFlow | undefined;
  secondsSince(jiffies: bigint): number;
}

export interface ClientEndpoint {
  readonly address: string;
  readonly family: Family;
  readonly port: number;
}

/** "192.0.2.7:40000" or "[2001:db8::7]:40000". */
export function parseClientEndpoint(text: string): ClientEndpoint {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(text.trim());
  if (!match) throw new InputError(`invalid client ${quote(text)}: expected ADDRESS:PORT, e.g. 192.0.2.7:40000 or [2001:db8::7]:40000`);
  const { address, family } = parseIpAddress(match[1] ?? match[2]!, 'client address');
  const port = Number(match[3]);
  if (port < 1 || port > 65535) throw new InputError(`invalid client ${quote(text)}: port must be from 1 to 65535`);
  return { address, family, port };
}

/** port: the flow's destination port, given only (and needed) for a VIP of all ports. */
export function explainFlow(source: ExplainSource, client: ClientEndpoint, key: string, port?: number): ExplainResult {
  const view = source.views.find((v) => v.key === key);
  if (!view) throw new InputError(`unknown VIP ${key}`);
  if (client.family !== view.vip.family) {
    throw new InputError(`client ${client.address} is IPv${client.family} but VIP ${key} is IPv${view.vip.family}`);
  }
  const dport = destinationPort(source.views, view, port);

  const flow = {
    saddr: client.address,
    daddr: view.vip.address,
    sport: client.port,
    dport,
    proto: IPPROTO[view.vip.protocol],
  };
  const hash = slotHash(flow, view.hash === 'source' ? VIP_FLAG_HASH_SOURCE : 0);
  const slot = tableSlot(hash, view.tableSize);
  const ownerId = source.tableOwner(key, slot);
  const owner = ownerId === undefined ? undefined : view.backends.find((b) => b.id === ownerId);
  const table = {
    hashOf: view.hash,
    hash: `0x${hash.toString(16).padStart(8, '0')}`,
    slot,
    tableSize: view.tableSize,
    owner: owner?.address ?? null,
    ownerShare: owner ? owner.slots / view.tableSize : 0,
  };
  const result = {
    vip: key,
    client: client.family === 6 ? `[${client.address}]:${client.port}` : `${client.address}:${client.port}`,
    port: dport,
    table,
  };
  const byTable = { ...result, backend: table.owner, decidedBy: table.owner ? ('maglev table' as const) : ('no usable backend' as const) };

  const tracked = source.lookupFlow(flow);
  if (!tracked) return byTable;
  const trackedBackend = view.backends.find((b) => b.id === tracked.backendId);
  const usable =
    trackedBackend !== undefined &&
    trackedBackend.state !== 'unresolved' &&
    (trackedBackend.state !== 'down' || trackedBackend.keptWhileAllDown === true);
  const trackedView = {
    backend: trackedBackend?.address ?? source.backendById(tracked.backendId)?.address ?? `#${tracked.backendId}`,
    state: trackedBackend?.state ?? ('removed' as const),
    lastSeenSecondsAgo: Math.max(0, Math.round(source.secondsSince(tracked.lastSeen))),
    closing: tracked.closing,
  };
  if (usable) return { ...result, backend: trackedView.backend, decidedBy: 'tracked flow', tracked: trackedView };
  return { ...byTable, tracked: trackedView };
}

/** A VIP's own port, or for a VIP of all ports the port asked about, which must not have a VIP of its own (that VIP takes its packets). */
function destinationPort(views: readonly VipView[], view: VipView, port: number | undefined): number {
  if (view.vip.port !== 0) {
    if (port !== undefined && port !== view.vip.port) throw new InputError(`VIP ${view.key} has port ${view.vip.port}: give no other port`);
    return view.vip.port;
  }
  if (port === undefined) throw new InputError(`VIP ${view.key} is a VIP of all ports: give the port the client connects to (--port)`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InputError(`invalid port ${port}: must be from 1 to 65535`);
  const own = views.find((v) => v.vip.address === view.vip.address && v.vip.protocol === view.vip.protocol && v.vip.port === port);
  if (own) throw new InputError(`port ${port} of ${view.vip.address} has a VIP of its own: explain ${own.key}`);
  return port;
}
