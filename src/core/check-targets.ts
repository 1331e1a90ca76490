/** What the health checker probes: every backend of every VIP, with its settings and, for DSR-path checks, the path the data plane uses. */
import type { CheckTarget } from '../health/checker.js';
import type { DsrPath } from '../health/dsr-probe.js';
import { type Family, type ForwardMethod, type VipAddress, formatVip } from '../model/address.js';
import { effectiveCheck } from '../model/check.js';
import { type DesiredState, effectiveForward } from '../model/desired-state.js';
import type { PathResult, PathTarget } from '../net/forwarding-paths.js';

export interface PathLookup {
  get(target: PathTarget): PathResult;
  /** The balancer's own address of a family (the source of DSR-path checks). */
  localAddress(family: Family): string | undefined;
}

export function checkTargets(desired: DesiredState, paths: PathLookup): CheckTarget[] {
  return desired.vips.flatMap((vip) => {
    const key = formatVip(vip.vip);
    return vip.backends.map((b): CheckTarget => {
      const forward = effectiveForward(vip, b);
      const path = dsrCheckPath(vip.vip, forward, paths.get({ address: b.address, forward }), (family) => paths.localAddress(family));
      return { key: `${key} ${b.address}`, vip: vip.vip, address: b.address, settings: effectiveCheck(vip, b), ...(path ? { path } : {}) };
    });
  });
}

/**
 * How the DSR-path check reaches a backend, as the data plane does: the
 * SYN's source is the balancer's address of the VIP's family, and for ipip
 * the outer source is the path's tunnel source, of the backend's family
 * (they differ across families: 4-in-6, 6-in-4). None until the path is
 * resolved; without a balancer address of the VIP's family the path has no
 * source and the check says so.
 */
export function dsrCheckPath(
  vip: VipAddress,
  forward: ForwardMethod,
  result: PathResult,
  localAddress: (family: Family) => string | undefined,
): DsrPath | undefined {
  if (!result.ok) return undefined;
  const { ifindex, srcMac, dstMac, tunnelSrc } = result.path;
  const source = localAddress(vip.family);
  return {
    forward,
    ifindex,
    srcMac,
    dstMac,
    ...(source ? { source } : {}),
    ...(forward === 'ipip' && tunnelSrc ? { tunnelSource: tunnelSrc } : {}),
  };
}

/** The path targets of every backend. */
export function pathTargets(desired: DesiredState): PathTarget[] {
  return desired.vips.flatMap((vip) => vip.backends.map((b) => ({ address: b.address, forward: effectiveForward(vip, b) })));
}
