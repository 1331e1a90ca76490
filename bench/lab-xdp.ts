/**
 * The benchmark's own XDP programs (build/bench) on interfaces of the lab's
 * namespaces: loaded here (so their maps can be read directly), pinned for a
 * moment and attached with iproute2 from inside the namespace (an ifindex
 * only means something in its own namespace).
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Lab } from '../test/lab/lab.js';
import { loadBpfObject, type LoadedObject } from '../src/dataplane/bpf-object.js';
import { orThrow, native } from '../src/dataplane/libbpf.js';
import { PROJECT_ROOT, bpfObjectPath } from '../src/paths.js';

let pins = 0;
const pinPath = () => join('/sys/fs/bpf', `lbctl-bench-${process.pid}-${pins++}`);
export const LAB_XDP_SCRIPT = join(PROJECT_ROOT, 'dist', 'bench', 'lab-xdp.js');

async function mustExec(lab: Lab, role: string, argv: string[]): Promise<string> {
  const r = await lab.exec(role, argv);
  if (r.code !== 0) throw new Error(`${role}: ${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

export class AttachedXdp {
  private detached = false;
  constructor(
    readonly lab: Lab,
    readonly role: string,
    readonly dev: string,
    readonly object: LoadedObject,
  ) {}

  /** Detaches and, if asked, puts the lab's xdp_pass back (switch ports need one). */
  async detach(options: { restorePass?: boolean } = {}): Promise<void> {
    if (this.detached) return;
    this.detached = true;
    try {
      if (this.lab.isUp) {
        await mustExec(this.lab, this.role, ['ip', 'link', 'set', 'dev', this.dev, 'xdpdrv', 'off']);
        if (options.restorePass) await attachPass(this.lab, this.role, this.dev);
      }
    } finally {
      this.object.close();
    }
  }
}

/**
 * Attaches a loaded program (native mode) to dev in role's namespace,
 * replacing what is there, through a pin removed at once. Never iproute2's
 * own ELF loader (`obj`): run in the host's mount namespace, it leaves its
 * tc/globals directories in the host's bpffs.
 */
async function attachLoaded(lab: Lab, role: string, dev: string, object: LoadedObject, name: string): Promise<void> {
  const pin = pinPath();
  try {
    orThrow(native.objPin(object.programFd, pin) as number, `pinning ${name}`);
    await mustExec(lab, role, ['ip', 'link', 'set', 'dev', dev, 'xdpdrv', 'off']);
    await mustExec(lab, role, ['ip', 'link', 'set', 'dev', dev, 'xdpdrv', 'pinned', pin]);
  } finally {
    rmSync(pin, { force: true });
  }
}

/** Loads build/bench/NAME.bpf.o and attaches it (native mode) to dev in role's namespace, replacing what is there. */
export async function attachBench(
  lab: Lab,
  role: string,
  dev: string,
  name: string,
  configure?: (object: LoadedObject) => void,
): Promise<AttachedXdp> {
  const object = loadBpfObject(join(PROJECT_ROOT, 'build', 'bench', `${name}.bpf.o`), name);
  try {
    configure?.(object);
    await attachLoaded(lab, role, dev, object, name);
  } catch (error) {
    object.close();
    throw error;
  }
  return new AttachedXdp(lab, role, dev, object);
}

/** The lab's xdp_pass (what lab.sh puts on the switch port `lb`); the attachment keeps it loaded. */
export async function attachPass(lab: Lab, role: string, dev: string): Promise<void> {
  const object = loadBpfObject(bpfObjectPath('xdp_pass'), 'xdp_pass');
  try {
    await attachLoaded(lab, role, dev, object, 'xdp_pass');
  } finally {
    object.close();
  }
}

export interface Count {
  readonly packets: number;
  /** CLOCK_MONOTONIC ns of the first counted packet, 0n if none yet. */
  readonly firstNs: bigint;
}

/** bench/xdp_count.bpf.c on an interface: counts the benchmark's UDP packets. */
export class Counter {
  private constructor(private readonly xdp: AttachedXdp) {}

  /** only: count packets to this IPv4 address only (inner, if tunnelled), e.g. the VIP. */
  static async attach(lab: Lab, role: string, dev: string, action: 'drop' | 'pass', only?: string): Promise<Counter> {
    const xdp = await attachBench(lab, role, dev, 'xdp_count', (object) => {
      const config = Buffer.alloc(8);
      config.writeUInt32LE(action === 'pass' ? 1 : 0);
      if (only) Buffer.from(only.split('.').map(Number)).copy(config, 4);
      object.map('count_config').update(Buffer.alloc(4), config);
    });
    return new Counter(xdp);
  }

  read(): Count {
    let packets = 0n;
    let firstNs = 0n;
    for (const value of this.xdp.object.perCpuMap('counts').lookupPerCpu(Buffer.alloc(4))) {
      packets += value.readBigUInt64LE(0);
      const first = value.readBigUInt64LE(8);
      if (first !== 0n && (firstNs === 0n || first < firstNs)) firstNs = first;
    }
    return { packets: Number(packets), firstNs };
  }

  reset(): void {
    this.xdp.object.perCpuMap('counts').updateAllCpus(Buffer.alloc(4), Buffer.alloc(16));
  }

  detach(options: { restorePass?: boolean } = {}): Promise<void> {
    return this.xdp.detach(options);
  }
}

function macKey(mac: string): Buffer {
  const key = Buffer.alloc(8);
  Buffer.from(mac.split(':').map((h) => parseInt(h, 16))).copy(key);
  return key;
}

/**
 * bench/xdp_switch.bpf.c on switch ports of the lab (one program, one set of
 * maps): frames to the given hosts' MACs go straight to their ports as XDP
 * frames instead of through the bridge. The peers of those ports must run
 * an XDP program (veth drops redirected frames otherwise).
 */
export class XdpSwitch {
  private constructor(
    private readonly lab: Lab,
    private readonly role: string,
    private readonly ports: readonly string[],
    private readonly object: LoadedObject,
    private readonly ifindex: Map<string, number>,
  ) {}

  /** hosts: switch port -> MAC of the host behind it. */
  static async attach(lab: Lab, role: string, hosts: ReadonlyMap<string, string>): Promise<XdpSwitch> {
    const object = loadBpfObject(join(PROJECT_ROOT, 'build', 'bench', 'xdp_switch.bpf.o'), 'xdp_switch');
    const ports = [...hosts.keys()];
    const progPin = pinPath();
    const mapPin = pinPath();
    const attached: string[] = [];
    try {
      ports.forEach((port, i) => {
        const value = Buffer.alloc(4);
        value.writeUInt32LE(i);
        object.map('switch_macs').update(macKey(hosts.get(port)!), value);
      });
      orThrow(native.objPin(object.programFd, progPin) as number, 'pinning xdp_switch');
      orThrow(native.objPin(object.map('switch_ports').fd, mapPin) as number, 'pinning switch_ports');
      // ifindexes mean something only inside the namespace: the map is filled from there.
      await mustExec(lab, role, [process.execPath, LAB_XDP_SCRIPT, 'devmap', mapPin, ...ports]);
      const links = JSON.parse(await mustExec(lab, role, ['ip', '-j', 'link', 'show'])) as Array<{ ifname: string; ifindex: number }>;
      for (const port of ports) {
        await mustExec(lab, role, ['ip', 'link', 'set', 'dev', port, 'xdpdrv', 'off']);
        await mustExec(lab, role, ['ip', 'link', 'set', 'dev', port, 'xdpdrv', 'pinned', progPin]);
        attached.push(port);
      }
      return new XdpSwitch(lab, role, ports, object, new Map(links.map((l) => [l.ifname, l.ifindex])));
    } catch (error) {
      for (const port of attached) await lab.exec(role, ['ip', 'link', 'set', 'dev', port, 'xdpdrv', 'off']).catch(() => undefined);
      object.close();
      throw error;
    } finally {
      rmSync(progPin, { force: true });
      rmSync(mapPin, { force: true });
    }
  }

  /** Benchmark packets that entered the switch by this port so far. */
  received(port: string): number {
    const index = this.ifindex.get(port);
    if (index === undefined) throw new Error(`switch has no port ${port}`);
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index & 255);
    return this.object
      .perCpuMap('switch_counts')
      .lookupPerCpu(key)
      .reduce((sum, v) => sum + Number(v.readBigUInt64LE(0)), 0);
  }

  /** Detaches from every port, putting xdp_pass back on those listed. */
  async detach(restorePass: readonly string[] = []): Promise<void> {
    try {
      if (!this.lab.isUp) return;
      for (const port of this.ports) {
        await mustExec(this.lab, this.role, ['ip', 'link', 'set', 'dev', port, 'xdpdrv', 'off']);
        if (restorePass.includes(port)) await attachPass(this.lab, this.role, port);
      }
    } finally {
      this.object.close();
    }
  }
}

// Run inside a namespace: node lab-xdp.js devmap PIN PORT... sets entry i of
// the pinned devmap to the ifindex of PORT i.
if (process.argv[1]?.endsWith('lab-xdp.js') && process.argv[2] === 'devmap') {
  const [pin, ...ports] = process.argv.slice(3);
  const fd = orThrow(native.objGet(pin!) as number, `opening ${pin}`);
  const links = JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string; ifindex: number }>;
  ports.forEach((port, i) => {
    const ifindex = links.find((l) => l.ifname === port)?.ifindex;
    if (ifindex === undefined) throw new Error(`no interface ${port} in this namespace`);
    const key = Buffer.alloc(4);
    const value = Buffer.alloc(4);
    key.writeUInt32LE(i);
    value.writeUInt32LE(ifindex);
    orThrow(native.mapUpdate(fd, key, value, 0) as number, `setting port ${port} in ${pin}`);
  });
}
