/**
 * The control core's loop: it owns the desired state (the config file's
 * VIPs and backends with the runtime changes laid over them) and applies
 * every change to it through the reconciler, one at a time, in order.
 * Everything else (API requests, health transitions, finished drains, the
 * network changing under the balancer) asks it to change state; it never
 * reads a socket, a timer's clock or the config file itself.
 *
 * What is applied in the queue does not wait on anything outside the
 * process: the slow part of a change or a reload (asking the kernel for
 * the paths of new backends) runs before it queues, so a health transition
 * never waits behind a next hop that does not answer. Changes and reloads
 * pass an intake of their own first, which keeps them in the order they
 * were asked for.
 */
import type { Logger } from 'pino';
import type { ChangePreview, ChangeResult } from '../api/protocol.js';
import type { CheckTarget, Transition } from '../health/checker.js';
import { type VipAddress, formatVip } from '../model/address.js';
import { formatCheck } from '../model/check.js';
import {
  type Change,
  type DesiredState,
  NO_CHANGES,
  type RuntimeChanges,
  applyChanges,
  findVip,
  validateDesired,
  withChange,
} from '../model/desired-state.js';
import { InputError } from '../model/errors.js';
import { type StateDifference, diffStates } from '../model/state-diff.js';
import type { PathResult, PathTarget, RefreshOptions } from '../net/forwarding-paths.js';
import { type PathLookup, checkTargets, pathTargets } from './check-targets.js';
import { type FlowClock, type TrackedFlow, isActiveFlow, isFlowOf } from './flows.js';
import { plannedTable } from './planner.js';
import { previewChange } from './preview.js';
import type { BalancerMaps, Reconciler } from './reconciler.js';
import { SerialQueue } from './serial-queue.js';
import type { HealthLookup, VipView } from './views.js';

/** Where backends' forwarding paths come from (src/net/forwarding-paths.ts). */
export interface PathSource extends PathLookup {
  /** Resolves the targets again; whether any path changed. */
  refresh(targets: readonly PathTarget[], options?: RefreshOptions): Promise<boolean>;
  /** The MAC of the balancer's interface as of the last refresh (null: none; undefined: not known yet). */
  interfaceMac(): string | null | undefined;
}

export interface ControlLoopDeps {
  readonly reconciler: Reconciler;
  /** Tracked flows, for previews and for counting what a change moves. */
  readonly flows: Pick<BalancerMaps, 'trackedFlows'>;
  readonly clock: FlowClock;
  readonly paths: PathSource;
  readonly health: HealthLookup;
  /** Makes runtime changes durable; throws when it cannot. */
  readonly saveChanges: (changes: RuntimeChanges) => void;
  readonly log: Logger;
  /** A fleet node: a VIP whose backends all fail keeps its table (it is withdrawn instead); see PlanInputs. */
  readonly keepOnAllDown?: boolean;
  /** This host's own addresses (address -> interface): none may be a VIP. */
  readonly hostAddresses: () => Promise<ReadonlyMap<string, string>>;
}

export interface ReloadOptions {
  /** Forget every runtime change: the file alone is the state. */
  readonly discardRuntimeChanges?: boolean;
}

export interface Reloaded {
  readonly desired: DesiredState;
  /** Where the runtime changes kept make the running state differ from the file. */
  readonly overrides: readonly StateDifference[];
}

export interface ChangeOptions {
  /** Work out and return what the change would do, without doing it. */
  readonly dryRun?: boolean;
  /** Aborted when whoever asked has gone (the CLI gave up waiting): a change not started yet is not made. */
  readonly signal?: AbortSignal;
}

/** A flow idle this long counts as ended when a change is weighed (the default drain idle time). */
export const DEFAULT_DRAIN_IDLE_SECONDS = 30;
const FLOW_SWEEP_DELAY_MS = 2_000;
/**
 * How long a start, a change or a reload waits for the kernel to resolve
 * the next hop of a backend it adds (one never asked about before), so
 * that its answer can say whether the backend is usable. Outside the
 * queue: nothing else waits for it.
 */
const NEW_HOP_WAIT_MS = 1500;

export class ControlLoop {
  private config: DesiredState;
  private changes: RuntimeChanges;
  private current: DesiredState;
  private readonly queue = new SerialQueue();
  /** Changes and reloads, in the order asked: each resolves its paths, then queues. */
  private readonly intake = new SerialQueue();
  private stopped = false;
  /** Health transitions waiting for the one apply that takes them all. */
  private readonly pendingTransitions: Transition[] = [];
  private sweepTimer?: NodeJS.Timeout;
  /** The network refresh running, and whether another was asked for meanwhile. */
  private refreshing?: Promise<void>;
  private refreshAgain = false;
  /** Unusable backends already logged, with the reason logged. */
  private readonly unusableLogged = new Map<string, string>();
  readonly healthTransitions = { up: 0, down: 0 };
  /** Told the health-check targets after every apply. */
  onCheckTargets?: (targets: CheckTarget[]) => void;
  /** Called after every apply: the views changed. */
  onApplied?: () => void;

  /** Throws InputError when the config and the runtime changes do not make a valid state together. */
  constructor(
    private readonly deps: ControlLoopDeps,
    config: DesiredState,
    changes: RuntimeChanges,
  ) {
    this.config = config;
    this.changes = changes;
    this.current = applyChanges(config, changes);
    validateDesired(this.current);
  }

  get desired(): DesiredState {
    return this.current;
  }

  get views(): readonly VipView[] {
    return this.deps.reconciler.view;
  }

  /** The backend id in a slot of a VIP's current table. */
  tableOwner(key: string, slot: number): number | undefined {
    return this.deps.reconciler.tableOwner(key, slot);
  }

  /** Which VIP and address a backend id currently stands for. */
  backendById(id: number): { vip: string; address: string } | undefined {
    return this.deps.reconciler.backendById(id);
  }

  /** The first apply: resolves every path, writes the maps. */
  start(): Promise<void> {
    return this.queue.run(async () => {
      await this.refuseHostAddresses(this.current.vips);
      await this.deps.paths.refresh(pathTargets(this.current), { waitMs: NEW_HOP_WAIT_MS, complete: true });
      this.apply(this.current);
      this.logUnusable();
    });
  }

  /** Refuses new changes; `last` runs once the ones asked for before are done. */
  stop<T>(last: () => Promise<T>): Promise<T> {
    this.stopped = true;
    clearTimeout(this.sweepTimer);
    return this.intake.run(() => this.queue.run(last));
  }

  /**
   * Applies a runtime change: resolve the paths of backends it adds (before
   * queueing), then in the queue validate, write the maps, save. If saving
   * fails the maps are put back, so a change is either done and durable or
   * not done at all. A dry run stops before writing and says what the
   * change would do. A change whose signal aborted before its turn is not
   * made.
   */
  async change(change: Change, options: ChangeOptions = {}): Promise<ChangeResult> {
    if (this.stopped) throw stopping();
    return this.intake.run(async () => {
      if (change.op === 'vip.add') await this.refuseHostAddresses([change]);
      await this.resolveNew(() => withChange(this.config, this.changes, change, this.current).desired);
      return this.queue.run(async () => {
        if (options.signal?.aborted) throw new InputError('the client went away before the change was made: nothing changed');
        return this.changeNow(change, options);
      });
    });
  }

  /**
   * A new config file: the runtime changes stay laid over it, unless told
   * to discard them (they are then forgotten on disk too). A config that
   * does not make a valid state with them changes nothing. The answer says
   * what the runtime changes still override in the file.
   */
  async reload(config: DesiredState, options: ReloadOptions = {}): Promise<Reloaded> {
    if (this.stopped) throw stopping();
    return this.intake.run(async () => {
      await this.refuseHostAddresses(applyChanges(config, options.discardRuntimeChanges ? NO_CHANGES : this.changes).vips);
      await this.resolveNew(() => applyChanges(config, options.discardRuntimeChanges ? NO_CHANGES : this.changes));
      return this.queue.run(() => this.reloadNow(config, options));
    });
  }

  private async reloadNow(config: DesiredState, { discardRuntimeChanges = false }: ReloadOptions): Promise<Reloaded> {
    const changes = discardRuntimeChanges ? NO_CHANGES : this.changes;
    const desired = applyChanges(config, changes);
    validateDesired(desired);
    const previous = this.current;
    this.apply(desired);
    if (discardRuntimeChanges) {
      try {
        this.deps.saveChanges(NO_CHANGES);
      } catch (error) {
        this.apply(previous);
        throw new Error(`could not forget the runtime changes (${(error as Error).message}); nothing was changed`);
      }
    }
    this.config = config;
    this.changes = changes;
    this.current = desired;
    this.sweepSoon();
    return { desired, overrides: diffStates(config, desired) };
  }

  /**
   * A backend went down or came back: rebuild the tables, and say what
   * moved. Transitions that arrive together (a start with many backends, a
   * switch failing under many) are applied in one go.
   */
  healthChanged(transition: Transition): void {
    if (this.stopped) return;
    if (transition.to === 'up' || transition.to === 'down') this.healthTransitions[transition.to]++;
    // Only a down backend leaves the table: unknown -> up changes nothing there.
    if (transition.from !== 'down' && transition.to !== 'down') return;
    this.pendingTransitions.push(transition);
    if (this.pendingTransitions.length > 1) return;
    this.queue
      .run(async () => {
        const transitions = this.pendingTransitions.splice(0);
        if (this.stopped) return;
        this.applyHealth(transitions);
      })
      .catch((error) => this.deps.log.error({ event: 'health.apply_failed', err: error }, 'applying a health change failed'));
  }

  /**
   * Routes, neighbours or addresses changed: resolve again (outside the
   * queue, one refresh at a time) and rewrite what changed.
   */
  pathsChanged(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      try {
        do {
          this.refreshAgain = false;
          if (this.stopped) return;
          if (!(await this.deps.paths.refresh(pathTargets(this.current), { complete: true }))) continue;
          await this.queue.run(async () => {
            if (this.stopped) return;
            this.apply(this.current);
            this.deps.log.info({ event: 'paths.changed' }, 'forwarding paths changed; data plane updated');
            this.logUnusable();
          });
        } while (this.refreshAgain);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /**
   * Asks the kernel for the paths of the backends a change or a reload
   * would add, before it queues. A state that does not validate is left
   * for the queue to refuse (an earlier change may still make it valid).
   */
  private async resolveNew(next: () => DesiredState): Promise<void> {
    let desired: DesiredState;
    try {
      desired = next();
    } catch {
      return;
    }
    const known = new Set(pathTargets(this.current).map((t) => `${t.forward} ${t.address}`));
    const fresh = pathTargets(desired).filter((t) => !known.has(`${t.forward} ${t.address}`));
    if (fresh.length === 0) return;
    try {
      await this.deps.paths.refresh(fresh, { waitMs: NEW_HOP_WAIT_MS });
    } catch (error) {
      // The change goes ahead; its backends stay unresolved until the next refresh works.
      this.deps.log.error({ event: 'paths.refresh_failed', err: error }, 'resolving the paths of new backends failed');
    }
  }

  /**
   * Ends a drain by removing the backend, if it is still the same drain
   * (an undrain or a new drain in between wins).
   */
  finishDrain(vip: string, address: string, since: string, why: string): Promise<void> {
    return this.queue.run(async () => {
      if (this.stopped) return;
      const backend = findVip(this.current, vip)?.backends.find((b) => b.address === address);
      if (backend?.drain?.since !== since) return;
      this.changeNow({ op: 'backend.remove', vip, address }, {}, `drain finished: ${why}`);
    });
  }

  /** Forgets every tracked flow of these VIPs (a fleet node, before it announces them again). */
  forgetFlows(vips: readonly VipAddress[]): Promise<number> {
    return this.queue.run(async () => this.deps.reconciler.forgetFlows(vips));
  }

  /** Forgets tracked flows of removed backends so that their ids can be reused. */
  sweepFlows(): Promise<number> {
    return this.queue.run(async () => {
      if (this.stopped) return 0;
      const removed = this.deps.reconciler.sweepFlows();
      if (removed > 0) this.deps.log.info({ event: 'flows.swept', flows: removed }, 'forgot tracked flows of removed backends');
      return removed;
    });
  }

  private changeNow(change: Change, options: ChangeOptions, cause?: string): ChangeResult {
    const previous = this.current;
    const next = withChange(this.config, this.changes, change, previous);
    const warnings = change.op === 'backend.add' ? this.pathWarnings(change.vip, change.backend.address, next.desired) : [];
    const describe = `${describeChange(change)}${cause ? ` (${cause})` : ''}`;
    if (options.dryRun) {
      const preview = change.op === 'vip.add' || change.op === 'vip.remove' ? undefined : this.preview(change.vip, previous, next.desired);
      return { message: `dry run, nothing changed: ${describe}`, warnings, applied: false, ...(preview ? { preview } : {}) };
    }
    this.apply(next.desired);
    try {
      this.deps.saveChanges(next.changes);
    } catch (error) {
      this.apply(previous);
      throw new Error(`could not save the change (${(error as Error).message}); nothing was changed`);
    }
    this.changes = next.changes;
    this.current = next.desired;
    this.sweepSoon();
    this.deps.log.info({ event: 'change.applied', change: describe, warnings }, 'runtime change applied');
    return { message: describe, warnings, applied: true };
  }

  /**
   * A VIP that is an address of this host would take the host's own
   * traffic to that port (SSH, say) away to the backends: refused.
   */
  private async refuseHostAddresses(vips: ReadonlyArray<{ readonly vip: VipAddress }>): Promise<void> {
    if (vips.length === 0) return;
    const own = await this.deps.hostAddresses();
    for (const { vip } of vips) {
      const device = own.get(vip.address);
      if (device) {
        throw new InputError(
          `VIP ${formatVip(vip)}: ${vip.address} is an address of this host (on ${device}); only the backends hold a VIP`,
        );
      }
    }
  }

  /** A backend being added is refused when its path can never work, and warned about while it does not work yet. */
  private pathWarnings(vipKey: string, address: string, desired: DesiredState): string[] {
    const vip = findVip(desired, vipKey)!;
    const forward = vip.backends.find((b) => b.address === address)?.forward ?? vip.forward;
    const result = this.deps.paths.get({ address, forward });
    if (result.ok) return [];
    if (result.permanent) throw new InputError(`cannot add backend ${address}: ${result.reason}`);
    return [`backend ${address} is not usable yet: ${result.reason}`];
  }

  /** Writes a state to the maps with the current paths and health, then points the health checks at it. */
  private apply(desired: DesiredState): void {
    const paths = (target: PathTarget): PathResult => this.deps.paths.get(target);
    this.deps.reconciler.apply({
      desired,
      paths,
      health: this.deps.health,
      keepOnAllDown: this.deps.keepOnAllDown ?? false,
      interfaceMac: this.deps.paths.interfaceMac(),
    });
    this.onCheckTargets?.(checkTargets(desired, this.deps.paths));
    this.onApplied?.();
  }

  private applyHealth(transitions: readonly Transition[]): void {
    const views = this.deps.reconciler.view;
    const idOf = (t: Transition) => views.find((v) => v.key === formatVip(t.vip))?.backends.find((b) => b.address === t.address)?.id;
    const goingDown = transitions.filter((t) => t.to === 'down').map((t) => ({ transition: t, id: idOf(t) }));
    const moving = this.countFlows(new Set(goingDown.map((d) => d.id).filter((id) => id !== undefined)));
    this.apply(this.current);
    for (const { transition, id } of goingDown) {
      const vipKey = formatVip(transition.vip);
      const after = this.deps.reconciler.view.find((v) => v.key === vipKey);
      const kept = after?.allDown && after.backends.find((b) => b.address === transition.address)?.keptWhileAllDown;
      const moved = kept || id === undefined ? { tracked: 0, active: 0 } : (moving.get(id) ?? { tracked: 0, active: 0 });
      const policy = this.deps.keepOnAllDown ? 'keep' : findVip(this.current, vipKey)?.onAllDown;
      this.deps.log.warn(
        {
          event: after?.allDown ? 'vip.all_down' : 'backend.removed_from_table',
          vip: vipKey,
          backend: transition.address,
          reason: transition.reason,
          trackedFlowsMoved: moved.tracked,
          activeFlowsMoved: moved.active,
        },
        after?.allDown
          ? `every backend of ${vipKey} is down: ${policy === 'drop' ? 'dropping its packets' : 'keeping the last healthy ones'}`
          : 'backend taken out of the table',
      );
    }
  }

  /** Tracked flows (and the live ones among them) per backend id. */
  private countFlows(ids: ReadonlySet<number>): Map<number, { tracked: number; active: number }> {
    const counts = new Map<number, { tracked: number; active: number }>();
    if (ids.size === 0) return counts;
    const now = this.deps.clock.now();
    for (const flow of this.deps.flows.trackedFlows()) {
      if (!ids.has(flow.backendId)) continue;
      const count = counts.get(flow.backendId) ?? { tracked: 0, active: 0 };
      count.tracked++;
      if (isActiveFlow(flow, DEFAULT_DRAIN_IDLE_SECONDS, this.deps.clock, now)) count.active++;
      counts.set(flow.backendId, count);
    }
    return counts;
  }

  private preview(key: string, before: DesiredState, after: DesiredState): ChangePreview {
    const paths = (target: PathTarget) => this.deps.paths.get(target);
    const beforeSpec = findVip(before, key)!;
    const afterSpec = findVip(after, key)!;
    const vips = after.vips.map((v) => v.vip);
    const flows: TrackedFlow[] = [...this.deps.flows.trackedFlows()].filter((f) => isFlowOf(f, afterSpec.vip, vips));
    const now = this.deps.clock.now();
    return previewChange(
      key,
      { spec: beforeSpec, table: plannedTable(beforeSpec, paths) },
      { spec: afterSpec, table: plannedTable(afterSpec, paths) },
      flows,
      (id) => this.deps.reconciler.backendById(id)?.address,
      (flow) => isActiveFlow(flow, DEFAULT_DRAIN_IDLE_SECONDS, this.deps.clock, now),
    );
  }

  /** Removed backends' flows are forgotten shortly after a change (their ids are reused only then). */
  private sweepSoon(): void {
    clearTimeout(this.sweepTimer);
    this.sweepTimer = setTimeout(() => {
      this.sweepFlows().catch((error) => this.deps.log.error({ event: 'flows.sweep_failed', err: error }, 'flow sweep failed'));
    }, FLOW_SWEEP_DELAY_MS);
    this.sweepTimer.unref();
  }

  /** Says once (and again when the reason changes) that a backend has no usable path. */
  private logUnusable(): void {
    const unusable = new Set<string>();
    for (const vip of this.deps.reconciler.view) {
      for (const b of vip.backends) {
        if (b.state !== 'unresolved') continue;
        const key = `${vip.key} ${b.address}`;
        unusable.add(key);
        if (this.unusableLogged.get(key) === (b.reason ?? '')) continue;
        this.unusableLogged.set(key, b.reason ?? '');
        this.deps.log.warn(
          { event: 'backend.unreachable', vip: vip.key, backend: b.address, reason: b.reason },
          'backend has no usable path',
        );
      }
    }
    for (const key of this.unusableLogged.keys()) if (!unusable.has(key)) this.unusableLogged.delete(key);
  }
}

function stopping(): InputError {
  return new InputError('the daemon is stopping');
}

/** "backend add 10.0.0.100:80/tcp 10.0.0.11 weight 3 (ipip)" */
export function describeChange(change: Change): string {
  switch (change.op) {
    case 'vip.add':
      return `vip add ${formatVip(change.vip)} (${change.settings.forward}, check ${formatCheck(change.settings.check.spec)})`;
    case 'vip.remove':
      return `vip remove ${change.vip}`;
    case 'backend.add': {
      const { address, weight, forward } = change.backend;
      return `backend add ${change.vip} ${address} weight ${weight}${forward ? ` (${forward})` : ''}`;
    }
    case 'backend.remove':
      return `backend remove ${change.vip} ${change.address}`;
    case 'backend.set': {
      const { weight, drain } = change.patch;
      if (drain === null) return `backend undrain ${change.vip} ${change.address}`;
      if (drain) {
        return `backend drain ${change.vip} ${change.address} (timeout ${drain.timeoutSeconds} s, flows idle for ${drain.idleSeconds} s count as ended)`;
      }
      return `backend weight ${change.vip} ${change.address} ${weight}`;
    }
  }
}
