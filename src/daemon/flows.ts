/** Tracked flows as the data plane holds them, for drains, previews and explain. */
import { FLOW_FLAG_CLOSING, FlowKeyV4, flowKeyV4, flowState, IPPROTO } from '../dataplane/abi.js';
import { BalancerDataplane } from '../dataplane/balancer.js';
import { VipAddress } from '../model/address.js';

export interface TrackedFlow {
  readonly key: FlowKeyV4;
  readonly backendId: number;
  /** The client sent FIN or RST. */
  readonly closing: boolean;
  /** Data-plane clock (jiffies) of the last packet, at about a second's precision. */
  readonly lastSeen: bigint;
}

export function* trackedFlows(dataplane: BalancerDataplane): Generator<TrackedFlow> {
  for (const [key, value] of dataplane.flows.entries()) {
    const state = flowState.decode(value);
    yield { key: flowKeyV4.decode(key), backendId: state.backend_id, closing: (state.flags & FLOW_FLAG_CLOSING) !== 0, lastSeen: state.last_seen };
  }
}

export function isFlowOf(flow: TrackedFlow, vip: VipAddress): boolean {
  return flow.key.daddr === vip.address && flow.key.dport === vip.port && flow.key.proto === IPPROTO[vip.protocol];
}

export function lookupFlow(dataplane: BalancerDataplane, key: FlowKeyV4): TrackedFlow | undefined {
  const value = dataplane.flows.lookup(flowKeyV4.encode(key));
  if (!value) return undefined;
  const state = flowState.decode(value);
  return { key, backendId: state.backend_id, closing: (state.flags & FLOW_FLAG_CLOSING) !== 0, lastSeen: state.last_seen };
}
