/** xdp_decap on a backend's interface: IP-in-IP in, inner packet up the stack. */
import { getAddresses, getLink } from '../net/iproute.js';
import { InputError } from '../model/errors.js';
import { bpfObjectPath } from '../paths.js';
import { addressBytes } from '../model/address.js';
import { sumCounters, type TrafficCounters, u32Key } from './abi.js';
import { loadBpfObject, type LoadedObject } from './bpf-object.js';
import { closeFd, native } from './libbpf.js';
import { attachedProgram, attachXdp, detachXdp, type XdpMode } from './xdp.js';

export const DECAP_PROGRAM = 'xdp_decap';

/** Loads xdp_decap with these local addresses (either family) as tunnel endpoints. */
export function loadDecap(endpoints: readonly string[]): LoadedObject {
  const object = loadBpfObject(bpfObjectPath('xdp_decap'), DECAP_PROGRAM);
  try {
    for (const address of endpoints) {
      const family = address.includes(':') ? 6 : 4;
      object.map(family === 4 ? 'decap_addrs_v4' : 'decap_addrs_v6').update(addressBytes(family, address), Buffer.from([1]));
    }
    return object;
  } catch (error) {
    object.close();
    throw error;
  }
}

export function decapCounters(object: LoadedObject): TrafficCounters {
  return sumCounters(object.perCpuMap('decap_stats').lookupPerCpu(u32Key(0)));
}

export interface DecapAttachment {
  readonly interface: string;
  readonly endpoints: readonly string[];
  readonly replaced: boolean;
}

/**
 * Attaches xdp_decap with the interface's global addresses (IPv4 and IPv6)
 * as tunnel endpoints. Running it again refreshes them (atomic replace).
 */
export async function attachDecap(ifname: string, mode: XdpMode): Promise<DecapAttachment> {
  const link = await getLink(ifname);
  const endpoints = (await getAddresses(ifname)).filter((a) => a.family === 4 || a.scope === 'global').map((a) => a.address);
  if (endpoints.length === 0) throw new InputError(`interface ${ifname} has no address to receive tunnelled traffic on`);
  const present = attachedProgram(link.ifindex);
  if (present && present.name !== DECAP_PROGRAM) {
    throw new InputError(`interface ${ifname} already runs XDP program ${present.name} (id ${present.id}): detach it first`);
  }
  const object = loadDecap(endpoints);
  try {
    if (present) {
      const oldFd = native.progFdById(present.id) as number;
      try {
        attachXdp(link.ifindex, ifname, object.programFd, present.mode, oldFd);
      } finally {
        closeFd(oldFd);
      }
    } else {
      attachXdp(link.ifindex, ifname, object.programFd, mode);
    }
  } finally {
    object.close(); // the attachment holds the program and its maps
  }
  return { interface: ifname, endpoints, replaced: present !== null };
}

/** Returns false when xdp_decap was not attached. */
export async function detachDecap(ifname: string): Promise<boolean> {
  const link = await getLink(ifname);
  const present = attachedProgram(link.ifindex);
  if (!present) return false;
  if (present.name !== DECAP_PROGRAM) {
    throw new InputError(`interface ${ifname} runs XDP program ${present.name}, not ${DECAP_PROGRAM}: not detaching it`);
  }
  const fd = native.progFdById(present.id) as number;
  try {
    detachXdp(link.ifindex, fd, present.mode);
  } finally {
    closeFd(fd);
  }
  return true;
}
