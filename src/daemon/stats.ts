/** The counters of the data plane and the daemon in one snapshot: `lbctl stats`, `lbctl top`, the metrics and the status page. */
import type { StatsResult } from '../api/protocol.js';
import { REASON_INFO, REASONS, type TrafficCounters } from '../dataplane/abi.js';
import type { DaemonControl } from './handlers.js';

type StatsSource = Pick<DaemonControl, 'dataplane' | 'reconciler' | 'health' | 'daemonStats'>;

function traffic(c: TrafficCounters) {
  return {
    packets: c.packets.toString(),
    bytes: c.bytes.toString(),
    newFlows: c.new_flows.toString(),
    movedFlows: c.moved_flows.toString(),
    trackedPackets: (c.packets - c.new_flows).toString(),
  };
}

export function collectStats(daemon: StatsSource): StatsResult {
  const reasons = daemon.dataplane.reasonCounters();
  return {
    at: new Date().toISOString(),
    vips: daemon.reconciler.view.map((v) => ({
      vip: v.key,
      ...traffic(daemon.dataplane.vipCounters(v.vipId)),
      backends: v.backends.map((b) => {
        const health = daemon.health(v.key, b.address);
        return {
          address: b.address,
          state: b.state,
          health: health?.state ?? null,
          ...(health?.state === 'down' && health.lastError ? { healthError: health.lastError } : {}),
          share: b.slots / v.tableSize,
          ...traffic(daemon.dataplane.backendCounters(b.id)),
        };
      }),
    })),
    reasons: REASONS.map((reason) => ({ reason, ...REASON_INFO[reason], packets: reasons[reason].toString() })),
    daemon: daemon.daemonStats(),
  };
}
