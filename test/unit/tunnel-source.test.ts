/** Outer sources of IP-in-IP as operators write them (tunnel_source, --tunnel-source): one address, or a range ADDRESS/LEN. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseTunnelSource, parseTunnelSources, tunnelSourceOf } from '../../src/model/address.js';
import { InputError } from '../../src/model/errors.js';

function refuses(text: string | string[], message: string): void {
  assert.throws(
    () => parseTunnelSources(typeof text === 'string' ? [text] : text),
    (e: unknown) => e instanceof InputError && e.message === message,
    String(text),
  );
}

test('a plain address is one source, as before; a prefix is a range starting at its first address', () => {
  assert.deepEqual(parseTunnelSource('10.10.0.2'), { family: 4, address: '10.10.0.2', hostBits: 0 });
  assert.deepEqual(parseTunnelSource('10.10.0.128/26'), { family: 4, address: '10.10.0.128', hostBits: 6 });
  assert.deepEqual(parseTunnelSource('10.20.0.0/16'), { family: 4, address: '10.20.0.0', hostBits: 16 });
  assert.deepEqual(parseTunnelSource('2001:DB8:0::7:0/112'), { family: 6, address: '2001:db8::7:0', hostBits: 16 });
  assert.deepEqual(parseTunnelSource('2001:db8:10::/96'), { family: 6, address: '2001:db8:10::', hostBits: 32 });
});

test('sources get one canonical text, IPv4 first: a /32 or /128 is its one address', () => {
  assert.deepEqual(parseTunnelSources(['2001:db8::8:0/112', '10.10.0.128/26']), ['10.10.0.128/26', '2001:db8::8:0/112']);
  assert.deepEqual(parseTunnelSources(['10.10.0.2/32', '2001:db8::2/128']), ['10.10.0.2', '2001:db8::2']);
  assert.deepEqual(parseTunnelSources(['10.10.0.2']), ['10.10.0.2']);
  assert.deepEqual(tunnelSourceOf(['10.10.0.128/26', '2001:db8::2'], 6), { family: 6, address: '2001:db8::2', hostBits: 0 });
  assert.equal(tunnelSourceOf(['10.10.0.128/26'], 6), undefined);
});

test('an address that is not the first of its range is refused, naming the range meant', () => {
  refuses(
    '10.10.0.65/28',
    'invalid tunnel source "10.10.0.65/28": 10.10.0.65 is not the first address of its /28; the range is 10.10.0.64/28',
  );
  refuses('10.20.3.4/16', 'invalid tunnel source "10.20.3.4/16": 10.20.3.4 is not the first address of its /16; the range is 10.20.0.0/16');
  refuses(
    '2001:db8::7:1/112',
    'invalid tunnel source "2001:db8::7:1/112": 2001:db8::7:1 is not the first address of its /112; the range is 2001:db8::7:0/112',
  );
});

test('prefix lengths: IPv4 16 to 32, IPv6 96 to 128 (the data plane spreads over the last 32 bits)', () => {
  refuses(
    '10.0.0.0/15',
    'invalid tunnel source "10.0.0.0/15": an IPv4 range has a prefix length from 16 to 32 (at most 65536 outer sources)',
  );
  refuses(
    '2001:db8::/95',
    'invalid tunnel source "2001:db8::/95": an IPv6 range has a prefix length from 96 to 128 (the data plane spreads flows over the last 32 bits)',
  );
  for (const text of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/abc', '10.0.0.0/24/1', '10.0.0.0/-1']) {
    refuses(text, `invalid tunnel source "${text}": expected ADDRESS or ADDRESS/LEN with LEN from 16 to 32`);
  }
  refuses('2001:db8::/129', 'invalid tunnel source "2001:db8::/129": expected ADDRESS or ADDRESS/LEN with LEN from 96 to 128');
  refuses('10.0.0/24', 'invalid tunnel source "10.0.0": expected an IPv4 or IPv6 address');
});

test('a range holding an address no packet may come from is refused', () => {
  refuses('0.0.0.0/16', 'invalid tunnel source "0.0.0.0/16": the range holds the unspecified address');
  refuses('127.0.0.0/24', 'invalid tunnel source "127.0.0.0/24": the range holds a loopback address');
  refuses('224.0.0.0/24', 'invalid tunnel source "224.0.0.0/24": the range holds a multicast address');
  refuses('255.255.0.0/16', 'invalid tunnel source "255.255.0.0/16": the range holds the broadcast address');
  refuses('::/96', 'invalid tunnel source "::/96": the range holds the unspecified address');
});

test('one source per family, a range counting as one', () => {
  refuses(['10.10.0.2', '10.10.0.128/26'], 'more than one IPv4 tunnel source: give at most one per family');
  refuses(['2001:db8::/112', '2001:db8::1:0/112'], 'more than one IPv6 tunnel source: give at most one per family');
});
