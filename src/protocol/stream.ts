// Framing of vfio-user messages over a Unix stream socket: reassembly and fds per message.
//
// Each message is read as its 16-byte header, then exactly its body, so a read never crosses a
// message boundary and the fds a recvmsg returns belong to the message whose header it read
// (senders attach fds to a message's first byte). fds arriving with any other bytes mean the
// peer broke framing. Every fd received is either handed out with its message or closed here.
import { closeQuietly, type FdSocket } from '../../ffi/libc';
import { HEADER_SIZE } from './constants';
import { decodeHeader, type Header } from './messages';

export interface RawMessage {
  readonly header: Header;
  /** The bytes after the header. */
  readonly payload: Buffer;
  readonly fds: number[];
  /** More fds came than the limit allows; they were closed and `fds` is empty. */
  readonly tooManyFds: boolean;
}

/** The peer broke framing (bad size, fds mid-message): the connection must be dropped. */
export class FramingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FramingError';
  }
}

export interface StreamLimits {
  /** Largest whole message accepted (header included). */
  readonly maxMessageSize: number;
  /** Most fds accepted with one message. */
  readonly maxFds: number;
}

export interface ReadResult {
  readonly messages: RawMessage[];
  /** The peer closed the stream (after the messages returned). */
  readonly closed: boolean;
}

export class MessageStream {
  private header = Buffer.alloc(HEADER_SIZE);
  private headerFill = 0;
  private current: Header | null = null;
  private body: Buffer | null = null;
  private bodyFill = 0;
  private fds: number[] = [];
  private tooMany = false;

  constructor(readonly sock: FdSocket, public limits: StreamLimits) {}

  /**
   * Reads every complete message available without blocking (at most `budget`).
   * Throws FramingError (after closing every fd it held) when the peer broke framing.
   */
  readAvailable(budget = 1024): ReadResult {
    const messages: RawMessage[] = [];
    try {
      while (messages.length < budget) {
        if (this.current === null) {
          const got = this.sock.recv(HEADER_SIZE - this.headerFill);
          if (got === null) break;
          if (got.data.length === 0) {
            this.takeFds(got.fds, got.fdsTruncated);
            return { messages, closed: true };
          }
          if (this.headerFill > 0 && got.fds.length > 0) {
            this.takeFds(got.fds, false);
            throw new FramingError('fds arrived in the middle of a header');
          }
          this.takeFds(got.fds, got.fdsTruncated);
          got.data.copy(this.header, this.headerFill);
          this.headerFill += got.data.length;
          if (this.headerFill < HEADER_SIZE) continue;
          const h = decodeHeader(this.header);
          if (h.size < HEADER_SIZE) throw new FramingError(`message size ${h.size} is smaller than the header`);
          if (h.size > this.limits.maxMessageSize) throw new FramingError(`message size ${h.size} exceeds ${this.limits.maxMessageSize}`);
          this.current = h;
          this.body = Buffer.alloc(h.size - HEADER_SIZE);
          this.bodyFill = 0;
        }
        const body = this.body!;
        if (this.bodyFill < body.length) {
          const got = this.sock.recv(body.length - this.bodyFill);
          if (got === null) break;
          if (got.fds.length > 0) {
            this.takeFds(got.fds, false);
            throw new FramingError('fds arrived in the middle of a message body');
          }
          if (got.data.length === 0) return { messages, closed: true };
          got.data.copy(body, this.bodyFill);
          this.bodyFill += got.data.length;
          if (this.bodyFill < body.length) continue;
        }
        messages.push({ header: this.current!, payload: body, fds: this.fds, tooManyFds: this.tooMany });
        this.fds = [];
        this.tooMany = false;
        this.current = null;
        this.body = null;
        this.headerFill = 0;
      }
    } catch (err) {
      for (const m of messages) m.fds.forEach((fd) => closeQuietly(fd));
      this.discard();
      throw err instanceof FramingError ? err : err;
    }
    return { messages, closed: false };
  }

  private takeFds(fds: number[], truncated: boolean): void {
    if (fds.length === 0 && !truncated) return;
    if (truncated || this.tooMany || this.fds.length + fds.length > this.limits.maxFds) {
      this.tooMany = true;
      fds.forEach((fd) => closeQuietly(fd));
      this.fds.forEach((fd) => closeQuietly(fd));
      this.fds = [];
      return;
    }
    this.fds.push(...fds);
  }

  /** Closes the fds of a partly received message; the stream is unusable afterwards. */
  discard(): void {
    this.fds.forEach((fd) => closeQuietly(fd));
    this.fds = [];
    this.current = null;
    this.body = null;
    this.headerFill = 0;
  }

  private readonly queue: { data: Buffer; offset: number; fds: readonly number[] }[] = [];
  private queuedBytes = 0;
  /** When the oldest unsent byte was queued (ms since epoch), or null when nothing waits. */
  blockedSince: number | null = null;

  /** Bytes accepted by send() but not yet taken by the socket. */
  get pendingOutput(): number {
    return this.queuedBytes;
  }

  /**
   * Queues a message and sends as much as the socket takes now, never blocking. The fds are
   * duplicated into the peer by the kernel at send time; callers keep ownership of theirs, so
   * they must stay open until pendingOutput is 0 (callers here only pass long-lived fds).
   */
  send(message: Buffer, fds: readonly number[] = []): void {
    this.queue.push({ data: message, offset: 0, fds });
    this.queuedBytes += message.length;
    this.flush();
  }

  /** Sends queued output until the socket is full. True when everything went out. Throws SysError. */
  flush(): boolean {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = this.sock.sendSome(head.data, head.offset, head.fds);
      if (n < 0) {
        this.blockedSince ??= Date.now();
        return false;
      }
      head.offset += n;
      head.fds = [];
      this.queuedBytes -= n;
      if (head.offset >= head.data.length) this.queue.shift();
    }
    this.blockedSince = null;
    return true;
  }
}
