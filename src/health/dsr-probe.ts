/**
 * The DSR-path probe. The most common mistake with direct server return is
 * a backend without the VIP on its loopback: a check of the backend's own
 * address passes, but every packet the balancer forwards (addressed to the
 * VIP) is dropped. This probe sends a TCP SYN exactly as the data plane
 * delivers a client's: from the balancer's address to VIP:port, in a frame
 * addressed to the backend's MAC (l2dsr) or wrapped in an outer header of
 * the backend's family to the backend and sent to the next hop (ipip:
 * 4-in-4, 6-in-6, 4-in-6, 6-in-4). The backend answers the balancer
 * directly, in the VIP's family (SYN-ACK, or RST when it holds the VIP but
 * nothing listens); the balancer's kernel, which has no socket for it,
 * resets the half-open connection by itself.
 *
 * The frame goes out through native/dsr_probe.c's lbctl_dsr_probe (an
 * AF_PACKET socket; in build/native/liblbctl.so) on a libuv worker thread,
 * which it occupies until the answer or the timeout: at most
 * MAX_CONCURRENT probes run at once so that the pool keeps threads for file
 * system and DNS work.
 */
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import koffi, { type KoffiFunction } from 'koffi';
import { addressBytes, type Family, type VipAddress } from '../model/address.js';
import { errnoText } from '../dataplane/libbpf.js';
import { NATIVE_SHIM } from '../paths.js';
import type { ProbeResult } from './probes.js';

/** How the probe reaches a backend: what the data plane's forwarding path gives it. */
export interface DsrPath {
  readonly forward: 'l2dsr' | 'ipip';
  /** The balancer's interface towards the backend, its MAC, and the MAC of the backend (l2dsr) or of the next hop (ipip). */
  readonly ifindex: number;
  readonly srcMac: string;
  readonly dstMac: string;
  /** The balancer's address of the VIP's family: the SYN's source, where the backend answers. None: the balancer has no such address. */
  readonly source?: string;
  /** ipip: the outer source (the tunnel source), of the backend's family. */
  readonly tunnelSource?: string;
}

export interface DsrProbeTarget extends DsrPath {
  readonly vip: VipAddress;
  /** The port probed (the check's port, by default the VIP's). */
  readonly port: number;
  /** The backend's address. */
  readonly backend: string;
  readonly timeoutMs: number;
}

const ETHERTYPE: Record<Family, number> = { 4: 0x0800, 6: 0x86dd };
/** The outer header's protocol (IPv4) or next header (IPv6): what the packet it wraps is. */
const IPPROTO_OF_INNER: Record<Family, number> = { 4: 4, 6: 41 };
const IPPROTO_TCP = 6;
const IPV4_DF = 0x4000;
/** As the data plane's outer headers (bpf/lib/forward.h ENCAP_TTL), and Linux's default. */
const HOP_LIMIT = 64;
const TCP_SYN = 0x02;
const MSS = 1400;

/** The balancer's own resources ran out (EAGAIN, ENOMEM, ENFILE, EMFILE, EADDRNOTAVAIL, ENOBUFS): no verdict on the backend. */
const LOCAL_ERRNOS = new Set([11, 12, 23, 24, 99, 105]);

/** Probes at once, each holding one of libuv's worker threads (4 by default) until it ends. */
export const MAX_CONCURRENT = Math.max(1, Math.floor((Number(process.env.UV_THREADPOOL_SIZE) || 4) / 2));

/** Resolves (never rejects) within about timeoutMs, plus any wait for a free slot. */
export async function dsrProbe(target: DsrProbeTarget): Promise<ProbeResult> {
  const { vip, port, backend, forward, source } = target;
  if (source === undefined) {
    // Nothing to send from: a SYN from any other address would not be answered to us.
    return { ok: false, reason: `the balancer has no IPv${vip.family} address to send the DSR-path check to VIP ${vip.address} from` };
  }
  const sourcePort = randomInt(32768, 61000);
  let result: number;
  try {
    const frame = dsrProbeFrame(target, sourcePort, randomInt(0, 0x1_0000_0000));
    result = await withSlot(() => callNative(target.ifindex, frame, vip, port, source, sourcePort, target.timeoutMs));
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
        reason:
          forward === 'l2dsr'
            ? `backend ${backend} does not accept traffic for VIP ${vip.address}: add it to lo`
            : `backend ${backend} does not accept tunnelled traffic for VIP ${vip.address}: add the VIP to lo and decapsulate IP-in-IP (lbctl decap attach)`,
      };
    default:
      if (LOCAL_ERRNOS.has(-result))
        return { ok: false, reason: `the balancer could not send the DSR probe: ${errnoText(-result)}`, local: true };
      return { ok: false, reason: `DSR probe failed: ${result < 0 ? errnoText(-result) : `unexpected result ${result}`}` };
  }
}

/**
 * The frame the data plane would forward for a client at `source`:
 * Ethernet to dstMac, (ipip: an outer IPv4 or IPv6 header, of the
 * backend's family, tunnelSource -> backend), IP of the VIP's family
 * source -> VIP, TCP SYN sourcePort -> port with an MSS option. Throws on
 * an address of the wrong family.
 */
export function dsrProbeFrame(target: DsrProbeTarget, sourcePort: number, sequence: number): Buffer {
  const { vip, forward } = target;
  const source = ipAddress(vip.family, target.source, 'source');
  const destination = ipAddress(vip.family, vip.address, 'VIP');
  const segment = tcpSyn(vip.family, source, destination, sourcePort, target.port, sequence);
  let packet = ipPacket(vip.family, source, destination, IPPROTO_TCP, segment);
  let family = vip.family;
  if (forward === 'ipip') {
    family = familyOf(target.backend, 'backend');
    packet = ipPacket(
      family,
      ipAddress(family, target.tunnelSource, 'tunnel source'),
      ipAddress(family, target.backend, 'backend'),
      IPPROTO_OF_INNER[vip.family],
      packet,
    );
  }
  const ethernet = Buffer.alloc(14);
  macBytes(target.dstMac).copy(ethernet, 0);
  macBytes(target.srcMac).copy(ethernet, 6);
  ethernet.writeUInt16BE(ETHERTYPE[family], 12);
  return Buffer.concat([ethernet, packet]);
}

function tcpSyn(family: Family, source: Buffer, destination: Buffer, sourcePort: number, port: number, sequence: number): Buffer {
  const tcp = Buffer.alloc(24);
  tcp.writeUInt16BE(sourcePort, 0);
  tcp.writeUInt16BE(port, 2);
  tcp.writeUInt32BE(sequence >>> 0, 4);
  tcp.writeUInt32BE(0, 8);
  tcp[12] = (tcp.length / 4) << 4;
  tcp[13] = TCP_SYN;
  tcp.writeUInt16BE(64240, 14);
  tcp[20] = 2; // MSS
  tcp[21] = 4;
  tcp.writeUInt16BE(MSS, 22);
  tcp.writeUInt16BE(internetChecksum(pseudoHeader(family, source, destination, IPPROTO_TCP, tcp.length), tcp), 16);
  return tcp;
}

/** What the TCP checksum covers besides the segment (RFC 793; RFC 8200 section 8.1). */
function pseudoHeader(family: Family, source: Buffer, destination: Buffer, protocol: number, length: number): Buffer {
  if (family === 4) {
    const pseudo = Buffer.alloc(12);
    source.copy(pseudo, 0);
    destination.copy(pseudo, 4);
    pseudo[9] = protocol;
    pseudo.writeUInt16BE(length, 10);
    return pseudo;
  }
  const pseudo = Buffer.alloc(40);
  source.copy(pseudo, 0);
  destination.copy(pseudo, 16);
  pseudo.writeUInt32BE(length, 32);
  pseudo[39] = protocol;
  return pseudo;
}

function ipPacket(family: Family, source: Buffer, destination: Buffer, protocol: number, payload: Buffer): Buffer {
  const header =
    family === 4 ? ipv4Header(source, destination, protocol, payload.length) : ipv6Header(source, destination, protocol, payload.length);
  return Buffer.concat([header, payload]);
}

/** DF set, as the data plane's outer header for an IPv6 packet and as Linux sends a SYN. */
function ipv4Header(source: Buffer, destination: Buffer, protocol: number, payloadLength: number): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + payloadLength, 2);
  ip.writeUInt16BE(randomInt(0, 0x10000), 4);
  ip.writeUInt16BE(IPV4_DF, 6);
  ip[8] = HOP_LIMIT;
  ip[9] = protocol;
  source.copy(ip, 12);
  destination.copy(ip, 16);
  ip.writeUInt16BE(internetChecksum(ip), 10);
  return ip;
}

/** Traffic class and flow label 0: the backend's answer does not depend on them. */
function ipv6Header(source: Buffer, destination: Buffer, nextHeader: number, payloadLength: number): Buffer {
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(payloadLength, 4);
  ip[6] = nextHeader;
  ip[7] = HOP_LIMIT;
  source.copy(ip, 8);
  destination.copy(ip, 24);
  return ip;
}

/** RFC 1071. */
function internetChecksum(...parts: Buffer[]): number {
  const bytes = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function familyOf(address: string, what: string): Family {
  const family = isIP(address);
  if (family === 0) throw new Error(`invalid ${what} address "${address}"`);
  return family as Family;
}

/** The address's bytes, network order; throws unless it is an address of `family`. */
function ipAddress(family: Family, address: string | undefined, what: string): Buffer {
  if (address === undefined || isIP(address) !== family) throw new Error(`${what} ${address ?? '(none)'} is not an IPv${family} address`);
  return addressBytes(family, address);
}

function macBytes(mac: string): Buffer {
  const octets = mac.split(':');
  if (octets.length !== 6 || octets.some((o) => !/^[0-9a-f]{1,2}$/i.test(o))) throw new Error(`invalid MAC address "${mac}"`);
  return Buffer.from(octets.map((o) => parseInt(o, 16)));
}

let nativeProbe: KoffiFunction | undefined;

/** Bound on first use. Returns SYN-ACK (1) or RST (2) of vip:port to source:port, of the VIP's family (4 or 6; addresses 4 or 16 bytes, network order; ports host order); 0 timeout, -errno. */
function lbctlDsrProbe(): KoffiFunction {
  nativeProbe ??= koffi
    .load(NATIVE_SHIM)
    .func(
      'int lbctl_dsr_probe(int ifindex, const void *frame, uint32_t len, int family, const void *vip, uint16_t vip_port, const void *source, uint16_t source_port, uint32_t timeout_ms)',
    );
  return nativeProbe;
}

function callNative(
  ifindex: number,
  frame: Buffer,
  vip: VipAddress,
  port: number,
  source: string,
  sourcePort: number,
  timeoutMs: number,
): Promise<number> {
  const vipBytes = addressBytes(vip.family, vip.address);
  const sourceBytes = addressBytes(vip.family, source);
  return new Promise((resolve, reject) => {
    // The buffers stay referenced by this closure until the call returns.
    lbctlDsrProbe().async(
      ifindex,
      frame,
      frame.length,
      vip.family,
      vipBytes,
      port,
      sourceBytes,
      sourcePort,
      Math.max(1, Math.round(timeoutMs)),
      (error: unknown, result: number) => {
        void [frame, vipBytes, sourceBytes];
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
