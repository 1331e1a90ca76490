/** Frames of many distinct flows, built fast (bench/dataplane-cost.ts, bench/ab.ts). */
import { ipv4Frame, ipv6Frame } from '../test/support/packets.js';

/** One's-complement sum of big-endian 16-bit words. */
function sum16(buf: Buffer, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end; i += 2) sum += buf.readUInt16BE(i);
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * Many distinct flows fast: copies of one frame whose client address (the
 * last 32 bits of it) is `base + i` and whose source port changes every 2^23
 * flows (IPv4 clients come from 10.128.0.0/9); the IPv4 header checksum and
 * the TCP checksum are kept right by incremental update (RFC 1624).
 */
export function manyFlows(family: 4 | 6, dst: string, tcpFlags: number, base: number, count: number): Buffer {
  const template =
    family === 4
      ? ipv4Frame({ src: '10.128.0.0', dst, srcPort: 1024, dstPort: 80, tcpFlags })
      : ipv6Frame({ src: 'fd00:200::', dst, srcPort: 1024, dstPort: 80, tcpFlags });
  const length = template.length;
  const l4 = family === 4 ? 34 : 54;
  const srcLast = family === 4 ? 26 : 34; // the client address's last 32 bits
  const word = (offset: number) => template.readUInt16BE(offset);
  const complement = (w: number) => ~w & 0xffff;
  // IPv4 header: the sum of every word but the checksum and the changing address.
  const ipRest = sum16(template, 14, 34) - word(24) - word(srcLast) - word(srcLast + 2);
  // TCP: RFC 1624, HC' = ~(~HC + ~m + m') over the changing words (address in the pseudo-header, port).
  const tcpBase = complement(word(l4 + 16)) + complement(word(srcLast)) + complement(word(srcLast + 2)) + complement(word(l4));
  const flowsPerPort = family === 4 ? 0x800000 : 0x1_0000_0000;
  const out = Buffer.alloc(length * count);
  for (let i = 0; i < count; i++) {
    const at = i * length;
    template.copy(out, at);
    const n = base + i;
    const host = family === 4 ? (0x0a800000 | (n & 0x7fffff)) >>> 0 : n >>> 0;
    const port = 1024 + (Math.floor(n / flowsPerPort) % 60000);
    out.writeUInt32BE(host, at + srcLast);
    out.writeUInt16BE(port, at + l4);
    if (family === 4) out.writeUInt16BE(complement(fold(ipRest + (host >>> 16) + (host & 0xffff))), at + 24);
    out.writeUInt16BE(complement(fold(tcpBase + (host >>> 16) + (host & 0xffff) + port)), at + l4 + 16);
  }
  return out;
}
