// Blocking waits on the main thread that still hear Node's event loop: ppoll(2) over some fds plus libuv's own epoll fd.
//
// Why: a run loop that waits through the event loop pays a loop turn (and, parked, a threadpool
// hop) for every message, and one that spins with poll(…, 0) loses its core when another process
// wants it. Blocking in the kernel answers the next message on the wake-up itself. Blocking the
// main thread is only acceptable when everything the loop would do still gets done, so each wait
// here also watches libuv's backend fd (its epoll instance: readable when any handle of the loop,
// control socket, signal pipe, threadpool completion, is ready) and never outlasts the loop's next
// timer (uv_backend_timeout, 0 while immediates are queued). The caller returns to the loop as
// soon as `loopWork` says so.
//
// The libuv symbols come from the node binary itself (Node exports them for addons); they exist
// for the main thread's loop only, so a worker thread gets no blocking waits (available() false).
import koffi from 'koffi';
import { isMainThread } from 'node:worker_threads';
import { SysError } from './errors';

const EINTR = 4;
const POLLIN = 0x001;
/** prctl option: the slack the kernel may add to this thread's timer expiries (default 50 µs). */
const PR_SET_TIMERSLACK = 29;

const libc = koffi.load('libc.so.6');
const c = {
  // pollfd array and timespec are passed as raw Buffers built once per waiter: no marshalling per call
  ppoll: libc.func('int ppoll(uint8_t *fds, unsigned long nfds, const uint8_t *timeout, const void *sigmask)'),
  prctl: libc.func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)'),
};

interface Uv {
  readonly loop: unknown;
  readonly backendFd: number;
  readonly backendTimeout: (loop: unknown) => number;
  readonly updateTime: (loop: unknown) => void;
}

let uv: Uv | null | undefined;

function libuv(): Uv | null {
  if (uv !== undefined) return uv;
  uv = null;
  if (!isMainThread) return uv;
  try {
    const self = koffi.load(null as unknown as string);
    const loop = self.func('void *uv_default_loop(void)')();
    const backendFd = Number(self.func('int uv_backend_fd(const void *loop)')(loop));
    if (backendFd < 0) return uv;
    uv = {
      loop,
      backendFd,
      backendTimeout: self.func('int uv_backend_timeout(const void *loop)') as (loop: unknown) => number,
      updateTime: self.func('void uv_update_time(void *loop)') as (loop: unknown) => void,
    };
  } catch {
    // a Node without exported libuv symbols: callers fall back to waits through the loop
  }
  return uv;
}

/** Blocking waits beside the event loop work in this thread. */
export function loopWaitAvailable(): boolean {
  return libuv() !== null;
}

/**
 * Lets the kernel wake this thread within about 1 µs of a timeout instead of 50 µs: the short
 * waits below are tens of µs long. Affects this thread's timers only (libuv's are ms-grained).
 */
export function tightenTimerSlack(): void {
  c.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0);
}

export interface LoopWaitResult {
  /** revents per fd of the waiter, in order; all 0 when none was ready. */
  readonly revents: number[];
  /** The loop has something to do now (a handle ready, a timer due, an immediate queued, a signal): return to it. */
  readonly loopWork: boolean;
}

/** A fixed set of fds to wait on beside the loop; the buffers are built once. */
export class LoopWaiter {
  private readonly fds: Buffer;
  private readonly timespec = Buffer.alloc(16);
  private readonly n: number;

  constructor(reqs: readonly { fd: number; events: number }[]) {
    const u = libuv();
    if (u === null) throw new Error('blocking waits beside the event loop need the main thread of a Node that exports libuv');
    this.n = reqs.length + 1;
    this.fds = Buffer.alloc(8 * this.n);
    reqs.forEach((r, i) => {
      this.fds.writeInt32LE(r.fd, 8 * i);
      this.fds.writeInt16LE(r.events, 8 * i + 4);
    });
    this.fds.writeInt32LE(u.backendFd, 8 * reqs.length);
    this.fds.writeInt16LE(POLLIN, 8 * reqs.length + 4);
  }

  /**
   * Blocks until one of the fds is ready, the loop has work, or timeoutUs passes (0: just
   * check). Never longer than the loop's next timer.
   *
   * uv_backend_timeout is 0 while Node's idle handle is on, which Node turns on while immediates
   * are queued and off only after the check phase's callbacks return: a wait that runs in the
   * continuation of a setImmediate (every wait after a loop turn) would see the loop as busy when
   * nothing is queued, and every wait would become a spin through loop turns. So a 0 counts only
   * when an immediate is really queued; otherwise (idle handle left on, or a timer due this very
   * millisecond) the wait blocks anyway and such work runs at most timeoutUs late.
   */
  wait(timeoutUs: number): LoopWaitResult {
    const u = uv!;
    // libuv computes the timer bound from its cached clock, which stands still while we block
    u.updateTime(u.loop);
    let loopMs = Number(u.backendTimeout(u.loop));
    if (loopMs === 0 && !process.getActiveResourcesInfo().includes('Immediate')) loopMs = -1;
    let us = Math.max(0, Math.floor(timeoutUs));
    let timerBound = false;
    if (loopMs >= 0 && loopMs * 1000 <= us) {
      us = loopMs * 1000;
      timerBound = true;
    }
    const ts = this.timespec;
    // struct timespec { time_t tv_sec; long tv_nsec; }: both fit in the low 32 bits here
    ts.writeUInt32LE(Math.floor(us / 1_000_000), 0);
    ts.writeUInt32LE((us % 1_000_000) * 1000, 8);
    const fds = this.fds;
    for (let i = 0; i < this.n; i++) fds.writeInt16LE(0, 8 * i + 6);
    const got = Number(c.ppoll(fds, this.n, ts, null));
    const revents: number[] = [];
    for (let i = 0; i < this.n - 1; i++) revents.push(fds.readInt16LE(8 * i + 6));
    if (got < 0) {
      const e = koffi.errno();
      if (e === EINTR) return { revents, loopWork: true }; // a signal: its handler runs in the loop
      throw new SysError('ppoll', e);
    }
    const backendReady = fds.readInt16LE(8 * (this.n - 1) + 6) !== 0;
    return { revents, loopWork: backendReady || (got === 0 && timerBound) };
  }
}
