/** `lbctl config export` and `config diff`: the running state as a config file, and what differs from the file. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { exportConfig } from '../../src/model/config-export.js';
import { parseConfig } from '../../src/model/config.js';
import { applyChanges, withChange } from '../../src/model/desired-state.js';
import { diffStates, formatDifference } from '../../src/model/state-diff.js';

const FILE = `interface: eth0
xdp_mode: generic
tunnel_source: [10.10.0.2, 2001:db8::2]
kill_switch_timeout: 1m30s
flow_table_size: 2048
max_vips: 16
max_backends: 1024
metrics_address: 127.0.0.1:9640
log_level: debug
vips:
  - vip: 10.100.0.100:80/tcp
    table_size: 251
    check: http:/healthz
    check_interval: 500ms
    check_timeout: 200ms
    check_status: 204
    on_all_down: drop
    backends:
      - address: 10.10.0.11
        weight: 6
      - address: 10.10.0.12
        weight: 0
        forward: ipip
        check: tcp
        check_port: 8080
        rise: 5
        check_dsr: false
  - vip: "[2001:db8::10]:53/udp"
    forward: ipip
    backends:
      - address: 10.10.0.21
  - vip: 10.100.0.101:443/tcp
    need: 2
    backends: []
  - vip: 10.100.0.102:0/tcp
    hash: source
    check_port: 443
    backends:
      - address: 10.10.0.41
`;

test('an exported config parses back to the same settings and state', () => {
  const { settings, state } = parseConfig(FILE, 'lbctl.yaml');
  const text = exportConfig(settings, state, 'lbctl config export\nfrom the running daemon');
  assert.match(text, /^# lbctl config export\n# from the running daemon\n/);
  const back = parseConfig(text, 'exported.yaml');
  assert.deepEqual(back.settings, settings);
  assert.deepEqual(back.state, state);
  assert.doesNotMatch(text, /weight: 1\n|forward: l2dsr|table_size: 65537|check_dsr: true|hash: flow/, 'defaults are not written');
  assert.match(text, /need: 2\n/);
  assert.match(text, /vip: 10\.100\.0\.102:0\/tcp\n +check_port: 443\n +hash: source\n/);
});

test('an outer source range is exported as it was written and parses back', () => {
  const { settings, state } = parseConfig('tunnel_source: [10.10.0.128/26, 2001:db8::8:0/112]\nvips: []\n', 'lbctl.yaml');
  const text = exportConfig(settings, state, 'export');
  assert.match(text, /^tunnel_source:\n {2}- 10\.10\.0\.128\/26\n {2}- 2001:db8::8:0\/112$/m);
  assert.deepEqual(parseConfig(text, 'exported.yaml').settings.tunnelSources, ['10.10.0.128/26', '2001:db8::8:0/112']);
});

test('runtime changes are folded in; a drain is noted, not written as config', () => {
  const { settings, state: config } = parseConfig(FILE, 'lbctl.yaml');
  let changes = withChange(
    config,
    { vips: {} },
    { op: 'backend.add', vip: '10.100.0.101:443/tcp', backend: { address: '10.10.0.31', family: 4, weight: 2 } },
  ).changes;
  changes = withChange(config, changes, {
    op: 'backend.set',
    vip: '10.100.0.100:80/tcp',
    address: '10.10.0.11',
    patch: { drain: { since: '2026-12-03T10:00:00.000Z', timeoutSeconds: 300, idleSeconds: 30 } },
  }).changes;
  const running = applyChanges(config, changes);
  const text = exportConfig(settings, running, 'export');
  assert.match(
    text,
    /# Drains in progress \(runtime only, not written below\):\n# {3}10\.100\.0\.100:80\/tcp 10\.10\.0\.11: draining since 2026-12-03T10:00:00\.000Z/,
  );
  const back = parseConfig(text, 'exported.yaml').state;
  assert.deepEqual(back.vips[2]!.backends, [{ address: '10.10.0.31', family: 4, weight: 2 }]);
  assert.equal(back.vips[0]!.backends[0]!.drain, undefined);
});

test('the differences between the file and the running state, one line each', () => {
  const { state: file } = parseConfig(FILE, 'lbctl.yaml');
  let changes = withChange(
    file,
    { vips: {} },
    { op: 'backend.set', vip: '10.100.0.100:80/tcp', address: '10.10.0.11', patch: { weight: 9 } },
  ).changes;
  changes = withChange(file, changes, { op: 'backend.remove', vip: '10.100.0.100:80/tcp', address: '10.10.0.12' }).changes;
  changes = withChange(file, changes, { op: 'vip.remove', vip: '10.100.0.101:443/tcp' }).changes;
  const running = applyChanges(file, changes);
  assert.deepEqual(diffStates(file, running).map(formatDifference), [
    '~ backend 10.100.0.100:80/tcp 10.10.0.11: weight 6 -> 9',
    '- backend 10.100.0.100:80/tcp 10.10.0.12: weight 0, forward ipip, check tcp port 8080 every 500ms timeout 200ms rise 5 fall 3',
    '- vip 10.100.0.101:443/tcp: forward l2dsr, table size 65537, check tcp every 2s timeout 1s rise 2 fall 3 +dsr, on all down keep, need 2, hash flow',
  ]);
  assert.deepEqual(diffStates(running, running), []);
  const edited = parseConfig(
    FILE.replace('table_size: 251', 'table_size: 257').replace('on_all_down: drop', 'on_all_down: keep'),
    'x',
  ).state;
  assert.deepEqual(diffStates(file, edited).map(formatDifference), [
    '~ vip 10.100.0.100:80/tcp: table size 251 -> 257, on all down drop -> keep',
  ]);
  const hashed = parseConfig(FILE.replace('    on_all_down: drop\n', '    on_all_down: drop\n    hash: source\n'), 'x').state;
  assert.deepEqual(diffStates(file, hashed).map(formatDifference), ['~ vip 10.100.0.100:80/tcp: hash flow -> source']);
});
