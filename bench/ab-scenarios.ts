/** The scenarios bench/ab.ts runs and the frames of each, shared by the parent and its workers. */
import { ipv4Frame, ipv6Frame } from '../test/support/packets.js';

export interface AbScenario {
  readonly family: 4 | 6;
  /** A VIP (see AB_VIPS) or any other address. */
  readonly dst: string;
  readonly tcpFlags: number;
  /** Distinct flows, cycled through. */
  readonly count: number;
  /** First client index: fresh tuples for every run when the scenario needs untracked flows. */
  readonly base: number;
  readonly iterations: number;
  /** Send a SYN then an ACK of each flow first (untimed): the flows are tracked. */
  readonly establish?: boolean;
}

/** A flood of spoofed packets against established flows of the IPv4 ipip VIP (bench/flood.ts). */
export interface AbFlood {
  readonly established: number;
  readonly flood: number;
  readonly touchEvery: number;
  readonly tcpFlags: number;
}

export const AB_VIPS = {
  4: { l2dsr: '10.100.0.100', ipip: '10.100.0.101', other: '10.9.9.9' },
  6: { l2dsr: 'fd00:100::100', ipip: 'fd00:100::101', other: 'fd00:9::9' },
} as const;

/** Flow i: 2^20 client addresses, then the source port changes too. */
function flow(family: 4 | 6, i: number): { src: string; srcPort: number } {
  const c = i & 0xfffff;
  return {
    src:
      family === 4
        ? `172.${16 + (c >> 16)}.${(c >> 8) & 255}.${c & 255}`
        : `fd00:172:16::${(c >> 16).toString(16)}:${(c & 0xffff).toString(16)}`,
    srcPort: 1024 + ((i >>> 20) % 60000),
  };
}

export function abFrames(s: Pick<AbScenario, 'family' | 'dst' | 'tcpFlags' | 'count' | 'base'>, flags = s.tcpFlags): Buffer {
  const frames: Buffer[] = [];
  for (let i = 0; i < s.count; i++) {
    const spec = { ...flow(s.family, s.base + i), dst: s.dst, dstPort: 80, tcpFlags: flags };
    frames.push(s.family === 4 ? ipv4Frame(spec) : ipv6Frame(spec));
  }
  return Buffer.concat(frames);
}
