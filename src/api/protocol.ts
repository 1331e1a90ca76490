/**
 * The daemon's API on its Unix socket: one JSON object per line each way.
 * A request names a method and carries params; the answer carries the same
 * id and either a result or an error.
 */
import type { ForwardMethod, VipHash } from '../model/address.js';
import type { AllDownPolicy, CheckOptions } from '../model/check.js';
import type { StateDifference } from '../model/state-diff.js';
import type { Reason, ReasonFate } from '../dataplane/abi.js';

/**
 * active: in the Maglev table; quiesced: weight 0, out of the table, its
 * tracked flows still forwarded (as HAProxy and IPVS do); draining: the same
 * until its flows end, then removed; down: failing its health check;
 * unresolved: no usable path.
 */
export const BACKEND_STATES = ['active', 'quiesced', 'draining', 'down', 'unresolved'] as const;
export type BackendState = (typeof BACKEND_STATES)[number];

/*
 * Counters (packets, bytes, flows) are JSON numbers: exact up to 2^53 (9e15:
 * 8 days of bytes at 100 Gbit/s), beyond that as precise as a double, as in
 * Prometheus.
 */

export interface KillSwitchStatus {
  /** Engaged by an operator (not just tripped by a silent daemon). */
  readonly engaged: boolean;
  readonly engagedSince: string | null;
  readonly timeoutMs: number;
  /** Seconds until the data plane would stop balancing; zero or less: it has. */
  readonly secondsLeft: number;
  readonly passedPackets: number;
}

/**
 * Why a VIP is not announced (src/fleet/announce-policy.ts): off (not
 * announcing), stopping, kill_switch (engaged), interface_down, no_device
 * (the watchdog withdrew, the device is not back), backends (fewer healthy
 * than need), hold_down, address (another VIP on its address holds it
 * back), failed (the route could not be changed).
 */
export const NOT_ANNOUNCED_CODES = [
  'off',
  'stopping',
  'kill_switch',
  'interface_down',
  'no_device',
  'backends',
  'hold_down',
  'address',
  'failed',
] as const;

/** A stable code (metrics, scripts) and a sentence (people). */
export interface NotAnnouncedReason {
  readonly code: (typeof NOT_ANNOUNCED_CODES)[number];
  readonly text: string;
}

/** A VIP's announcement to a fleet's router (docs/fleet.md). */
export interface AnnounceView {
  /** Its address's route is in the announce table. */
  readonly announced: boolean;
  /** Why not; null while announced. */
  readonly reason: NotAnnouncedReason | null;
  readonly healthyBackends: number;
  readonly need: number;
  /** ISO time it was last announced or withdrawn (or the daemon started). */
  readonly since: string;
}

/** How the daemon announces, when it does. */
export interface AnnounceStatus {
  /** The TUN device holding the routes; null while the watchdog's withdrawal has not been undone. */
  readonly device: string | null;
  readonly table: number;
  readonly proto: number;
  readonly need: number;
  readonly holdDownMs: number;
  readonly withdrawDelayMs: number;
  /** The watchdog withdraws every VIP when the event loop has been stuck this long. */
  readonly watchdogStallMs: number;
  readonly interfaceUp: boolean;
  /** Addresses announced, sorted. */
  readonly announced: readonly string[];
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
  /** Outer sources of ipip packets, one per family: configured (ADDRESS, or ADDRESS/LEN for a range), else the interface's address. */
  readonly tunnelSources: readonly string[];
  readonly configPath: string | null;
  readonly vips: number;
  readonly backends: number;
  readonly unresolvedBackends: number;
  /** Backends failing their health check, with the last reason. */
  readonly downBackends: ReadonlyArray<{
    readonly vip: string;
    readonly address: string;
    readonly since: string;
    readonly reason?: string;
  }>;
  /** VIPs none of whose backends takes new flows: new connections to them fail (or go to backends kept while all are down). */
  readonly vipsWithoutHealthyBackend: readonly string[];
  readonly flowTableSize: number;
  /** Where the Prometheus endpoint and status page listen, or null. */
  readonly metricsAddress: string | null;
  readonly killSwitch: KillSwitchStatus;
  /** Announcing to a fleet's router; null when off. */
  readonly announce: AnnounceStatus | null;
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
  /** The fewest healthy backends to announce it, when it sets its own. */
  readonly need?: number;
  /** What picks a new flow's backend: the whole flow, or the client's address alone. */
  readonly hash: VipHash;
  readonly announce: AnnounceView;
  readonly packets: number;
  readonly bytes: number;
  /** Flows given a backend from the table, and of those, tracked flows moved because their backend was gone. */
  readonly newFlows: number;
  readonly movedFlows: number;
}

export interface BackendSummary {
  readonly address: string;
  readonly weight: number;
  readonly forward: ForwardMethod;
  readonly state: BackendState;
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
  readonly packets: number;
  readonly bytes: number;
  readonly newFlows: number;
}

export interface TrafficStats {
  readonly packets: number;
  /** IP bytes, client to server. */
  readonly bytes: number;
  /** Flows given a backend by the Maglev table. */
  readonly newFlows: number;
  /** Of those, tracked flows moved because their backend was gone. */
  readonly movedFlows: number;
  /** Packets that found their flow in connection tracking. */
  readonly trackedPackets: number;
}

export interface StatsResult {
  /** ISO time the counters were read. */
  readonly at: string;
  readonly vips: ReadonlyArray<
    TrafficStats & {
      readonly vip: string;
      readonly announced: boolean;
      /** Why it is not announced; null while it is. */
      readonly notAnnounced: NotAnnouncedReason | null;
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
    readonly packets: number;
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
  /** reload: where the runtime changes kept make the running state differ from the file (README, "Config file and runtime changes"). */
  readonly overrides?: readonly StateDifference[];
}

export interface ExplainResult {
  readonly vip: string;
  readonly client: string;
  /** Where the next packet of this flow goes (null: it is dropped). */
  readonly backend: string | null;
  readonly decidedBy: 'tracked flow' | 'maglev table' | 'no usable backend';
  readonly tracked?: {
    readonly backend: string;
    readonly state: BackendState | 'removed';
    readonly lastSeenSecondsAgo: number;
    readonly closing: boolean;
  };
  /** The destination port of the flow explained (the VIP's, or the one given for a VIP of all ports). */
  readonly port: number;
  readonly table: {
    /** What the slot came from: the whole flow, or the client's address (a VIP with hash source). */
    readonly hashOf: VipHash;
    readonly hash: string;
    readonly slot: number;
    readonly tableSize: number;
    readonly owner: string | null;
    readonly ownerShare: number;
  };
}

/** `lbctl config diff`: the config file as it is now against the running state. */
export interface ConfigDiff {
  readonly file: string;
  /** From the file to what runs: runtime changes, and edits of the file not reloaded yet (inverted). */
  readonly differences: readonly StateDifference[];
  /** Settings that differ and take effect only at a restart. */
  readonly settings: readonly string[];
}

export interface Methods {
  status: { params: Record<string, never>; result: StatusResult };
  stop: { params: { keepDataplane?: boolean }; result: { stopping: true } };
  reload: { params: { discardRuntimeChanges?: boolean }; result: ChangeResult };
  'config.diff': { params: Record<string, never>; result: ConfigDiff };
  'config.export': { params: Record<string, never>; result: { readonly text: string } };
  'killswitch.engage': { params: Record<string, never>; result: KillSwitchStatus };
  'killswitch.release': { params: Record<string, never>; result: KillSwitchStatus };
  'killswitch.status': { params: Record<string, never>; result: KillSwitchStatus };
  'vip.add': {
    params: {
      vip: string;
      forward?: ForwardMethod;
      tableSize?: number;
      check?: CheckOptions;
      onAllDown?: AllDownPolicy;
      need?: number;
      hash?: VipHash;
    };
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
  /** port: the destination port, for a VIP of all ports (port 0). */
  explain: { params: { client: string; vip: string; port?: number }; result: ExplainResult };
  'backend.list': { params: { vip: string }; result: BackendSummary[] };
  stats: { params: Record<string, never>; result: StatsResult };
}

export type MethodName = keyof Methods;
export const METHOD_NAMES: readonly MethodName[] = [
  'status',
  'stop',
  'reload',
  'config.diff',
  'config.export',
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
