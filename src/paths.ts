import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The project root: dist/src/paths.js lives two levels below it, in the
 * repository and in the installed tree (PREFIX/lib/lbctl, scripts/install-tree.sh)
 * alike, each with build/bpf and build/native beside dist.
 */
export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const BPF_OBJECT_DIR = resolve(PROJECT_ROOT, 'build', 'bpf');
export const NATIVE_SHIM = resolve(PROJECT_ROOT, 'build', 'native', 'liblbctl.so');

export function bpfObjectPath(program: 'xdp_balancer' | 'xdp_decap' | 'xdp_pass'): string {
  return resolve(BPF_OBJECT_DIR, `${program}.bpf.o`);
}

export const DEFAULT_SOCKET = '/run/lbctl/lbctl.sock';
export const DEFAULT_STATE_DIR = '/var/lib/lbctl';
export const DEFAULT_BPFFS = '/sys/fs/bpf';
