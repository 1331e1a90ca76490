import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, loadConfigFile, MAX_CONFIG_BYTES, parseConfig } from '../../src/model/config.js';
import { type DesiredState, vipSettings } from '../../src/model/desired-state.js';
import { ANNOUNCE_DEFAULTS } from '../../src/model/announce.js';

const FILE = '/etc/lbctl/config.yaml';

const FULL = `# lbctl configuration
interface: eth0
xdp_mode: generic
tunnel_source: [10.10.0.2, 2001:db8::2]
flow_table_size: 1048576
max_vips: 16
max_backends: 1024
vips:
  - vip: 10.100.0.100:80/tcp
    forward: l2dsr
    table_size: 65537
    backends:
      - address: 10.10.0.11
        weight: 6
      - address: 10.10.0.12
        weight: "3"
        forward: ipip
  - vip: 10.100.0.101:53/udp
    forward: ipip
    table_size: 251
  - vip: 10.100.0.102:443/TCP
    backends:
      - address: 10.10.0.13
`;

const FULL_STATE: DesiredState = {
  vips: [
    {
      vip: { family: 4, address: '10.100.0.100', port: 80, protocol: 'tcp' },
      ...vipSettings({ family: 4, address: '10.100.0.100', port: 80, protocol: 'tcp' }, { forward: 'l2dsr', tableSize: 65537 }),
      backends: [
        { address: '10.10.0.11', family: 4, weight: 6 },
        { address: '10.10.0.12', family: 4, weight: 3, forward: 'ipip' },
      ],
    },
    {
      vip: { family: 4, address: '10.100.0.101', port: 53, protocol: 'udp' },
      ...vipSettings({ family: 4, address: '10.100.0.101', port: 53, protocol: 'udp' }, { forward: 'ipip', tableSize: 251 }),
      backends: [],
    },
    {
      vip: { family: 4, address: '10.100.0.102', port: 443, protocol: 'tcp' },
      ...vipSettings({ family: 4, address: '10.100.0.102', port: 443, protocol: 'tcp' }, { forward: 'l2dsr', tableSize: 65537 }),
      backends: [{ address: '10.10.0.13', family: 4, weight: 1 }],
    },
  ],
};

describe('parseConfig: valid files', () => {
  test('a full example gives the settings and the desired state, in file order', () => {
    const config = parseConfig(FULL, FILE);
    assert.equal(config.path, FILE);
    assert.deepEqual(config.settings, {
      interface: 'eth0',
      xdpMode: 'generic',
      tunnelSources: ['10.10.0.2', '2001:db8::2'],
      flowTableSize: 1048576,
      maxVips: 16,
      maxBackends: 1024,
    });
    assert.deepEqual(config.state, FULL_STATE);
    assert.equal('forward' in config.state.vips[0]!.backends[0]!, false, 'forward is only set when the file sets it');
  });

  test('an empty file, or one with only comments, has no settings and no VIPs', () => {
    for (const text of ['', '\n\n', '# nothing yet\n  # really\n']) {
      assert.deepEqual(parseConfig(text, FILE), { settings: {}, state: { vips: [] }, path: FILE });
    }
  });

  test('an empty mapping and empty lists are fine', () => {
    assert.deepEqual(parseConfig('{}', FILE).state, { vips: [] });
    assert.deepEqual(parseConfig('vips: []\n', FILE).state, { vips: [] });
    assert.deepEqual(parseConfig('vips:\n  # - vip: 10.0.0.1:80/tcp\n', FILE).state, { vips: [] });
    assert.deepEqual(parseConfig('vips:\n  - vip: 10.0.0.1:80/tcp\n    backends:\n', FILE).state.vips[0]!.backends, []);
  });

  test('JSON is YAML', () => {
    const json = JSON.stringify(
      {
        interface: 'eth0',
        xdp_mode: 'generic',
        flow_table_size: 1048576,
        max_vips: 16,
        max_backends: 1024,
        vips: [
          {
            vip: '10.100.0.100:80/tcp',
            forward: 'l2dsr',
            table_size: 65537,
            backends: [
              { address: '10.10.0.11', weight: 6 },
              { address: '10.10.0.12', weight: '3', forward: 'ipip' },
            ],
          },
          { vip: '10.100.0.101:53/udp', forward: 'ipip', table_size: 251 },
          { vip: '10.100.0.102:443/TCP', backends: [{ address: '10.10.0.13' }] },
        ],
      },
      null,
      '\t',
    );
    const config = parseConfig(json, 'config.json');
    assert.deepEqual(config.state, FULL_STATE);
    assert.equal(config.settings.xdpMode, 'generic');
  });

  test('aliases are followed', () => {
    const text =
      'vips:\n  - vip: 10.0.0.1:80/tcp\n    backends: &pool\n      - address: 10.10.0.1\n  - vip: 10.0.0.1:81/tcp\n    backends: *pool\n';
    const config = parseConfig(text, FILE);
    assert.deepEqual(config.state.vips[1]!.backends, [{ address: '10.10.0.1', family: 4, weight: 1 }]);
  });
});

/** Asserts the whole one-line message and the structured fields of the error. */
function assertFails(text: string, line: number, column: number, field: string | undefined, reason: string): void {
  assert.throws(
    () => parseConfig(text, FILE),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
      const where = `${FILE}:${line}:${column}: ${field ? `${field}: ` : ''}`;
      assert.equal(error.message, where + reason);
      assert.deepEqual(
        { path: error.path, line: error.line, column: error.column, field: error.field, reason: error.reason },
        { path: FILE, line, column, field, reason },
      );
      assert.doesNotMatch(error.message, /\n/);
      return true;
    },
  );
}

const VIP = 'vips:\n  - vip: 10.0.0.1:80/tcp\n    backends:\n';

describe('parseConfig: errors name the file, line, column and field', () => {
  test('YAML syntax error', () => {
    assertFails(
      'vips:\n  - vip: [10.0.0.1\n',
      3,
      1,
      undefined,
      'YAML syntax error: Flow sequence in block collection must be sufficiently indented and end with a ]',
    );
    assertFails('interface: eth0\ninterface: eth1\n', 2, 1, undefined, 'YAML syntax error: Map keys must be unique');
    assertFails(
      'a: 1\n---\nb: 2\n',
      2,
      1,
      undefined,
      'YAML syntax error: Source contains multiple documents; please use YAML.parseAllDocuments()',
    );
  });

  test('the top level must be a mapping', () => {
    assertFails(
      '- vip: 10.0.0.1:80/tcp\n',
      1,
      1,
      undefined,
      'expected a mapping with fields interface, xdp_mode, tunnel_source, kill_switch_timeout, flow_table_size, max_vips, max_backends, metrics_address, log_level, announce, vips, got a sequence',
    );
    assertFails(
      'hello\n',
      1,
      1,
      undefined,
      'expected a mapping with fields interface, xdp_mode, tunnel_source, kill_switch_timeout, flow_table_size, max_vips, max_backends, metrics_address, log_level, announce, vips, got a string (is this an lbctl config file?)',
    );
  });

  test('an error never echoes the file it points to, nor more than a few dozen characters of a value', () => {
    const shadow = 'root:$y$j9T$Zp1Dd8.9Xx/secret-hash-value:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n';
    assert.throws(
      () => parseConfig(shadow, FILE),
      (e: Error) =>
        !e.message.includes('secret') &&
        !e.message.includes('root') &&
        /: a field that is not an lbctl setting \(expected interface, /.test(e.message),
    );
    assert.throws(
      () => parseConfig('root:x:0:0:root:/root:/bin/bash\n', FILE),
      (e: Error) => !e.message.includes('root') && /got a string/.test(e.message),
    );
    const long = `vips:\n  - vip: x${'9'.repeat(100_000)}\n`;
    assert.throws(
      () => parseConfig(long, FILE),
      (e: Error) =>
        e.message.length < 300 && /invalid VIP "x9{40,60}…" \(100001 characters\): expected ADDRESS:PORT\/PROTOCOL/.test(e.message),
    );
  });

  test('unknown fields', () => {
    assertFails(
      'interface: eth0\nvipz: []\n',
      2,
      1,
      undefined,
      'unknown field "vipz" (expected interface, xdp_mode, tunnel_source, kill_switch_timeout, flow_table_size, max_vips, max_backends, metrics_address, log_level, announce, vips)',
    );
    assertFails(
      'vips:\n  - vip: 10.0.0.1:80/tcp\n    tablesize: 251\n',
      3,
      5,
      'vips[0]',
      'unknown field "tablesize" (expected vip, forward, table_size, check, check_interval, check_timeout, rise, fall, check_dsr, check_port, check_status, on_all_down, need, hash, backends)',
    );
    assertFails(
      `${VIP}      - address: 10.10.0.1\n        wieght: 2\n`,
      5,
      9,
      'vips[0].backends[0]',
      'unknown field "wieght" (expected address, weight, forward, check, check_interval, check_timeout, rise, fall, check_dsr, check_port, check_status)',
    );
    assertFails('80: x\n', 1, 1, undefined, 'field names must be strings, got number 80');
  });

  test('bad VIP', () => {
    assertFails(
      'vips:\n  - vip: 10.0.0.1:80\n',
      2,
      10,
      'vips[0].vip',
      'invalid VIP "10.0.0.1:80": expected ADDRESS:PORT/PROTOCOL, e.g. 10.0.0.100:80/tcp or [2001:db8::10]:80/tcp',
    );
    assertFails('vips:\n  - vip: 10.0.0.1:80/sctp\n', 2, 10, 'vips[0].vip', 'invalid VIP "10.0.0.1:80/sctp": protocol must be tcp or udp');
    assertFails('vips:\n  - vip: 80\n', 2, 10, 'vips[0].vip', 'expected a string, got number 80');
    assertFails('vips:\n  - vip:\n', 2, 9, 'vips[0].vip', 'expected a string, got an empty value (null)');
  });

  test('vips and backends must be sequences of mappings', () => {
    assertFails('vips:\n  vip: 10.0.0.1:80/tcp\n', 2, 3, 'vips', 'expected a sequence (a list of "- " entries), got a mapping');
    assertFails(
      'vips:\n  - 10.0.0.1:80/tcp\n',
      2,
      5,
      'vips[0]',
      'expected a mapping with fields vip, forward, table_size, check, check_interval, check_timeout, rise, fall, check_dsr, check_port, check_status, on_all_down, need, hash, backends, got the string "10.0.0.1:80/tcp"',
    );
    assertFails(
      `${VIP}      10.10.0.1\n`,
      4,
      7,
      'vips[0].backends',
      'expected a sequence (a list of "- " entries), got the string "10.10.0.1"',
    );
  });

  test('bad weights', () => {
    const backend = (weight: string) => `${VIP}      - address: 10.10.0.1\n        weight: ${weight}\n`;
    assert.equal(parseConfig(backend('0'), FILE).state.vips[0]!.backends[0]!.weight, 0, 'weight 0 quiesces');
    assertFails(backend('1.5'), 5, 17, 'vips[0].backends[0].weight', 'invalid weight "1.5": must be an integer from 0 to 65535');
    assertFails(backend('"x"'), 5, 17, 'vips[0].backends[0].weight', 'invalid weight "x": must be an integer from 0 to 65535');
    assertFails(backend('65536'), 5, 17, 'vips[0].backends[0].weight', 'invalid weight "65536": must be an integer from 0 to 65535');
    assertFails(backend('true'), 5, 17, 'vips[0].backends[0].weight', 'expected an integer weight, got boolean true');
    assertFails(backend('~'), 5, 17, 'vips[0].backends[0].weight', 'expected an integer weight, got an empty value (null)');
  });

  test('duplicate VIP, pointing at the second one', () => {
    assertFails(
      'vips:\n  - vip: 10.0.0.1:80/tcp\n  - vip: 10.0.0.1:81/tcp\n  - vip: 10.0.0.1:80/TCP\n',
      4,
      10,
      'vips[2].vip',
      'duplicate VIP 10.0.0.1:80/tcp (first defined at vips[0].vip, line 2)',
    );
  });

  test('duplicate backend within a VIP, pointing at the second one', () => {
    assertFails(
      `${VIP}      - address: 10.10.0.1\n      - address: 10.10.0.2\n      - address: 10.10.0.1\n`,
      6,
      18,
      'vips[0].backends[2].address',
      'duplicate backend 10.10.0.1 (first defined at vips[0].backends[0].address, line 4)',
    );
    // The same backend in two VIPs is fine.
    const text =
      'vips:\n  - vip: 10.0.0.1:80/tcp\n    backends: [{address: 10.10.0.1}]\n  - vip: 10.0.0.1:443/tcp\n    backends: [{address: 10.10.0.1}]\n';
    assert.equal(parseConfig(text, FILE).state.vips.length, 2);
  });

  test('missing vip and missing address point at their mapping', () => {
    assertFails(
      'vips:\n  - vip: 10.0.0.1:80/tcp\n  - forward: ipip\n    table_size: 251\n',
      3,
      5,
      'vips[1]',
      'missing required field "vip"',
    );
    assertFails(`${VIP}      - address: 10.10.0.1\n      - weight: 2\n`, 5, 9, 'vips[0].backends[1]', 'missing required field "address"');
    assertFails(`${VIP}      - {}\n`, 4, 9, 'vips[0].backends[0]', 'missing required field "address"');
  });

  test('bad backend address', () => {
    assertFails(
      `${VIP}      - address: backend-1\n`,
      4,
      18,
      'vips[0].backends[0].address',
      'invalid backend address "backend-1": expected an IPv4 or IPv6 address',
    );
  });

  test('IPv6 VIPs, and backends of the other family through ipip only', () => {
    const v6 = parseConfig(
      'vips:\n  - vip: "[2001:DB8::10]:80/tcp"\n    backends:\n      - address: 2001:db8::11\n      - address: 10.0.0.12\n        forward: ipip\n',
      FILE,
    );
    assert.deepEqual(v6.state.vips[0]!.vip, { family: 6, address: '2001:db8::10', port: 80, protocol: 'tcp' });
    assert.deepEqual(
      v6.state.vips[0]!.backends.map((b) => [b.address, b.family]),
      [
        ['2001:db8::11', 6],
        ['10.0.0.12', 4],
      ],
    );
    assertFails(
      `${VIP}      - address: 2001:db8::1\n`,
      4,
      18,
      'vips[0].backends[0].address',
      'backend 2001:db8::1 is IPv6 but VIP 10.0.0.1:80/tcp is IPv4: only --forward ipip can cross address families',
    );
  });

  test('bad forwarding method', () => {
    assertFails(
      'vips:\n  - vip: 10.0.0.1:80/tcp\n    forward: gre\n',
      3,
      14,
      'vips[0].forward',
      'invalid forwarding method "gre": expected l2dsr or ipip',
    );
    assertFails(
      `${VIP}      - address: 10.10.0.1\n        forward: DSR\n`,
      5,
      18,
      'vips[0].backends[0].forward',
      'invalid forwarding method "DSR": expected l2dsr or ipip',
    );
  });

  test('bad table_size', () => {
    const vip = (size: string) => `vips:\n  - vip: 10.0.0.1:80/tcp\n    table_size: ${size}\n`;
    assertFails(
      vip('65536'),
      3,
      17,
      'vips[0].table_size',
      'invalid Maglev table size 65536: must be a prime from 251 to 1048573, e.g. 65537',
    );
    assertFails(vip('"65537"'), 3, 17, 'vips[0].table_size', 'expected an integer, got the string "65537"');
    assertFails(vip('65537.5'), 3, 17, 'vips[0].table_size', 'expected an integer, got number 65537.5');
  });

  test('bad settings', () => {
    assertFails('xdp_mode: offload\n', 1, 11, 'xdp_mode', 'invalid XDP mode "offload": expected native or generic');
    assertFails('xdp_mode: true\n', 1, 11, 'xdp_mode', 'expected a string, got boolean true');
    assertFails(
      'interface: eth0 eth1\n',
      1,
      12,
      'interface',
      'invalid interface name "eth0 eth1": expected a network interface name such as eth0',
    );
    assertFails('interface: [eth0]\n', 1, 12, 'interface', 'expected a string, got a sequence');
    assertFails('flow_table_size: 1000\n', 1, 18, 'flow_table_size', 'invalid value 1000: must be an integer from 1024 to 67108864');
    assertFails('max_vips: 0\n', 1, 11, 'max_vips', 'invalid value 0: must be an integer from 1 to 65536');
    assertFails('max_vips: abc\n', 1, 11, 'max_vips', 'expected an integer, got the string "abc"');
    assertFails('max_vips: null\n', 1, 11, 'max_vips', 'expected an integer, got an empty value (null)');
    assertFails('max_backends: 8\n', 1, 15, 'max_backends', 'invalid value 8: must be an integer from 16 to 1048576');
    assertFails('kill_switch_timeout: 500ms\n', 1, 22, 'kill_switch_timeout', 'invalid kill-switch timeout "500ms": must be from 1s to 1h');
    assertFails(
      'kill_switch_timeout: soon\n',
      1,
      22,
      'kill_switch_timeout',
      'invalid kill-switch timeout "soon": expected a number with a unit (ms, s, m, h, d), e.g. 500ms, 2s, 5m, 1h30m',
    );
    assert.equal(parseConfig('kill_switch_timeout: 45s\n', FILE).settings.killSwitchTimeoutMs, 45_000);
    assertFails(
      'kill_switch_timeout: 10\n',
      1,
      22,
      'kill_switch_timeout',
      'invalid kill-switch timeout "10": give a unit, e.g. 10s or 10ms (a bare number is ambiguous)',
    );
    assertFails('tunnel_source: 10.0.0\n', 1, 16, 'tunnel_source', 'invalid tunnel source "10.0.0": expected an IPv4 or IPv6 address');
    assertFails(
      'tunnel_source: [10.0.0.1, 10.0.0.2]\n',
      1,
      16,
      'tunnel_source',
      'more than one IPv4 tunnel source: give at most one per family',
    );
    assertFails(
      'tunnel_source: 10.10.0.65/28\n',
      1,
      16,
      'tunnel_source',
      'invalid tunnel source "10.10.0.65/28": 10.10.0.65 is not the first address of its /28; the range is 10.10.0.64/28',
    );
    assert.deepEqual(parseConfig('tunnel_source: [fd00:10::8:0/112, 10.10.0.128/26]\n', FILE).settings.tunnelSources, [
      '10.10.0.128/26',
      'fd00:10::8:0/112',
    ]);
  });

  test('metrics_address and log_level', () => {
    assert.deepEqual(parseConfig('metrics_address: 127.0.0.1:9640\nlog_level: debug\n', FILE).settings, {
      metricsAddress: '127.0.0.1:9640',
      logLevel: 'debug',
    });
    assert.equal(parseConfig("metrics_address: '[::1]:9640'\n", FILE).settings.metricsAddress, '[::1]:9640');
    for (const bad of ['127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', 'localhost:9640', '::1:9640']) {
      assert.throws(
        () => parseConfig(`metrics_address: '${bad}'\n`, FILE),
        (error: ConfigError) => {
          assert.match(error.message, /^\/etc\/lbctl\/config\.yaml:1:\d+: metrics_address: /);
          return true;
        },
        bad,
      );
    }
    assertFails('log_level: loud\n', 1, 12, 'log_level', 'invalid log level "loud": expected trace or debug or info or warn or error');
  });

  test('too many VIPs', () => {
    assertFails(
      'max_vips: 2\nvips:\n  - vip: 10.0.0.1:80/tcp\n  - vip: 10.0.0.2:80/tcp\n  - vip: 10.0.0.3:80/tcp\n',
      3,
      3,
      'vips',
      'too many VIPs: max_vips is 2',
    );
    const vips = Array.from({ length: 4097 }, (_, i) => `  - vip: 10.0.${i >> 8}.${i & 255}:80/tcp\n`).join('');
    assertFails(`vips:\n${vips}`, 2, 3, 'vips', 'too many VIPs: max_vips is 4096 (the default)');
  });

  test('too many backends: max_backends minus the reserved id 0', () => {
    const backends = (n: number) => Array.from({ length: n }, (_, i) => `      - address: 10.10.0.${i + 1}\n`).join('');
    assert.equal(parseConfig(`max_backends: 16\n${VIP}${backends(15)}`, FILE).state.vips[0]!.backends.length, 15);
    assertFails(
      `max_backends: 16\n${VIP}${backends(16)}`,
      3,
      3,
      'vips',
      'too many backends across all VIPs: max_backends 16 allows at most 15 (backend id 0 is reserved)',
    );
  });
});

describe('parseConfig: announce (a fleet node)', () => {
  const announceOf = (text: string) => parseConfig(text, FILE).settings.announce;

  test('off without the block; an empty block (or one with only comments) announces with the defaults', () => {
    assert.equal(announceOf('interface: eth0\n'), undefined);
    assert.deepEqual(announceOf('announce: {}\n'), ANNOUNCE_DEFAULTS);
    assert.deepEqual(announceOf('announce:\n  # table: 100\n'), ANNOUNCE_DEFAULTS);
    assert.deepEqual(ANNOUNCE_DEFAULTS, { table: 100, proto: 201, need: 1, holdDownMs: 5000, withdrawDelayMs: 1000 });
  });

  test("every field, durations with units (0 allowed), and a VIP's own need", () => {
    const config = parseConfig(
      'announce:\n  table: 4000\n  proto: 77\n  need: 2\n  hold_down: 1.5s\n  withdraw_delay: 0\nvips:\n  - vip: 10.0.0.1:80/tcp\n    need: 3\n  - vip: 10.0.0.2:80/tcp\n',
      FILE,
    );
    assert.deepEqual(config.settings.announce, { table: 4000, proto: 77, need: 2, holdDownMs: 1500, withdrawDelayMs: 0 });
    assert.equal(config.state.vips[0]!.need, 3);
    assert.equal(config.state.vips[1]!.need, undefined, "a VIP without its own need takes the announce block's");
    assert.equal(announceOf('announce:\n  hold_down: 0s\n')!.holdDownMs, 0);
  });

  test('bad values point at the field', () => {
    assertFails(
      'announce:\n  table: 254\n',
      2,
      10,
      'announce.table',
      "invalid announce table 254: a routing table number 1-4294967295 other than 253, 254, 255 (the kernel's)",
    );
    assertFails(
      'announce:\n  proto: 12\n',
      2,
      10,
      'announce.proto',
      'invalid announce proto 12: it is "bird"\'s (iproute2 rt_protos); pick an unused one such as 201',
    );
    assertFails(
      'announce:\n  need: 0\n',
      2,
      9,
      'announce.need',
      'invalid need 0: the fewest healthy backends to announce, an integer from 1 to 65535',
    );
    assertFails('announce:\n  need: two\n', 2, 9, 'announce.need', 'expected an integer, got the string "two"');
    assertFails(
      'announce:\n  hold_down: 5\n',
      2,
      14,
      'announce.hold_down',
      'invalid hold-down "5": give a unit, e.g. 5s or 5ms (a bare number is ambiguous)',
    );
    assertFails('announce:\n  withdraw_delay: 2m\n', 2, 19, 'announce.withdraw_delay', 'invalid withdraw delay "2m": at most 60 s');
    assertFails(
      'announce:\n  tabel: 100\n',
      2,
      3,
      'announce',
      'unknown field "tabel" (expected table, proto, need, hold_down, withdraw_delay)',
    );
    assertFails(
      'announce: true\n',
      1,
      11,
      'announce',
      'expected a mapping with fields table, proto, need, hold_down, withdraw_delay, got boolean true',
    );
    assertFails(
      'vips:\n  - vip: 10.0.0.1:80/tcp\n    need: -1\n',
      3,
      11,
      'vips[0].need',
      'invalid need -1: the fewest healthy backends to announce, an integer from 1 to 65535',
    );
  });
});

async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lbctl-config-'));
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('loadConfigFile', () => {
  test('reads and parses a file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lbctl-config-'));
    try {
      const path = join(dir, 'config.yaml');
      await writeFile(path, FULL);
      const config = await loadConfigFile(path);
      assert.equal(config.path, path);
      assert.deepEqual(config.state, FULL_STATE);
      await writeFile(path, 'vipz: []\n');
      await assert.rejects(loadConfigFile(path), {
        message: `${path}:1:1: unknown field "vipz" (expected interface, xdp_mode, tunnel_source, kill_switch_timeout, flow_table_size, max_vips, max_backends, metrics_address, log_level, announce, vips)`,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test(
    'only a regular file is read: a FIFO (which would wait for a writer forever) or a directory is refused',
    { timeout: 10_000 },
    async () => {
      await inTempDir(async (dir) => {
        const fifo = join(dir, 'config.fifo');
        execFileSync('mkfifo', [fifo]);
        await assert.rejects(loadConfigFile(fifo), { message: `cannot read config ${fifo}: it is a FIFO, not a regular file` });
        await assert.rejects(loadConfigFile(dir), { message: `cannot read config ${dir}: it is a directory, not a regular file` });
      });
    },
  );

  test('a file larger than MAX_CONFIG_BYTES is refused before it is parsed', async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, 'config.yaml');
      // Valid YAML (a comment) one byte over the limit.
      await writeFile(path, `#${' '.repeat(MAX_CONFIG_BYTES - 2)}\n\n`);
      await assert.rejects(loadConfigFile(path), {
        message: `config ${path} is larger than ${MAX_CONFIG_BYTES} bytes (4 MiB): refused`,
      });
      await writeFile(path, `#${' '.repeat(MAX_CONFIG_BYTES - 2)}\n`);
      assert.deepEqual((await loadConfigFile(path)).state, { vips: [] }, 'at the limit it is read');
    });
  });

  test('a file that names far more backends than allowed (aliases) is refused at the first one too many', { timeout: 15_000 }, async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, 'config.yaml');
      // 4000 VIPs sharing one list of 2000 backends: 8 million backends in 200 KB.
      const list = Array.from({ length: 2000 }, (_, i) => `  - address: 10.10.${i >> 8}.${i & 255}\n`).join('');
      const vips = Array.from({ length: 4000 }, (_, i) => `  - vip: 10.100.${i >> 8}.${i & 255}:80/tcp\n    backends: *all\n`).join('');
      await writeFile(path, `vips:\n  - vip: 10.99.0.1:80/tcp\n    backends: &all\n${list.replace(/^ {2}/gm, '      ')}${vips}`);
      await assert.rejects(loadConfigFile(path), {
        message: /^.*: vips: too many backends across all VIPs: max_backends 65536 \(the default\) allows at most 65535/,
      });
    });
  });

  test('parsing runs on a thread of its own: the event loop of the caller keeps running meanwhile', async () => {
    await inTempDir(async (dir) => {
      const path = join(dir, 'config.yaml');
      const backends = Array.from({ length: 100 }, (_, i) => `      - address: 10.10.0.${i + 1}\n`).join('');
      const vips = Array.from({ length: 400 }, (_, i) => `  - vip: 10.100.${i >> 8}.${i & 255}:80/tcp\n    backends:\n${backends}`).join(
        '',
      );
      await writeFile(path, `vips:\n${vips}`);
      // The longest pause between the ticks of a timer, compared with the whole load (side by side: no absolute time).
      let last = performance.now();
      let longest = 0;
      const timer = setInterval(() => {
        const now = performance.now();
        longest = Math.max(longest, now - last);
        last = now;
      }, 2);
      const started = performance.now();
      const config = await loadConfigFile(path);
      const total = performance.now() - started;
      clearInterval(timer);
      longest = Math.max(longest, performance.now() - last);
      assert.equal(config.state.vips.length, 400);
      assert.ok(longest < total / 2, `the event loop paused ${longest.toFixed(0)} ms of the ${total.toFixed(0)} ms the load took`);
    });
  });

  test('a missing file is a ConfigError naming the path', async () => {
    const path = join(tmpdir(), 'lbctl-no-such-dir', 'config.yaml');
    await assert.rejects(loadConfigFile(path), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `cannot read config ${path}: ENOENT: no such file or directory`);
      assert.equal(error.path, path);
      assert.equal(error.line, undefined);
      return true;
    });
  });
});
