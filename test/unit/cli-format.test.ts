/** What `lbctl status` says: trouble first and loud, normal operation calm. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KillSwitchStatus, StatusResult } from '../../src/api/protocol.js';
import { formatKillSwitch, formatStatus } from '../../src/cli/format.js';

const READY: KillSwitchStatus = { engaged: false, engagedSince: null, timeoutMs: 30_000, secondsLeft: 29.7, passedPackets: 0 };

const STATUS: StatusResult = {
  pid: 42,
  version: '0.1.0',
  interface: 'eth0',
  ifindex: 2,
  xdpMode: 'native',
  programId: 17,
  dataplane: { state: 'attached', ifindex: 2, since: '2026-12-03T10:00:00.000Z', detail: 'xdp_balancer is attached' },
  netns: { inode: 4026531840, name: 'lb' },
  startedAt: '2026-12-03T10:00:00.000Z',
  socket: '/run/lbctl/lbctl.sock',
  stateDir: '/var/lib/lbctl',
  pinDir: '/sys/fs/bpf/lbctl/x/eth0',
  tunnelSources: ['10.10.0.2'],
  configPath: null,
  vips: 2,
  backends: 3,
  unresolvedBackends: 0,
  downBackends: [],
  vipsWithoutHealthyBackend: [],
  flowTableSize: 1_048_576,
  metricsAddress: null,
  killSwitch: READY,
  announce: null,
  startArgs: [],
};

test('in normal operation the kill-switch line is calm: no countdown, no zero counters', () => {
  assert.equal(formatKillSwitch(READY), 'ready: fails open if the daemon is silent for 30 s');
  assert.match(formatStatus(STATUS), /^kill-switch ready: fails open if the daemon is silent for 30 s$/m);
  assert.doesNotMatch(formatStatus(STATUS), /NOT|down|without/);
});

test('an engaged or tripped kill-switch, and a program not attached, are loud', () => {
  assert.match(
    formatKillSwitch({ ...READY, engaged: true, engagedSince: '2026-12-03T11:00:00.000Z', passedPackets: 1234 }),
    /^ENGAGED since .*: NOT BALANCING .*; 1\.2k VIP packets passed/,
  );
  assert.match(formatKillSwitch({ ...READY, secondsLeft: -12 }), /^TRIPPED 12 s ago \(the daemon was silent\): NOT BALANCING$/);
  const detached = formatStatus({
    ...STATUS,
    dataplane: { state: 'detached', ifindex: 2, since: STATUS.startedAt, detail: 'no XDP program on eth0' },
  });
  assert.match(detached, /^interface {2}eth0 .*: DETACHED: NOTHING IS BALANCED: no XDP program on eth0$/m);
});

test('the tunnel line shows an outer source range with its size', () => {
  assert.match(formatStatus(STATUS), /^tunnels {4}from 10\.10\.0\.2$/m);
  assert.match(
    formatStatus({ ...STATUS, tunnelSources: ['10.10.0.128/26', 'fd00:10::2'] }),
    /^tunnels {4}from 10\.10\.0\.128\/26 \(64 addresses, spread by flow\), fd00:10::2$/m,
  );
});

test('backends down and VIPs without a healthy backend are listed', () => {
  const text = formatStatus({
    ...STATUS,
    downBackends: [{ vip: '10.0.0.100:80/tcp', address: '10.0.0.12', since: '2026-12-03T10:05:00.000Z', reason: 'connection refused' }],
    vipsWithoutHealthyBackend: ['10.0.0.101:53/udp'],
  });
  assert.match(text, /^vips {7}2 with 3 backends, 1 down; 1 without a healthy backend$/m);
  assert.match(text, /^ {11}10\.0\.0\.101:53\/udp: no backend takes new flows$/m);
  assert.match(text, /^ {11}10\.0\.0\.100:80\/tcp 10\.0\.0\.12: down since 2026-12-03T10:05:00\.000Z: connection refused$/m);
});
