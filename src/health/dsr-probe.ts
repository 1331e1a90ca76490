/**
 * The DSR-path probe. The most common mistake with direct server return is
 * a backend without the VIP on its loopback: a check of the backend's own
 * address passes, but every packet the balancer forwards (addressed to the
 * VIP) is dropped. This probe sends a TCP SYN exactly as the data plane
 * delivers a client's: from the balancer's address to VIP:port, in a frame
 * addressed to the backend's MAC (l2dsr) or wrapped in an outer IPv4 header
 * to the backend and sent to the next hop (ipip). The backend answers the
 * balancer directly (SYN-ACK, or RST when it holds the VIP but nothing
 * listens); the balancer's kernel, which has no socket for it, resets the
 * half-open connection by itself.
 *
 * The frame goes out through native/lbctl_shim.c's lbctl_dsr_probe (an
 * AF_PACKET socket) on a libuv worker thread, which it occupies until the
 * answer or the timeout: at most MAX_CONCURRENT probes run at once so that
 * the pool keeps threads for file system and DNS work.
 */
import { randomInt } from 'node:crypto';
import { isIPv4 } from 'node:net';
import type { VipAddress } from '../model/address.js';
import { errnoText, native } from '../dataplane/libbpf.js';
import type { ProbeResult } from './probes.js';

export interface DsrProbeTarget {
  readonly vip: VipAddress;
  /** The port probed (the check's port, by default the VIP's). */
  readonly port: number;
  /** The backend's address. */
  readonly backend: string;
  readonly forward: 'l2dsr' | 'ipip';
  /** The balancer's interface towards the backend, its MAC, and the MAC of the backend (l2dsr) or of the next hop (ipip). */
  readonly ifindex: number;
  readonly srcMac: string;
  readonly dstMac: string;
  /** The balancer's address: the SYN's source (and the outer source for ipip: the tunnel source). */
  readonly source: string;
  readonly timeoutMs: number;
}

const ETH_P_IP = 0x0800;
const IPPROTO_IPIP = 4;
const IPPROTO_TCP = 6;
const TCP_SYN = 0x02;
const MSS = 1400;

/** Probes at once, each holding one of libuv's worker threads (4 by default) until it ends. */
export const MAX_CONCURRENT = Math.max(1, Math.floor((Number(process.env.UV_THREADPOOL_SIZE) || 4) / 2));

/** Resolves (never rejects) within about timeoutMs, plus any wait for a free slot. */
export async function dsrProbe(target: DsrProbeTarget): Promise<ProbeResult> {
  const { vip, port, backend, forward } = target;
  if (vip.family !== 4 || !isIPv4(vip.address) || !isIPv4(target.source) || (forward === 'ipip' && !isIPv4(backend))) {
    return { ok: false, reason: 'the DSR-path check supports IPv4 only' };
  }
  const sourcePort = randomInt(32768, 61000);
  let result: number;
  try {
    const frame = dsrProbeFrame(target, sourcePort, randomInt(0, 0x1_0000_0000));
    result = await withSlot(() => callNative(target.ifindex, frame, vip.address, port, target.source, sourcePort, target.timeoutMs));
  } catch (error) {
    return { ok: false, reason: `DSR probe failed: ${(error as Error).message}` };
  }
  switch (result) {
    case 1:
      return { ok: true };
    case 2:
      return { ok: false, reason: `backend ${backend} holds VIP ${vip.address} but nothing listens on port ${port}` };
    case 0:
      return {
        ok: false,
        reason: forward === 'l2dsr'
          ? `backend ${backend} does not accept traffic for VIP ${vip.address}: add it to lo`
          : `backend ${backend} does not accept tunnelled traffic for VIP ${vip.address}: add the VIP to lo and decapsulate IP-in-IP (lbctl decap attach)`,
      };
    default:
      return { ok: false, reason: `DSR probe failed: ${result < 0 ? errnoText(-result) : `unexpected result ${result}`}` };
  }
}

/**
 * The frame the data plane would forward for a client at `source`: Ethernet
 * to dstMac, (ipip: outer IPv4 source -> backend, protocol 4, DF), IPv4
 * source -> VIP, TCP SYN sourcePort -> port with an MSS option.
 */
export function dsrProbeFrame(target: DsrProbeTarget, sourcePort: number, sequence: number): Buffer {
  const tcp = Buffer.alloc(24);
  tcp.writeUInt16BE(sourcePort, 0);
  tcp.writeUInt16BE(target.port, 2);
  tcp.writeUInt32BE(sequence >>> 0, 4);
  tcp.writeUInt32BE(0, 8);
  tcp[12] = (tcp.length / 4) << 4;
  tcp[13] = TCP_SYN;
  tcp.writeUInt16BE(64240, 14);
  tcp[20] = 2; // MSS
  tcp[21] = 4;
  tcp.writeUInt16BE(MSS, 22);
  const pseudo = Buffer.alloc(12);
  ipv4Bytes(target.source).copy(pseudo, 0);
  ipv4Bytes(target.vip.address).copy(pseudo, 4);
  pseudo[9] = IPPROTO_TCP;
  pseudo.writeUInt16BE(tcp.length, 10);
  tcp.writeUInt16BE(internetChecksum(pseudo, tcp), 16);

  const inner = Buffer.concat([ipv4Header(target.source, target.vip.address, IPPROTO_TCP, tcp.length), tcp]);
  const packet = target.forward === 'ipip' ? Buffer.concat([ipv4Header(target.source, target.backend, IPPROTO_IPIP, inner.length), inner]) : inner;
  const ethernet = Buffer.alloc(14);
  macBytes(target.dstMac).copy(ethernet, 0);
  macBytes(target.srcMac).copy(ethernet, 6);
  ethernet.writeUInt16BE(ETH_P_IP, 12);
  return Buffer.concat([ethernet, packet]);
}

function ipv4Header(src: string, dst: string, protocol: number, payloadLength: number): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + payloadLength, 2);
  ip.writeUInt16BE(randomInt(0, 0x10000), 4);
  ip.writeUInt16BE(0x4000, 6); // DF
  ip[8] = 64;
  ip[9] = protocol;
  ipv4Bytes(src).copy(ip, 12);
  ipv4Bytes(dst).copy(ip, 16);
  ip.writeUInt16BE(internetChecksum(ip), 10);
  return ip;
}

/** RFC 1071. */
export function internetChecksum(...parts: Buffer[]): number {
  const bytes = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

function macBytes(mac: string): Buffer {
  const octets = mac.split(':');
  if (octets.length !== 6 || octets.some((o) => !/^[0-9a-f]{1,2}$/i.test(o))) throw new Error(`invalid MAC address "${mac}"`);
  return Buffer.from(octets.map((o) => parseInt(o, 16)));
}

/** The number whose in-memory bytes are `bytes` (network order in, as C sees a __be32/__be16). */
function asStored32(bytes: Buffer): number {
  return new Uint32Array(new Uint8Array(bytes).buffer)[0]!;
}

function asStored16(value: number): number {
  const bytes = Buffer.alloc(2);
  bytes.writeUInt16BE(value);
  return new Uint16Array(new Uint8Array(bytes).buffer)[0]!;
}

function callNative(ifindex: number, frame: Buffer, vip: string, port: number, source: string, sourcePort: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    // `frame` stays referenced by this closure until the call returns.
    native.dsrProbe.async(
      ifindex, frame, frame.length,
      asStored32(ipv4Bytes(vip)), asStored16(port),
      asStored32(ipv4Bytes(source)), asStored16(sourcePort),
      Math.max(1, Math.round(timeoutMs)),
      (error: unknown, result: number) => {
        void frame;
        if (error) reject(error instanceof Error ? error : new Error(String(error)));
        else resolve(result);
      },
    );
  });
}

let running = 0;
const waiting: (() => void)[] = [];

async function withSlot<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= MAX_CONCURRENT) await new Promise<void>((resolve) => waiting.push(resolve));
  else running++;
  try {
    return await fn();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else running--;
  }
}
