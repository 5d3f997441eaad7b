// A vfio-user client that sends any bytes and fds, for fuzzing: it never validates what it sends, only frames what it receives.
import { closeQuietly, connectUnix, FdSocket, POLLIN, pollAsync, setSocketTimeout, SO_SNDTIMEO, unixSocket } from '../../ffi/libc';
import { SysError } from '../../ffi/errors';
import { HEADER_SIZE, HeaderFlag, Errno } from '../../src/vfio-user/protocol/constants';
import { encodeErrorReply, type Header } from '../../src/vfio-user/protocol/messages';
import { FramingError, MessageStream } from '../../src/vfio-user/protocol/stream';

export interface ReceivedReply {
  readonly header: Header;
  readonly payload: Buffer;
}

export class RawClient {
  private readonly stream: MessageStream;
  private readonly sock: FdSocket;
  closed = false;
  closeReason = '';
  /** Replies received and not yet taken, by msgId. */
  private readonly replies: ReceivedReply[] = [];
  /** Requests the server sent us (DMA_READ/DMA_WRITE), answered with an error. */
  serverRequests = 0;

  private constructor(readonly fd: number) {
    this.sock = new FdSocket(fd, 2 * 1024 * 1024, 64);
    this.stream = new MessageStream(this.sock, { maxMessageSize: 2 * 1024 * 1024 + 64, maxFds: 64 });
  }

  static connect(path: string): RawClient {
    const fd = unixSocket();
    try {
      connectUnix(fd, path);
      // a server that stops reading must not block the fuzzer forever
      setSocketTimeout(fd, SO_SNDTIMEO, 5000);
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
    return new RawClient(fd);
  }

  /** Sends bytes with fds on the first byte. False when the connection turned out to be closed. */
  send(bytes: Buffer, fds: readonly number[] = []): boolean {
    if (this.closed) return false;
    try {
      if (bytes.length === 0 && fds.length === 0) return true;
      this.sock.send(bytes.length === 0 ? Buffer.alloc(1) : bytes, fds);
      return true;
    } catch (err) {
      this.markClosed(err instanceof SysError ? `send: ${err.code}` : `send: ${(err as Error).message}`);
      return false;
    }
  }

  private markClosed(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
  }

  /** Reads whatever arrived, without waiting. */
  private drain(): void {
    if (this.closed) return;
    for (;;) {
      let got;
      try {
        got = this.stream.readAvailable(256);
      } catch (err) {
        this.markClosed(err instanceof FramingError ? `server broke framing: ${err.message}` : `recv: ${(err as Error).message}`);
        return;
      }
      for (const m of got.messages) {
        m.fds.forEach((fd) => closeQuietly(fd));
        if ((m.header.flags & HeaderFlag.TypeMask) === HeaderFlag.TypeReply) {
          this.replies.push({ header: m.header, payload: m.payload });
          if (this.replies.length > 4096) this.replies.shift();
        } else {
          // DMA_READ/DMA_WRITE from the server: this client has no memory to offer through messages
          this.serverRequests++;
          if ((m.header.flags & HeaderFlag.NoReply) === 0) this.send(encodeErrorReply(m.header.msgId, m.header.command, Errno.EFAULT));
        }
      }
      if (got.closed) {
        this.markClosed('server closed the connection');
        return;
      }
      if (got.messages.length < 256) return;
    }
  }

  /** Takes a received reply with this msgId, if one came. */
  take(msgId: number): ReceivedReply | undefined {
    const i = this.replies.findIndex((r) => r.header.msgId === msgId);
    if (i < 0) return undefined;
    return this.replies.splice(i, 1)[0];
  }

  /** Replies received that nobody took (answers to messages we expected no answer for). */
  discardReplies(): number {
    const n = this.replies.length;
    this.replies.length = 0;
    return n;
  }

  /**
   * Waits until every msgId in `want` got a reply (each taken once) or the connection closed.
   * Resolves with the msgIds still unanswered when limitMs ran out (empty when all came or it closed)
   * and how many of the replies carried an error.
   */
  async waitFor(want: number[], limitMs: number): Promise<{ missing: number[]; answered: number; errors: number }> {
    const left = [...want];
    let errors = 0;
    let answered = 0;
    const deadline = Date.now() + limitMs;
    for (;;) {
      this.drain();
      for (let i = left.length - 1; i >= 0; i--) {
        const r = this.take(left[i]!);
        if (r === undefined) continue;
        left.splice(i, 1);
        answered++;
        if (r.header.flags & HeaderFlag.Error) errors++;
      }
      if (left.length === 0 || this.closed) return { missing: [], answered, errors };
      const wait = deadline - Date.now();
      if (wait <= 0) return { missing: left, answered, errors };
      await pollAsync([{ fd: this.fd, events: POLLIN }], Math.min(wait, 1000));
    }
  }

  /** Waits until any reply is waiting or the connection closed; false when limitMs ran out first. */
  async waitAny(limitMs: number): Promise<boolean> {
    const deadline = Date.now() + limitMs;
    for (;;) {
      this.drain();
      if (this.replies.length > 0 || this.closed) return true;
      const wait = deadline - Date.now();
      if (wait <= 0) return false;
      await pollAsync([{ fd: this.fd, events: POLLIN }], Math.min(wait, 1000));
    }
  }

  /** Waits for one reply with msgId; undefined when the connection closed or limitMs ran out. */
  async reply(msgId: number, limitMs: number): Promise<ReceivedReply | undefined> {
    const deadline = Date.now() + limitMs;
    for (;;) {
      this.drain();
      const r = this.take(msgId);
      if (r !== undefined || this.closed) return r;
      const wait = deadline - Date.now();
      if (wait <= 0) return undefined;
      await pollAsync([{ fd: this.fd, events: POLLIN }], Math.min(wait, 1000));
    }
  }

  private released = false;

  /** Closes the socket (once: a second close could hit an fd number reused since). */
  close(): void {
    this.markClosed('closed by the fuzzer');
    if (this.released) return;
    this.released = true;
    this.sock.free();
    closeQuietly(this.fd);
  }
}

export const HEADER = HEADER_SIZE;
