// The doorbell poller over the UAR BAR memory (docs/device.md section 7): busy after activity, backing off to a bound when idle.
import { LoopWaiter, loopWaitAvailable, tightenTimerSlack } from '../../ffi/event-loop';
import type { NicPollConfig } from './config';
import type { DataPath } from './datapath';
import { UAR_DOORBELL_AREA, UAR_PAGE_SIZE, type NicObjects } from './objects';
import { hex, type Observer } from './trace';

/** A doorbell word that changed: page, byte offset in the page (a multiple of 4), new and old value. */
export type DoorbellHandler = (page: number, offset: number, value: number, old: number) => void;

export interface PollerStats {
  readonly running: boolean;
  readonly busy: boolean;
  readonly wakeups: number;
  readonly changes: number;
  readonly sleepMs: number;
}

const FIRST_SLEEP_MS = 1;
/**
 * Inside the busy window the poller sleeps this long between scans, blocked in the kernel beside
 * the event loop (ffi/event-loop.ts), instead of spinning through loop turns: a doorbell waits at
 * most this long (plus a wake-up) to be seen, and the core is free for the guest meanwhile.
 */
const BUSY_SLICE_US = 20;
/**
 * Right after a change the poller scans back to back, without sleeping, for this long: a guest
 * that rings again as soon as it sees its completion does so within tens of µs, and a sleeping
 * thread woken by a timer on a loaded machine can wait longer than that for a core. The scans
 * still check the event loop between them (a ppoll with no timeout), so its work is not held up.
 */
const SPIN_AFTER_CHANGE_US = 200;
/** How long one tick may scan and sleep before the loop gets a turn anyway (microtasks, a timer due this millisecond). */
const MAX_TICK_MS = 0.5;
/**
 * After the busy window, for this long since the last activity, the poller keeps sleeping in
 * blocking slices that grow with the idle time (an eighth of it, up to WARM_SLICE_MAX_US) before
 * it falls back to timers (1 ms and up, libuv's granularity). A guest that pauses a few ms between
 * bursts (descheduled on a loaded host, or a driver doing other work) then finds its next doorbell
 * seen within a fraction of that pause instead of after a millisecond timer.
 */
const WARM_MS = 100;
const WARM_SLICE_MAX_US = 1000;

/**
 * Compares the doorbell half of every UAR page with a shadow copy. Guest stores reach the memory
 * without any message, so polling is the only way to see them; a bound on the sleep bounds the
 * latency of a doorbell on an idle device, the busy window keeps a burst fast.
 */
export class DoorbellPoller {
  private readonly shadow: Buffer;
  private readonly shadowWords: Uint32Array;
  private running = false;
  private lastActivity = 0;
  private sleepMs = FIRST_SLEEP_MS;
  private immediate: NodeJS.Immediate | null = null;
  private timer: NodeJS.Timeout | null = null;
  private wakeups = 0;
  private changes = 0;
  private readonly busyWindowMs: number;
  /** Sleeps between busy scans without leaving the loop's work undone; null: spin through loop turns. */
  private readonly slice: LoopWaiter | null;

  constructor(
    /** The live UAR memory (BAR2). Read with 32-bit loads so a concurrent guest store is never torn. */
    private readonly memory: Buffer,
    private readonly numUars: number,
    private readonly poll: NicPollConfig,
    private readonly onDoorbell: DoorbellHandler,
    private readonly onError: (err: unknown) => void,
  ) {
    this.shadow = Buffer.alloc(numUars * UAR_PAGE_SIZE);
    this.shadowWords = new Uint32Array(this.shadow.buffer, this.shadow.byteOffset, this.shadow.length / 4);
    this.busyWindowMs = poll.busyWindowUs / 1000;
    this.slice = process.env.VRNIC_WAIT !== 'spin' && loopWaitAvailable() ? new LoopWaiter([]) : null;
    if (this.slice !== null) tightenTimerSlack();
  }

  private get words(): Uint32Array {
    return new Uint32Array(this.memory.buffer, this.memory.byteOffset, this.memory.length / 4);
  }

  /** Starts watching; what is in the memory now is the baseline, not a change. */
  start(): void {
    if (this.running) return;
    this.memory.copy(this.shadow);
    this.running = true;
    this.poke();
  }

  stop(): void {
    this.running = false;
    this.cancel();
  }

  /** Forgets the baseline (after the device zeroed the memory itself). */
  resync(): void {
    this.memory.copy(this.shadow);
  }

  /** Activity elsewhere (an admin command) makes doorbells likely soon: go busy now. */
  poke(): void {
    if (!this.running) return;
    this.lastActivity = performance.now();
    this.sleepMs = FIRST_SLEEP_MS;
    if (this.immediate !== null) return;
    this.cancel();
    this.schedule();
  }

  stats(): PollerStats {
    return {
      running: this.running,
      busy: this.running && performance.now() - this.lastActivity < this.busyWindowMs,
      wakeups: this.wakeups,
      changes: this.changes,
      sleepMs: this.sleepMs,
    };
  }

  private cancel(): void {
    if (this.immediate !== null) clearImmediate(this.immediate);
    if (this.timer !== null) clearTimeout(this.timer);
    this.immediate = null;
    this.timer = null;
  }

  /** How long to sleep blocked before the next scan (0: just check the loop); null: too long idle, back off with timers. */
  private sliceUs(): number | null {
    const idleMs = performance.now() - this.lastActivity;
    if (idleMs * 1000 < SPIN_AFTER_CHANGE_US) return 0;
    if (idleMs < this.busyWindowMs) return BUSY_SLICE_US;
    if (idleMs < WARM_MS) return Math.min(WARM_SLICE_MAX_US, Math.max(BUSY_SLICE_US, (idleMs * 1000) / 8));
    return null;
  }

  private schedule(): void {
    if (!this.running) return;
    if (performance.now() - this.lastActivity < (this.slice !== null ? WARM_MS : this.busyWindowMs)) {
      // Not unref'd: an unref'd immediate does not stop libuv from blocking in its poll phase,
      // so the "busy" poll would only run when some other event woke the loop.
      this.immediate = setImmediate(this.tick);
      return;
    }
    this.timer = setTimeout(this.tick, this.sleepMs);
    this.timer.unref();
    this.sleepMs = Math.min(this.sleepMs * 2, this.poll.maxSleepMs);
  }

  private readonly tick = (): void => {
    this.immediate = null;
    this.timer = null;
    if (!this.running) return;
    this.wakeups++;
    try {
      const tickEnd = performance.now() + MAX_TICK_MS;
      for (;;) {
        if (this.scan()) {
          // handlers' continuations (promises) run once this tick returns
          this.lastActivity = performance.now();
          this.sleepMs = FIRST_SLEEP_MS;
          break;
        }
        if (this.slice === null || performance.now() >= tickEnd || !this.running || this.immediate !== null || this.timer !== null) break;
        const sliceUs = this.sliceUs();
        if (sliceUs === null) break;
        if (this.slice.wait(sliceUs).loopWork) break;
      }
    } catch (err) {
      // A handler bug must not stop the poller: doorbells would be lost silently.
      this.onError(err);
    }
    // A handler may have stopped us (reset, fatal) or poked us (already rescheduled).
    if (this.running && this.immediate === null && this.timer === null) this.schedule();
  };

  /** One pass over all pages; true when some doorbell word changed. */
  private scan(): boolean {
    let changed = false;
    const mem = this.memory;
    for (let page = 0; page < this.numUars && this.running; page++) {
      const start = page * UAR_PAGE_SIZE;
      // memcmp of the doorbell half: the common no-change case costs one native call per page.
      if (mem.compare(this.shadow, start, start + UAR_DOORBELL_AREA, start, start + UAR_DOORBELL_AREA) === 0) continue;
      const words = this.words;
      const first = start / 4;
      const last = first + UAR_DOORBELL_AREA / 4;
      for (let w = first; w < last && this.running; w++) {
        const value = words[w];
        const old = this.shadowWords[w];
        if (value === old) continue;
        this.shadowWords[w] = value;
        changed = true;
        this.changes++;
        this.onDoorbell(page, (w - first) * 4, value, old);
      }
    }
    return changed;
  }
}

/**
 * What a changed doorbell word means (docs/device.md section 7). Every change counts as a
 * doorbell; one that no live QP/CQ owns is also a guest error and otherwise ignored.
 */
export function dispatchDoorbell(
  nic: { readonly obs: Observer; readonly objects: NicObjects; readonly datapath: Pick<DataPath, 'sqDoorbell' | 'rqDoorbell' | 'cqDoorbell' | 'cqArm'> },
  page: number,
  offset: number,
  value: number,
  old: number,
): void {
  const obs = nic.obs;
  obs.counters.doorbells++;
  const handle = value >>> 16;
  const index = value & 0xffff;
  const owner = nic.objects.uars.isAllocated(page) ? nic.objects.uars.slotOwner(page, offset) : null;
  const word = offset & 4;
  const what = owner === null ? 'none' : owner.kind === 'qp' ? (word === 0 ? 'sq' : 'rq') : word === 0 ? 'cq' : 'cq-arm';
  if (obs.verbose) {
    obs.emit('doorbell', { uar: page, offset: hex(offset), value: hex(value), old: hex(old), target: what }, 'doorbell');
  }
  if (!nic.objects.uars.isAllocated(page)) {
    obs.guestError({ uar: page, offset: hex(offset), value: hex(value) }, 'doorbell write on an unallocated UAR page');
    return;
  }
  if (owner === null) {
    obs.guestError({ uar: page, offset: hex(offset), value: hex(value) }, 'doorbell write to a slot no QP or CQ owns');
    return;
  }
  if (owner.kind === 'qp') {
    const qp = owner.qp;
    if (handle !== qp.qpn) {
      obs.guestError({ uar: page, offset: hex(offset), value: hex(value), qpn: qp.qpn }, 'QP doorbell names another QP; ignored');
      return;
    }
    if (word === 0) nic.datapath.sqDoorbell(qp, index);
    else if (qp.rq === null) obs.guestError({ uar: page, offset: hex(offset), qpn: qp.qpn }, 'RQ doorbell on a QP without a receive queue');
    else nic.datapath.rqDoorbell(qp, index);
    return;
  }
  const cq = owner.cq;
  if (word === 0) {
    if (handle !== cq.cqn) {
      obs.guestError({ uar: page, offset: hex(offset), value: hex(value), cqn: cq.cqn }, 'CQ doorbell names another CQ; ignored');
      return;
    }
    nic.datapath.cqDoorbell(cq, index);
    return;
  }
  // The arm word: only a change with ARM set arms (the sequence number makes repeated arms changes).
  if ((value & 0x80000000) !== 0) nic.datapath.cqArm(cq, index);
}
