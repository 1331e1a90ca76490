/**
 * The announce controller (src/fleet/announce-controller.ts) over a fake
 * device and interface: it forgets a VIP's tracked flows before announcing
 * it, withdraws at once (before the kill-switch is engaged, when backends
 * fail, when the interface goes down), waits withdraw_delay on a stop that
 * takes the data plane down, and after its watchdog fired holds a new
 * device and goes through the hold-down again. No root.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { type AnnounceDevice, AnnounceController, type AnnounceSystem } from '../../src/fleet/announce-controller.js';
import type { BackendView, VipView } from '../../src/core/views.js';
import type { BackendHealth } from '../../src/health/checker.js';
import { type VipAddress, formatVip, parseVip } from '../../src/model/address.js';
import { ANNOUNCE_DEFAULTS, type AnnounceSettings } from '../../src/model/announce.js';

const WEB = parseVip('10.100.0.100:80/tcp');
const WEB6 = parseVip('[fd00:100::100]:80/tcp');
const HOLD_MS = 150;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

class FakeDevice implements AnnounceDevice {
  readonly routes = new Set<string>();
  held = true;
  failNext?: string;
  constructor(
    readonly device: string,
    private readonly journal: string[],
  ) {}
  list(): string[] {
    return [...this.routes].sort();
  }
  async update({ announce = [], withdraw = [] }: { announce?: readonly string[]; withdraw?: readonly string[] }): Promise<void> {
    if (this.failNext) {
      const reason = this.failNext;
      this.failNext = undefined;
      throw new Error(reason);
    }
    for (const a of withdraw) {
      this.routes.delete(a);
      this.journal.push(`withdraw ${a}`);
    }
    for (const a of announce) {
      this.routes.add(a);
      this.journal.push(`announce ${a}`);
    }
  }
  async close(): Promise<void> {
    this.held = false;
  }
}

function view(vip: VipAddress, backends: string[]): VipView {
  return {
    key: formatVip(vip),
    vip,
    forward: 'l2dsr',
    hash: 'flow',
    tableSize: 251,
    vipId: 0,
    allDown: false,
    backends: backends.map((address, id): BackendView => ({ address, weight: 1, forward: 'l2dsr', id: id + 1, state: 'active', slots: 1 })),
  };
}

/** A controller over fakes; `up` holds the backends whose checks pass. */
async function harness(settings: Partial<AnnounceSettings> = {}) {
  const journal: string[] = [];
  const devices: FakeDevice[] = [];
  const up = new Set(['10.0.0.1', '10.0.0.2', 'fd00::1']);
  let views = [view(WEB, ['10.0.0.1', '10.0.0.2']), view(WEB6, ['fd00::1'])];
  let linkUp = true;
  let onLink: (up: boolean) => void = () => undefined;
  let fire: (stalledMs: number) => void = () => undefined;
  const system: AnnounceSystem = {
    async hold(onFired) {
      const device = new FakeDevice(`dev${devices.length}`, journal);
      devices.push(device);
      fire = onFired;
      return { device, stop: () => device.close() };
    },
    async watchLink(onChange) {
      onLink = onChange;
      return {
        get up() {
          return linkUp;
        },
        stop: () => undefined,
      };
    },
  };
  const health = (_vip: string, address: string): BackendHealth => ({ state: up.has(address) ? 'up' : 'down', since: '', consecutive: 0 });
  const controller = await AnnounceController.start({
    settings: { ...ANNOUNCE_DEFAULTS, holdDownMs: HOLD_MS, withdrawDelayMs: 200, ...settings },
    interface: 'eth0',
    killSwitchEngaged: false,
    stallMs: 1000,
    source: {
      views: () => views,
      vipNeed: () => undefined,
      health,
      forgetFlows: async (vips) => {
        journal.push(`forget ${vips.map(formatVip).join(' ')}`);
        return 7;
      },
    },
    log: pino({ level: 'silent' }),
    system,
  });
  return {
    controller,
    journal,
    devices,
    up,
    setViews: (next: VipView[]) => (views = next),
    setLink: (state: boolean) => {
      linkUp = state;
      onLink(state);
    },
    fireWatchdog: () => {
      devices.at(-1)!.held = false;
      devices.at(-1)!.routes.clear();
      fire(1234);
    },
    /** Waits for the hold-down and the plan after it. */
    settle: () => sleep(HOLD_MS + 120),
  };
}

describe('AnnounceController', () => {
  test("announces after the hold-down, each address once, having forgotten its VIPs' tracked flows first", async () => {
    const h = await harness();
    try {
      assert.deepEqual(h.journal, [], 'nothing during the hold-down');
      const early = h.controller.views().get('10.100.0.100:80/tcp')!;
      assert.equal(early.announced, false);
      assert.equal(early.reason?.code, 'hold_down');
      await h.settle();
      assert.deepEqual(h.journal, ['forget 10.100.0.100:80/tcp [fd00:100::100]:80/tcp', 'announce 10.100.0.100', 'announce fd00:100::100']);
      const now = h.controller.views().get('[fd00:100::100]:80/tcp')!;
      assert.deepEqual([now.announced, now.reason, now.healthyBackends, now.need], [true, null, 1, 1]);
      assert.deepEqual(h.controller.status().announced, ['10.100.0.100', 'fd00:100::100']);
    } finally {
      await h.controller.close();
    }
  });

  test('withdraws at once when a VIP falls below its need, and comes back through the hold-down', async () => {
    const h = await harness({ need: 2 });
    try {
      h.up.add('fd00::2');
      h.setViews([view(WEB, ['10.0.0.1', '10.0.0.2']), view(WEB6, ['fd00::1', 'fd00::2'])]);
      h.controller.requestEvaluation();
      await h.settle();
      h.journal.length = 0;
      h.up.delete('10.0.0.2');
      h.controller.requestEvaluation();
      await sleep(20);
      assert.deepEqual(h.journal, ['withdraw 10.100.0.100']);
      assert.deepEqual(h.controller.views().get('10.100.0.100:80/tcp')!.reason, { code: 'backends', text: '1 healthy backend, need 2' });
      h.up.add('10.0.0.2');
      h.controller.requestEvaluation();
      await sleep(20);
      assert.deepEqual(h.journal, ['withdraw 10.100.0.100'], 'not before its hold-down');
      await h.settle();
      assert.deepEqual(h.journal, ['withdraw 10.100.0.100', 'forget 10.100.0.100:80/tcp', 'announce 10.100.0.100']);
    } finally {
      await h.controller.close();
    }
  });

  test('the kill-switch: engaging resolves once everything is withdrawn; releasing goes through the hold-down', async () => {
    const h = await harness();
    try {
      await h.settle();
      h.journal.length = 0;
      await h.controller.setKillSwitch(true);
      assert.deepEqual(h.journal, ['withdraw 10.100.0.100', 'withdraw fd00:100::100']);
      assert.equal(h.controller.views().get('10.100.0.100:80/tcp')!.reason?.text, 'kill-switch engaged');
      await h.controller.setKillSwitch(false);
      assert.equal(h.journal.length, 2, 'not at once');
      await h.settle();
      assert.equal(h.journal.length, 5);
    } finally {
      await h.controller.close();
    }
  });

  test('the interface going down withdraws everything; back up, the hold-down runs again', async () => {
    const h = await harness();
    try {
      await h.settle();
      h.journal.length = 0;
      h.setLink(false);
      await sleep(20);
      assert.deepEqual(h.journal, ['withdraw 10.100.0.100', 'withdraw fd00:100::100']);
      assert.equal(h.controller.views().get('10.100.0.100:80/tcp')!.reason?.text, 'interface eth0 is down');
      assert.equal(h.controller.status().interfaceUp, false);
      h.setLink(true);
      await sleep(20);
      assert.equal(h.journal.length, 2);
      await h.settle();
      assert.equal(h.journal.length, 5);
    } finally {
      await h.controller.close();
    }
  });

  test('stop withdraws first and, when the data plane goes too, waits the withdraw delay', async () => {
    for (const keepDataplane of [false, true]) {
      const h = await harness();
      try {
        await h.settle();
        h.journal.length = 0;
        const started = performance.now();
        await h.controller.stop({ keepDataplane });
        const ms = performance.now() - started;
        assert.deepEqual(h.journal, ['withdraw 10.100.0.100', 'withdraw fd00:100::100']);
        if (keepDataplane) assert.ok(ms < 150, `no delay when the data plane stays (${ms} ms)`);
        else assert.ok(ms >= 195, `waited the withdraw delay (${ms} ms)`);
        assert.equal(h.controller.views().get('10.100.0.100:80/tcp')!.reason?.code, 'stopping');
      } finally {
        await h.controller.close();
      }
      assert.equal(h.devices.at(-1)!.held, false, 'close() lets the device go');
    }
  });

  test('after the watchdog fired: a new device, and every VIP through its hold-down again', async () => {
    const h = await harness();
    try {
      await h.settle();
      h.journal.length = 0;
      h.fireWatchdog();
      await sleep(20);
      assert.equal(h.devices.length, 2, 'a new device is held');
      assert.deepEqual(h.journal, [], 'not announced at once on the new device');
      assert.equal(h.controller.views().get('10.100.0.100:80/tcp')!.reason?.code, 'hold_down');
      await h.settle();
      assert.deepEqual(h.devices[1]!.list(), ['10.100.0.100', 'fd00:100::100']);
    } finally {
      await h.controller.close();
    }
  });

  test('a route that cannot be changed: the reason says so, and it is tried again', async () => {
    const h = await harness();
    try {
      h.devices[0]!.failNext = 'announcer: cannot announce 10.100.0.100: Permission denied';
      await h.settle();
      const failed = h.controller.views().get('10.100.0.100:80/tcp')!;
      assert.equal(failed.announced, false);
      assert.deepEqual(failed.reason, {
        code: 'failed',
        text: 'announcing failed: announcer: cannot announce 10.100.0.100: Permission denied',
      });
      h.controller.requestEvaluation();
      await sleep(20);
      assert.equal(h.controller.views().get('10.100.0.100:80/tcp')!.announced, true);
    } finally {
      await h.controller.close();
    }
  });
});
