// The process-wide readiness reactor: one poll(2) parked on libuv's threadpool for every fd any transport waits on.
//
// Each transport used to park its own pollAsync while idle. libuv's pool has 4 threads by
// default, so a fifth idle device in one process never got its poll run (and fs/dns/crypto calls
// queued behind them). Here every wait becomes an interest (fds, events, callback) in one set;
// a single pollAsync covers the whole set plus the reactor's own wake-up eventfd. When it returns,
// the main thread dispatches each interest whose fds are ready and arms the next poll in the
// check phase of the same loop turn (setImmediate), so interests cancelled and re-registered by
// the callbacks' continuations are coalesced into one re-arm.
//
// Changing the set while a poll is parked writes the wake-up eventfd, so the worker returns and
// the next poll sees the new set. That matters for cancellation too: the kernel holds a
// reference to every file a parked poll(2) watches, so a socket closed while still in the set
// would stay open (its peer seeing no EOF) until the poll returned. Owners therefore cancel their
// interest before closing an fd; the cancel wakes the poll and the close then releases the socket
// microseconds later. An fd closed without that gets POLLNVAL: its interest hears it once and is
// dropped, so a stale fd never spins the reactor.
//
// The parked poll keeps Node's event loop alive exactly as long as some interest exists: with an
// empty set nothing is parked, so a process whose transports all stopped exits normally.
import type { Logger } from 'pino';
import { eventfd, eventfdConsume, eventfdSignal, POLLIN, POLLNVAL, pollAsync, type PollRequest } from '../../../ffi/libc';
import { moduleLogger } from '../../log';

export type ReadyCallback = (revents: number[]) => void;

/** What a transport waits for: a set of fds, told together which of them are ready. */
export interface Interest {
  /** The interest is in the set (not cancelled, not dropped for POLLNVAL). */
  readonly active: boolean;
  /** Leaves the set; wakes a parked poll so the fds are no longer watched. Idempotent. */
  cancel(): void;
}

/** A one-shot wait for any of a set of fds. */
export interface PendingWait {
  /** revents per request as poll(2) gives them; all 0 on timeout or cancel. */
  readonly ready: Promise<number[]>;
  /** Resolves ready with zeros now and leaves the set (before the caller closes a watched fd). */
  cancel(): void;
}

export interface ReactorStats {
  /** Interests in the set now. */
  readonly interests: number;
  /** Polls parked on the threadpool so far. */
  readonly arms: number;
  /** Times a parked poll was woken because the set changed. */
  readonly wakes: number;
  /** Callbacks run. */
  readonly dispatches: number;
}

/** How long to wait before re-arming after pollAsync itself failed, so a persistent failure cannot spin. */
const RETRY_AFTER_FAILURE_MS = 10;

class Registration implements Interest {
  active = true;
  constructor(
    private readonly owner: Reactor,
    readonly reqs: readonly PollRequest[],
    readonly callback: ReadyCallback,
  ) {}

  cancel(): void {
    if (!this.active) return;
    this.active = false;
    this.owner.remove(this);
  }
}

export class Reactor {
  private readonly set = new Set<Registration>();
  private wakeFd = -1;
  /** A poll is on the threadpool; its snapshot of the set is `parkedOn`. */
  private parked = false;
  private parkedOn: readonly Registration[] = [];
  /** The wake-up eventfd was written for the parked poll (once per poll is enough). */
  private woken = false;
  private armScheduled = false;
  private log: Logger | null = null;
  private counters = { arms: 0, wakes: 0, dispatches: 0 };

  /**
   * Adds an interest: callback gets the revents of reqs (in order) each time a poll finds one of
   * them ready, until cancel(). Callbacks run on the main thread; one that throws is logged and
   * the others still run.
   */
  watch(reqs: readonly PollRequest[], callback: ReadyCallback): Interest {
    const r = new Registration(this, reqs.map((q) => ({ fd: q.fd, events: q.events })), callback);
    this.set.add(r);
    this.changed();
    return r;
  }

  /** Resolves with the revents of reqs once one is ready, or with zeros after timeoutMs (-1: never) or cancel(). */
  wait(reqs: readonly PollRequest[], timeoutMs: number): PendingWait {
    let resolve!: (rev: number[]) => void;
    const ready = new Promise<number[]>((res) => (resolve = res));
    let timer: NodeJS.Timeout | null = null;
    const finish = (rev: number[]): void => {
      if (!interest.active) return;
      interest.cancel();
      if (timer !== null) clearTimeout(timer);
      resolve(rev);
    };
    const interest = this.watch(reqs, finish);
    if (timeoutMs >= 0) timer = setTimeout(() => finish(reqs.map(() => 0)), timeoutMs);
    return { ready, cancel: () => finish(reqs.map(() => 0)) };
  }

  stats(): ReactorStats {
    return { interests: this.set.size, ...this.counters };
  }

  /** Registration.cancel: out of the set, and out of a parked poll's too. */
  remove(r: Registration): void {
    this.set.delete(r);
    if (!this.parked) this.scheduleArm();
    else if (this.parkedOn.includes(r)) this.wakeParked();
    // parked without r: r came after the arm, whose wake-up is already on its way
  }

  private changed(): void {
    if (this.parked) this.wakeParked();
    else this.scheduleArm();
  }

  private wakeParked(): void {
    if (this.woken) return;
    this.woken = true;
    this.counters.wakes++;
    eventfdSignal(this.wakeFd);
  }

  private scheduleArm(): void {
    if (this.armScheduled) return;
    this.armScheduled = true;
    setImmediate(() => {
      this.armScheduled = false;
      this.arm();
    });
  }

  private arm(): void {
    if (this.parked || this.set.size === 0) return;
    if (this.wakeFd < 0) {
      try {
        this.wakeFd = eventfd(); // lives as long as the process: the reactor is process-wide
      } catch (err) {
        // out of fds, say: the waits stay registered and are served once it works
        this.logger().error({ err }, 'cannot create the reactor wake-up eventfd; retrying');
        setTimeout(() => this.arm(), RETRY_AFTER_FAILURE_MS);
        return;
      }
    }
    const snapshot = [...this.set];
    const reqs: PollRequest[] = [{ fd: this.wakeFd, events: POLLIN }];
    for (const r of snapshot) for (const q of r.reqs) reqs.push(q);
    this.parked = true;
    this.woken = false;
    this.parkedOn = snapshot;
    this.counters.arms++;
    pollAsync(reqs, -1).then(
      (rev) => this.dispatch(snapshot, rev),
      (err: unknown) => {
        this.parked = false;
        this.parkedOn = [];
        this.logger().error({ err }, 'poll on the threadpool failed; retrying');
        setTimeout(() => this.arm(), RETRY_AFTER_FAILURE_MS);
      },
    );
  }

  private dispatch(snapshot: readonly Registration[], rev: readonly number[]): void {
    this.parked = false;
    this.parkedOn = [];
    try {
      this.dispatchReady(snapshot, rev);
    } catch (err) {
      this.logger().error({ err }, 'reactor dispatch failed');
    } finally {
      // Whatever happened above, every other wait in the process depends on the next poll.
      this.scheduleArm();
    }
  }

  private dispatchReady(snapshot: readonly Registration[], rev: readonly number[]): void {
    if (rev[0]) eventfdConsume(this.wakeFd);
    let at = 1;
    for (const r of snapshot) {
      const n = r.reqs.length;
      const mine = rev.slice(at, at + n);
      at += n;
      // cancelled since the poll was armed (by an earlier callback of this round, or while parked)
      if (!r.active || !mine.some((x) => x !== 0)) continue;
      this.counters.dispatches++;
      try {
        r.callback(mine);
      } catch (err) {
        this.logger().error({ err }, 'readiness callback threw');
      }
      if (r.active && mine.some((x) => (x & POLLNVAL) !== 0)) {
        // closed without being unregistered first: told once, then dropped so the poll cannot spin on it
        this.logger().warn({ fds: r.reqs.filter((_, i) => (mine[i]! & POLLNVAL) !== 0).map((q) => q.fd) }, 'watched fd was closed while registered; dropping the interest');
        r.cancel();
      }
    }
  }

  private logger(): Logger {
    if (this.log === null) this.log = moduleLogger('reactor');
    return this.log;
  }
}

/** The one reactor of this process: every transport waits through it. */
export const reactor = new Reactor();
