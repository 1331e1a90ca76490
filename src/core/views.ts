/**
 * What the control core tells about each VIP and backend after a plan:
 * ids, states and shares as written to the maps. The API, metrics and
 * event sources read these; nothing writes through them.
 */
import type { BackendState } from '../api/protocol.js';
import type { BackendHealth } from '../health/checker.js';
import type { ForwardMethod, VipAddress, VipHash } from '../model/address.js';
import type { DrainSpec } from '../model/desired-state.js';
import type { ForwardingPath } from '../net/forwarding-paths.js';

export type { BackendState };

export interface BackendView {
  readonly address: string;
  readonly weight: number;
  readonly forward: ForwardMethod;
  readonly id: number;
  readonly state: BackendState;
  readonly drain?: DrainSpec;
  readonly health?: BackendHealth;
  /** Down, but still used: every backend of the VIP is down and its policy is keep. */
  readonly keptWhileAllDown?: boolean;
  readonly reason?: string;
  /** Entries of the VIP's Maglev table that name it. */
  readonly slots: number;
  readonly path?: ForwardingPath;
}

export interface VipView {
  readonly key: string;
  readonly vip: VipAddress;
  readonly forward: ForwardMethod;
  /** What picks a new flow's slot in the table. */
  readonly hash: VipHash;
  readonly tableSize: number;
  readonly vipId: number;
  /** Every reachable backend fails its health check. */
  readonly allDown: boolean;
  readonly backends: readonly BackendView[];
}

/** A backend's health-check state, if it is checked. */
export type HealthLookup = (vipKey: string, address: string) => BackendHealth | undefined;
