/**
 * The data plane's clock (jiffies, see lb_clock in xdp_balancer.bpf.c),
 * read from user space by running lb_clock once, and its rate.
 */
import { readU64 } from './abi.js';
import { testRun } from './xdp.js';

const KNOWN_HZ = [100, 250, 300, 1000];
const CALIBRATION_MS = 200;

export class DataplaneClock {
  private constructor(
    private readonly programFd: number,
    readonly hz: number,
  ) {}

  /** Measures HZ against the monotonic clock (takes CALIBRATION_MS). */
  static async calibrate(programFd: number): Promise<DataplaneClock> {
    const read = () => readJiffies(programFd);
    const j0 = read();
    const t0 = process.hrtime.bigint();
    await new Promise((resolve) => setTimeout(resolve, CALIBRATION_MS));
    const j1 = read();
    const t1 = process.hrtime.bigint();
    const measured = Number(j1 - j0) / (Number(t1 - t0) / 1e9);
    const hz = KNOWN_HZ.reduce((best, candidate) => (Math.abs(candidate - measured) < Math.abs(best - measured) ? candidate : best));
    return new DataplaneClock(programFd, hz);
  }

  now(): bigint {
    return readJiffies(this.programFd);
  }

  /** Seconds elapsed since a jiffies value of the data plane. */
  secondsSince(jiffies: bigint, now = this.now()): number {
    return Number(now - jiffies) / this.hz;
  }

  jiffiesFromSeconds(seconds: number): bigint {
    return BigInt(Math.round(seconds * this.hz));
  }
}

/** lb_clock writes bpf_jiffies64() over the first 8 bytes of the packet. */
function readJiffies(programFd: number): bigint {
  return readU64(testRun(programFd, Buffer.alloc(64)).output, 0);
}
