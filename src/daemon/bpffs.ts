/** Where the balancer pins its maps, and making sure bpffs is there. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readlinkSync, rmdirSync, rmSync, statfsSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * `ip netns exec` gives the command a fresh /sys without bpffs: mount one
 * so pinning works (it is private to that mount namespace).
 */
export function ensureBpffs(root: string): void {
  mkdirSync(root, { recursive: true });
  if (statfsSync(root).type === BPF_FS_MAGIC) return;
  execFileSync('mount', ['-t', 'bpf', 'bpf', root], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (statfsSync(root).type !== BPF_FS_MAGIC) throw new Error(`could not mount bpffs on ${root}`);
}

/**
 * One directory per balancer instance: interfaces of different network
 * namespaces may share a name, so the namespace is part of the path.
 */
export function defaultPinDir(bpffsRoot: string, interfaceName: string): string {
  const own = readlinkSync('/proc/self/ns/net');
  let init = '';
  try {
    init = readlinkSync('/proc/1/ns/net');
  } catch {
    // not allowed to look: treat as a namespace of its own
  }
  const netns = own === init ? 'host' : `netns-${/\[(\d+)\]/.exec(own)?.[1] ?? 'unknown'}`;
  return join(bpffsRoot, 'lbctl', netns, interfaceName);
}

/** Removes the pins and the directories above them that only held them. */
export function removePinDir(pinDir: string, bpffsRoot: string): void {
  rmSync(pinDir, { recursive: true, force: true });
  const top = join(bpffsRoot, 'lbctl');
  for (let dir = dirname(pinDir); !relative(top, dir).startsWith('..'); dir = dirname(dir)) {
    try {
      if (readdirSync(dir).length > 0) return;
      rmdirSync(dir);
    } catch {
      return;
    }
    if (dir === top) return;
  }
}
