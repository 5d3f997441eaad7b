// The built-in vfio-user server in TypeScript: listens on a Unix socket and serves one client at a time.
//
// The event loop never blocks: the wait covers the wake-up eventfd plus either the listening
// socket (no client) or the client's socket, through the process-wide reactor (../reactor.ts: one
// poll(2) on libuv's threadpool for every transport in the process); once it reports readiness,
// the main thread drains the socket with non-blocking recvmsg and answers each message with a
// non-blocking sendmsg, queueing what the socket cannot take yet (a client that leaves replies
// unread for SEND_TIMEOUT_MS is dropped). For a short window after serving a client the
// wait is a synchronous poll(…, 0) per event-loop turn instead (BusyPoll, ../busy-poll.ts): the
// next request of a busy client is then picked up without a threadpool hop.
import { EventEmitter } from 'node:events';
import { chmodSync, unlinkSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  accept4,
  bindUnix,
  closeQuietly,
  eventfd,
  eventfdConsume,
  eventfdSignal,
  listen,
  POLLIN,
  POLLOUT,
  setNonBlocking,
  setSocketTimeout,
  SO_SNDTIMEO,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  unixSocket,
} from '../../../../ffi/libc';
import { DmaError, type DeviceContext, type DmaAccess } from '../../../../emulator/framework/device';
import { PciFunction } from '../../../../emulator/framework/pci-function';
import type { Transport, TransportOptions, TransportStats } from '../transport';
import { BusyPoll } from '../busy-poll';
import { Session } from './session';

/** How long a reply may wait for a client that does not read before the client is dropped. */
const SEND_TIMEOUT_MS = 2000;

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}

export class NativeTransport extends EventEmitter implements Transport {
  readonly name = 'native' as const;
  private readonly log: Logger;
  /** The PCI function: config space, gates, interrupt rules, reset between clients. */
  readonly fn: PciFunction;
  private listenFd = -1;
  private wakeFd = -1;
  private session: Session | null = null;
  /** Bumped when a client comes or goes: work for an earlier client is dropped. */
  private epoch = 0;
  private running = false;
  private loopDone: Promise<void> | null = null;
  private readonly counters = { messages: 0, errors: 0 };
  private clients = 0;
  private readonly busy = new BusyPoll();

  constructor(readonly opts: TransportOptions) {
    super();
    this.log = opts.log.child({ transport: 'native' });
    this.fn = new PciFunction(opts.device, this.log.child({ device: opts.device.name }));
    this.fn.setWire({ signal: (index, sub) => this.session?.irqs.signal(index, sub) ?? false });
  }

  async start(): Promise<void> {
    if (this.running) return;
    const fd = unixSocket(SOCK_CLOEXEC | SOCK_NONBLOCK);
    let bound = false;
    try {
      bindUnix(fd, this.opts.socketPath);
      bound = true;
      // fchmod on a socket fd does not change the path's mode; chmod the path before listening.
      chmodSync(this.opts.socketPath, this.opts.socketMode ?? 0o600);
      listen(fd, 4);
      this.wakeFd = eventfd();
    } catch (err) {
      closeQuietly(fd);
      // A socket file nobody listens on would make the next start look like a stale server's.
      if (bound) unlinkQuietly(this.opts.socketPath);
      throw err;
    }
    this.listenFd = fd;
    this.running = true;
    this.opts.device.attach(this.context());
    this.loopDone = this.loop().catch((err: unknown) => {
      // A host failure, not a client's: stop serving and let the daemon decide.
      this.log.error({ err }, 'native transport loop failed');
      this.emit('error', err);
    });
    this.log.info({ socket: this.opts.socketPath }, 'listening');
  }

  private context(): DeviceContext {
    const dma: DmaAccess = {
      read: async (addr, length) => {
        const s = this.session;
        if (s === null) throw new DmaError(addr, length, 'no client connected');
        const where = s.dma.lookup(addr, length, false);
        if ('errno' in where) throw new DmaError(addr, length, where.reason);
        const map = where.region.mapping;
        if (map !== null) return Buffer.from(map.buffer.subarray(where.offset, where.offset + length));
        return s.remoteRead(addr, length);
      },
      write: async (addr, data) => {
        const s = this.session;
        if (s === null) throw new DmaError(addr, data.length, 'no client connected');
        const where = s.dma.lookup(addr, data.length, true);
        if ('errno' in where) throw new DmaError(addr, data.length, where.reason);
        const map = where.region.mapping;
        if (map !== null) {
          data.copy(map.buffer, where.offset);
          return;
        }
        await s.remoteWrite(addr, data);
      },
      isMapped: (addr, length, writable) => {
        const s = this.session;
        return s !== null && !('errno' in s.dma.lookup(addr, length, writable));
      },
      withView: (addr, length, writable, fn) => {
        const s = this.session;
        if (s === null) throw new DmaError(addr, length, 'no client connected');
        const where = s.dma.lookup(addr, length, writable);
        if ('errno' in where) throw new DmaError(addr, length, where.reason);
        const map = where.region.mapping;
        return map === null ? undefined : fn(map.buffer.subarray(where.offset, where.offset + length));
      },
    };
    return this.fn.context(dma, this.log.child({ device: this.opts.device.name }));
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const gen = this.epoch;
      const s = this.session;
      const watched = s !== null ? s.fd : this.listenFd;
      let timeout = -1;
      let events = POLLIN;
      if (s !== null && s.stream.blockedSince !== null) {
        const left = s.stream.blockedSince + SEND_TIMEOUT_MS - Date.now();
        if (left <= 0) {
          this.log.warn('client has not read its replies for too long; dropping it');
          this.counters.errors++;
          this.drop('send timeout');
          continue;
        }
        timeout = left;
        events |= POLLOUT;
      }
      let rev: number[];
      try {
        const reqs = [{ fd: this.wakeFd, events: POLLIN }, { fd: watched, events }];
        rev = await this.busy.wait(reqs, timeout, () => this.running && gen === this.epoch && this.session === s);
      } catch (err) {
        this.log.error({ err }, 'poll failed');
        this.emit('error', err);
        return;
      }
      if (!this.running) return;
      if (rev[0]) eventfdConsume(this.wakeFd);
      if (gen !== this.epoch || this.session !== s) continue; // the client changed while polling
      if (!rev[1]) continue;
      if (s !== null) {
        this.busy.activity();
        if (rev[1]! & POLLOUT) s.onWritable();
        if (!s.closed && rev[1]! & ~POLLOUT) s.onReadable();
      } else {
        this.acceptOne();
      }
    }
  }

  private acceptOne(): void {
    let fd: number;
    try {
      fd = accept4(this.listenFd, SOCK_CLOEXEC);
    } catch (err) {
      this.log.warn({ err }, 'accept failed');
      return;
    }
    if (fd < 0) return;
    try {
      // Both directions use MSG_DONTWAIT per call; replies the socket cannot take yet are queued
      // and a client that leaves them unread for SEND_TIMEOUT_MS is dropped. SO_SNDTIMEO bounds
      // any blocking send as a second guard.
      setNonBlocking(fd, false);
      setSocketTimeout(fd, SO_SNDTIMEO, SEND_TIMEOUT_MS);
    } catch (err) {
      this.log.warn({ err }, 'could not set up the client socket');
      closeQuietly(fd);
      return;
    }
    this.clients++;
    this.epoch++;
    const log = this.log.child({ client: this.clients });
    this.session = new Session(fd, this.fn, log, this.counters, (reason) => this.drop(reason));
    log.info('client connected');
    this.fn.clientChanged(true);
    this.emit('client', true);
  }

  private drop(reason: string): void {
    const s = this.session;
    if (s === null) return;
    this.session = null;
    this.epoch++;
    this.busy.quiet();
    // out of the reactor's poll before the socket is closed, or the poll would keep it open
    this.busy.cancel();
    s.close();
    this.log.info({ reason }, 'client disconnected');
    this.fn.clientChanged(false);
    this.emit('client', false);
    if (this.wakeFd >= 0) eventfdSignal(this.wakeFd);
  }

  dropClient(): void {
    this.drop('dropped by the daemon');
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.drop('transport stopping');
    this.running = false;
    this.busy.cancel();
    eventfdSignal(this.wakeFd);
    await this.loopDone;
    closeQuietly(this.listenFd);
    closeQuietly(this.wakeFd);
    this.listenFd = -1;
    this.wakeFd = -1;
    try {
      unlinkSync(this.opts.socketPath);
    } catch {
      // already gone
    }
    this.fn.guestErrors.flush(); // the held-back summaries, before the process may exit
    this.log.info('stopped');
  }

  stats(): TransportStats {
    return {
      clientConnected: this.session !== null,
      clients: this.clients,
      messages: this.counters.messages,
      errors: this.counters.errors,
      dmaRegions: this.session?.dma.count ?? 0,
      guestErrors: this.fn.stats().guestErrors,
    };
  }

  /** A copy of the 4096 config-space bytes (for tests and the daemon's status). */
  configSnapshot(): Buffer {
    return this.fn.config.snapshot();
  }

  /** Interrupts the device raised that no client received (no eventfd, or masked and left pending). */
  get undeliveredInterrupts(): number {
    return this.fn.stats().interruptsUndelivered;
  }
}
