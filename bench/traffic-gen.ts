/**
 * The packet-rate benchmark's traffic generator: runs inside the lab's
 * client namespace (nsenter --net, so /sys/fs/bpf and the project stay
 * visible) and sends 60-byte UDP packets out of an interface with
 * bench/xdp_traffic_gen.bpf.c on BPF_PROG_TEST_RUN live frames.
 *
 *   node dist/bench/traffic-gen.js '{"ifname":"eth0","dstMac":"..","saddr":"..","daddr":"..","flows":256,"durationMs":3000}'
 *
 * Prints one JSON line {"ready":true} just before sending, then one with
 * {"frames":N,"elapsedNs":T} when done. Pitfalls it handles
 * (../shared/notes/platform.md): the program is also attached to a spare
 * veth pair it creates (else each call costs ~24 ms), and every header is
 * rewritten on every run (live frames come back holding what the receiver
 * wrote). The peer of `ifname` must run an XDP program for the frames to
 * arrive.
 */
import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { loadBpfObject } from '../src/dataplane/bpf-object.js';
import { XDP_FLAGS, orThrow, native } from '../src/dataplane/libbpf.js';
import { PROJECT_ROOT } from '../src/paths.js';
import { nativeTesting } from '../test/support/native-testing.js';

export interface GeneratorOptions {
  /** Interface the frames leave by (XDP_TX out of the "ingress" interface). */
  readonly ifname: string;
  readonly dstMac: string;
  /** Default: the interface's MAC. */
  readonly srcMac?: string;
  /** First source address; flow n uses saddr + n / 65536. */
  readonly saddr: string;
  readonly daddr: string;
  /** Flow n uses source port sportBase + n % 65536 (default 1024). */
  readonly sportBase?: number;
  /** Default 9 (BENCH_UDP_PORT). */
  readonly dport?: number;
  /** Distinct flows, a power of two (default 256; 2^32 for a new flow per packet). */
  readonly flows?: number;
  /** Sending threads, one per CPU (default: every CPU). */
  readonly threads?: number;
  readonly durationMs: number;
  /** Frames per BPF_PROG_TEST_RUN call (default 1,048,576; paced runs use a few). */
  readonly repeat?: number;
  /** Frames per batch inside one call (default 64, at most 256). */
  readonly batchSize?: number;
  /** > 0: one call per interval per thread (paced traffic). */
  readonly intervalUs?: number;
}

export interface GeneratorResult {
  readonly frames: number;
  readonly elapsedNs: number;
}

export const GENERATOR_SCRIPT = join(PROJECT_ROOT, 'dist', 'bench', 'traffic-gen.js');
const FRAME_LEN = 60;
const SPARE = ['lbgen0', 'lbgen1'];

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function link(name: string): { ifindex: number; address: string } {
  const [info] = JSON.parse(ip(['-j', 'link', 'show', 'dev', name])) as Array<{ ifindex: number; address: string }>;
  if (!info) throw new Error(`no interface ${name}`);
  return info;
}

function macBytes(mac: string): Buffer {
  const bytes = mac.split(':').map((h) => parseInt(h, 16));
  if (bytes.length !== 6 || bytes.some((b) => !(b >= 0 && b <= 255))) throw new Error(`bad MAC ${mac}`);
  return Buffer.from(bytes);
}

function ipv4Bytes(address: string): Buffer {
  const bytes = address.split('.').map(Number);
  if (bytes.length !== 4 || bytes.some((b) => !Number.isInteger(b) || b < 0 || b > 255)) throw new Error(`bad IPv4 address ${address}`);
  return Buffer.from(bytes);
}

/** struct gen_config of bench/xdp_traffic_gen.bpf.c. */
function encodeConfig(o: GeneratorOptions, srcMac: string): Buffer {
  const flows = o.flows ?? 256;
  if (!Number.isInteger(Math.log2(flows)) || flows < 1 || flows > 2 ** 32) throw new Error(`flows must be a power of two, got ${flows}`);
  const buf = Buffer.alloc(28);
  macBytes(o.dstMac).copy(buf, 0);
  macBytes(srcMac).copy(buf, 6);
  ipv4Bytes(o.saddr).copy(buf, 12);
  ipv4Bytes(o.daddr).copy(buf, 16);
  buf.writeUInt16LE(o.sportBase ?? 1024, 20);
  buf.writeUInt16LE(o.dport ?? 9, 22);
  buf.writeUInt32LE(flows - 1, 24);
  return buf;
}

export function generate(o: GeneratorOptions, onReady: () => void = () => undefined): GeneratorResult {
  const out = link(o.ifname);
  const object = loadBpfObject(join(PROJECT_ROOT, 'build', 'bench', 'xdp_traffic_gen.bpf.o'), 'xdp_traffic_gen');
  try {
    object.map('gen_config').update(Buffer.alloc(4), encodeConfig(o, o.srcMac ?? out.address));
    try {
      ip(['link', 'del', SPARE[0]!]);
    } catch {
      // no spare left over from an earlier run
    }
    ip(['link', 'add', SPARE[0]!, 'type', 'veth', 'peer', 'name', SPARE[1]!]);
    orThrow(
      native.xdpAttach(link(SPARE[0]!).ifindex, object.programFd, XDP_FLAGS.DRV_MODE, -1) as number,
      'attaching the generator to its spare veth',
    );

    const result = Buffer.alloc(16);
    const frame = Buffer.alloc(FRAME_LEN);
    onReady();
    const err = nativeTesting.xdpLiveRun(
      object.programFd,
      frame,
      frame.length,
      out.ifindex,
      1,
      o.repeat ?? 1 << 20,
      o.batchSize ?? 64,
      o.threads ?? availableParallelism(),
      o.durationMs,
      o.intervalUs ?? 0,
      result,
    ) as number;
    orThrow(err, 'BPF_PROG_TEST_RUN (live frames)');
    return { frames: Number(result.readBigUInt64LE(0)), elapsedNs: Number(result.readBigUInt64LE(8)) };
  } finally {
    try {
      ip(['link', 'del', SPARE[0]!]);
    } catch {
      // the namespace may be going away
    }
    object.close();
  }
}

if (process.argv[1]?.endsWith('traffic-gen.js')) {
  const options = JSON.parse(process.argv[2] ?? '{}') as GeneratorOptions;
  const result = generate(options, () => process.stdout.write(`${JSON.stringify({ ready: true })}\n`));
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
