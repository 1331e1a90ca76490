/** Tracked flows as the data plane holds them, for drains, previews and explain. */
import { FLOW_FLAG_CLOSING, flowKeyV4, flowKeyV6, flowState, IPPROTO } from '../dataplane/abi.js';
import { type BalancerDataplane } from '../dataplane/balancer.js';
import { type Flow } from '../dataplane/flow-hash.js';
import type { DataplaneClock } from '../dataplane/clock.js';
import { type VipAddress } from '../model/address.js';

export interface TrackedFlow {
  readonly key: Flow;
  readonly backendId: number;
  /** The client sent FIN or RST. */
  readonly closing: boolean;
  /** Data-plane clock (jiffies) of the last packet, at about a second's precision. */
  readonly lastSeen: bigint;
}

function tracked(key: Flow, value: Buffer): TrackedFlow {
  const state = flowState.decode(value);
  return { key, backendId: state.backend_id, closing: (state.flags & FLOW_FLAG_CLOSING) !== 0, lastSeen: state.last_seen };
}

/**
 * A tracked flow counts as a live connection while the client has not
 * closed it (FIN/RST) and it had a packet within idleSeconds; the LRU keeps
 * finished flows until it needs their room.
 */
export function isActiveFlow(flow: TrackedFlow, idleSeconds: number, clock: Pick<DataplaneClock, 'secondsSince'>, now: bigint): boolean {
  return !flow.closing && clock.secondsSince(flow.lastSeen, now) < idleSeconds;
}

/** Every tracked flow, both families. */
export function* trackedFlows(dataplane: BalancerDataplane): Generator<TrackedFlow> {
  for (const [key, value] of dataplane.flowsV4.entries()) yield tracked(flowKeyV4.decode(key), value);
  for (const [key, value] of dataplane.flowsV6.entries()) yield tracked(flowKeyV6.decode(key), value);
}

export function isFlowOf(flow: TrackedFlow, vip: VipAddress): boolean {
  return flow.key.daddr === vip.address && flow.key.dport === vip.port && flow.key.proto === IPPROTO[vip.protocol];
}

function encodeFlowKey(key: Flow): Buffer {
  return key.saddr.includes(':') ? flowKeyV6.encode(key) : flowKeyV4.encode(key);
}

function flowMap(dataplane: BalancerDataplane, key: Flow) {
  return key.saddr.includes(':') ? dataplane.flowsV6 : dataplane.flowsV4;
}

export function lookupFlow(dataplane: BalancerDataplane, key: Flow): TrackedFlow | undefined {
  const value = flowMap(dataplane, key).lookup(encodeFlowKey(key));
  return value ? tracked(key, value) : undefined;
}

export function deleteFlow(dataplane: BalancerDataplane, key: Flow): boolean {
  return flowMap(dataplane, key).delete(encodeFlowKey(key));
}
