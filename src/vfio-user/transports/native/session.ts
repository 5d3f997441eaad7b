// One vfio-user client connection of the built-in transport: command handling, DMA table, the client's eventfds.
import type { Logger } from 'pino';
import { closeConnection, closeQuietly, FdSocket } from '../../../../ffi/libc';
import { SysError } from '../../../../ffi/errors';
import { DmaMapTable } from '../../../../emulator/framework/dma-map';
import { DmaError } from '../../../../emulator/framework/device';
import {
  Command,
  commandName,
  DEFAULT_MAX_DATA_XFER_SIZE,
  DEFAULT_MAX_MSG_FDS,
  DEFAULT_PGSIZES,
  DeviceFlag,
  DmaMapFlag,
  DmaUnmapFlag,
  Errno,
  HEADER_SIZE,
  HeaderFlag,
  IrqIndex,
  IrqInfoFlag,
  IrqSetFlag,
  MULTI_DATA,
  MULTI_MAX,
  PCI_NUM_IRQS,
  PCI_NUM_REGIONS,
  REGION_INFO_SIZE,
  RegionFlag,
  VERSION_MAJOR,
  VERSION_MINOR,
} from '../../protocol/constants';
import {
  decodeDmaAccess,
  decodeDmaMap,
  decodeDmaUnmap,
  decodeDeviceInfo,
  decodeIrqInfo,
  decodeIrqSet,
  decodeRegionAccess,
  decodeRegionInfo,
  decodeRegionIoFds,
  decodeVersion,
  encodeDeviceInfo,
  encodeDmaAccess,
  encodeDmaUnmap,
  encodeErrorReply,
  encodeIrqInfo,
  encodeMessage,
  encodeRegionAccess,
  encodeRegionInfo,
  encodeRegionIoFds,
  encodeVersion,
  encodeWriteMultiReply,
  isReply,
  parseCapabilities,
  DMA_MAP_SIZE,
  DMA_UNMAP_SIZE,
  DEVICE_INFO_SIZE,
  IRQ_INFO_SIZE,
  IRQ_SET_SIZE,
  REGION_ACCESS_SIZE,
  REGION_IO_FDS_SIZE,
  MULTI_WRITE_ONE_SIZE,
  sparseCapSize,
  type VersionCapabilities,
} from '../../protocol/messages';
import { ShortMessageError } from '../../protocol/reader';
import { FramingError, MessageStream, type RawMessage } from '../../protocol/stream';
import { IRQ_INDEX_NAMES, IrqState, isEventfd } from './irq';
import { describeRegion } from './regions';
import type { PciFunction } from '../../../../emulator/framework/pci-function';

/** What the server offers in VERSION. */
export const SERVER_MAX_MSG_FDS = 8;
export const SERVER_MAX_DATA_XFER_SIZE = DEFAULT_MAX_DATA_XFER_SIZE;
export const SERVER_MAX_DMA_MAPS = 4096;
/** Largest message the server accepts: a full-size transfer plus its access header. */
export const SERVER_MAX_MESSAGE = HEADER_SIZE + REGION_ACCESS_SIZE + SERVER_MAX_DATA_XFER_SIZE;

/** Replies a client may leave unread before it is dropped. */
const MAX_QUEUED_OUTPUT = 8 * 1024 * 1024;

interface Outcome {
  readonly errno: number;
  readonly payload?: Buffer;
  readonly fds?: readonly number[];
  /** Drop the client after replying (negotiation failed). */
  readonly disconnect?: boolean;
}
const OK: Outcome = { errno: 0 };
const fail = (errno: number): Outcome => ({ errno });

/** How long a DMA_READ/DMA_WRITE to the client may go unanswered before the access fails as a DmaError. */
const DMA_REPLY_TIMEOUT_MS = 5000;

interface PendingRequest {
  readonly command: number;
  resolve(m: RawMessage): void;
  reject(err: Error): void;
}

export interface SessionCounters {
  messages: number;
  errors: number;
}

export class Session {
  /** Replies and DMA requests go out through it; the client's messages come in through reader. */
  readonly stream: MessageStream;
  readonly dma: DmaMapTable;
  readonly irqs: IrqState;
  private negotiated = false;
  private clientMaxFds = DEFAULT_MAX_MSG_FDS;
  private clientMaxXfer = DEFAULT_MAX_DATA_XFER_SIZE;
  private nextMsgId = 0;
  private readonly pending = new Map<number, PendingRequest>();
  closed = false;

  constructor(
    readonly fd: number,
    private readonly fn: PciFunction,
    private readonly log: Logger,
    private readonly counters: SessionCounters,
    private readonly onDrop: (reason: string) => void,
  ) {
    const limits = { maxMessageSize: SERVER_MAX_MESSAGE, maxFds: SERVER_MAX_MSG_FDS };
    this.stream = new MessageStream(new FdSocket(fd, 256 * 1024, 32), limits);
    this.dma = new DmaMapTable(4096, SERVER_MAX_DMA_MAPS);
    this.irqs = new IrqState(fn.irqCounts);
  }

  /** Socket writable again: send queued replies; false when the client had to be dropped. */
  onWritable(): void {
    try {
      this.stream.flush();
    } catch (err) {
      this.counters.errors++;
      this.log.info({ err: err instanceof SysError ? err.code : err }, 'client socket failed; dropping it');
      this.onDrop('send failed');
    }
  }

  /** Socket readable (or hung up): handle everything that arrived. */
  onReadable(): void {
    for (let round = 0; round < 8 && !this.closed; round++) {
      let got;
      try {
        got = this.stream.readAvailable(256);
      } catch (err) {
        this.counters.errors++;
        if (err instanceof FramingError) {
          this.log.warn({ guestError: true, err: err.message }, 'client broke message framing; dropping it');
          this.onDrop('framing');
        } else {
          this.log.info({ err }, 'client socket failed; dropping it');
          this.onDrop('socket error');
        }
        return;
      }
      for (const m of got.messages) {
        if (this.closed) {
          m.fds.forEach((fd) => closeQuietly(fd));
          continue;
        }
        this.handle(m);
      }
      if (got.closed) {
        if (!this.closed) this.onDrop('client closed the socket');
        return;
      }
      if (got.messages.length < 256) return;
    }
  }

  private send(buf: Buffer, fds: readonly number[] = []): boolean {
    try {
      this.stream.send(buf, fds);
      if (this.stream.pendingOutput > MAX_QUEUED_OUTPUT) {
        this.counters.errors++;
        this.log.warn({ queued: this.stream.pendingOutput }, 'client does not read its replies; dropping it');
        this.onDrop('not reading');
        return false;
      }
      return true;
    } catch (err) {
      this.counters.errors++;
      this.log.warn({ err: err instanceof SysError ? err.code : err }, 'send to client failed (not reading or gone); dropping it');
      this.onDrop('send failed');
      return false;
    }
  }

  private handle(m: RawMessage): void {
    const h = m.header;
    this.counters.messages++;
    this.log.trace({ msgId: h.msgId, cmd: commandName(h.command), size: h.size, flags: h.flags, fds: m.fds.length }, 'message');
    if (isReply(h)) {
      this.onReply(m);
      return;
    }
    if ((h.flags & HeaderFlag.TypeMask) !== HeaderFlag.TypeCommand) {
      m.fds.forEach((fd) => closeQuietly(fd));
      this.reply(m, fail(Errno.EINVAL));
      return;
    }
    let out: Outcome;
    try {
      out = this.dispatch(m);
    } catch (err) {
      out = err instanceof ShortMessageError ? fail(Errno.EINVAL) : fail(Errno.EIO);
      if (!(err instanceof ShortMessageError)) this.log.error({ err, cmd: commandName(h.command) }, 'handler failed');
    } finally {
      // Handlers take the fds they keep out of m.fds (set to -1); the rest are closed here.
      m.fds.forEach((fd) => closeQuietly(fd));
    }
    this.reply(m, out);
    if (out.disconnect) this.onDrop('negotiation failed');
  }

  private reply(m: RawMessage, out: Outcome): void {
    const h = m.header;
    if (out.errno !== 0) {
      this.counters.errors++;
      this.log.debug({ msgId: h.msgId, cmd: commandName(h.command), errno: out.errno }, 'error reply');
    }
    if ((h.flags & HeaderFlag.NoReply) !== 0 || this.closed) return;
    const buf = out.errno !== 0 ? encodeErrorReply(h.msgId, h.command, out.errno) : encodeMessage(h.msgId, h.command, HeaderFlag.TypeReply, out.payload);
    this.send(buf, out.errno === 0 ? out.fds ?? [] : []);
  }

  private dispatch(m: RawMessage): Outcome {
    const cmd = m.header.command;
    if (!this.negotiated) {
      if (cmd !== Command.Version) {
        this.log.warn({ guestError: true, cmd: commandName(cmd) }, 'first message is not VERSION; dropping the client');
        return { errno: Errno.EINVAL, disconnect: true };
      }
      return this.version(m);
    }
    if (m.tooManyFds) return fail(Errno.EINVAL);
    const takesFds = cmd === Command.DmaMap || cmd === Command.DeviceSetIrqs;
    if (!takesFds && m.fds.length > 0) return fail(Errno.EINVAL);
    switch (cmd) {
      case Command.Version:
        return fail(Errno.EINVAL);
      case Command.DmaMap:
        return this.dmaMap(m);
      case Command.DmaUnmap:
        return this.dmaUnmap(m);
      case Command.DeviceGetInfo:
        return this.deviceInfo(m);
      case Command.DeviceGetRegionInfo:
        return this.regionInfo(m);
      case Command.DeviceGetRegionIoFds:
        return this.regionIoFds(m);
      case Command.DeviceGetIrqInfo:
        return this.irqInfo(m);
      case Command.DeviceSetIrqs:
        return this.setIrqs(m);
      case Command.RegionRead:
      case Command.RegionWrite:
        return this.regionAccess(m, cmd === Command.RegionWrite);
      case Command.RegionWriteMulti:
        return this.writeMulti(m);
      case Command.DeviceReset:
        this.log.info('device reset by client');
        this.fn.reset();
        return OK;
      default:
        return fail(Errno.ENOSYS);
    }
  }

  // ---- VERSION ----

  private version(m: RawMessage): Outcome {
    if (m.fds.length > 0 || m.tooManyFds) return { errno: Errno.EINVAL, disconnect: true };
    let caps: VersionCapabilities;
    let major: number;
    try {
      const v = decodeVersion(m.payload);
      major = v.major;
      caps = parseCapabilities(v.json);
    } catch (err) {
      this.log.warn({ guestError: true, err: (err as Error).message }, 'malformed VERSION');
      return { errno: Errno.EINVAL, disconnect: true };
    }
    if (major !== VERSION_MAJOR) return { errno: Errno.ENOTSUP, disconnect: true };
    const num = (v: unknown, min: number, max: number): number | null =>
      v === undefined ? null : typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : NaN;
    const fds = num(caps.max_msg_fds, 0, 1024);
    const xfer = num(caps.max_data_xfer_size, 1, 64 * 1024 * 1024);
    const pgsizes = num(caps.pgsizes, 1, Number.MAX_SAFE_INTEGER);
    if (Number.isNaN(fds) || Number.isNaN(xfer) || Number.isNaN(pgsizes)) return { errno: Errno.EINVAL, disconnect: true };
    if (pgsizes !== null && (pgsizes & DEFAULT_PGSIZES) === 0) return { errno: Errno.EINVAL, disconnect: true };
    this.clientMaxFds = fds ?? DEFAULT_MAX_MSG_FDS;
    this.clientMaxXfer = xfer ?? DEFAULT_MAX_DATA_XFER_SIZE;
    this.negotiated = true;
    // write_multiple is not offered (REGION_WRITE_MULTI is still served to a client that sends it,
    // as libvfio-user's server also does not offer it). QEMU 10.1 gains nothing from it for our devices:
    // it turns posted writes off once a region is mmapable, and WRITE_MULTI carries only posted
    // writes. And accepting it breaks QEMU on a dead server: its VFIO_PROXY_USE_MULTI is 0x16
    // (hw/vfio-user/proxy.h), which also sets VFIO_PROXY_FORCE_QUEUED (0x4), so every request is
    // queued for the iothread; once the server closes, vfio_user_shutdown() removes that
    // handler and each queued request waits x-msg-timeout (5 s) instead of failing on EPIPE.
    // A surprise vanish or crash then freezes the guest's vCPU for ~30 s (docs/unplug.md).
    const reply: VersionCapabilities = {
      max_msg_fds: SERVER_MAX_MSG_FDS,
      max_data_xfer_size: SERVER_MAX_DATA_XFER_SIZE,
      pgsizes: DEFAULT_PGSIZES,
      max_dma_maps: SERVER_MAX_DMA_MAPS,
    };
    this.log.info({ clientCaps: caps }, 'client negotiated');
    return { errno: 0, payload: encodeVersion({ major: VERSION_MAJOR, minor: VERSION_MINOR, capabilities: reply }) };
  }

  // ---- DMA ----

  private dmaMap(m: RawMessage): Outcome {
    if (m.payload.length !== DMA_MAP_SIZE || m.fds.length > 1) return fail(Errno.EINVAL);
    const req = decodeDmaMap(m.payload);
    if (req.argsz < DMA_MAP_SIZE) return fail(Errno.EINVAL);
    if ((req.flags & ~(DmaMapFlag.Read | DmaMapFlag.Write)) !== 0) return fail(Errno.EINVAL);
    const fd = m.fds.length === 1 ? m.fds[0]! : -1;
    if (fd < 0 && req.offset !== 0n) return fail(Errno.EINVAL);
    const errno = this.dma.add({
      addr: req.addr,
      size: req.size,
      readable: (req.flags & DmaMapFlag.Read) !== 0,
      writable: (req.flags & DmaMapFlag.Write) !== 0,
      fd,
      offset: req.offset,
    });
    // The mapping (if any) holds the file; the fd itself is closed by handle().
    this.log.debug({ addr: req.addr.toString(16), size: req.size.toString(16), flags: req.flags, withFd: fd >= 0, errno }, 'DMA_MAP');
    return fail(errno);
  }

  private dmaUnmap(m: RawMessage): Outcome {
    if (m.payload.length < DMA_UNMAP_SIZE) return fail(Errno.EINVAL);
    const req = decodeDmaUnmap(m.payload);
    if (req.argsz < DMA_UNMAP_SIZE) return fail(Errno.EINVAL);
    if ((req.flags & DmaUnmapFlag.GetDirtyBitmap) !== 0) return fail(Errno.ENOTSUP);
    if ((req.flags & ~DmaUnmapFlag.All) !== 0) return fail(Errno.EINVAL);
    if ((req.flags & DmaUnmapFlag.All) !== 0) {
      if (req.addr !== 0n || req.size !== 0n) return fail(Errno.EINVAL);
      this.dma.clear();
    } else {
      const errno = this.dma.remove(req.addr, req.size);
      if (errno !== 0) return fail(errno);
    }
    return { errno: 0, payload: encodeDmaUnmap({ argsz: DMA_UNMAP_SIZE, flags: req.flags, addr: req.addr, size: req.size }) };
  }

  // ---- info ----

  private deviceInfo(m: RawMessage): Outcome {
    const req = decodeDeviceInfo(m.payload);
    if (req.argsz < DEVICE_INFO_SIZE) return fail(Errno.EINVAL);
    return {
      errno: 0,
      payload: encodeDeviceInfo({ argsz: DEVICE_INFO_SIZE, flags: DeviceFlag.Pci | DeviceFlag.Reset, numRegions: PCI_NUM_REGIONS, numIrqs: PCI_NUM_IRQS }),
    };
  }

  private regionInfo(m: RawMessage): Outcome {
    const req = decodeRegionInfo(m.payload);
    if (req.argsz < REGION_INFO_SIZE) return fail(Errno.EINVAL);
    if (req.index >= PCI_NUM_REGIONS) return fail(Errno.EINVAL);
    const d = describeRegion(this.fn, req.index);
    const capSize = d.mmap ? sparseCapSize(d.mmap.areas.length) : 0;
    const full = REGION_INFO_SIZE + capSize;
    // Like vfio: the capabilities (and the fd with them) only when the client's buffer holds them.
    const withCaps = capSize > 0 && req.argsz >= full;
    const payload = encodeRegionInfo({
      argsz: full,
      flags: d.flags | (withCaps ? RegionFlag.Caps : 0),
      index: req.index,
      capOffset: withCaps ? REGION_INFO_SIZE : 0,
      size: BigInt(d.size),
      offset: 0n,
      ...(withCaps ? { sparseAreas: d.mmap!.areas.map((a) => ({ offset: BigInt(a.offset), size: BigInt(a.size) })) } : {}),
    });
    return { errno: 0, payload, fds: withCaps && this.clientMaxFds >= 1 ? [d.mmap!.fd] : [] };
  }

  private regionIoFds(m: RawMessage): Outcome {
    const req = decodeRegionIoFds(m.payload);
    if (req.argsz < REGION_IO_FDS_SIZE || req.flags !== 0 || req.count !== 0) return fail(Errno.EINVAL);
    if (req.index >= PCI_NUM_REGIONS || this.fn.regionSize(req.index) === 0) return fail(Errno.EINVAL);
    // No ioeventfds are offered: every access goes through messages or mmap.
    return { errno: 0, payload: encodeRegionIoFds({ argsz: REGION_IO_FDS_SIZE, flags: 0, index: req.index, count: 0 }) };
  }

  private irqInfo(m: RawMessage): Outcome {
    const req = decodeIrqInfo(m.payload);
    if (req.argsz < IRQ_INFO_SIZE || req.index >= PCI_NUM_IRQS) return fail(Errno.EINVAL);
    return {
      errno: 0,
      payload: encodeIrqInfo({ argsz: IRQ_INFO_SIZE, flags: IrqInfoFlag.Eventfd, index: req.index, count: this.irqs.counts[req.index]! }),
    };
  }

  // ---- interrupts ----

  private setIrqs(m: RawMessage): Outcome {
    const s = decodeIrqSet(m.payload);
    const action = s.flags & IrqSetFlag.ActionTypeMask;
    const dataType = s.flags & IrqSetFlag.DataTypeMask;
    if (s.argsz < IRQ_SET_SIZE || (s.flags & ~(IrqSetFlag.ActionTypeMask | IrqSetFlag.DataTypeMask)) !== 0) return fail(Errno.EINVAL);
    if (s.index >= PCI_NUM_IRQS) return fail(Errno.EINVAL);
    if (action !== IrqSetFlag.ActionMask && action !== IrqSetFlag.ActionUnmask && action !== IrqSetFlag.ActionTrigger) return fail(Errno.EINVAL);
    if (dataType !== IrqSetFlag.DataNone && dataType !== IrqSetFlag.DataBool && dataType !== IrqSetFlag.DataEventfd) return fail(Errno.EINVAL);
    const n = this.irqs.counts[s.index]!;
    if (s.count === 0) {
      if (s.start !== 0 || action !== IrqSetFlag.ActionTrigger || dataType !== IrqSetFlag.DataNone) return fail(Errno.EINVAL);
    } else if (s.start >= n || s.start + s.count > n) {
      return fail(Errno.EINVAL);
    }
    if ((s.index === IrqIndex.Err || s.index === IrqIndex.Req) && (action !== IrqSetFlag.ActionTrigger || s.count > 1)) return fail(Errno.EINVAL);
    if (dataType === IrqSetFlag.DataBool && s.data.length !== s.count) return fail(Errno.EINVAL);
    if (dataType !== IrqSetFlag.DataBool && s.data.length !== 0) return fail(Errno.EINVAL);
    if (dataType !== IrqSetFlag.DataEventfd && m.fds.length > 0) return fail(Errno.EINVAL);
    if (dataType === IrqSetFlag.DataEventfd && m.fds.length !== 0 && m.fds.length !== s.count) return fail(Errno.EINVAL);

    const selected = (i: number): boolean => dataType !== IrqSetFlag.DataBool || s.data[i] === 1;
    if (this.log.isLevelEnabled('debug')) {
      const actionName = action === IrqSetFlag.ActionMask ? 'mask' : action === IrqSetFlag.ActionUnmask ? 'unmask' : 'trigger';
      const dataName = dataType === IrqSetFlag.DataNone ? 'none' : dataType === IrqSetFlag.DataBool ? 'bool' : 'eventfd';
      this.log.debug({ index: IRQ_INDEX_NAMES[s.index], action: actionName, data: dataName, start: s.start, count: s.count, fds: m.fds.length }, 'SET_IRQS');
    }
    if (action === IrqSetFlag.ActionMask || action === IrqSetFlag.ActionUnmask) {
      if (dataType === IrqSetFlag.DataEventfd) return fail(Errno.EINVAL); // mask/unmask notification fds: not offered
      this.fn.setIrqMask(s.index, s.start, s.count, action === IrqSetFlag.ActionMask, selected);
      return OK;
    }
    if (dataType === IrqSetFlag.DataNone && s.count === 0) {
      this.irqs.deassign(s.index, 0, 0);
      this.fn.irqEventfdsChanged(s.index, false);
      return OK;
    }
    if (dataType === IrqSetFlag.DataEventfd) {
      if (m.fds.length === 0) {
        this.irqs.deassign(s.index, s.start, s.count);
        this.fn.irqEventfdsChanged(s.index, false);
        return OK;
      }
      if (!m.fds.every(isEventfd)) return fail(Errno.EINVAL);
      m.fds.forEach((fd, i) => {
        this.irqs.assign(s.index, s.start + i, fd);
        m.fds[i] = -1; // kept: handle() must not close it
      });
      this.log.debug({ index: s.index, start: s.start, count: s.count }, 'IRQ eventfds set');
      this.fn.irqEventfdsChanged(s.index, true);
      return OK;
    }
    // Client-side trigger (DATA_NONE / DATA_BOOL): a loopback test of the client's own eventfds.
    for (let i = 0; i < s.count; i++) if (selected(i)) this.irqs.signal(s.index, s.start + i);
    return OK;
  }

  // ---- region access ----

  private regionAccess(m: RawMessage, write: boolean): Outcome {
    const a = decodeRegionAccess(m.payload);
    if (a.count > SERVER_MAX_DATA_XFER_SIZE) return fail(Errno.EINVAL);
    if (write ? a.data.length !== a.count : a.data.length !== 0) return fail(Errno.EINVAL);
    const data = write ? a.data : Buffer.alloc(a.count);
    const errno = this.fn.regionAccess(a.region, a.offset, data, write);
    if (errno !== 0) {
      this.log.debug({ guestError: true, region: a.region, offset: a.offset.toString(16), count: a.count, write, errno }, 'region access refused');
      return fail(errno);
    }
    return { errno: 0, payload: encodeRegionAccess({ offset: a.offset, region: a.region, count: a.count, data: write ? Buffer.alloc(0) : data }) };
  }

  private writeMulti(m: RawMessage): Outcome {
    if (m.payload.length < 8) return fail(Errno.EINVAL);
    const wrCnt = m.payload.readBigUInt64LE(0);
    if (wrCnt === 0n || wrCnt > BigInt(MULTI_MAX) || m.payload.length !== 8 + Number(wrCnt) * MULTI_WRITE_ONE_SIZE) return fail(Errno.EINVAL);
    let done = 0;
    for (let i = 0; i < Number(wrCnt); i++) {
      const at = 8 + i * MULTI_WRITE_ONE_SIZE;
      const offset = m.payload.readBigUInt64LE(at);
      const region = m.payload.readUInt32LE(at + 8);
      const count = m.payload.readUInt32LE(at + 12);
      if (count === 0 || count > MULTI_DATA) return fail(Errno.EINVAL);
      const errno = this.fn.regionAccess(region, offset, Buffer.from(m.payload.subarray(at + 16, at + 16 + count)), true);
      if (errno !== 0) return fail(errno);
      done++;
    }
    return { errno: 0, payload: encodeWriteMultiReply(done) };
  }

  // ---- server -> client DMA ----

  private onReply(m: RawMessage): void {
    m.fds.forEach((fd) => closeQuietly(fd));
    const p = this.pending.get(m.header.msgId);
    if (p === undefined || p.command !== m.header.command) {
      this.counters.errors++;
      this.log.warn({ guestError: true, msgId: m.header.msgId, cmd: commandName(m.header.command) }, 'reply to no request of ours');
      return;
    }
    this.pending.delete(m.header.msgId);
    p.resolve(m);
  }

  private request(command: number, payload: Buffer): Promise<RawMessage> {
    if (this.closed) return Promise.reject(new Error('client gone'));
    let id = this.nextMsgId;
    while (this.pending.has(id)) id = (id + 1) & 0xffff;
    this.nextMsgId = (id + 1) & 0xffff;
    return new Promise((resolve, reject) => {
      // A client that never answers must not hold the device's DMA (and its admin queue) forever.
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new Error(`no reply to ${commandName(command)} within ${DMA_REPLY_TIMEOUT_MS} ms`));
      }, DMA_REPLY_TIMEOUT_MS);
      timer.unref();
      const settle = <T>(f: (v: T) => void) => (v: T) => {
        clearTimeout(timer);
        f(v);
      };
      this.pending.set(id, { command, resolve: settle(resolve), reject: settle(reject) });
      if (!this.send(encodeMessage(id, command, HeaderFlag.TypeCommand, payload))) {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(new Error('send failed'));
      }
    });
  }

  /** A DMA request to the client; a client gone meanwhile is a DmaError like any other failed DMA, not a bug. */
  private async dmaRequest(at: bigint, n: number, command: number, payload: Buffer): Promise<RawMessage> {
    try {
      return await this.request(command, payload);
    } catch (err) {
      throw err instanceof DmaError ? err : new DmaError(at, n, (err as Error).message);
    }
  }

  /** DMA_READ through the client, in chunks of its max_data_xfer_size. */
  async remoteRead(addr: bigint, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    for (let done = 0; done < length; ) {
      const n = Math.min(this.clientMaxXfer, length - done);
      const at = addr + BigInt(done);
      const r = await this.dmaRequest(at, n, Command.DmaRead, encodeDmaAccess({ addr: at, count: BigInt(n), data: Buffer.alloc(0) }));
      if ((r.header.flags & HeaderFlag.Error) !== 0) throw new DmaError(at, n, `read refused by client (errno ${r.header.error})`);
      const body = decodeDmaAccess(r.payload);
      if (body.addr !== at || body.count !== BigInt(n) || body.data.length !== n) throw new DmaError(at, n, 'malformed DMA_READ reply');
      body.data.copy(out, done);
      done += n;
    }
    return out;
  }

  async remoteWrite(addr: bigint, data: Buffer): Promise<void> {
    for (let done = 0; done < data.length; ) {
      const n = Math.min(this.clientMaxXfer, data.length - done);
      const at = addr + BigInt(done);
      const r = await this.dmaRequest(at, n, Command.DmaWrite, encodeDmaAccess({ addr: at, count: BigInt(n), data: data.subarray(done, done + n) }));
      if ((r.header.flags & HeaderFlag.Error) !== 0) throw new DmaError(at, n, `write refused by client (errno ${r.header.error})`);
      done += n;
    }
  }

  /** Frees everything the client had: socket, mappings, eventfds, waiting DMA requests. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream.discard();
    this.stream.discard();
    this.stream.sock.free();
    // The client sees the end of the stream, not a reset, whatever it had in flight.
    closeConnection(this.fd);
    this.dma.clear();
    this.irqs.closeAll();
    for (const p of this.pending.values()) p.reject(new Error('client disconnected'));
    this.pending.clear();
  }
}
