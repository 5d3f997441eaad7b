// VfioUserClient: a vfio-user client for test suites and driver developers, scripting a device without QEMU.
//
// Everything is async and nothing blocks the event loop, so the server may live in the same
// process: one background poll (libuv threadpool) covers the socket, the IRQ eventfds someone
// awaits, and a wake-up eventfd. The client also answers the server's DMA_READ/DMA_WRITE for
// regions it mapped without an fd.
import type { Logger } from 'pino';
import {
  closeQuietly,
  connectUnix,
  eventfd,
  eventfdConsume,
  eventfdSignal,
  FdSocket,
  Mapping,
  POLLIN,
  POLLOUT,
  unixSocket,
  type PollRequest,
} from '../../../ffi/libc';
import { errnoName, SysError } from '../../../ffi/errors';
import {
  Command,
  commandName,
  DEFAULT_MAX_DATA_XFER_SIZE,
  DmaMapFlag,
  DmaUnmapFlag,
  Errno,
  HEADER_SIZE,
  HeaderFlag,
  IrqSetFlag,
  REGION_INFO_SIZE,
  RegionIndex,
  VERSION_MAJOR,
  VERSION_MINOR,
} from '../protocol/constants';
import {
  decodeDeviceInfo,
  decodeDmaAccess,
  decodeIrqInfo,
  decodeRegionAccess,
  decodeRegionInfo,
  decodeVersion,
  encodeDmaAccess,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeErrorReply,
  encodeIrqInfo,
  encodeIrqSet,
  encodeMessage,
  encodeRegionAccess,
  encodeRegionInfo,
  encodeRegionWriteMulti,
  encodeVersion,
  encodeDeviceInfo,
  isReply,
  parseCapabilities,
  type DeviceInfo,
  type IrqInfo,
  type MultiWrite,
  type RegionInfo,
  type VersionCapabilities,
} from '../protocol/messages';
import { FramingError, MessageStream, type RawMessage } from '../protocol/stream';
import { GuestMemory } from './guest-memory';
import { reactor, type PendingWait } from '../transports/reactor';

export { GuestMemory } from './guest-memory';
export { Mapping } from '../../../ffi/libc';
export { Command, Errno, IrqIndex, IrqSetFlag, RegionFlag, RegionIndex, DmaMapFlag, DmaUnmapFlag, DeviceFlag, IrqInfoFlag } from '../protocol/constants';
export type { DeviceInfo, IrqInfo, RegionInfo, VersionCapabilities } from '../protocol/messages';

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

/** Region info plus the fd the server sent with it (owned by the client; closed by close()). */
export interface RegionInfoWithFd extends RegionInfo {
  readonly fd: number | null;
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

interface ClientDmaRegion {
  readonly addr: bigint;
  readonly size: bigint;
  readonly readable: boolean;
  readonly writable: boolean;
  readonly memory: GuestMemory;
}

interface IrqSlot {
  readonly fd: number;
  waiters: ((count: bigint) => void)[];
}

export class VfioUserClient {
  /** Capabilities the server answered in VERSION. */
  serverCaps: VersionCapabilities = {};
  private readonly stream: MessageStream;
  private readonly wakeFd: number;
  private pending: PendingWait | null = null;
  private nextId = 1;
  private readonly waiters = new Map<number, Waiter>();
  private readonly regionFds = new Map<number, number>();
  private readonly dmaRegions: ClientDmaRegion[] = [];
  private readonly irqs = new Map<string, IrqSlot>();
  private closedReason: string | null = null;
  private released = false;
  private loopDone: Promise<void> = Promise.resolve();
  private readonly timeoutMs: number;
  private disconnectedResolve!: (reason: string) => void;
  /** Resolves with a reason once the connection is gone, whoever closed it. */
  readonly disconnected: Promise<string>;
  /** Server requests (DMA_READ/DMA_WRITE) answered so far. */
  serverRequests = 0;

  private constructor(private readonly fd: number, private readonly opts: ClientOptions) {
    this.stream = new MessageStream(new FdSocket(fd, 256 * 1024, 32), {
      maxMessageSize: HEADER_SIZE + 16 + (opts.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE) + 64 * 1024,
      maxFds: opts.maxMsgFds ?? 8,
    });
    this.wakeFd = eventfd();
    this.timeoutMs = opts.timeoutMs ?? 10000;
    this.disconnected = new Promise((resolve) => (this.disconnectedResolve = resolve));
  }

  /** Connects to a vfio-user socket without negotiating (for protocol tests that send VERSION themselves). */
  static async connectRaw(path: string, opts: ClientOptions = {}): Promise<VfioUserClient> {
    const fd = unixSocket();
    try {
      connectUnix(fd, path);
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
    const c = new VfioUserClient(fd, opts);
    c.loopDone = c.loop();
    return c;
  }

  /** Connects and negotiates VERSION. */
  static async connect(path: string, opts: ClientOptions = {}): Promise<VfioUserClient> {
    const c = await VfioUserClient.connectRaw(path, opts);
    try {
      await c.negotiate();
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  /** The capabilities this client offers. */
  capabilities(): VersionCapabilities {
    return {
      max_msg_fds: this.opts.maxMsgFds ?? 8,
      max_data_xfer_size: this.opts.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE,
      pgsizes: 4096,
      ...(this.opts.writeMultiple === false ? {} : { write_multiple: true }),
      ...(this.opts.extraCapabilities ?? {}),
    };
  }

  /** Sends VERSION and records the server's capabilities. */
  async negotiate(): Promise<VersionCapabilities> {
    const r = await this.request(Command.Version, encodeVersion({ major: VERSION_MAJOR, minor: VERSION_MINOR, capabilities: this.capabilities() }));
    const v = decodeVersion(r.payload);
    if (v.major !== VERSION_MAJOR) throw new Error(`server speaks vfio-user ${v.major}.${v.minor}`);
    this.serverCaps = parseCapabilities(v.json);
    return this.serverCaps;
  }

  // ---- raw messages ----

  /** True once the connection is gone. */
  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  private allocId(): number {
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

  // ---- device information ----

  /** DEVICE_GET_INFO. */
  async deviceInfo(): Promise<DeviceInfo> {
    const r = await this.request(Command.DeviceGetInfo, encodeDeviceInfo({ argsz: 16, flags: 0, numRegions: 0, numIrqs: 0 }));
    return decodeDeviceInfo(r.payload);
  }

  /**
   * DEVICE_GET_REGION_INFO, retried with a larger argsz when the capabilities did not fit.
   * A region fd that comes with it stays open in the client (see mmapSparseArea) until close().
   */
  async regionInfo(index: number, argsz = REGION_INFO_SIZE): Promise<RegionInfoWithFd> {
    const req = encodeRegionInfo({ argsz, flags: 0, index, capOffset: 0, size: 0n, offset: 0n });
    const r = await this.request(Command.DeviceGetRegionInfo, req, [], true);
    const info = decodeRegionInfo(r.payload);
    if (info.argsz > argsz) {
      r.fds.forEach((fd) => closeQuietly(fd));
      return this.regionInfo(index, info.argsz);
    }
    const fd = r.fds[0] ?? null;
    r.fds.slice(1).forEach((f) => closeQuietly(f));
    if (fd !== null) {
      closeQuietly(this.regionFds.get(index));
      this.regionFds.set(index, fd);
    }
    return { ...info, fd };
  }

  /** DEVICE_GET_IRQ_INFO. */
  async irqInfo(index: number): Promise<IrqInfo> {
    const r = await this.request(Command.DeviceGetIrqInfo, encodeIrqInfo({ argsz: 16, flags: 0, index, count: 0 }));
    return decodeIrqInfo(r.payload);
  }

  // ---- region access ----

  /** REGION_READ of count bytes at offset of region index. */
  async regionRead(index: number, offset: number | bigint, count: number): Promise<Buffer> {
    const r = await this.request(Command.RegionRead, encodeRegionAccess({ offset: BigInt(offset), region: index, count, data: Buffer.alloc(0) }));
    const a = decodeRegionAccess(r.payload);
    if (a.count !== count || a.data.length !== count) throw new Error(`REGION_READ returned ${a.data.length} of ${count} bytes`);
    return a.data;
  }

  /** REGION_WRITE; with noReply the write is posted and nothing (not even an error) comes back. */
  async regionWrite(index: number, offset: number | bigint, data: Uint8Array, noReply = false): Promise<void> {
    const payload = encodeRegionAccess({ offset: BigInt(offset), region: index, count: data.length, data: Buffer.from(data) });
    if (noReply) this.post(Command.RegionWrite, payload);
    else await this.request(Command.RegionWrite, payload);
  }

  /** REGION_WRITE_MULTI (posted writes of up to 8 bytes each); resolves with the count the server applied. */
  async regionWriteMulti(writes: readonly MultiWrite[]): Promise<number> {
    const r = await this.request(Command.RegionWriteMulti, encodeRegionWriteMulti(writes));
    return Number(r.payload.readBigUInt64LE(0));
  }

  /** Reads a 1-, 2- or 4-byte config register. */
  async configRead(offset: number, size: 1 | 2 | 4 = 4): Promise<number> {
    const b = await this.regionRead(RegionIndex.Config, offset, size);
    return b.readUIntLE(0, size);
  }

  /** Writes a 1-, 2- or 4-byte config register. */
  async configWrite(offset: number, value: number, size: 1 | 2 | 4 = 4): Promise<void> {
    const b = Buffer.alloc(size);
    b.writeUIntLE(size === 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1), 0, size);
    await this.regionWrite(RegionIndex.Config, offset, b);
  }

  /** All of config space (4096 bytes for a PCIe device). */
  async configSpace(size = 4096): Promise<Buffer> {
    return this.regionRead(RegionIndex.Config, 0, size);
  }

  /** Turns on memory decoding and bus mastering, as a driver's pci_enable_device + pci_set_master do. */
  async enableDevice(): Promise<void> {
    const cmd = await this.configRead(0x04, 2);
    await this.configWrite(0x04, cmd | 0x0006, 2);
  }

  /** Reads a 4-byte register of BAR bar. */
  async barRead32(bar: number, offset: number): Promise<number> {
    return (await this.regionRead(bar, offset, 4)).readUInt32LE(0);
  }

  /** Writes a 4-byte register of BAR bar (waits for the reply). */
  async barWrite32(bar: number, offset: number, value: number): Promise<void> {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value >>> 0);
    await this.regionWrite(bar, offset, b);
  }

  async barRead64(bar: number, offset: number): Promise<bigint> {
    return (await this.regionRead(bar, offset, 8)).readBigUInt64LE(0);
  }

  async barWrite64(bar: number, offset: number, value: bigint): Promise<void> {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(value);
    await this.regionWrite(bar, offset, b);
  }

  /**
   * mmaps sparse area `area` of region index through the fd the server sent with its region info
   * (fetched here if needed). The caller unmaps the Mapping.
   */
  async mmapSparseArea(index: number, area = 0): Promise<Mapping> {
    const info = await this.regionInfo(index);
    const fd = this.regionFds.get(index);
    const a = info.sparseAreas?.[area];
    if (fd === undefined || a === undefined) throw new Error(`region ${index} has no mmappable area ${area}`);
    return Mapping.map(fd, Number(info.offset + a.offset), Number(a.size));
  }

  // ---- DMA ----

  /**
   * DMA_MAP of [addr, addr + size) of guest memory `mem` (default: all of it). withFd (default)
   * passes the memfd so the server mmaps it; without it the server reaches the region with
   * DMA_READ/DMA_WRITE requests that this client answers from `mem`.
   */
  async dmaMap(mem: GuestMemory, opts: { addr?: bigint; size?: number; readable?: boolean; writable?: boolean; withFd?: boolean } = {}): Promise<void> {
    const addr = opts.addr ?? mem.base;
    const size = opts.size ?? mem.size;
    if (!mem.contains(addr, size)) throw new RangeError('DMA range outside the guest memory');
    const readable = opts.readable ?? true;
    const writable = opts.writable ?? true;
    const withFd = opts.withFd ?? true;
    const flags = (readable ? DmaMapFlag.Read : 0) | (writable ? DmaMapFlag.Write : 0);
    const offset = withFd ? addr - mem.base : 0n;
    await this.request(Command.DmaMap, encodeDmaMap({ argsz: 32, flags, offset, addr, size: BigInt(size) }), withFd ? [mem.fd] : []);
    this.dmaRegions.push({ addr, size: BigInt(size), readable, writable, memory: mem });
  }

  /** DMA_UNMAP of exactly one mapped region; `all` unmaps everything (VFIO_DMA_UNMAP_FLAG_ALL). */
  async dmaUnmap(addr: bigint, size: number | bigint, all = false): Promise<void> {
    await this.request(
      Command.DmaUnmap,
      encodeDmaUnmap({ argsz: 24, flags: all ? DmaUnmapFlag.All : 0, addr: all ? 0n : addr, size: all ? 0n : BigInt(size) }),
    );
    if (all) this.dmaRegions.length = 0;
    else {
      const i = this.dmaRegions.findIndex((r) => r.addr === addr && r.size === BigInt(size));
      if (i >= 0) this.dmaRegions.splice(i, 1);
    }
  }

  // ---- interrupts ----

  private slot(index: number, vector: number): IrqSlot | undefined {
    return this.irqs.get(`${index}:${vector}`);
  }

  /**
   * DEVICE_SET_IRQS with fresh eventfds (owned by the client) for sub-indexes [start, start + count)
   * of IRQ index (IrqIndex.Msix for MSI-X vectors). Await them with waitIrq.
   */
  async setIrqEventfds(index: number, start: number, count: number): Promise<void> {
    const fds: number[] = [];
    for (let i = 0; i < count; i++) fds.push(eventfd());
    try {
      await this.request(
        Command.DeviceSetIrqs,
        encodeIrqSet({ argsz: 20, flags: IrqSetFlag.DataEventfd | IrqSetFlag.ActionTrigger, index, start, count, data: Buffer.alloc(0) }),
        fds,
      );
    } catch (err) {
      fds.forEach((fd) => closeQuietly(fd));
      throw err;
    }
    fds.forEach((fd, i) => {
      const key = `${index}:${start + i}`;
      const old = this.irqs.get(key);
      if (old) closeQuietly(old.fd);
      this.irqs.set(key, { fd, waiters: old?.waiters ?? [] });
    });
    this.wake();
  }

  /** Removes every eventfd of an IRQ index (DATA_NONE, count 0). */
  async disableIrqs(index: number): Promise<void> {
    await this.request(Command.DeviceSetIrqs, encodeIrqSet({ argsz: 20, flags: IrqSetFlag.DataNone | IrqSetFlag.ActionTrigger, index, start: 0, count: 0, data: Buffer.alloc(0) }));
    for (const [key, slot] of [...this.irqs]) {
      if (key.startsWith(`${index}:`)) {
        closeQuietly(slot.fd);
        this.irqs.delete(key);
      }
    }
  }

  /** SET_IRQS ACTION_MASK or ACTION_UNMASK (DATA_NONE) of [start, start + count). */
  async maskIrqs(index: number, start: number, count: number, mask: boolean): Promise<void> {
    const action = mask ? IrqSetFlag.ActionMask : IrqSetFlag.ActionUnmask;
    await this.request(Command.DeviceSetIrqs, encodeIrqSet({ argsz: 20, flags: IrqSetFlag.DataNone | action, index, start, count, data: Buffer.alloc(0) }));
  }

  /** How many times (index, vector) fired since last asked, without waiting; 0n when none. */
  takeIrq(index: number, vector: number): bigint {
    const s = this.slot(index, vector);
    if (s === undefined) throw new Error(`no eventfd set for IRQ ${index}:${vector}`);
    return eventfdConsume(s.fd);
  }

  /** Resolves with the eventfd count once (index, vector) has fired (immediately if it already has). */
  waitIrq(index: number, vector: number, timeoutMs = this.timeoutMs): Promise<bigint> {
    const s = this.slot(index, vector);
    if (s === undefined) return Promise.reject(new Error(`no eventfd set for IRQ ${index}:${vector}`));
    const now = eventfdConsume(s.fd);
    if (now > 0n) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        s.waiters = s.waiters.filter((w) => w !== done);
        reject(new Error(`IRQ ${index}:${vector} did not fire within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (n: bigint): void => {
        clearTimeout(timer);
        resolve(n);
      };
      s.waiters.push(done);
      this.wake();
    });
  }

  /** DEVICE_RESET. */
  async reset(): Promise<void> {
    await this.request(Command.DeviceReset);
  }

  // ---- the background loop ----

  private wake(): void {
    if (this.closedReason === null) eventfdSignal(this.wakeFd);
  }

  private async loop(): Promise<void> {
    while (this.closedReason === null) {
      const reqs: PollRequest[] = [
        { fd: this.wakeFd, events: POLLIN },
        { fd: this.fd, events: POLLIN | (this.stream.pendingOutput > 0 ? POLLOUT : 0) },
      ];
      const slots: IrqSlot[] = [];
      for (const s of this.irqs.values()) {
        if (s.waiters.length > 0) {
          slots.push(s);
          reqs.push({ fd: s.fd, events: POLLIN });
        }
      }
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
        if (!rev[i + 2] || s.waiters.length === 0) return;
        const n = eventfdConsume(s.fd);
        if (n === 0n) return;
        const w = s.waiters.shift()!;
        w(n);
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

  /** DMA_READ / DMA_WRITE from the server, for regions mapped without an fd (or any mapped region). */
  private serveRequest(m: RawMessage): void {
    const h = m.header;
    this.serverRequests++;
    if (this.opts.answerDmaRequests === false) {
      m.fds.forEach((fd) => closeQuietly(fd));
      return;
    }
    const noReply = (h.flags & HeaderFlag.NoReply) !== 0;
    const answer = (buf: Buffer): void => {
      if (!noReply) this.stream.send(buf);
    };
    if (m.fds.length > 0) {
      m.fds.forEach((fd) => closeQuietly(fd));
      answer(encodeErrorReply(h.msgId, h.command, Errno.EINVAL));
      return;
    }
    if (h.command !== Command.DmaRead && h.command !== Command.DmaWrite) {
      answer(encodeErrorReply(h.msgId, h.command, Errno.ENOSYS));
      return;
    }
    const write = h.command === Command.DmaWrite;
    let a;
    try {
      a = decodeDmaAccess(m.payload);
    } catch {
      answer(encodeErrorReply(h.msgId, h.command, Errno.EINVAL));
      return;
    }
    const max = BigInt(this.opts.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE);
    if (a.count > max || (write && BigInt(a.data.length) !== a.count) || (!write && a.data.length !== 0)) {
      answer(encodeErrorReply(h.msgId, h.command, Errno.EINVAL));
      return;
    }
    const n = Number(a.count);
    const region = this.dmaRegions.find((r) => a.addr >= r.addr && a.addr + a.count <= r.addr + r.size);
    if (region === undefined) {
      answer(encodeErrorReply(h.msgId, h.command, Errno.EFAULT));
      return;
    }
    if (write ? !region.writable : !region.readable) {
      answer(encodeErrorReply(h.msgId, h.command, Errno.EPERM));
      return;
    }
    if (write) {
      region.memory.write(a.addr, a.data);
      answer(encodeMessage(h.msgId, h.command, HeaderFlag.TypeReply, encodeDmaAccess({ addr: a.addr, count: a.count, data: Buffer.alloc(0) })));
    } else {
      answer(encodeMessage(h.msgId, h.command, HeaderFlag.TypeReply, encodeDmaAccess({ addr: a.addr, count: a.count, data: region.memory.read(a.addr, n) })));
    }
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
    for (const s of this.irqs.values()) closeQuietly(s.fd);
    this.irqs.clear();
  }
}
