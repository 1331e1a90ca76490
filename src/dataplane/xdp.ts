/** Attaching XDP programs to interfaces, and running them on test packets. */
import { BpfError, XDP_ATTACHED, XDP_FLAGS, orThrow, closeFd, errnoText, native } from './libbpf.js';

export type XdpMode = 'native' | 'generic';
export const XDP_MODES: readonly XdpMode[] = ['native', 'generic'];

export const XDP_ACTION = ['aborted', 'drop', 'pass', 'tx', 'redirect'] as const;
export type XdpAction = (typeof XDP_ACTION)[number];

const MODE_FLAG: Record<XdpMode, number> = { native: XDP_FLAGS.DRV_MODE, generic: XDP_FLAGS.SKB_MODE };

export interface AttachedProgram {
  readonly id: number;
  readonly name: string;
  readonly mode: XdpMode;
}

/** The XDP program on an interface, if any. */
export function attachedProgram(ifindex: number): AttachedProgram | null {
  const drv = [0];
  const skb = [0];
  const mode = [0];
  orThrow(native.xdpQuery(ifindex, drv, skb, mode), `querying XDP programs of interface ${ifindex}`);
  if (mode[0] === XDP_ATTACHED.NONE) return null;
  const id = drv[0] || skb[0];
  if (!id) return null;
  return { id, name: programName(id), mode: drv[0] ? 'native' : 'generic' };
}

export function programName(id: number): string {
  const fd = native.progFdById(id) as number;
  if (fd < 0) return '?';
  try {
    return programInfo(fd).name;
  } finally {
    closeFd(fd);
  }
}

export function programInfo(fd: number): { id: number; name: string } {
  const id = [0];
  const name = Buffer.alloc(64);
  orThrow(native.progInfo(fd, id, name, name.length), 'reading program info');
  return { id: id[0]!, name: name.subarray(0, name.indexOf(0)).toString() };
}

/**
 * Attaches prog to the interface. Refuses to replace a program it was not
 * told about (expected), so one tool never silently removes another's.
 */
export function attachXdp(ifindex: number, ifname: string, programFd: number, mode: XdpMode, replaceFd = -1): void {
  let flags = MODE_FLAG[mode];
  flags |= replaceFd >= 0 ? XDP_FLAGS.REPLACE : XDP_FLAGS.UPDATE_IF_NOEXIST;
  const err = native.xdpAttach(ifindex, programFd, flags, replaceFd) as number;
  if (err === 0) return;
  const present = attachedProgram(ifindex);
  if (err === -16 /* EBUSY */ && present) {
    throw new BpfError(
      `interface ${ifname} already has an XDP program (${present.name}, id ${present.id}, ${present.mode} mode): detach it first`,
      -err,
    );
  }
  if (err === -95 /* EOPNOTSUPP */ && mode === 'native') {
    throw new BpfError(`interface ${ifname} does not support native XDP: use --xdp-mode generic`, -err);
  }
  throw new BpfError(`attaching XDP to ${ifname} (${mode} mode) failed: ${errnoText(-err)}`, -err);
}

/** Detaches the program only if it is still the one given (by fd). */
export function detachXdp(ifindex: number, programFd: number, mode: XdpMode): void {
  const err = native.xdpAttach(ifindex, -1, MODE_FLAG[mode] | XDP_FLAGS.REPLACE, programFd) as number;
  if (err !== 0 && err !== -17 /* EEXIST: someone else's program is there now */ && err !== -19 /* ENODEV */) {
    throw new BpfError(`detaching XDP failed: ${errnoText(-err)}`, -err);
  }
}

export interface TestRunResult {
  readonly action: XdpAction;
  readonly output: Buffer;
}

/** One packet through the program with BPF_PROG_TEST_RUN (repeat 1). */
export function testRun(programFd: number, packet: Buffer): TestRunResult {
  const out = Buffer.alloc(packet.length + 256);
  const outLen = [out.length];
  const retval = [0];
  orThrow(native.testRun(programFd, packet, packet.length, out, outLen, retval), 'BPF_PROG_TEST_RUN');
  const action = XDP_ACTION[retval[0]!];
  if (!action) throw new BpfError(`program returned unknown XDP action ${retval[0]}`);
  return { action, output: out.subarray(0, outLen[0]) };
}
