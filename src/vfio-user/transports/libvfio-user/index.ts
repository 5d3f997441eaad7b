// The libvfio-user transport: realizes a device declaration as a vfu context and serves it, one client at a time.
//
// Run loop (see docs/architecture.md, "Run loop"): the context is created with
// LIBVFIO_USER_FLAG_ATTACH_NB. While no client is attached we wait through the process-wide
// reactor (../reactor.ts: one poll(2) on a libuv worker for every transport in the process) for
// the listening socket or the wake-up eventfd, then run vfu_attach_ctx
// on a libuv worker too: it accepts and then reads the client's VERSION with a blocking recv, which
// a client that connects and says nothing would otherwise stretch forever on the main thread. If
// negotiation takes longer than SOCKET_TIMEOUT_MS we shut that connection down. Once attached we call vfu_run_ctx on the main thread until it has nothing left
// (it handles one request per call in non-blocking mode), in bursts of at most RUN_BUDGET so
// timers and sockets get a turn, then poll the connection again. Every libvfio-user callback
// therefore runs synchronously on Node's main thread, where the device model lives.
//
// Between clients: when the client goes (vfu_run_ctx fails with ENOTCONN/ESHUTDOWN), libvfio-user
// has already detached it (vfu_reset_ctx: DMA regions unregistered, eventfds closed, connection
// closed) and keeps its listening socket, so vfu_attach_ctx accepts the next client on the same
// context. libvfio-user does not reset config space then, so we write the power-on bytes back:
// every client starts from power-on config space. dropClient() has no library call to use:
// it shuts the connection down (shutdown(2) on the fd vfu_get_poll_fd returns once attached; QEMU
// sees the server gone at once) and runs vfu_run_ctx, which then finds the end of the stream and
// detaches the client exactly as for a disconnect. The listening socket stays.
//
// Once attached, libvfio-user still reads the rest of a message after its header with a blocking
// recv and sends replies with a blocking sendmsg; the connection gets SO_RCVTIMEO and SO_SNDTIMEO
// (AF_UNIX accepted sockets do not inherit them from the listener), so a client that stalls
// mid-message or stops reading holds the main thread for at most SOCKET_TIMEOUT_MS per call.
//
// Config space: the framework's model (emulator/framework/config-space.ts) answers every access,
// through a config-region callback with VFU_REGION_FLAG_ALWAYS_CB, so the bytes a client sees
// after any sequence of writes are the native transport's. libvfio-user's own config handling
// rejects or mishandles ordinary writes (EINVAL for a 4-byte write at 0x00, status writes
// ignored instead of RW1C, PMCSR replaced whole). Its copy is still seeded (vfu_pci_init,
// vfu_pci_set_id, vfu_pci_set_class, vfu_pci_add_capability at 0x40/0x50/0x60) and kept equal to
// the model, for anything that reads it through vfu_pci_get_config_space.
// Every PCI rule (the gates, the interrupt rules, the reset between clients) is the framework's
// PciFunction (emulator/framework/pci-function.ts), as on the native transport; this file only
// connects it to libvfio-user's callbacks. MSI-X table and PBA are the framework's MsixTable
// behind a trapped BAR.
import { chmodSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { BarDecl, PciDevice } from '../../../../emulator/framework/device';
import { PciFunction } from '../../../../emulator/framework/pci-function';
import { Errno, LibraryMissingError, SysError } from '../../../../ffi/errors';
import {
  closeQuietly, eventfd, eventfdConsume, eventfdSignal, poll, POLLIN, setSocketTimeout, shutdownSocket, SO_RCVTIMEO, SO_SNDTIMEO,
} from '../../../../ffi/libc';
import {
  LIBVFIO_USER_FLAG_ATTACH_NB, LIBVFIO_USER_MAX_DMA_REGIONS, LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_WARNING,
  PCI_HEADER_TYPE_NORMAL, VFU_DEV_ERR_IRQ, VFU_DEV_INTX_IRQ, VFU_DEV_MSI_IRQ, VFU_DEV_MSIX_IRQ, VFU_DEV_REQ_IRQ,
  VFU_PCI_DEV_CFG_REGION_IDX, VFU_PCI_TYPE_EXPRESS, VFU_REGION_FLAG_ALWAYS_CB, VFU_REGION_FLAG_MEM, VFU_REGION_FLAG_RW,
  VFU_RESET_LOST_CONN,
  VfuContext, libvfioUserUnavailable as ffiUnavailable, type DmaRegionInfo, type RegionAccessHandler,
} from '../../../../ffi/libvfio-user';
import type { Transport, TransportOptions, TransportStats } from '../transport';
import { CONFIG_SPACE_SIZE } from '../../../../emulator/framework/config-space';
import { IrqIndex } from '../../protocol/constants';
import { capabilityLayout } from './capabilities';
import { VfuDma } from './dma';
import { BusyPoll } from '../busy-poll';

const { ECONNRESET, EINVAL, EIO, ENOENT, ENOTCONN, ESHUTDOWN } = Errno;

/** Requests handled per turn of the event loop before yielding to it. */
const RUN_BUDGET = 64;
/** Longest a blocking recv/send inside libvfio-user may hold the main thread. */
export const SOCKET_TIMEOUT_MS = 2000;

/** Why libvfio-user cannot be used here (one line saying how to get it), or null when it loads. */
export function libvfioUserUnavailable(): string | null {
  return ffiUnavailable();
}

function isDisconnect(err: unknown): boolean {
  return err instanceof SysError && (err.errno === ENOTCONN || err.errno === ESHUTDOWN || err.errno === ECONNRESET);
}

export class LibvfioUserTransport extends EventEmitter implements Transport {
  readonly name = 'libvfio-user' as const;

  private readonly log: Logger;
  private readonly vfuLog: Logger;
  private readonly device: PciDevice;
  private readonly dma = new VfuDma();
  /** The PCI function: config space, gates, interrupt rules, reset between clients. */
  readonly fn: PciFunction;

  private ctx: VfuContext | null = null;
  private attached = false;
  /** Bumped whenever the context is replaced, so a poll result for an old fd is ignored. */
  private epoch = 0;
  private wakeFd = -1;
  private started = false;
  private stopping = false;
  private stopped: Promise<void> | null = null;
  private loopDone: Promise<void> = Promise.resolve();
  private dropPending = false;
  /** vfu_get_poll_fd before attach: tells the listening socket from a connection being negotiated. */
  private listenFd = -1;
  /** vfu_get_poll_fd once attached (asking again costs an ffi-napi call per request). */
  private connFd = -1;
  private attachInFlight = false;

  private clients = 0;
  private messages = 0;
  private errors = 0;
  private readonly busy = new BusyPoll();

  constructor(readonly opts: TransportOptions) {
    super();
    this.device = opts.device;
    this.log = opts.log.child({ transport: 'libvfio-user' });
    this.vfuLog = this.log.child({ lib: 'libvfio-user' });
    this.fn = new PciFunction(this.device, this.log.child({ device: this.device.name }));
    this.fn.setWire({ signal: (index, sub) => this.signal(index, sub) });
  }

  async start(): Promise<void> {
    if (this.started) throw new Error('libvfio-user transport already started');
    this.started = true;
    const why = libvfioUserUnavailable();
    if (why !== null) throw new LibraryMissingError(why);
    this.wakeFd = eventfd();
    try {
      this.ctx = this.buildContext();
    } catch (err) {
      closeQuietly(this.wakeFd);
      this.wakeFd = -1;
      throw err;
    }
    this.device.attach(this.fn.context(this.dma, this.opts.log.child({ device: this.device.name })));
    this.log.info({ socket: this.opts.socketPath }, 'listening for a vfio-user client');
    this.loopDone = this.loop().catch((err: unknown) => this.fail(err));
  }

  dropClient(): void {
    const ctx = this.ctx;
    if (!this.attached || ctx === null) return;
    this.shutdownConnection(ctx);
    if (ctx.inLibrary) {
      // called from a device callback: libvfio-user finishes the current request first
      this.dropPending = true;
      return;
    }
    this.dropNow();
  }

  stop(): Promise<void> {
    if (this.stopped === null) this.stopped = this.stopNow();
    return this.stopped;
  }

  stats(): TransportStats {
    return {
      clientConnected: this.attached,
      clients: this.clients,
      messages: this.messages,
      errors: this.errors,
      dmaRegions: this.dma.regionCount,
      guestErrors: this.fn.stats().guestErrors,
    };
  }

  /** Interrupts the device raised that no client received at once (no eventfd, masked and left pending). */
  get droppedInterrupts(): number {
    return this.fn.stats().interruptsUndelivered;
  }

  // ---- building the context from the declaration ----

  private buildContext(): VfuContext {
    const { device } = this;
    const id = device.identity;
    const ctx = VfuContext.create(this.opts.socketPath, LIBVFIO_USER_FLAG_ATTACH_NB, (name, err) => this.callbackFailed(name, err));
    try {
      ctx.setupLog((level, msg) => this.libraryLog(level, msg), this.vfuLog.isLevelEnabled('debug') ? LOG_DEBUG : LOG_INFO);
      ctx.pciInit(VFU_PCI_TYPE_EXPRESS, PCI_HEADER_TYPE_NORMAL);
      ctx.pciSetId(id.vendorId, id.deviceId, id.subsystemVendorId, id.subsystemId);
      ctx.pciSetClass((id.classCode >> 16) & 0xff, (id.classCode >> 8) & 0xff, id.classCode & 0xff);

      const powerOn = this.fn.config.powerOnBytes();
      for (const cap of capabilityLayout(device.capabilities, powerOn)) {
        const at = ctx.pciAddCapability(cap.offset, 0, cap.bytes);
        if (at !== cap.offset) throw new Error(`capability ${cap.name} placed at 0x${at.toString(16)}, wanted 0x${cap.offset.toString(16)}`);
      }

      ctx.setupRegion(VFU_PCI_DEV_CFG_REGION_IDX, CONFIG_SPACE_SIZE, (buf, offset, isWrite) => this.configAccess(ctx, buf, offset, isWrite),
        VFU_REGION_FLAG_RW | VFU_REGION_FLAG_ALWAYS_CB);
      for (const bar of this.fn.bars) if (bar !== null) this.setupBar(ctx, bar);

      // the function's IRQ counts, and its masks fed by libvfio-user's SET_IRQS mask/unmask
      const counts = this.fn.irqCounts;
      for (const [type, index] of [[VFU_DEV_INTX_IRQ, IrqIndex.Intx], [VFU_DEV_MSI_IRQ, IrqIndex.Msi], [VFU_DEV_MSIX_IRQ, IrqIndex.Msix]] as const) {
        if (counts[index] === 0) continue;
        ctx.setupDeviceNrIrqs(type, counts[index]!);
        ctx.setupIrqStateCallback(type, (start, count, mask) => this.irqState(index, start, count, mask));
      }
      ctx.setupDeviceNrIrqs(VFU_DEV_ERR_IRQ, 1);
      ctx.setupDeviceNrIrqs(VFU_DEV_REQ_IRQ, 1);

      ctx.setupDeviceDma(LIBVFIO_USER_MAX_DMA_REGIONS, (info) => this.dmaRegistered(info), (info) => this.dmaUnregistered(info));
      ctx.setupDeviceResetCb((type) => this.resetRequested(type));
      ctx.realize();

      // libvfio-user's copy follows the model (vfu_realize_ctx marks every BAR without a memory
      // region as an I/O BAR, value 1, where the model and hardware read 0)
      ctx.writeConfigSpace(0, this.fn.config.snapshot());
      this.listenFd = ctx.pollFd();
      chmodSync(this.opts.socketPath, this.opts.socketMode ?? 0o600);
    } catch (err) {
      ctx.destroy();
      throw err;
    }
    return ctx;
  }

  private setupBar(ctx: VfuContext, bar: BarDecl): void {
    const flags = VFU_REGION_FLAG_RW | VFU_REGION_FLAG_MEM;
    const access = this.regionHandler(`BAR${bar.index}`, (buf, offset, isWrite) => this.fn.barAccess(bar.index, offset, buf, isWrite));
    if (bar.kind === 'trapped') ctx.setupRegion(bar.index, bar.size, access, flags);
    else ctx.setupRegion(bar.index, bar.size, access, flags, [{ offset: 0, size: bar.size }], bar.memory.fd, 0);
  }

  /** A libvfio-user region callback around one of the function's accesses: an errno becomes a failed access. */
  private regionHandler(region: string, access: (buf: Buffer, offset: number, isWrite: boolean) => number): RegionAccessHandler {
    return (buf, offset, isWrite) => {
      const errno = access(buf, offset, isWrite);
      if (errno !== 0) {
        this.errors++;
        throw new SysError(`${region} access`, errno === EINVAL ? EINVAL : EIO);
      }
      return buf.length;
    };
  }

  // ---- callbacks from libvfio-user (main thread, inside vfu_run_ctx / vfu_destroy_ctx) ----

  private libraryLog(level: number, msg: string): void {
    // libvfio-user reports client mistakes at LOG_ERR too; the daemon keeps serving after them
    if (level <= LOG_ERR) this.vfuLog.warn({ syslogLevel: level }, msg);
    else if (level === LOG_WARNING) this.vfuLog.warn(msg);
    else if (level <= LOG_INFO) this.vfuLog.info(msg);
    else this.vfuLog.debug(msg);
  }

  private callbackFailed(name: string, err: unknown): void {
    if (err instanceof SysError && err.errno === EINVAL) return; // already logged as a guest error
    this.log.error({ err, callback: name }, 'libvfio-user callback failed');
  }

  private irqState(index: IrqIndex, start: number, count: number, mask: boolean): void {
    this.log.debug({ index, start, count, mask }, 'IRQ masked state');
    this.fn.setIrqMask(index, start, count, mask);
  }

  private dmaRegistered(info: DmaRegionInfo): void {
    this.dma.addRegion(info);
    this.log.debug({ iova: `0x${info.iova.toString(16)}`, length: `0x${info.length.toString(16)}`, prot: info.prot, mapped: info.mapped, viewed: info.memory !== null }, 'DMA region added');
  }

  private dmaUnregistered(info: DmaRegionInfo): void {
    this.dma.removeRegion(info.iova);
    this.log.debug({ iova: `0x${info.iova.toString(16)}`, length: `0x${info.length.toString(16)}` }, 'DMA region removed');
  }

  private resetRequested(type: number): void {
    // a lost connection is handled by the run loop once vfu_run_ctx returns
    if (type === VFU_RESET_LOST_CONN) return;
    this.log.info({ type }, 'device reset');
    this.fn.reset();
    this.syncConfigCopy();
  }

  /**
   * IrqWire.signal. libvfio-user keeps one eventfd per sub-index shared by INTx, MSI and MSI-X
   * (vfu_irq_trigger(ctx, n) signals whichever the client set last at n); the function only
   * signals the kind the guest has enabled, and QEMU swaps the eventfds in the same order, so the
   * signal reaches the right one.
   */
  private signal(index: IrqIndex, sub: number): boolean {
    const ctx = this.ctx;
    if (!this.attached || ctx === null) return false;
    try {
      ctx.irqTrigger(sub);
      return true;
    } catch (err) {
      if (!(err instanceof SysError && err.errno === ENOENT)) this.log.warn({ err, index, sub }, 'vfu_irq_trigger failed');
      return false;
    }
  }

  /** Config region callback: the function answers; libvfio-user's copy follows each write. */
  private configAccess(ctx: VfuContext, buf: Buffer, offset: number, isWrite: boolean): number {
    const errno = this.fn.configAccess(offset, buf, isWrite);
    if (errno !== 0) {
      this.errors++;
      throw new SysError('config space access', EINVAL);
    }
    if (isWrite) {
      const now = Buffer.alloc(buf.length);
      this.fn.config.read(offset, now);
      ctx.writeConfigSpace(offset, now);
    }
    return buf.length;
  }

  /** libvfio-user's copy of config space follows the function's (after a reset or a client change). */
  private syncConfigCopy(): void {
    if (this.ctx !== null && !this.ctx.destroyed) this.ctx.writeConfigSpace(0, this.fn.config.snapshot());
  }

  // ---- the run loop ----

  private async loop(): Promise<void> {
    while (!this.stopping) {
      const ctx = this.ctx;
      if (ctx === null) return;
      const gen = this.epoch;
      if (!this.attached) {
        await this.waitReadable(ctx.pollFd());
        if (this.epoch !== gen || this.stopping) continue;
        const connected = await this.attach(ctx);
        this.afterLibraryCall();
        if (this.epoch !== gen || this.stopping) continue;
        if (connected) this.clientConnected(ctx);
        continue;
      }
      const idle = await this.drain(ctx);
      if (this.epoch !== gen || this.stopping || !this.attached) continue;
      if (idle) await this.waitForRequest(gen);
      else await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Runs vfu_run_ctx until nothing is ready (true) or the budget is spent (false). Between two
   * requests the microtask queue runs, so what a device chained on a DMA promise during one
   * request is done before the next request is read.
   */
  private async drain(ctx: VfuContext): Promise<boolean> {
    for (let i = 0; i < RUN_BUDGET; i++) {
      let handled: number;
      try {
        handled = ctx.run();
      } catch (err) {
        this.afterLibraryCall();
        if (ctx !== this.ctx || !this.attached) return true;
        if (isDisconnect(err)) {
          this.clientGone('client disconnected');
        } else {
          this.errors++;
          this.log.warn({ err }, 'vfu_run_ctx failed');
        }
        return true;
      }
      this.afterLibraryCall();
      if (ctx !== this.ctx || !this.attached) return true;
      if (handled === 0) return true;
      this.messages += handled;
      this.busy.activity();
      await undefined;
      if (ctx !== this.ctx || !this.attached || this.stopping) return true;
      // a koffi poll costs far less than another vfu_run_ctx through ffi-napi (docs/performance.md)
      if (!this.readableNow(this.connFd)) return true;
    }
    return false;
  }

  /** vfu_attach_ctx on a worker thread, with negotiation cut short after SOCKET_TIMEOUT_MS. */
  private async attach(ctx: VfuContext): Promise<boolean> {
    this.attachInFlight = true;
    const deadline = setTimeout(() => this.cutNegotiation(ctx, 'the client did not negotiate in time'), SOCKET_TIMEOUT_MS);
    try {
      return await ctx.attachAsync();
    } catch (err) {
      this.errors++;
      this.log.warn({ err }, 'vfu_attach_ctx failed');
      return false;
    } finally {
      clearTimeout(deadline);
      this.attachInFlight = false;
    }
  }

  /**
   * While vfu_attach_ctx negotiates on a worker, the poll fd is the accepted connection: shutting
   * it down makes the worker's recv return and the attach fail. (A tiny race remains: the worker
   * may close that fd between our read of its number and the shutdown.)
   */
  private cutNegotiation(ctx: VfuContext, why: string): void {
    if (!this.attachInFlight || ctx.destroyed) return;
    const fd = ctx.pollFd();
    if (fd === this.listenFd) return;
    this.errors++;
    this.log.warn({ guestError: true, timeoutMs: SOCKET_TIMEOUT_MS }, why);
    try {
      shutdownSocket(fd);
    } catch {
      // already gone: the attach is failing anyway
    }
  }

  private readableNow(fd: number): boolean {
    return poll([{ fd, events: POLLIN }], 0)[0] !== 0;
  }

  /**
   * Waits for the client's next request: synchronous checks while the busy window after the last
   * request lasts, then poll(2) on a libuv worker. drain() has just found the connection idle.
   */
  private async waitForRequest(gen: number): Promise<void> {
    const reqs = [{ fd: this.connFd, events: POLLIN }, { fd: this.wakeFd, events: POLLIN }];
    const [, wake] = await this.busy.wait(reqs, -1, () => this.epoch === gen && !this.stopping && this.attached, true);
    if (wake) eventfdConsume(this.wakeFd);
  }

  /** Waits through the reactor until fd is readable or the wake-up eventfd fires. */
  private async waitReadable(fd: number): Promise<void> {
    const [, wake] = await this.busy.park([{ fd, events: POLLIN }, { fd: this.wakeFd, events: POLLIN }], -1);
    if (wake) eventfdConsume(this.wakeFd);
  }

  private wake(): void {
    if (this.wakeFd >= 0) eventfdSignal(this.wakeFd);
  }

  private afterLibraryCall(): void {
    if (this.dropPending) {
      this.dropPending = false;
      if (this.attached) this.dropNow();
    }
  }

  private clientConnected(ctx: VfuContext): void {
    const conn = ctx.pollFd();
    this.connFd = conn;
    try {
      setSocketTimeout(conn, SO_RCVTIMEO, SOCKET_TIMEOUT_MS);
      setSocketTimeout(conn, SO_SNDTIMEO, SOCKET_TIMEOUT_MS);
    } catch (err) {
      this.log.warn({ err }, 'could not bound socket waits on the client connection');
    }
    this.attached = true;
    this.clients++;
    this.dma.ctx = ctx;
    this.log.info({ clients: this.clients }, 'vfio-user client attached');
    this.fn.clientChanged(true);
    this.syncConfigCopy();
    this.emit('client', true);
  }

  /** The client left or was dropped: libvfio-user has already unregistered its DMA regions. */
  private clientGone(why: string): void {
    this.attached = false;
    this.busy.quiet();
    this.connFd = -1;
    this.dma.ctx = null;
    this.dma.clear();
    this.fn.clientChanged(false);
    this.syncConfigCopy();
    this.log.info(why);
    this.emit('client', false);
  }

  /** The client sees the server gone now; libvfio-user notices at its next read. */
  private shutdownConnection(ctx: VfuContext): void {
    try {
      shutdownSocket(ctx.pollFd());
    } catch (err) {
      this.log.warn({ err }, 'shutdown of the client connection failed');
    }
  }

  /** After shutdownConnection: lets libvfio-user find the end of the stream and detach the client. */
  private dropNow(): void {
    const ctx = this.ctx;
    if (ctx === null || !this.attached) return;
    // vfu_run_ctx below closes the connection (or destroy() both sockets): out of the reactor's poll first
    this.busy.cancel();
    // requests the client sent before the shutdown are still read (their replies fail); the
    // stream then ends, so this takes at most as many calls as there were queued requests
    for (let i = 0; i <= RUN_BUDGET && this.attached; i++) {
      try {
        this.messages += ctx.run();
      } catch (err) {
        if (isDisconnect(err)) this.clientGone('client dropped');
        else this.log.warn({ err }, 'vfu_run_ctx failed while dropping the client');
      }
    }
    if (this.attached) {
      // a client that keeps the shut-down socket busy: replace the whole context instead
      this.epoch++;
      this.ctx = null;
      ctx.destroy();
      this.clientGone('client dropped');
      try {
        this.ctx = this.buildContext();
      } catch (err) {
        this.fail(err);
        return;
      }
    }
    this.wake();
  }

  private async stopNow(): Promise<void> {
    this.stopping = true;
    this.busy.cancel();
    this.wake();
    if (this.ctx !== null) this.cutNegotiation(this.ctx, 'stopping while a client negotiates');
    await this.loopDone;
    const ctx = this.ctx;
    this.ctx = null;
    this.dma.ctx = null;
    if (ctx !== null) {
      // vfu_destroy_ctx closes the connection and the listening socket and unlinks the path
      ctx.destroy();
      if (this.attached) this.clientGone('stopped');
    }
    closeQuietly(this.wakeFd);
    this.wakeFd = -1;
    this.fn.guestErrors.flush(); // the held-back summaries, before the process may exit
    this.log.info('stopped');
  }

  /** A host failure that stops serving. */
  private fail(err: unknown): void {
    this.log.error({ err }, 'libvfio-user transport failed');
    this.stopping = true;
    this.wake();
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }
}
