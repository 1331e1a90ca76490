/**
 * What a backend change would do, worked out before doing it: each
 * backend's share of the Maglev table, the slots that change owner, and the
 * tracked flows affected.
 */
import type { ChangePreview } from '../api/protocol.js';
import { flowHash, tableSlot } from '../dataplane/flow-hash.js';
import type { VipSpec } from '../model/desired-state.js';
import type { TrackedFlow } from './flows.js';
import type { PlannedTable } from './planner.js';

export function previewChange(
  key: string,
  before: { spec: VipSpec; table: PlannedTable },
  after: { spec: VipSpec; table: PlannedTable },
  flows: readonly TrackedFlow[],
  addressOf: (backendId: number) => string | undefined,
  isActive: (flow: TrackedFlow) => boolean,
): ChangePreview {
  const tableSize = after.table.tableSize;
  const ownerBefore = (slot: number) => ownerOf(before.table, slot);
  const ownerAfter = (slot: number) => ownerOf(after.table, slot);
  const resized = before.table.tableSize !== tableSize;

  let slotsMoved = 0;
  for (let slot = 0; slot < tableSize; slot++) {
    if (resized || ownerBefore(slot) !== ownerAfter(slot)) slotsMoved++;
  }

  // In the new table, or draining: tracked flows stay. Removed or unusable: they move.
  const afterOwners = new Set(after.table.owners);
  const keepsFlows = (address: string | undefined) =>
    after.spec.backends.some((b) => b.address === address && (b.drain !== undefined || afterOwners.has(b.address)));
  let flowsToMove = 0;
  let activeFlowsToMove = 0;
  let flowsOnMovedSlots = 0;
  for (const flow of flows) {
    if (!keepsFlows(addressOf(flow.backendId))) {
      flowsToMove++;
      if (isActive(flow)) activeFlowsToMove++;
      continue;
    }
    const hash = flowHash(flow.key);
    const oldOwner = ownerBefore(tableSlot(hash, before.table.tableSize));
    const newOwner = ownerAfter(tableSlot(hash, tableSize));
    if (oldOwner !== newOwner) flowsOnMovedSlots++;
  }

  const addresses = [...new Set([...before.spec.backends.map((b) => b.address), ...after.spec.backends.map((b) => b.address)])];
  const share = (table: PlannedTable, address: string) => {
    const index = table.owners.indexOf(address);
    if (index < 0 || !table.table) return 0;
    let owned = 0;
    for (const owner of table.table) if (owner === index) owned++;
    return owned / table.tableSize;
  };
  const describe = (spec: VipSpec, table: PlannedTable, address: string) => {
    const backend = spec.backends.find((b) => b.address === address);
    return backend ? { weight: backend.weight, share: share(table, address), draining: backend.drain !== undefined } : null;
  };
  return {
    vip: key,
    tableSize,
    backends: addresses.map((address) => ({
      address,
      before: describe(before.spec, before.table, address),
      after: describe(after.spec, after.table, address),
    })),
    slotsMoved,
    fractionMoved: slotsMoved / tableSize,
    trackedFlows: flows.length,
    flowsToMove,
    activeFlowsToMove,
    flowsOnMovedSlots,
  };
}

function ownerOf(table: PlannedTable, slot: number): string | undefined {
  return table.table ? table.owners[table.table[slot]!] : undefined;
}
