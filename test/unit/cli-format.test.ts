/** What `lbctl status` says: trouble first and loud, normal operation calm. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ExplainResult, KillSwitchStatus, StatusResult } from '../../src/api/protocol.js';
import { formatExplain, formatKillSwitch, formatStatus } from '../../src/cli/format.js';

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

test('explain names the port of a VIP of all ports and what the slot was hashed from', () => {
  const result: ExplainResult = {
    vip: '10.100.0.101:0/tcp',
    client: '10.10.0.10:40000',
    port: 8443,
    backend: '10.10.0.11',
    decidedBy: 'tracked flow',
    tracked: { backend: '10.10.0.11', state: 'active', lastSeenSecondsAgo: 3, closing: false },
    table: { hashOf: 'source', hash: '0x0000abcd', slot: 7, tableSize: 251, owner: '10.10.0.12', ownerShare: 0.5 },
  };
  const text = formatExplain(result);
  assert.match(
    text,
    /^flow 10\.10\.0\.10:40000 -> 10\.100\.0\.101:0\/tcp \(port 8443\): goes to 10\.10\.0\.11, decided by the tracked flow/,
  );
  assert.match(text, /table: +hash of the client's address 0x0000abcd -> slot 7 of 251 -> 10\.10\.0\.12/);
  assert.match(text, /a new connection from this address \(a TCP SYN, any port\) would follow the table/);
  const own = formatExplain({ ...result, vip: '10.100.0.101:80/tcp', port: 80, table: { ...result.table, hashOf: 'flow' } });
  assert.match(own, /-> 10\.100\.0\.101:80\/tcp: goes to/);
  assert.match(own, /table: +hash 0x0000abcd/);
  assert.match(own, /from this address and port \(a TCP SYN\)/);
});
