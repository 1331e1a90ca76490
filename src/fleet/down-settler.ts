/**
 * On a fleet node, a backend that fails its check reaches the Maglev table
 * only after one check period (interval + timeout) of its VIP, unless every
 * backend of the VIP is down by then. When a node's own checks fail (cut
 * off, a filter, a broken route) all backends go down within one period of
 * each other, each on its own timer: taken one by one, the first ones would
 * be taken out of the table and the flows reaching them moved to the
 * others, breaking those connections, before the last one failed and the
 * node withdrew. Held back, they all reach the table at once, the VIP is
 * all down, its table is kept (on_all_down keep) and it is withdrawn. A
 * backend that really failed alone leaves the table one period later than
 * it would have. The announce decision reads the checks as they are: a VIP
 * below its need is withdrawn at once.
 */
import type { HealthLookup } from '../core/views.js';
import type { BackendHealth, Transition } from '../health/checker.js';
import { formatVip } from '../model/address.js';

export interface DownSettlerOptions {
  /** The checks as they are. */
  readonly live: HealthLookup;
  /** How long a VIP's down backend is held back: its check's interval + timeout (the longest of its backends'). */
  readonly periodMs: (vipKey: string) => number;
  /** The backends of a VIP that its table could use (a path, not draining). */
  readonly eligible: (vipKey: string) => readonly string[];
  /** Where transitions go once settled (the control core). */
  readonly forward: (transition: Transition) => void;
}

export class DownSettler {
  /** Down transitions held back, by `${vipKey} ${address}`. */
  private readonly held = new Map<string, { transition: Transition; timer: NodeJS.Timeout }>();

  constructor(private readonly options: DownSettlerOptions) {}

  /** The checks as the tables must see them: a held-back backend is still up. */
  readonly health: HealthLookup = (vipKey, address): BackendHealth | undefined => {
    const live = this.options.live(vipKey, address);
    return live && this.held.has(`${vipKey} ${address}`) ? { ...live, state: 'up' } : live;
  };

  transition(transition: Transition): void {
    const vipKey = formatVip(transition.vip);
    const key = `${vipKey} ${transition.address}`;
    if (transition.to !== 'down') {
      // Back before its period ended: the table never lost it.
      this.release(key);
      this.options.forward(transition);
      return;
    }
    if (transition.from !== 'up') {
      this.options.forward(transition);
      return;
    }
    const timer = setTimeout(() => this.release(key), this.options.periodMs(vipKey));
    timer.unref();
    this.held.set(key, { transition, timer });
    if (this.allDown(vipKey)) for (const address of this.options.eligible(vipKey)) this.release(`${vipKey} ${address}`);
  }

  stop(): void {
    for (const { timer } of this.held.values()) clearTimeout(timer);
    this.held.clear();
  }

  private allDown(vipKey: string): boolean {
    const eligible = this.options.eligible(vipKey);
    return eligible.length > 0 && eligible.every((address) => this.options.live(vipKey, address)?.state === 'down');
  }

  private release(key: string): void {
    const entry = this.held.get(key);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.held.delete(key);
    this.options.forward(entry.transition);
  }
}
