/** The counters of the data plane and the daemon in one snapshot: `lbctl stats`, `lbctl top`, the metrics and the status page. */
import type { AnnounceView, StatsResult } from '../api/protocol.js';
import { REASON_INFO, REASONS, type TrafficCounters } from '../dataplane/abi.js';
import type { VipView, HealthLookup } from '../core/views.js';
import type { BalancerDataplane } from '../dataplane/balancer.js';

export interface StatsSource {
  readonly views: readonly VipView[];
  readonly dataplane: Pick<BalancerDataplane, 'reasonCounters' | 'vipCounters' | 'backendCounters'>;
  readonly health: HealthLookup;
  readonly announce: (vipKey: string) => AnnounceView;
  /** Counts kept by the daemon itself (the data plane's are in its maps). */
  readonly daemon: StatsResult['daemon'];
}

function traffic(c: TrafficCounters) {
  return {
    packets: Number(c.packets),
    bytes: Number(c.bytes),
    newFlows: Number(c.new_flows),
    movedFlows: Number(c.moved_flows),
    trackedPackets: Number(c.packets - c.new_flows),
  };
}

function announced(view: AnnounceView) {
  return { announced: view.announced, notAnnounced: view.reason };
}

export function collectStats(source: StatsSource): StatsResult {
  const reasons = source.dataplane.reasonCounters();
  return {
    at: new Date().toISOString(),
    vips: source.views.map((v) => ({
      vip: v.key,
      ...traffic(source.dataplane.vipCounters(v.vipId)),
      ...announced(source.announce(v.key)),
      backends: v.backends.map((b) => {
        const health = source.health(v.key, b.address);
        return {
          address: b.address,
          state: b.state,
          health: health?.state ?? null,
          ...(health?.state === 'down' && health.lastError ? { healthError: health.lastError } : {}),
          share: b.slots / v.tableSize,
          ...traffic(source.dataplane.backendCounters(b.id)),
        };
      }),
    })),
    reasons: REASONS.map((reason) => ({ reason, ...REASON_INFO[reason], packets: Number(reasons[reason]) })),
    daemon: source.daemon,
  };
}
