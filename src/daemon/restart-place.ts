/**
 * Where `lbctl restart` starts the new daemon: where the old one ran (its
 * network and mount namespaces and working directory), whatever namespace
 * the command is run from. When that place cannot be reached from here,
 * the restart is refused before anything is stopped.
 */
import type { StatusResult } from '../api/protocol.js';
import { InputError } from '../model/errors.js';
import { type NamespaceHold, holdNamespacesOf } from '../net/netns.js';

export function restartPlace(status: Pick<StatusResult, 'pid' | 'netns'>): NamespaceHold {
  const hold = holdNamespacesOf(status.pid, status.netns.inode);
  if (hold) return hold;
  const where = status.netns.name ? `network namespace ${status.netns.name}` : `network namespace ${status.netns.inode}`;
  throw new InputError(
    `cannot reach the daemon's process (pid ${status.pid}, ${where}) from here: nothing was stopped; run lbctl restart where the daemon runs` +
      (status.netns.name ? ` (ip netns exec ${status.netns.name} lbctl restart)` : ''),
  );
}
