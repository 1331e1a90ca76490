/** xdp_decap packet by packet, through BPF_PROG_TEST_RUN. */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { decapCounters, loadDecap } from '../src/dataplane/decap.js';
import { testRun } from '../src/dataplane/xdp.js';
import { MAC, ethernet, ipv4Frame, ipv4Header, parseEthernet } from './support/packets.js';

const ENDPOINT = '10.20.0.14';
const decap = loadDecap([ENDPOINT, '10.20.0.99']);
after(() => decap.close());

const inner = ipv4Frame({ src: '10.10.0.10', dst: '10.100.0.100', srcPort: 45000, dstPort: 80, payload: Buffer.from('GET / HTTP/1.1\r\n\r\n') }).subarray(14);

function tunnelled(outerDst: string, innerPacket: Buffer = inner): Buffer {
  const outer = ipv4Header({ src: '10.10.0.2', dst: outerDst, protocol: 4, payloadLength: innerPacket.length });
  return Buffer.concat([ethernet(MAC.backend1, MAC.router, 0x0800), outer, innerPacket]);
}

test('an IP-in-IP packet to this host comes out as the inner packet', () => {
  const before = decapCounters(decap);
  const { action, output } = testRun(decap.programFd, tunnelled(ENDPOINT));
  assert.equal(action, 'pass');
  const eth = parseEthernet(output);
  assert.equal(eth.dst, MAC.backend1);
  assert.equal(eth.src, MAC.router);
  assert.equal(eth.etherType, 0x0800);
  assert.deepEqual(eth.payload, inner);
  const afterCount = decapCounters(decap);
  assert.equal(afterCount.packets, before.packets + 1n);
  assert.equal(afterCount.bytes, before.bytes + BigInt(inner.length));
});

test('tunnelled packets to other hosts, other protocols and short frames are left alone', () => {
  const plain = ipv4Frame({ src: '10.10.0.10', dst: ENDPOINT, dstPort: 80 });
  const full = tunnelled(ENDPOINT);
  const frames = [tunnelled('10.20.0.15'), plain];
  for (let length = 14; length < 14 + 20 + 20; length++) frames.push(full.subarray(0, length));
  const notIpv4Inside = tunnelled(ENDPOINT, Buffer.concat([Buffer.from([0x60]), inner.subarray(1)]));
  frames.push(notIpv4Inside);
  for (const frame of frames) {
    const { action, output } = testRun(decap.programFd, frame);
    assert.equal(action, 'pass');
    assert.deepEqual(output, frame, `frame of ${frame.length} bytes is unchanged`);
  }
});
