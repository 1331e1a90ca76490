/** src/model/check.ts: parsing, formatting, defaults, overrides and validation of health checks. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseVip } from '../../src/model/address.js';
import {
  type CheckSettings,
  defaultCheck,
  formatCheck,
  parseCheck,
  validateCheckSettings,
  withCheckOverrides,
} from '../../src/model/check.js';
import { InputError } from '../../src/model/errors.js';

const TCP_VIP = parseVip('10.0.0.100:80/tcp');
const UDP_VIP = parseVip('10.0.0.100:5000/udp');
const DNS_VIP = parseVip('10.0.0.100:53/udp');
const V6_VIP = parseVip('[2001:db8::10]:80/tcp');

/** Asserts an InputError whose one-line message matches. */
function rejects(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof InputError, `expected an InputError, got ${String(error)}`);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes('\n'), `one line: ${error.message}`);
    return true;
  });
}

describe('parseCheck and formatCheck', () => {
  test('every kind parses and formats back to the same text', () => {
    const cases: [string, object][] = [
      ['tcp', { kind: 'tcp' }],
      ['udp', { kind: 'udp' }],
      ['none', { kind: 'none' }],
      ['http:/', { kind: 'http', path: '/' }],
      ['http:/healthz', { kind: 'http', path: '/healthz' }],
      ['https:/status?full=1&x=%20y', { kind: 'https', path: '/status?full=1&x=%20y' }],
      ['dns:.', { kind: 'dns', name: '.' }],
      ['dns:example.com', { kind: 'dns', name: 'example.com' }],
      ['dns:_sip._udp.example.com.', { kind: 'dns', name: '_sip._udp.example.com.' }],
    ];
    for (const [text, spec] of cases) {
      assert.deepEqual(parseCheck(text), spec, text);
      assert.equal(formatCheck(parseCheck(text)), text);
      assert.deepEqual(parseCheck(formatCheck(spec as never)), spec);
    }
  });

  test('the kind is case-insensitive and surrounding blanks are ignored', () => {
    assert.deepEqual(parseCheck(' HTTP:/Up '), { kind: 'http', path: '/Up' });
    assert.deepEqual(parseCheck('Tcp'), { kind: 'tcp' });
  });

  test('invalid checks are InputErrors with a one-line reason', () => {
    rejects(() => parseCheck(''), /invalid check "": expected tcp, http:\/PATH/);
    rejects(() => parseCheck('icmp'), /invalid check "icmp": expected tcp, http:\/PATH, https:\/PATH, dns:NAME, udp or none/);
    rejects(() => parseCheck('http'), /http needs a path, e\.g\. http:\/healthz/);
    rejects(() => parseCheck('http:'), /http needs a path/);
    rejects(() => parseCheck('https:'), /https needs a path, e\.g\. https:\/healthz/);
    rejects(() => parseCheck('http:healthz'), /the path "healthz" must start with "\/"/);
    rejects(() => parseCheck('http:/a b'), /contains a space or a control character/);
    rejects(() => parseCheck('http:/a\u0001'), /contains a space or a control character/);
    rejects(() => parseCheck('http:/café'), /non-ASCII/);
    rejects(() => parseCheck(`http:/${'a'.repeat(1024)}`), /longer than 1024 characters/);
    rejects(() => parseCheck('dns'), /dns needs a query name/);
    rejects(() => parseCheck('dns:'), /dns needs a query name/);
    rejects(() => parseCheck('dns:exa mple.com'), /invalid DNS name "exa mple\.com"/);
    rejects(() => parseCheck('dns:a..b'), /empty label/);
    rejects(() => parseCheck('dns:..'), /empty label/);
    rejects(() => parseCheck(`dns:${'a'.repeat(64)}.com`), /a label is longer than 63 characters/);
    rejects(() => parseCheck(`dns:${Array(64).fill('abcd').join('.')}`), /1 to 253 characters/);
    rejects(() => parseCheck('dns:-bad.example'), /not starting or ending with "-"/);
    rejects(() => parseCheck('tcp:80'), /tcp takes no argument/);
    rejects(() => parseCheck('none:'), /none takes no argument/);
    rejects(() => parseCheck('udp:x'), /udp takes no argument/);
  });
});

describe('defaultCheck', () => {
  const timings = { intervalMs: 2000, timeoutMs: 1000, rise: 2, fall: 3 };

  test('a TCP VIP gets a TCP connect and, by default, the DSR-path check (the most common DSR mistake is a backend without the VIP on lo)', () => {
    assert.deepEqual(defaultCheck(TCP_VIP), { spec: { kind: 'tcp' }, ...timings, dsr: true });
    assert.deepEqual(defaultCheck(V6_VIP), { spec: { kind: 'tcp' }, ...timings, dsr: true });
  });

  test('a UDP VIP gets a UDP datagram, on port 53 a DNS query for the root, and no DSR-path check (it sends a TCP SYN)', () => {
    assert.deepEqual(defaultCheck(UDP_VIP), { spec: { kind: 'udp' }, ...timings, dsr: false });
    assert.deepEqual(defaultCheck(DNS_VIP), { spec: { kind: 'dns', name: '.' }, ...timings, dsr: false });
    assert.deepEqual(defaultCheck(parseVip('10.0.0.100:53/tcp')).spec, { kind: 'tcp' });
  });

  test('the defaults pass validation', () => {
    for (const vip of [TCP_VIP, UDP_VIP, DNS_VIP, V6_VIP]) assert.doesNotThrow(() => validateCheckSettings(defaultCheck(vip), vip));
  });
});

describe('withCheckOverrides', () => {
  const base: CheckSettings = { ...defaultCheck(TCP_VIP), spec: { kind: 'http', path: '/healthz' }, expectStatus: 204 };

  test("undefined fields keep the VIP's values, given ones replace them", () => {
    assert.deepEqual(withCheckOverrides(base, {}), base);
    assert.deepEqual(withCheckOverrides(base, { intervalMs: undefined, rise: 5 }), { ...base, rise: 5 });
    assert.deepEqual(withCheckOverrides(base, { port: 8080, dsr: true, fall: 1, timeoutMs: 500, intervalMs: 700 }), {
      ...base,
      port: 8080,
      dsr: true,
      fall: 1,
      timeoutMs: 500,
      intervalMs: 700,
    });
    assert.deepEqual(withCheckOverrides(base, { spec: { kind: 'https', path: '/up' } }), { ...base, spec: { kind: 'https', path: '/up' } });
  });

  test('does not modify its arguments', () => {
    const copy = structuredClone(base);
    const overrides = { rise: 9 };
    withCheckOverrides(base, overrides);
    assert.deepEqual(base, copy);
    assert.deepEqual(overrides, { rise: 9 });
  });

  test("leaving http(s) drops the VIP's expected status unless the override sets one", () => {
    const tcp = withCheckOverrides(base, { spec: { kind: 'tcp' } });
    assert.equal('expectStatus' in tcp, false);
    assert.doesNotThrow(() => validateCheckSettings(tcp, TCP_VIP));
    assert.equal(withCheckOverrides(base, { spec: { kind: 'tcp' }, expectStatus: 200 }).expectStatus, 200);
    assert.equal(withCheckOverrides(base, { spec: { kind: 'https', path: '/' } }).expectStatus, 204);
  });
});

describe('validateCheckSettings', () => {
  const tcp = defaultCheck(TCP_VIP);
  const udp = defaultCheck(UDP_VIP);
  const valid = (s: Partial<CheckSettings>, vip = TCP_VIP) => validateCheckSettings({ ...(vip.protocol === 'tcp' ? tcp : udp), ...s }, vip);

  test('returns valid settings unchanged, at every limit', () => {
    const settings = { ...tcp, spec: { kind: 'http', path: '/' }, port: 8080, expectStatus: 200, dsr: true } as const;
    assert.equal(validateCheckSettings(settings, TCP_VIP), settings);
    for (const s of [
      { intervalMs: 100, timeoutMs: 10 },
      { intervalMs: 100, timeoutMs: 100 },
      { intervalMs: 3_600_000, timeoutMs: 3_600_000 },
      { rise: 1, fall: 1 },
      { rise: 100, fall: 100 },
      { port: 1 },
      { port: 65535 },
      { spec: { kind: 'http' as const, path: '/' }, expectStatus: 100 },
      { spec: { kind: 'https' as const, path: '/' }, expectStatus: 599 },
      { spec: { kind: 'none' as const } },
    ]) {
      assert.doesNotThrow(() => valid(s), JSON.stringify(s));
    }
    assert.doesNotThrow(() => valid({ spec: { kind: 'none' } }, UDP_VIP));
    assert.doesNotThrow(() => valid({ spec: { kind: 'dns', name: 'example.org' } }, UDP_VIP));
  });

  test('interval: a whole number of milliseconds from 100ms to 1h', () => {
    rejects(
      () => valid({ intervalMs: 99, timeoutMs: 10 }),
      /invalid check interval "99ms" for 10\.0\.0\.100:80\/tcp: must be a whole number of milliseconds from 100ms to 1h/,
    );
    rejects(() => valid({ intervalMs: 3_600_001 }), /invalid check interval .* from 100ms to 1h/);
    rejects(() => valid({ intervalMs: 150.5, timeoutMs: 10 }), /invalid check interval/);
    rejects(() => valid({ intervalMs: NaN }), /invalid check interval "NaN"/);
  });

  test('timeout: from 10ms to the interval', () => {
    rejects(() => valid({ timeoutMs: 9 }), /invalid check timeout "9ms" for 10\.0\.0\.100:80\/tcp: .* from 10ms to the interval \(2s\)/);
    rejects(() => valid({ timeoutMs: 2001 }), /invalid check timeout "2\.001s" .* to the interval \(2s\)/);
    rejects(() => valid({ timeoutMs: 0 }), /invalid check timeout "0"/);
    rejects(() => valid({ timeoutMs: 10.5 }), /invalid check timeout/);
  });

  test('rise and fall: integers from 1 to 100', () => {
    for (const field of ['rise', 'fall'] as const) {
      for (const bad of [0, 101, 1.5, -1]) {
        rejects(() => valid({ [field]: bad }), new RegExp(`invalid check ${field} "${bad}" for .*: must be an integer from 1 to 100`));
      }
    }
  });

  test('port: 1 to 65535', () => {
    for (const bad of [0, 65536, 80.5])
      rejects(() => valid({ port: bad }), new RegExp(`invalid check port "${bad}" .*: must be from 1 to 65535`));
  });

  test('expected status: 100 to 599, http(s) checks only', () => {
    const http = { spec: { kind: 'http' as const, path: '/' } };
    for (const bad of [99, 600, 200.5])
      rejects(() => valid({ ...http, expectStatus: bad }), new RegExp(`invalid expected HTTP status "${bad}" .*: must be from 100 to 599`));
    rejects(() => valid({ expectStatus: 200 }), /an expected HTTP status needs an http or https check, not tcp/);
  });

  test("the kind must fit the VIP's protocol", () => {
    for (const spec of [{ kind: 'tcp' }, { kind: 'http', path: '/' }, { kind: 'https', path: '/' }] as const) {
      rejects(() => valid({ spec }, UDP_VIP), new RegExp(`a ${spec.kind} check needs a TCP VIP \\(use dns, udp or none\\)`));
    }
    for (const spec of [{ kind: 'udp' }, { kind: 'dns', name: '.' }] as const) {
      rejects(() => valid({ spec }, TCP_VIP), new RegExp(`a ${spec.kind} check needs a UDP VIP \\(use tcp, http, https or none\\)`));
    }
  });

  test('specs built without parseCheck are checked too', () => {
    rejects(() => valid({ spec: { kind: 'http' } }), /http needs a path/);
    rejects(() => valid({ spec: { kind: 'https', path: 'x' } }), /must start with "\/"/);
    rejects(() => valid({ spec: { kind: 'dns' } }, UDP_VIP), /dns needs a query name/);
    rejects(() => valid({ spec: { kind: 'dns', name: 'a..b' } }, UDP_VIP), /invalid DNS name/);
    rejects(() => valid({ spec: { kind: 'ping' as never } }), /unknown kind "ping"/);
  });

  test('dsr: TCP VIPs only, of either family, a boolean', () => {
    rejects(() => valid({ dsr: true }, UDP_VIP), /the DSR-path check sends a TCP SYN, it needs a TCP VIP/);
    rejects(() => valid({ dsr: 'yes' as never }), /dsr must be true or false/);
    assert.doesNotThrow(() => valid({ dsr: true }, V6_VIP));
    assert.doesNotThrow(() => valid({ dsr: false }, V6_VIP));
  });
});
