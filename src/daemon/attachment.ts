/**
 * The daemon's program on its interface, watched: another tool or an
 * operator may detach it or attach another program, and the interface may
 * be deleted and created again (a new ifindex). The daemon never takes
 * the interface back from a program someone else attached (that would be
 * two tools fighting, each undoing the other): it says so, loudly, in its
 * status, its log and a metric. An interface that comes back empty under
 * the same name is the one it was told to balance: it attaches again.
 */
import type { Logger } from 'pino';
import type { AttachmentStatus } from '../api/protocol.js';
import { attachedProgram, attachXdp, detachXdp, type AttachedProgram, type XdpMode } from '../dataplane/xdp.js';
import { closeFd, native } from '../dataplane/libbpf.js';
import { ifNameToIndex } from '../util/libc.js';

const INSPECT_MS = 1000;

export class XdpAttachment {
  private status: AttachmentStatus;
  private timer?: NodeJS.Timeout;
  /** Called after the program was attached to a new interface of the same name. */
  onReattached?: () => void;

  constructor(
    private readonly interfaceName: string,
    ifindex: number,
    private readonly programFd: number,
    private readonly programId: number,
    private readonly mode: XdpMode,
    private readonly log: Logger,
  ) {
    this.status = { state: 'attached', ifindex, since: new Date().toISOString(), detail: `attached to ${interfaceName}` };
  }

  get current(): AttachmentStatus {
    return this.status;
  }

  get ifindex(): number {
    return this.status.ifindex;
  }

  /**
   * The first attach. `present` is an xdp_balancer a previous daemon left
   * (handed over by a restart, or a crash): replaced, atomically when the
   * mode is the same.
   */
  attach(present: AttachedProgram | null, handedOver: { programId: number; pid: number } | undefined): void {
    const { ifindex } = this.status;
    if (!present) {
      attachXdp(ifindex, this.interfaceName, this.programFd, this.mode);
      return;
    }
    if (handedOver?.programId === present.id) {
      this.log.info(
        { event: 'dataplane.handed_over', programId: present.id, mode: present.mode, previousPid: handedOver.pid },
        `taking over the xdp_balancer the previous daemon (pid ${handedOver.pid}) handed over`,
      );
    } else {
      this.log.warn(
        { event: 'dataplane.replaced', programId: present.id, mode: present.mode },
        'replacing the xdp_balancer a previous run left attached (it stopped without handing it over: a crash?)',
      );
    }
    const oldFd = native.progFdById(present.id) as number;
    try {
      if (present.mode === this.mode) {
        attachXdp(ifindex, this.interfaceName, this.programFd, this.mode, oldFd);
      } else {
        detachXdp(ifindex, oldFd, present.mode);
        attachXdp(ifindex, this.interfaceName, this.programFd, this.mode);
      }
    } finally {
      closeFd(oldFd);
    }
  }

  start(): void {
    this.timer = setInterval(() => this.inspect(), INSPECT_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Detaches the program if it is still the one attached. */
  detach(): void {
    detachXdp(this.status.ifindex, this.programFd, this.mode);
  }

  /** Looks at the interface now: what is attached, and is it still the same interface. */
  inspect(): void {
    try {
      this.look();
    } catch (error) {
      this.log.error({ event: 'dataplane.check_failed', err: error }, `could not check the program on ${this.interfaceName}`);
    }
  }

  private look(): void {
    const ifindex = ifNameToIndex(this.interfaceName);
    if (ifindex === 0) {
      this.set('interface_missing', this.status.ifindex, `interface ${this.interfaceName} does not exist: nothing is balanced`);
      return;
    }
    if (ifindex !== this.status.ifindex) {
      this.reattach(ifindex);
      return;
    }
    const present = attachedProgram(ifindex);
    if (present?.id === this.programId) this.set('attached', ifindex, `attached to ${this.interfaceName}`);
    else if (!present) {
      this.set(
        'detached',
        ifindex,
        `the program was detached from ${this.interfaceName}: nothing is balanced (lbctl restart attaches it again)`,
      );
    } else {
      this.set(
        'replaced',
        ifindex,
        `${this.interfaceName} runs another XDP program (${present.name}, id ${present.id}): lbctl balances nothing there until it is removed and lbctl restarted`,
      );
    }
  }

  /** The interface was deleted and created again: attach to the new one unless something else is on it. */
  private reattach(ifindex: number): void {
    const previous = this.status.ifindex;
    try {
      attachXdp(ifindex, this.interfaceName, this.programFd, this.mode);
    } catch (error) {
      const present = attachedProgram(ifindex);
      this.set(
        present ? 'replaced' : 'detached',
        ifindex,
        `${this.interfaceName} was created again (ifindex ${previous} -> ${ifindex}) and the program could not be attached: ${(error as Error).message}`,
      );
      return;
    }
    this.log.warn(
      { event: 'dataplane.reattached', interface: this.interfaceName, ifindex, previousIfindex: previous },
      `${this.interfaceName} was created again (ifindex ${previous} -> ${ifindex}): the program is attached to it`,
    );
    this.status = { state: 'attached', ifindex, since: new Date().toISOString(), detail: `attached to ${this.interfaceName}` };
    this.onReattached?.();
  }

  private set(state: AttachmentStatus['state'], ifindex: number, detail: string): void {
    const changed = state !== this.status.state || ifindex !== this.status.ifindex;
    this.status = { state, ifindex, since: changed ? new Date().toISOString() : this.status.since, detail };
    if (!changed) return;
    if (state === 'attached') {
      this.log.warn(
        { event: 'dataplane.attached', interface: this.interfaceName, ifindex },
        `the program is attached to ${this.interfaceName} again`,
      );
    } else {
      this.log.error({ event: 'dataplane.detached', interface: this.interfaceName, ifindex, state }, detail);
    }
  }
}
