/**
 * A fleet node's announcements, carried out: holds the announce device
 * (src/fleet/announcer.ts) with its watchdog, watches the interface, and
 * after every change of the core's views, of a health check, of the
 * interface or of the kill-switch (and every second, for hold-downs) asks
 * the policy (src/fleet/announce-policy.ts) which addresses to announce,
 * then withdraws and announces accordingly. Withdrawals come first and at
 * once; before an address is announced, the tracked flows of its VIPs are
 * forgotten, so that the flows the router brings back follow the Maglev
 * table exactly as the peers' do (docs/fleet.md).
 */
import type { Logger } from 'pino';
import type { AnnounceStatus, AnnounceView } from '../api/protocol.js';
import type { HealthLookup, VipView } from '../core/views.js';
import type { VipAddress } from '../model/address.js';
import type { AnnounceSettings } from '../model/announce.js';
import { Announcer } from './announcer.js';
import { type NotAnnounced, type Readiness, type VipDecision, healthyBackends, planAnnouncements } from './announce-policy.js';
import { LinkWatch } from './link-watch.js';
import { Watchdog } from './watchdog.js';

/** What the controller reads of the daemon. */
export interface AnnounceSource {
  /** The control core's views after its last apply. */
  views(): readonly VipView[];
  /** A VIP's own `need`, if it sets one. */
  vipNeed(key: string): number | undefined;
  readonly health: HealthLookup;
  /** Forgets the tracked flows of these VIPs (through the control core: only its reconciler writes the maps); how many. */
  forgetFlows(vips: readonly VipAddress[]): Promise<number>;
}

/** The routes, as the controller uses them (src/fleet/announcer.ts). */
export type AnnounceDevice = Pick<Announcer, 'device' | 'held' | 'list' | 'update' | 'close'>;

/** Where the routes and the interface's state come from: the kernel, or a test's fakes. */
export interface AnnounceSystem {
  /** Creates the announce device and its watchdog (onFired: the watchdog closed it). */
  hold(onFired: (stalledMs: number) => void): Promise<{ readonly device: AnnounceDevice; stop(): Promise<void> }>;
  watchLink(onChange: (up: boolean) => void): Promise<{ readonly up: boolean; stop(): void }>;
}

export interface AnnounceControllerOptions {
  readonly settings: AnnounceSettings;
  readonly interface: string;
  readonly killSwitchEngaged: boolean;
  /** The watchdog withdraws everything once the event loop has been stuck this long. */
  readonly stallMs: number;
  readonly source: AnnounceSource;
  readonly log: Logger;
  /** Default: the kernel's (a TUN device with a watchdog, `ip monitor link`). */
  readonly system?: AnnounceSystem;
}

/** The kernel's routes and interface. */
function kernelSystem({ settings, stallMs, interface: iface, log }: AnnounceControllerOptions): AnnounceSystem {
  return {
    async hold(onFired) {
      const announcer = await Announcer.create({ interface: iface, table: settings.table, proto: settings.proto });
      try {
        const watchdog = await Watchdog.start({ stallMs, descriptor: announcer.shared, onFired: (event) => onFired(event.stalledMs) });
        return {
          device: announcer,
          stop: async () => {
            await watchdog.stop();
            await announcer.close();
          },
        };
      } catch (error) {
        await announcer.close();
        throw error;
      }
    },
    watchLink: (onChange) => LinkWatch.start(iface, onChange, log),
  };
}

/** Hold-downs and anything a hook missed are looked at this often. */
const TICK_MS = 1000;
/** After the watchdog fired, the kernel may still be deleting the old device: retry this often, this many times. */
const RECREATE_RETRY_MS = 50;
const RECREATE_TRIES = 40;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class AnnounceController {
  private readonly system: AnnounceSystem;
  private holding?: { readonly device: AnnounceDevice; stop(): Promise<void> };
  private link?: { readonly up: boolean; stop(): void };
  private readiness: Readiness = new Map();
  private decisions: readonly VipDecision[] = [];
  /** ISO time each VIP's announced state last changed. */
  private readonly changedAt = new Map<string, { announced: boolean; at: string }>();
  private failure?: string;
  private deviceMissing?: string;
  private stopping = false;
  private closed = false;
  private killSwitchEngaged: boolean;
  private running: Promise<void> = Promise.resolve();
  private queued?: Promise<void>;
  private wake?: NodeJS.Timeout;
  private tick?: NodeJS.Timeout;

  private constructor(private readonly options: AnnounceControllerOptions) {
    this.killSwitchEngaged = options.killSwitchEngaged;
    this.system = options.system ?? kernelSystem(options);
  }

  private get announcer(): AnnounceDevice | undefined {
    return this.holding?.device;
  }

  /** Creates the device (refused when taken), starts its watchdog and the interface watch, and plans for the first time. */
  static async start(options: AnnounceControllerOptions): Promise<AnnounceController> {
    const controller = new AnnounceController(options);
    try {
      await controller.hold();
      controller.link = await controller.system.watchLink((up) => {
        options.log.warn(
          { event: 'announce.link_changed', interface: options.interface, up },
          `interface ${options.interface} is ${up ? 'up' : 'down'}`,
        );
        controller.requestEvaluation();
      });
    } catch (error) {
      await controller.close();
      throw error;
    }
    const { settings } = options;
    options.log.info(
      {
        event: 'announce.started',
        device: controller.announcer!.device,
        table: settings.table,
        proto: settings.proto,
        need: settings.need,
        holdDownMs: settings.holdDownMs,
        stallMs: options.stallMs,
      },
      `announcing VIPs through ${controller.announcer!.device} (table ${settings.table}, proto ${settings.proto})`,
    );
    controller.tick = setInterval(() => controller.requestEvaluation(), TICK_MS);
    controller.tick.unref();
    await controller.evaluate();
    return controller;
  }

  /** Plans again soon (coalesced); for hooks that cannot wait. */
  requestEvaluation(): void {
    this.evaluate().catch((error) => this.options.log.error({ event: 'announce.failed', err: error }, 'announcing failed'));
  }

  /** Withdraws at once before the kill-switch is engaged; plans again once it is released. */
  async setKillSwitch(engaged: boolean): Promise<void> {
    this.killSwitchEngaged = engaged;
    await this.evaluate();
  }

  /**
   * Withdraws everything; unless the data plane stays (a restart), waits
   * withdrawDelayMs so that the router has moved the flows elsewhere before
   * the data plane goes.
   */
  async stop({ keepDataplane }: { keepDataplane: boolean }): Promise<void> {
    const had = (this.announcer?.list() ?? []).length > 0;
    this.stopping = true;
    await this.evaluate();
    if (had && !keepDataplane && this.options.settings.withdrawDelayMs > 0) await sleep(this.options.settings.withdrawDelayMs);
  }

  /** Deletes the device (every route goes with it) and stops watching. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.tick);
    clearTimeout(this.wake);
    this.link?.stop();
    await this.running;
    await this.holding?.stop();
  }

  /** What each VIP's announcement is, by VIP key. */
  views(): ReadonlyMap<string, AnnounceView> {
    const announced = new Set(this.announcer?.held ? this.announcer.list() : []);
    return new Map(
      this.decisions.map((d) => {
        const routed = announced.has(d.address);
        const reason: NotAnnounced | null =
          routed || d.reason ? d.reason : { code: 'failed', text: `announcing failed: ${this.failure ?? 'unknown error'}` };
        return [
          d.key,
          {
            announced: routed,
            reason: routed ? null : reason,
            healthyBackends: d.healthy,
            need: d.need,
            since: this.changedAt.get(d.key)?.at ?? new Date().toISOString(),
          },
        ];
      }),
    );
  }

  status(): AnnounceStatus {
    const { settings } = this.options;
    return {
      device: this.announcer?.device ?? null,
      table: settings.table,
      proto: settings.proto,
      need: settings.need,
      holdDownMs: settings.holdDownMs,
      withdrawDelayMs: settings.withdrawDelayMs,
      watchdogStallMs: this.options.stallMs,
      interfaceUp: this.link?.up ?? false,
      announced: this.announcer?.held ? this.announcer.list() : [],
    };
  }

  /** Runs a plan that starts after this call; callers in the meantime share it. */
  private evaluate(): Promise<void> {
    if (this.queued) return this.queued;
    const next = this.running.then(() => {
      this.queued = undefined;
      return this.plan();
    });
    this.queued = next;
    this.running = next.catch(() => undefined);
    return next;
  }

  private async plan(): Promise<void> {
    if (this.closed) return;
    const { source, settings, log } = this.options;
    if (!this.announcer?.held && !this.stopping) await this.rehold();
    const views = source.views();
    const now = performance.now();
    const announcer = this.announcer;
    const announced = new Set(announcer?.held ? announcer.list() : []);
    const plan = planAnnouncements({
      vips: views.map((v) => ({
        key: v.key,
        address: v.vip.address,
        healthy: healthyBackends(v, source.health),
        need: source.vipNeed(v.key) ?? settings.need,
      })),
      node: {
        stopping: this.stopping,
        killSwitchEngaged: this.killSwitchEngaged,
        interface: this.options.interface,
        interfaceUp: this.link?.up ?? true,
        ...(this.deviceMissing ? { deviceMissing: this.deviceMissing } : {}),
      },
      holdDownMs: settings.holdDownMs,
      now,
      announced,
      readiness: this.readiness,
    });
    this.readiness = plan.readiness;
    this.decisions = plan.vips;
    clearTimeout(this.wake);
    if (plan.wakeAt !== undefined) {
      this.wake = setTimeout(() => this.requestEvaluation(), Math.max(0, plan.wakeAt - now) + 1);
      this.wake.unref();
    }
    if (!announcer?.held) return this.noteChanges();

    const vipsOf = (address: string) => plan.vips.filter((d) => d.address === address);
    const withdraw = [...announced].filter((address) => !plan.addresses.get(address));
    const announce = [...plan.addresses].filter(([address, yes]) => yes && !announced.has(address)).map(([address]) => address);
    try {
      if (withdraw.length > 0) {
        await announcer.update({ withdraw });
        for (const address of withdraw) {
          const vips = vipsOf(address);
          const reason = vips.find((d) => d.reason)?.reason ?? { code: 'address', text: 'no VIP has this address any more' };
          const fields = { event: 'announce.withdrawn', address, vips: vips.map((d) => d.key), code: reason.code, reason: reason.text };
          if (reason.code === 'stopping') log.info(fields, `withdrew ${address}: ${reason.text}`);
          else log.warn(fields, `withdrew ${address}: ${reason.text}`);
        }
      }
      if (announce.length > 0) {
        const addresses = new Set(announce);
        const forgotten = await source.forgetFlows(views.filter((v) => addresses.has(v.vip.address)).map((v) => v.vip));
        await announcer.update({ announce });
        for (const address of announce) {
          log.info(
            { event: 'announce.announced', address, vips: vipsOf(address).map((d) => d.key), forgottenFlows: forgotten },
            `announced ${address}`,
          );
        }
      }
      this.failure = undefined;
    } catch (error) {
      this.failure = (error as Error).message;
      log.error({ event: 'announce.failed', err: error }, 'announcing failed: trying again in a second');
    }
    this.noteChanges();
  }

  /** Keeps, per VIP, since when its address has been announced or not. */
  private noteChanges(): void {
    const at = new Date().toISOString();
    const announced = new Set(this.announcer?.held ? this.announcer.list() : []);
    const keys = new Set(this.decisions.map((d) => d.key));
    for (const key of this.changedAt.keys()) if (!keys.has(key)) this.changedAt.delete(key);
    for (const d of this.decisions) {
      const now = announced.has(d.address);
      if (this.changedAt.get(d.key)?.announced !== now) this.changedAt.set(d.key, { announced: now, at });
    }
  }

  /** Creates the device and its watchdog. */
  private async hold(): Promise<void> {
    this.holding = await this.system.hold((stalledMs) => this.watchdogFired(stalledMs));
  }

  private watchdogFired(stalledMs: number): void {
    this.options.log.error(
      { event: 'announce.watchdog_fired', stalledMs, device: this.announcer?.device },
      `the event loop was stuck for ${(stalledMs / 1000).toFixed(1)} s: the watchdog withdrew every VIP`,
    );
    this.requestEvaluation();
  }

  /**
   * The watchdog closed the device: every route is gone. Hold a new one;
   * every VIP goes through its hold-down again, as after a restart.
   */
  private async rehold(): Promise<void> {
    const { log } = this.options;
    this.deviceMissing = 'the event loop was stuck: the watchdog withdrew every VIP';
    this.readiness = new Map();
    await this.holding?.stop();
    this.holding = undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.hold();
        break;
      } catch (error) {
        if (attempt >= RECREATE_TRIES) {
          this.deviceMissing = `no announce device: ${(error as Error).message}`;
          log.error({ event: 'announce.failed', err: error }, 'cannot hold the announce device again: not announcing');
          return;
        }
        await sleep(RECREATE_RETRY_MS);
      }
    }
    this.deviceMissing = undefined;
    log.info({ event: 'announce.device_restored', device: this.announcer!.device }, 'announce device held again');
  }
}

/** A VIP's announcement as the API shows it: the controller's view, or why there is none. */
export function announceViewOf(
  controller: AnnounceController | undefined,
  key: string,
  fallback: { view: VipView | undefined; health: HealthLookup; need: number; since: string },
): AnnounceView {
  const planned = controller?.views().get(key);
  if (planned) return planned;
  return {
    announced: false,
    reason: controller ? { code: 'hold_down', text: 'not planned yet' } : { code: 'off', text: 'announcing off' },
    healthyBackends: fallback.view ? healthyBackends(fallback.view, fallback.health).length : 0,
    need: fallback.need,
    since: fallback.since,
  };
}

/** The watchdog's limit for a kill-switch timeout: a third of it, so that it fires long before the data plane can fail open. */
export function watchdogStallMs(killSwitchTimeoutMs: number): number {
  return Math.round(killSwitchTimeoutMs / 3);
}
