// One vfio-user connection as a client sees it: the socket, request/reply matching, and the
// background loop that reads replies, answers the server's DMA requests and watches IRQ eventfds.
//
// Everything is async and nothing blocks the event loop, so the server may live in the same
// process: one wait in the process-wide reactor covers the socket, the IRQ eventfds someone
// awaits, and a wake-up eventfd.
import type { Logger } from 'pino';
import { closeQuietly, eventfd, eventfdConsume, eventfdSignal, FdSocket, POLLIN, POLLOUT, type PollRequest } from '../../../ffi/libc';
import { errnoName, SysError } from '../../../ffi/errors';
import { commandName, DEFAULT_MAX_DATA_XFER_SIZE, HEADER_SIZE, HeaderFlag } from '../protocol/constants';
import { encodeMessage, isReply } from '../protocol/messages';
import { FramingError, MessageStream, type RawMessage } from '../protocol/stream';
import { reactor, type PendingWait } from '../transports/reactor';
import { DmaServer } from './dma-server';
import { IrqEventfds } from './irqs';

/** The server answered a request with an error. */
export class VfioUserError extends Error {
  constructor(readonly command: number, readonly errno: number) {
    super(`${commandName(command)} failed: ${errnoName(errno)}`);
    this.name = 'VfioUserError';
  }
  /** Symbolic errno, e.g. 'EINVAL'. */
  get code(): string {
    return errnoName(this.errno);
  }
}

/** The connection is gone (server closed it, or close() was called). */
export class DisconnectedError extends Error {
  constructor(reason: string) {
    super(`vfio-user connection closed: ${reason}`);
    this.name = 'DisconnectedError';
  }
}

export interface ClientOptions {
  /** Capabilities offered in VERSION (defaults: 8 fds, 1 MiB transfers, 4 KiB pages, write_multiple). */
  readonly maxMsgFds?: number;
  readonly maxDataXferSize?: number;
  readonly writeMultiple?: boolean;
  /** Extra JSON put in the capabilities object as-is (for protocol tests). */
  readonly extraCapabilities?: Record<string, unknown>;
  /** Reject a request when no reply came within this many ms (default 10000). */
  readonly timeoutMs?: number;
  /** Answer the server's DMA_READ/DMA_WRITE (default true); false plays a client that stalls. */
  readonly answerDmaRequests?: boolean;
  readonly log?: Logger;
}

/** A reply as received: header fields and payload; fds already closed unless noted. */
export interface Reply {
  readonly msgId: number;
  readonly command: number;
  readonly flags: number;
  readonly error: number;
  readonly payload: Buffer;
  readonly fds: number[];
}

interface Waiter {
  readonly command: number;
  readonly keepFds: boolean;
  resolve(r: Reply): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class Connection {
  private readonly stream: MessageStream;
  private readonly wakeFd: number;
  private pending: PendingWait | null = null;
  private nextId = 1;
  private readonly waiters = new Map<number, Waiter>();
  /** The fds the server sent with region infos, by region index (closed by close()). */
  protected readonly regionFds = new Map<number, number>();
  /** The regions mapped for DMA, and the answers to the server's DMA requests. */
  protected readonly dma: DmaServer;
  protected readonly irqs = new IrqEventfds();
  private closedReason: string | null = null;
  private released = false;
  private loopDone: Promise<void> = Promise.resolve();
  protected readonly timeoutMs: number;
  private disconnectedResolve!: (reason: string) => void;
  /** Resolves with a reason once the connection is gone, whoever closed it. */
  readonly disconnected: Promise<string>;
  /** Server requests (DMA_READ/DMA_WRITE) answered so far. */
  serverRequests = 0;

  protected constructor(private readonly fd: number, protected readonly opts: ClientOptions) {
    this.stream = new MessageStream(new FdSocket(fd, 256 * 1024, 32), {
      maxMessageSize: HEADER_SIZE + 16 + (opts.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE) + 64 * 1024,
      maxFds: opts.maxMsgFds ?? 8,
    });
    this.wakeFd = eventfd();
    this.timeoutMs = opts.timeoutMs ?? 10000;
    this.disconnected = new Promise((resolve) => (this.disconnectedResolve = resolve));
    this.dma = new DmaServer(BigInt(opts.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE));
  }

  /** Starts the background loop: once, right after construction. */
  protected start(): void {
    this.loopDone = this.loop();
  }

  /** True once the connection is gone. */
  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  protected allocId(): number {
    let id = this.nextId;
    while (this.waiters.has(id)) id = (id + 1) & 0xffff;
    this.nextId = (id + 1) & 0xffff;
    return id;
  }

  /**
   * Sends bytes as they are (a whole message or any junk), with fds attached to the first byte.
   * For protocol tests; normal use goes through the typed methods.
   */
  sendRaw(bytes: Buffer, fds: readonly number[] = []): void {
    if (this.closedReason !== null) throw new DisconnectedError(this.closedReason);
    try {
      this.stream.send(bytes, fds);
    } catch (err) {
      // The server may vanish between our last read and this send: that is a disconnect, not an I/O bug.
      if (err instanceof SysError && (err.code === 'EPIPE' || err.code === 'ECONNRESET')) {
        this.shutdown('server closed the connection');
        throw new DisconnectedError(this.closedReason ?? 'server closed the connection');
      }
      throw err;
    }
    if (this.stream.pendingOutput > 0) this.wake(); // let the loop poll for POLLOUT
  }

  /**
   * Waits for the reply with this msgId (sent with sendRaw). Resolves with the reply, error or not.
   * keepFds: the caller takes the fds that came with it.
   */
  awaitReply(msgId: number, command: number, keepFds = false): Promise<Reply> {
    return new Promise((resolve, reject) => {
      if (this.closedReason !== null) return reject(new DisconnectedError(this.closedReason));
      const timer = setTimeout(() => {
        this.waiters.delete(msgId);
        reject(new Error(`no reply to ${commandName(command)} (msg ${msgId}) within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.waiters.set(msgId, { command, keepFds, resolve, reject, timer });
    });
  }

  /** A fresh message id for sendRaw. */
  newMsgId(): number {
    return this.allocId();
  }

  /**
   * Sends a command and resolves with its reply; rejects with VfioUserError on an error reply.
   * fds go as SCM_RIGHTS (the client keeps its own copies).
   */
  async request(command: number, payload: Buffer = Buffer.alloc(0), fds: readonly number[] = [], keepFds = false): Promise<Reply> {
    const id = this.allocId();
    const p = this.awaitReply(id, command, keepFds);
    try {
      this.sendRaw(encodeMessage(id, command, HeaderFlag.TypeCommand, payload), fds);
    } catch (err) {
      // The reply will never come; its rejection must not surface as unhandled.
      p.catch(() => undefined);
      const w = this.waiters.get(id);
      if (w) {
        clearTimeout(w.timer);
        this.waiters.delete(id);
      }
      throw err;
    }
    const r = await p;
    if ((r.flags & HeaderFlag.Error) !== 0) {
      r.fds.forEach((fd) => closeQuietly(fd));
      throw new VfioUserError(command, r.error);
    }
    return r;
  }

  /** Sends a command with NO_REPLY set; nothing comes back, even on error. */
  post(command: number, payload: Buffer): void {
    this.sendRaw(encodeMessage(this.allocId(), command, HeaderFlag.TypeCommand | HeaderFlag.NoReply, payload));
  }

  // ---- the background loop ----

  protected wake(): void {
    if (this.closedReason === null) eventfdSignal(this.wakeFd);
  }

  private async loop(): Promise<void> {
    while (this.closedReason === null) {
      const reqs: PollRequest[] = [
        { fd: this.wakeFd, events: POLLIN },
        { fd: this.fd, events: POLLIN | (this.stream.pendingOutput > 0 ? POLLOUT : 0) },
      ];
      const slots = this.irqs.watched();
      for (const s of slots) reqs.push({ fd: s.fd, events: POLLIN });
      let rev: number[];
      try {
        // The process-wide reactor, not a pollAsync of our own: each parked poll holds one of
        // libuv's four pool threads, and a suite with several clients would starve the pool.
        this.pending = reactor.wait(reqs, -1);
        rev = await this.pending.ready;
      } catch (err) {
        this.shutdown(`poll failed: ${(err as Error).message}`);
        return;
      } finally {
        this.pending = null;
      }
      if (this.closedReason !== null) return;
      if (rev[0]) eventfdConsume(this.wakeFd);
      slots.forEach((s, i) => {
        if (rev[i + 2]) this.irqs.deliver(s);
      });
      try {
        if (rev[1]! & POLLOUT) this.stream.flush();
        if (rev[1]! & ~POLLOUT) this.readAll();
      } catch (err) {
        this.shutdown(err instanceof FramingError ? `server broke framing: ${err.message}` : `socket error: ${(err as Error).message}`);
      }
    }
  }

  private readAll(): void {
    for (;;) {
      const got = this.stream.readAvailable(256);
      for (const m of got.messages) this.dispatch(m);
      if (got.closed) {
        this.shutdown('server closed the connection');
        return;
      }
      if (got.messages.length < 256) return;
    }
  }

  private dispatch(m: RawMessage): void {
    const h = m.header;
    if (!isReply(h)) {
      this.serveRequest(m);
      return;
    }
    const w = this.waiters.get(h.msgId);
    if (w === undefined || w.command !== h.command) {
      this.opts.log?.warn({ msgId: h.msgId, cmd: commandName(h.command) }, 'unexpected reply');
      m.fds.forEach((fd) => closeQuietly(fd));
      return;
    }
    this.waiters.delete(h.msgId);
    clearTimeout(w.timer);
    if (!w.keepFds) m.fds.forEach((fd) => closeQuietly(fd));
    w.resolve({ msgId: h.msgId, command: h.command, flags: h.flags, error: h.error, payload: m.payload, fds: w.keepFds ? m.fds : [] });
  }

  /** A request from the server: DMA_READ / DMA_WRITE, answered from the mapped guest memory. */
  private serveRequest(m: RawMessage): void {
    this.serverRequests++;
    m.fds.forEach((fd) => closeQuietly(fd)); // a DMA request carries none: the answer says EINVAL
    if (this.opts.answerDmaRequests === false) return;
    const reply = this.dma.answer(m);
    if ((m.header.flags & HeaderFlag.NoReply) !== 0) return;
    this.stream.send(reply);
    this.wake(); // the reply may be queued: let the loop poll for POLLOUT
  }

  private shutdown(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    for (const w of this.waiters.values()) {
      clearTimeout(w.timer);
      w.reject(new DisconnectedError(reason));
    }
    this.waiters.clear();
    this.stream.discard();
    // Out of the reactor's set before close() closes the fds it watches.
    this.pending?.cancel();
    eventfdSignal(this.wakeFd);
    this.disconnectedResolve(reason);
  }

  /**
   * Disconnects and frees everything the client holds: socket, region fds, IRQ eventfds.
   * Guest memory objects belong to the caller.
   */
  async close(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.shutdown('closed by the client');
    await this.loopDone;
    this.stream.sock.free();
    closeQuietly(this.fd);
    closeQuietly(this.wakeFd);
    for (const fd of this.regionFds.values()) closeQuietly(fd);
    this.regionFds.clear();
    this.irqs.closeAll();
  }
}
