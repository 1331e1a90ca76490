/** Addresses and VIPs as operators write them: one canonical spelling, zones and special addresses refused. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatVip, parseIpAddress, parseVip, parseVipHash } from '../../src/model/address.js';
import { vipSettings } from '../../src/model/desired-state.js';
import { InputError } from '../../src/model/errors.js';

test('addresses get one canonical spelling', () => {
  assert.deepEqual(parseIpAddress('2001:DB8:0:0::10'), { family: 6, address: '2001:db8::10' });
  assert.deepEqual(parseIpAddress('::ffff:10.77.0.11'), { family: 6, address: '::ffff:a4d:b' });
  assert.deepEqual(parseIpAddress('10.0.0.1'), { family: 4, address: '10.0.0.1' });
  assert.equal(formatVip(parseVip('[2001:db8:0::10]:443/TCP')), '[2001:db8::10]:443/tcp');
});

test('zone IDs are refused, never dropped or folded into another address', () => {
  for (const text of ['fe80::1%eth0', '::1.2.3.4%eth0', '::ffff:10.77.0.11%eth0', '2001:db8::10%2']) {
    assert.throws(
      () => parseIpAddress(text, 'backend address'),
      (e: unknown) => e instanceof InputError && e.message === `invalid backend address "${text}": zone IDs (%INTERFACE) are not accepted`,
      text,
    );
  }
  assert.throws(() => parseVip('[::1.2.3.4%eth0]:80/tcp'), /zone IDs/);
});

test('a VIP cannot be an unspecified, broadcast, multicast or loopback address', () => {
  const refused: Array<[string, string]> = [
    ['0.0.0.0:80/tcp', 'the unspecified address'],
    ['255.255.255.255:80/udp', 'the broadcast address'],
    ['224.0.0.5:80/udp', 'a multicast address'],
    ['239.255.255.250:1900/udp', 'a multicast address'],
    ['127.0.0.1:80/tcp', 'a loopback address'],
    ['127.1.2.3:80/tcp', 'a loopback address'],
    ['[::]:80/tcp', 'the unspecified address'],
    ['[::1]:80/tcp', 'the loopback address'],
    ['[ff02::1]:80/udp', 'a multicast address'],
    ['[::ffff:127.0.0.1]:80/tcp', 'a loopback address'],
  ];
  for (const [text, what] of refused) {
    assert.throws(
      () => parseVip(text),
      (e: unknown) => e instanceof InputError && e.message.endsWith(`is ${what}, not an address clients can be balanced to`),
      text,
    );
  }
  for (const text of ['10.0.0.100:80/tcp', '223.255.255.255:80/tcp', '240.0.0.1:80/tcp', '[2001:db8::10]:80/tcp', '[fd00::1]:53/udp']) {
    assert.equal(formatVip(parseVip(text)), text);
  }
});

test('port 0 is the VIP of all ports; it needs the port its backends are checked on', () => {
  const all = parseVip('10.100.0.100:0/tcp');
  assert.equal(all.port, 0);
  assert.equal(formatVip(parseVip('[2001:db8::10]:0/udp')), '[2001:db8::10]:0/udp');
  assert.throws(() => parseVip('10.100.0.100:65536/tcp'), /port must be from 1 to 65535, or 0 for all ports/);
  assert.throws(
    () => vipSettings(all, {}),
    /a VIP of all ports \(port 0\) needs the port to check: check_port in a config file, --check-port/,
  );
  assert.equal(vipSettings(all, { check: { port: 443 } }).check.port, 443);
  assert.equal(vipSettings(all, { check: { spec: { kind: 'none' } } }).check.spec.kind, 'none');
  assert.equal(vipSettings(parseVip('10.100.0.100:0/udp'), { check: { port: 53 } }).check.spec.kind, 'udp');
});

test('a VIP hashes the whole flow, or the source address alone', () => {
  assert.equal(parseVipHash('source'), 'source');
  assert.equal(parseVipHash('flow'), 'flow');
  assert.throws(
    () => parseVipHash('sh'),
    (e: unknown) => e instanceof InputError && /invalid hash "sh": expected flow .* or source/.test(e.message),
  );
  assert.equal(vipSettings(parseVip('10.100.0.100:80/tcp'), { hash: 'source' }).hash, 'source');
  assert.equal(vipSettings(parseVip('10.100.0.100:80/tcp'), { hash: 'flow' }).hash, undefined, 'the default is not stored');
});
