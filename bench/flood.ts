/** Established flows against a flood of spoofed packets (bench/dataplane-cost.ts, bench/ab.ts). */
import { TCP_FLAGS } from '../test/support/packets.js';
import { manyFlows } from './flow-frames.js';

/** Frames of a flood, in chunks of at most a million (the frames of 10M would not fit in memory). */
const FLOOD_CHUNK = 1_000_000;

/**
 * Tracks `established` flows to `vip` (IPv4, TCP port 80), then runs a flood of
 * `flood` spoofed packets of distinct tuples through `run` (SYNs or ACKs,
 * per `tcpFlags`), every established flow sending one packet per
 * `touchEvery` flood packets (a live connection that is quiet meanwhile).
 * Returns how many of them are still tracked. bench/ab-worker.ts runs it
 * against another build.
 */
export function floodSurvivors(
  run: (packets: Buffer, count: number) => void,
  tracked: (flow: { saddr: string; daddr: string; sport: number; dport: number; proto: number }) => boolean,
  options: { vip: string; established: number; flood: number; touchEvery: number; tcpFlags: number },
): { survivors: number } {
  const { vip, established: count, flood, touchEvery } = options;
  const acks = manyFlows(4, vip, TCP_FLAGS.ACK, 0, count);
  run(manyFlows(4, vip, TCP_FLAGS.SYN, 0, count), count);
  run(acks, count);
  let quiet = 0;
  for (let sent = 0; sent < flood;) {
    const n = Math.min(FLOOD_CHUNK, flood - sent, touchEvery - quiet);
    run(manyFlows(4, vip, options.tcpFlags, (1 << 24) + sent, n), n);
    sent += n;
    quiet += n;
    if (quiet === touchEvery) {
      run(acks, count);
      quiet = 0;
    }
  }
  let alive = 0;
  const length = acks.length / count;
  for (let i = 0; i < count; i++) {
    const frame = acks.subarray(i * length, (i + 1) * length);
    const saddr = Array.from(frame.subarray(26, 30)).join('.');
    if (tracked({ saddr, daddr: vip, sport: frame.readUInt16BE(34), dport: 80, proto: 6 })) alive++;
  }
  return { survivors: alive };
}
