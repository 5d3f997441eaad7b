// Reads a client's messages with as few recvmsg calls as possible (usually one per request) and gives each the fds that came with it.
//
// Reading a header, then exactly its body, then once more until EAGAIN would take three recvmsg
// per request. This reader asks for everything available in one recvmsg and parses what
// arrived; bytes of a message cut short wait for the next read. It reads again at once only when the buffer came back full or the read
// brought fds (see below); otherwise the run loop's next readiness check finds any rest.
//
// Which message do the fds belong to? Senders attach fds to the first byte of the sendmsg that
// carries a message (QEMU and libvfio-user send one message per sendmsg). On an AF_UNIX stream
// socket, Linux (unix_stream_read_generic) hands the fds of a sendmsg to the first read that
// takes any of its bytes, may join bytes of earlier sends without fds in front of them in that
// read, and ends the read after the send that carried fds, so one read never returns bytes of a
// later send, nor the fds of two sends. The fds of a read therefore belong to the last message
// that starts in it. fds with a read in which no message starts arrived mid-message: the peer
// broke framing. Two things header-sized reads would tell apart and this reader cannot: a sender packing several messages into one sendmsg with fds (its
// fds go to the last of them that starts in the read, not the first), and a sender attaching fds
// to a later piece of a message split over several sends, when both pieces arrive in one read
// (the message gets them instead of a disconnect). Neither lets fds escape: every one is handed
// out with a message or closed.
import { closeQuietly, type FdSocket } from '../../../ffi/libc';
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

/** A message that starts in the bytes at hand: where, and its header once complete. */
interface Start {
  readonly at: number;
  header: Header | null;
}

export class RequestReader {
  /** The first bytes of a message whose header is not complete yet. */
  private head: Buffer = Buffer.alloc(0);
  /** A message whose header is known and whose bytes are still coming: the whole message, filled up to msgFill. */
  private msg: Buffer | null = null;
  private msgHeader: Header | null = null;
  private msgFill = 0;
  /** The fds of the message in head or msg. */
  private fds: number[] = [];
  private tooMany = false;

  constructor(private readonly sock: FdSocket, private readonly limits: StreamLimits) {}

  /**
   * Reads and returns the complete messages available now (at most about budget; the rest stays
   * queued in the socket). Throws FramingError (after closing every fd it held) when the peer
   * broke framing.
   */
  readAvailable(budget = 1024): ReadResult {
    const messages: RawMessage[] = [];
    try {
      while (messages.length < budget) {
        const got = this.sock.recv();
        if (got === null) break;
        if (got.data.length === 0) {
          got.fds.forEach((fd) => closeQuietly(fd));
          return { messages, closed: true };
        }
        const withFds = got.fds.length > 0 || got.fdsTruncated;
        this.parse(got.data, got.fds, got.fdsTruncated, messages);
        // a full buffer may have left more behind; a read that brought fds ended at that send
        if (!withFds && got.data.length < this.sock.recvCapacity) break;
      }
    } catch (err) {
      for (const m of messages) m.fds.forEach((fd) => closeQuietly(fd));
      this.discard();
      throw err;
    }
    return { messages, closed: false };
  }

  private checked(buf: Buffer, fds: readonly number[]): Header {
    const h = decodeHeader(buf);
    const why = h.size < HEADER_SIZE ? `message size ${h.size} is smaller than the header`
      : h.size > this.limits.maxMessageSize ? `message size ${h.size} exceeds ${this.limits.maxMessageSize}` : null;
    if (why !== null) {
      fds.forEach((fd) => closeQuietly(fd));
      throw new FramingError(why);
    }
    return h;
  }

  /** Completes the message carried over from earlier reads, then splits the rest; fds go to the last message starting in data. */
  private parse(data: Buffer, fds: number[], truncated: boolean, out: RawMessage[]): void {
    const withFds = fds.length > 0 || truncated;
    let off = 0;
    if (this.head.length > 0) {
      const take = Math.min(HEADER_SIZE - this.head.length, data.length);
      this.head = Buffer.concat([this.head, data.subarray(0, take)]);
      off = take;
      if (this.head.length < HEADER_SIZE) {
        if (withFds) this.midMessage(fds, 'fds arrived in the middle of a header');
        return;
      }
      const h = this.checked(this.head, fds);
      this.msg = Buffer.allocUnsafe(h.size);
      this.head.copy(this.msg, 0);
      this.msgHeader = h;
      this.msgFill = HEADER_SIZE;
      this.head = Buffer.alloc(0);
    }
    if (this.msg !== null) {
      const take = Math.min(this.msg.length - this.msgFill, data.length - off);
      data.copy(this.msg, this.msgFill, off, off + take);
      this.msgFill += take;
      off += take;
      if (this.msgFill < this.msg.length) {
        if (withFds) this.midMessage(fds, 'fds arrived in the middle of a message body');
        return;
      }
      out.push({ header: this.msgHeader!, payload: this.msg.subarray(HEADER_SIZE), fds: this.fds, tooManyFds: this.tooMany });
      this.msg = null;
      this.msgHeader = null;
      this.fds = [];
      this.tooMany = false;
    }
    // data[off..] begins at a message boundary
    const starts: Start[] = [];
    for (let at = off; at < data.length; ) {
      const s: Start = { at, header: null };
      starts.push(s);
      if (data.length - at < HEADER_SIZE) break;
      s.header = this.checked(data.subarray(at, at + HEADER_SIZE), fds);
      at += s.header.size;
    }
    if (withFds && starts.length === 0) this.midMessage(fds, 'fds arrived in the middle of a message body');
    const owner = withFds ? starts.length - 1 : -1;
    for (let i = 0; i < starts.length; i++) {
      const s = starts[i]!;
      this.fds = [];
      this.tooMany = false;
      if (i === owner) this.takeFds(fds, truncated);
      if (s.header === null) {
        this.head = Buffer.from(data.subarray(s.at));
        return;
      }
      const end = s.at + s.header.size;
      if (end > data.length) {
        this.msg = Buffer.allocUnsafe(s.header.size);
        data.copy(this.msg, 0, s.at);
        this.msgHeader = s.header;
        this.msgFill = data.length - s.at;
        return;
      }
      out.push({ header: s.header, payload: data.subarray(s.at + HEADER_SIZE, end), fds: this.fds, tooManyFds: this.tooMany });
    }
    this.fds = [];
    this.tooMany = false;
  }

  private midMessage(fds: readonly number[], why: string): never {
    fds.forEach((fd) => closeQuietly(fd));
    throw new FramingError(why);
  }

  private takeFds(fds: number[], truncated: boolean): void {
    if (truncated || this.tooMany || this.fds.length + fds.length > this.limits.maxFds) {
      this.tooMany = true;
      fds.forEach((fd) => closeQuietly(fd));
      this.fds.forEach((fd) => closeQuietly(fd));
      this.fds = [];
      return;
    }
    this.fds.push(...fds);
  }

  /** Closes the fds of a partly received message; nothing is read after this. */
  discard(): void {
    this.fds.forEach((fd) => closeQuietly(fd));
    this.fds = [];
    this.tooMany = false;
    this.head = Buffer.alloc(0);
    this.msg = null;
    this.msgHeader = null;
  }
}
