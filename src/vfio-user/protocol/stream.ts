// vfio-user messages over a Unix stream socket: whole messages with their fds in, queued output out.
import type { FdSocket } from '../../../ffi/libc';
import { RequestReader, type ReadResult, type StreamLimits } from './framing';

export { FramingError, type RawMessage, type ReadResult, type StreamLimits } from './framing';

/**
 * One connection's messages: reads through RequestReader (the one framing reader) and queues
 * output so a send never blocks the event loop.
 */
export class MessageStream {
  private readonly reader: RequestReader;

  constructor(readonly sock: FdSocket, limits: StreamLimits) {
    this.reader = new RequestReader(sock, limits);
  }

  /**
   * Reads every complete message available without blocking (at most about `budget`).
   * Throws FramingError (after closing every fd it held) when the peer broke framing.
   */
  readAvailable(budget = 1024): ReadResult {
    return this.reader.readAvailable(budget);
  }

  /** Closes the fds of a partly received message; the stream is unusable afterwards. */
  discard(): void {
    this.reader.discard();
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
