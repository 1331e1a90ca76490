/**
 * The Prometheus view of the balancer. Every scrape reads one snapshot of
 * the counters (the data plane's per-CPU maps, summed, and the daemon's
 * own); series of VIPs and backends that are gone disappear with them.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { BACKEND_STATES, type AttachmentStatus, type KillSwitchStatus, type StatsResult } from '../api/protocol.js';

export interface MetricsSnapshot {
  readonly stats: StatsResult;
  readonly killSwitch: KillSwitchStatus;
  readonly dataplane: AttachmentStatus;
  readonly info: { readonly version: string; readonly interface: string; readonly xdpMode: string };
}

export interface BalancerMetrics {
  readonly registry: Registry;
  /** Renders the exposition text from a fresh snapshot. */
  scrape(snapshot: MetricsSnapshot): Promise<string>;
  /** A reconcile took this long (a histogram: the snapshot has only totals). */
  observeReconcile(seconds: number): void;
}

const TRAFFIC = [
  ['packets', 'packets', 'Packets from clients balanced'],
  ['bytes', 'bytes', 'IP bytes from clients balanced'],
  ['new_flows', 'newFlows', 'Flows given a backend by the Maglev table'],
  ['moved_flows', 'movedFlows', 'Tracked flows given a new backend because theirs was gone'],
  ['tracked_packets', 'trackedPackets', 'Packets that found their flow in connection tracking'],
] as const;

const HEALTH_STATES = ['unknown', 'up', 'down'] as const;

export function createMetrics(): BalancerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  let current: MetricsSnapshot | undefined;
  const snapshot = (): MetricsSnapshot => {
    if (!current) throw new Error('metrics collected outside a scrape');
    return current;
  };

  for (const [suffix, field, help] of TRAFFIC) {
    new Counter({
      name: `lbctl_vip_${suffix}_total`,
      help: `${help}, per VIP`,
      labelNames: ['vip'],
      registers: [registry],
      collect() {
        this.reset();
        for (const vip of snapshot().stats.vips) this.inc({ vip: vip.vip }, Number(vip[field]));
      },
    });
    new Counter({
      name: `lbctl_backend_${suffix}_total`,
      help: `${help}, per backend`,
      labelNames: ['vip', 'backend'],
      registers: [registry],
      collect() {
        this.reset();
        for (const vip of snapshot().stats.vips) {
          for (const b of vip.backends) this.inc({ vip: vip.vip, backend: b.address }, Number(b[field]));
        }
      },
    });
  }

  new Gauge({
    name: 'lbctl_vip_announced',
    help: "The VIP's address is announced to the fleet's router (1) or not (0)",
    labelNames: ['vip'],
    registers: [registry],
    collect() {
      this.reset();
      for (const vip of snapshot().stats.vips) this.set({ vip: vip.vip }, vip.announced ? 1 : 0);
    },
  });
  new Gauge({
    name: 'lbctl_vip_not_announced',
    help: 'Why the VIP is not announced (1 for the reason; no series while announced): off, stopping, kill_switch, interface_down, no_device, backends, hold_down, address, failed',
    labelNames: ['vip', 'reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const vip of snapshot().stats.vips) if (vip.notAnnounced) this.set({ vip: vip.vip, reason: vip.notAnnounced.code }, 1);
    },
  });
  new Gauge({
    name: 'lbctl_backend_table_share_ratio',
    help: "Fraction of the VIP's Maglev table the backend owns",
    labelNames: ['vip', 'backend'],
    registers: [registry],
    collect() {
      this.reset();
      for (const vip of snapshot().stats.vips) for (const b of vip.backends) this.set({ vip: vip.vip, backend: b.address }, b.share);
    },
  });
  new Gauge({
    name: 'lbctl_backend_state',
    help: 'The backend is in this state (1) or not (0): active (in the table), draining, down (failed its check), unresolved (no path)',
    labelNames: ['vip', 'backend', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const vip of snapshot().stats.vips) {
        for (const b of vip.backends)
          for (const state of BACKEND_STATES) this.set({ vip: vip.vip, backend: b.address, state }, b.state === state ? 1 : 0);
      }
    },
  });
  new Gauge({
    name: 'lbctl_backend_health',
    help: "The backend's health check is in this state (1) or not (0)",
    labelNames: ['vip', 'backend', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const vip of snapshot().stats.vips) {
        for (const b of vip.backends) {
          if (b.health === null) continue;
          for (const state of HEALTH_STATES) this.set({ vip: vip.vip, backend: b.address, state }, b.health === state ? 1 : 0);
        }
      }
    },
  });
  new Counter({
    name: 'lbctl_packets_not_balanced_total',
    help: 'Packets the data plane did not balance, by reason and what happened to them (passed, dropped, answered, forwarded)',
    labelNames: ['reason', 'fate'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of snapshot().stats.reasons) this.inc({ reason: r.reason, fate: r.fate }, Number(r.packets));
    },
  });
  new Counter({
    name: 'lbctl_health_transitions_total',
    help: 'Backends that went up or down',
    labelNames: ['to'],
    registers: [registry],
    collect() {
      this.reset();
      const { up, down } = snapshot().stats.daemon.healthTransitions;
      this.inc({ to: 'up' }, up);
      this.inc({ to: 'down' }, down);
    },
  });
  for (const [name, field, help] of [
    [
      'lbctl_log_lines_dropped_total',
      'logLinesDropped',
      'Log lines dropped because the log destination did not take them (full disk, stalled reader)',
    ],
    [
      'lbctl_health_probes_without_verdict_total',
      'healthProbesWithoutVerdict',
      'Health probes the balancer could not run for want of its own resources (file descriptors, memory, ports): backends kept their state',
    ],
    ['lbctl_api_connections_refused_total', 'apiConnectionsRefused', 'API connections closed at once because the most allowed were open'],
  ] as const) {
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(snapshot().stats.daemon[field]);
      },
    });
  }
  new Gauge({
    name: 'lbctl_dataplane_attached',
    help: "1 while the daemon's program is what its interface runs; 0 when it was detached, replaced by another program, or the interface is gone",
    registers: [registry],
    collect() {
      this.set(snapshot().dataplane.state === 'attached' ? 1 : 0);
    },
  });
  new Counter({
    name: 'lbctl_maglev_tables_built_total',
    help: 'Maglev tables computed',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(snapshot().stats.daemon.tablesBuilt);
    },
  });
  new Counter({
    name: 'lbctl_maglev_tables_written_total',
    help: 'Maglev tables written to the data plane',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(snapshot().stats.daemon.tablesWritten);
    },
  });
  const reconcile = new Histogram({
    name: 'lbctl_reconcile_duration_seconds',
    help: 'Time to apply a desired state to the data plane',
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry],
  });
  new Gauge({
    name: 'lbctl_kill_switch_engaged',
    help: 'An operator engaged the kill-switch: the data plane passes VIP packets to the kernel',
    registers: [registry],
    collect() {
      this.set(snapshot().killSwitch.engaged ? 1 : 0);
    },
  });
  new Gauge({
    name: 'lbctl_kill_switch_remaining_seconds',
    help: 'Time until the data plane stops balancing unless the daemon confirms again (negative: tripped)',
    registers: [registry],
    collect() {
      this.set(snapshot().killSwitch.secondsLeft);
    },
  });
  new Gauge({
    name: 'lbctl_info',
    help: 'The running lbctl (always 1)',
    labelNames: ['version', 'interface', 'xdp_mode'],
    registers: [registry],
    collect() {
      this.reset();
      const { version, interface: iface, xdpMode } = snapshot().info;
      this.set({ version, interface: iface, xdp_mode: xdpMode }, 1);
    },
  });

  let scraping = Promise.resolve('');
  return {
    registry,
    // One scrape at a time: collect() reads the snapshot of its own scrape.
    scrape(next) {
      scraping = scraping
        .catch(() => '')
        .then(async () => {
          current = next;
          try {
            return await registry.metrics();
          } finally {
            current = undefined;
          }
        });
      return scraping;
    },
    observeReconcile: (seconds) => reconcile.observe(seconds),
  };
}
