/**
 * The daemon's API on its Unix socket: one JSON object per line each way.
 * A request names a method and carries params; the answer carries the same
 * id and either a result or an error.
 */
import type { ForwardMethod } from '../model/address.js';
import type { AllDownPolicy, CheckOptions } from '../model/check.js';
import type { Reason, ReasonFate } from '../dataplane/abi.js';

export interface KillSwitchStatus {
  /** Engaged by an operator (not just tripped by a silent daemon). */
  readonly engaged: boolean;
  readonly engagedSince: string | null;
  readonly timeoutMs: number;
  /** Seconds until the data plane would stop balancing; zero or less: it has. */
  readonly secondsLeft: number;
  readonly passedPackets: string;
}

export interface BackendPreview {
  readonly address: string;
  readonly before: { readonly weight: number; readonly share: number; readonly draining: boolean } | null;
  readonly after: { readonly weight: number; readonly share: number; readonly draining: boolean } | null;
}

/** What a backend change would do (a dry run): shares, slots that change owner, tracked flows affected. */
export interface ChangePreview {
  readonly vip: string;
  readonly tableSize: number;
  readonly backends: readonly BackendPreview[];
  /** Slots whose owner changes: new flows hashing there go elsewhere. */
  readonly slotsMoved: number;
  readonly fractionMoved: number;
  readonly trackedFlows: number;
  /** Tracked flows whose backend goes away: they are moved (their connections break). */
  readonly flowsToMove: number;
  /** Of flowsToMove, the live connections (not closed by the client, a packet within the drain idle time): what the change breaks. */
  readonly activeFlowsToMove: number;
  /** Tracked flows whose slot changes owner: they stay on their backend while tracked. */
  readonly flowsOnMovedSlots: number;
}

export interface Request<M extends MethodName = MethodName> {
  readonly id: number;
  readonly method: M;
  readonly params: Methods[M]['params'];
}

export type Response =
  | { readonly id: number; readonly result: unknown }
  | { readonly id: number; readonly error: { readonly message: string; readonly kind: 'input' | 'internal' } };

/** The daemon's program on its interface. */
export interface AttachmentStatus {
  /**
   * attached: balancing; detached: no program on the interface (someone
   * removed it); replaced: another XDP program is on it; interface_missing:
   * the interface is gone. Anything but attached balances nothing.
   */
  readonly state: 'attached' | 'detached' | 'replaced' | 'interface_missing';
  readonly ifindex: number;
  /** ISO time of the last change of state. */
  readonly since: string;
  /** One sentence for people. */
  readonly detail: string;
}

export interface StatusResult {
  readonly pid: number;
  readonly version: string;
  readonly interface: string;
  readonly ifindex: number;
  readonly xdpMode: 'native' | 'generic';
  readonly programId: number;
  /** Whether that program is what the interface runs (the daemon checks every second). */
  readonly dataplane: AttachmentStatus;
  /** The network namespace the daemon runs in: `lbctl restart` starts the new daemon there. */
  readonly netns: { readonly inode: number; readonly name: string | null };
  readonly startedAt: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly pinDir: string;
  /** Outer sources of ipip packets, one per family the interface has an address of. */
  readonly tunnelSources: readonly string[];
  readonly configPath: string | null;
  readonly vips: number;
  readonly backends: number;
  readonly unresolvedBackends: number;
  readonly flowTableSize: number;
  /** Where the Prometheus endpoint and status page listen, or null. */
  readonly metricsAddress: string | null;
  readonly killSwitch: KillSwitchStatus;
  /** How `lbctl start` was run, for `lbctl restart`. */
  readonly startArgs: readonly string[];
}

export interface VipSummary {
  readonly vip: string;
  readonly forward: ForwardMethod;
  readonly tableSize: number;
  readonly backends: number;
  readonly activeBackends: number;
  readonly check: string;
  readonly onAllDown: 'keep' | 'drop';
  /** Every reachable backend fails its health check. */
  readonly allDown: boolean;
  readonly packets: string;
  readonly bytes: string;
  /** Flows given a backend from the table, and of those, tracked flows moved because their backend was gone. */
  readonly newFlows: string;
  readonly movedFlows: string;
}

export interface BackendSummary {
  readonly address: string;
  readonly weight: number;
  readonly forward: ForwardMethod;
  readonly state: 'active' | 'draining' | 'down' | 'unresolved';
  readonly reason?: string;
  readonly slots: number;
  /** Fraction of the VIP's Maglev table this backend owns (0..1). */
  readonly share: number;
  readonly nextHop?: string;
  readonly nextHopMac?: string;
  readonly drain?: { readonly since: string; readonly timeoutSeconds: number; readonly idleSeconds: number };
  /** The backend's health check, as configured ("http:/healthz every 2s, rise 2, fall 3") and its state. */
  readonly check: string;
  readonly health?: {
    readonly state: 'unknown' | 'up' | 'down';
    readonly since: string;
    readonly lastError?: string;
    readonly lastCheck?: string;
  };
  /** Down, but kept in the table because every backend of the VIP is down (policy keep). */
  readonly keptWhileAllDown?: boolean;
  readonly packets: string;
  readonly bytes: string;
  readonly newFlows: string;
}

export interface TrafficStats {
  readonly packets: string;
  /** IP bytes, client to server. */
  readonly bytes: string;
  /** Flows given a backend by the Maglev table. */
  readonly newFlows: string;
  /** Of those, tracked flows moved because their backend was gone. */
  readonly movedFlows: string;
  /** Packets that found their flow in connection tracking. */
  readonly trackedPackets: string;
}

export interface StatsResult {
  /** ISO time the counters were read. */
  readonly at: string;
  readonly vips: ReadonlyArray<
    TrafficStats & {
      readonly vip: string;
      readonly backends: ReadonlyArray<
        TrafficStats & {
          readonly address: string;
          readonly state: BackendSummary['state'];
          readonly health: 'unknown' | 'up' | 'down' | null;
          /** Why the last health check failed, while the backend is down. */
          readonly healthError?: string;
          /** Fraction of the VIP's Maglev table (0..1). */
          readonly share: number;
        }
      >;
    }
  >;
  /** Packets the data plane did not simply balance, by reason. */
  readonly reasons: ReadonlyArray<{
    readonly reason: Reason;
    readonly fate: ReasonFate;
    readonly meaning: string;
    readonly packets: string;
  }>;
  readonly daemon: {
    readonly startedAt: string;
    readonly healthTransitions: { readonly up: number; readonly down: number };
    readonly reconciles: number;
    readonly tablesBuilt: number;
    readonly tablesWritten: number;
    readonly lastReconcileMs: number;
    readonly reconcileMsTotal: number;
    /** Log lines the log's destination did not take (a full disk, a reader that stopped): dropped, not waited for. */
    readonly logLinesDropped: number;
    /** Health probes the balancer could not run for want of its own resources (file descriptors...): no verdict. */
    readonly healthProbesWithoutVerdict: number;
    /** API connections closed at once because the most allowed were open. */
    readonly apiConnectionsRefused: number;
  };
}

export interface ChangeResult {
  readonly message: string;
  readonly warnings: readonly string[];
  /** False for a dry run. */
  readonly applied: boolean;
  readonly preview?: ChangePreview;
}

export interface ExplainResult {
  readonly vip: string;
  readonly client: string;
  /** Where the next packet of this flow goes (null: it is dropped). */
  readonly backend: string | null;
  readonly decidedBy: 'tracked flow' | 'maglev table' | 'no usable backend';
  readonly tracked?: {
    readonly backend: string;
    readonly state: 'active' | 'draining' | 'down' | 'unresolved' | 'removed';
    readonly lastSeenSecondsAgo: number;
    readonly closing: boolean;
  };
  readonly table: {
    readonly hash: string;
    readonly slot: number;
    readonly tableSize: number;
    readonly owner: string | null;
    readonly ownerShare: number;
  };
}

export interface Methods {
  status: { params: Record<string, never>; result: StatusResult };
  stop: { params: { keepDataplane?: boolean }; result: { stopping: true } };
  reload: { params: Record<string, never>; result: ChangeResult };
  'killswitch.engage': { params: Record<string, never>; result: KillSwitchStatus };
  'killswitch.release': { params: Record<string, never>; result: KillSwitchStatus };
  'killswitch.status': { params: Record<string, never>; result: KillSwitchStatus };
  'vip.add': {
    params: { vip: string; forward?: ForwardMethod; tableSize?: number; check?: CheckOptions; onAllDown?: AllDownPolicy };
    result: ChangeResult;
  };
  'vip.remove': { params: { vip: string }; result: ChangeResult };
  'vip.list': { params: Record<string, never>; result: VipSummary[] };
  'backend.add': {
    params: { vip: string; address: string; weight?: number; forward?: ForwardMethod; check?: CheckOptions; dryRun?: boolean };
    result: ChangeResult;
  };
  'backend.remove': { params: { vip: string; address: string; dryRun?: boolean }; result: ChangeResult };
  'backend.weight': { params: { vip: string; address: string; weight: number; dryRun?: boolean }; result: ChangeResult };
  'backend.drain': {
    params: { vip: string; address: string; timeoutSeconds?: number; idleSeconds?: number; dryRun?: boolean };
    result: ChangeResult;
  };
  'backend.undrain': { params: { vip: string; address: string }; result: ChangeResult };
  explain: { params: { client: string; vip: string }; result: ExplainResult };
  'backend.list': { params: { vip: string }; result: BackendSummary[] };
  stats: { params: Record<string, never>; result: StatsResult };
}

export type MethodName = keyof Methods;
export const METHOD_NAMES: readonly MethodName[] = [
  'status',
  'stop',
  'reload',
  'killswitch.engage',
  'killswitch.release',
  'killswitch.status',
  'vip.add',
  'vip.remove',
  'vip.list',
  'backend.add',
  'backend.remove',
  'backend.weight',
  'backend.drain',
  'backend.undrain',
  'backend.list',
  'explain',
  'stats',
];

/** Longest request line the daemon reads; anything longer is refused. */
export const MAX_LINE_BYTES = 1024 * 1024;
