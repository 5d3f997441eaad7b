// Readiness waits for both transports' run loops: a short window after activity in which the main thread blocks in the kernel, then the process-wide reactor.
//
// A wait through the reactor (./reactor.ts: one poll(2) on a libuv worker for the whole process) costs a threadpool hop plus a main-loop wake-up (tens of µs on these machines) every
// time it is armed. A vfio-user client that just got a reply usually sends its next request within
// a few µs (a guest driver's MMIO loop, the bench client), so for a window after serving something
// the main thread waits for the socket itself, blocked in ppoll(2) together with the event loop's
// own epoll fd and bounded by the loop's next timer (ffi/event-loop.ts). The next request then
// wakes this thread directly and is answered without an event-loop turn; anything the loop has to
// do (control socket, signals, timers, the NIC's doorbell poller, other devices) ends the wait
// and gets its turn first. Once the window passes with nothing to do, the wait goes back to the
// reactor: an idle device costs no CPU and no threadpool thread.
//
// The design this replaced, kept for comparison (VRNIC_WAIT=spin), checked the socket with
// poll(…, 0) and gave the loop a turn between checks: each check cost a loop turn, and on a busy
// machine the spinning thread lost its core. docs/performance.md compares the two.
import { poll, type PollRequest } from '../../../ffi/libc';
import { LoopWaiter, loopWaitAvailable } from '../../../ffi/event-loop';
import { reactor, type PendingWait } from './reactor';

/**
 * How long the loop keeps checking after the last activity, in µs. Long enough to cover a
 * client's turnaround between a reply and its next request (a few µs for a tight loop, tens of µs
 * for a TCG guest's MMIO loop); short enough that a lone access costs well under a millisecond of
 * CPU. VRNIC_BUSY_WINDOW_US overrides it (0 turns the window off) for measurements.
 */
export const DEFAULT_BUSY_WINDOW_US = 200;

/** Longest window the override accepts: beyond this the spin would show up as idle CPU. */
const MAX_BUSY_WINDOW_US = 10_000;

export function busyWindowUsFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.VRNIC_BUSY_WINDOW_US;
  if (raw === undefined || raw === '') return DEFAULT_BUSY_WINDOW_US;
  const n = Number(raw);
  return Number.isFinite(n) && n >= 0 ? Math.min(Math.floor(n), MAX_BUSY_WINDOW_US) : DEFAULT_BUSY_WINDOW_US;
}

export type WaitMode = 'block' | 'spin';

/** VRNIC_WAIT=spin selects the older spinning window (for measurements); anything else blocks when it can. */
export function waitModeFromEnv(env: NodeJS.ProcessEnv = process.env): WaitMode {
  return env.VRNIC_WAIT === 'spin' || !loopWaitAvailable() ? 'spin' : 'block';
}

/** Ready checks answered in a row without an event-loop turn before the loop is made to take one. */
const MAX_HITS_PER_TURN = 32;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export interface BusyPollStats {
  /** Waits answered by the synchronous check inside the window. */
  readonly busyHits: number;
  /** Waits that went to the reactor (window over or off). */
  readonly asyncWaits: number;
}

export class BusyPoll {
  private readonly windowMs: number;
  private until = 0;
  private hits = 0;
  private asyncWaits = 0;
  private hitsSinceTurn = 0;
  private parkedWait: PendingWait | null = null;
  /** The blocking waiter for the last set of fds waited on (the set rarely changes). */
  private waiter: { reqs: readonly PollRequest[]; w: LoopWaiter } | null = null;

  constructor(windowUs = busyWindowUsFromEnv(), readonly mode: WaitMode = waitModeFromEnv()) {
    this.windowMs = windowUs / 1000;
  }

  /** Something was served: keep checking synchronously for the next window. */
  activity(): void {
    if (this.windowMs > 0) this.until = performance.now() + this.windowMs;
  }

  /** Inside the window: the next wait starts with a cheap synchronous check. */
  get active(): boolean {
    return performance.now() < this.until;
  }

  /** Ends the window now (client gone, stopping): the next wait goes straight to the reactor. */
  quiet(): void {
    this.until = 0;
  }

  /**
   * Waits until one of reqs is ready, timeoutMs passes (-1: no limit) or stillWanted() turns
   * false after an event-loop turn (then every revents is 0 and the caller re-evaluates).
   * Returns each request's revents, as poll(2) does. justChecked: the caller polled them a moment
   * ago and found nothing, so with VRNIC_WAIT=spin the first check waits for an event-loop turn
   * (a blocking wait needs no such care).
   */
  async wait(reqs: readonly PollRequest[], timeoutMs: number, stillWanted: () => boolean, justChecked = false): Promise<number[]> {
    let first = true;
    while (performance.now() < this.until) {
      if (this.hitsSinceTurn >= MAX_HITS_PER_TURN || (first && justChecked && this.mode === 'spin')) {
        // a client that is always ready would otherwise keep the loop in microtasks for ever
        await this.turn();
        if (!stillWanted()) return reqs.map(() => 0);
      }
      first = false;
      let rev: number[];
      let loopWork = true;
      if (this.mode === 'block') {
        const got = this.loopWaiter(reqs).wait((this.until - performance.now()) * 1000);
        rev = got.revents;
        loopWork = got.loopWork;
      } else {
        rev = poll(reqs, 0);
      }
      if (rev.some((r) => r !== 0)) {
        this.hits++;
        this.hitsSinceTurn++;
        return rev;
      }
      // blocked until the window ended with nothing to do: straight to the reactor
      if (!loopWork) break;
      await this.turn();
      if (!stillWanted()) return reqs.map(() => 0);
    }
    this.asyncWaits++;
    this.hitsSinceTurn = 0;
    return this.park(reqs, timeoutMs);
  }

  /**
   * Waits through the reactor, without the window: until one of reqs is ready, timeoutMs passes
   * (-1: no limit) or cancel().
   */
  async park(reqs: readonly PollRequest[], timeoutMs: number): Promise<number[]> {
    const w = reactor.wait(reqs, timeoutMs);
    this.parkedWait = w;
    try {
      return await w.ready;
    } finally {
      if (this.parkedWait === w) this.parkedWait = null;
    }
  }

  /**
   * Ends a wait parked in the reactor now (its revents all 0) and takes its fds out of the
   * reactor's poll: call it before closing an fd the wait may be watching.
   */
  cancel(): void {
    this.parkedWait?.cancel();
  }

  private loopWaiter(reqs: readonly PollRequest[]): LoopWaiter {
    const last = this.waiter;
    if (last !== null && last.reqs.length === reqs.length && last.reqs.every((r, i) => r.fd === reqs[i]!.fd && r.events === reqs[i]!.events)) return last.w;
    this.waiter = { reqs: reqs.map((r) => ({ fd: r.fd, events: r.events })), w: new LoopWaiter(reqs) };
    return this.waiter.w;
  }

  private turn(): Promise<void> {
    this.hitsSinceTurn = 0;
    // Not unref'd on purpose: libuv must not block in its poll phase while we spin.
    return nextTurn();
  }

  stats(): BusyPollStats {
    return { busyHits: this.hits, asyncWaits: this.asyncWaits };
  }
}
