/** Tracked flows as the control core reasons about them: drains, previews, explain. */
import { IPPROTO } from '../dataplane/abi.js';
import type { Flow } from '../dataplane/flow-hash.js';
import type { VipAddress } from '../model/address.js';

export interface TrackedFlow {
  readonly key: Flow;
  readonly backendId: number;
  /** The client sent FIN or RST. */
  readonly closing: boolean;
  /** Data-plane clock (jiffies) of the last packet, at about a second's precision. */
  readonly lastSeen: bigint;
}

/** How old a data-plane timestamp is. */
export interface FlowClock {
  now(): bigint;
  secondsSince(jiffies: bigint, now?: bigint): number;
}

/**
 * A tracked flow counts as a live connection while the client has not
 * closed it (FIN/RST) and it had a packet within idleSeconds; the LRU keeps
 * finished flows until it needs their room.
 */
export function isActiveFlow(flow: TrackedFlow, idleSeconds: number, clock: Pick<FlowClock, 'secondsSince'>, now: bigint): boolean {
  return !flow.closing && clock.secondsSince(flow.lastSeen, now) < idleSeconds;
}

/**
 * Is a tracked flow one of this VIP's: to its address, protocol and port;
 * for a VIP of all ports (port 0), to any port without a VIP of its own
 * among `vips` (that VIP takes those packets).
 */
export function isFlowOf(flow: TrackedFlow, vip: VipAddress, vips: readonly VipAddress[]): boolean {
  const { daddr, dport, proto } = flow.key;
  if (daddr !== vip.address || proto !== IPPROTO[vip.protocol]) return false;
  if (vip.port !== 0) return dport === vip.port;
  return !vips.some((v) => v.port === dport && v.address === daddr && v.protocol === vip.protocol);
}
