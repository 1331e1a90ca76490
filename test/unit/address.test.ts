/** Addresses and VIPs as operators write them: one canonical spelling, zones and special addresses refused. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatVip, parseIpAddress, parseVip } from '../../src/model/address.js';
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
