// VfioUserClient: a vfio-user client for test suites and driver developers, scripting a device without QEMU.
//
// The commands live here; the connection under them (socket, replies, the background loop) is
// connection.ts, the answers to the server's DMA requests dma-server.ts, the IRQ eventfds irqs.ts.
import { closeQuietly, connectUnix, eventfd, Mapping, unixSocket } from '../../../ffi/libc';
import {
  Command,
  DEFAULT_MAX_DATA_XFER_SIZE,
  DmaMapFlag,
  DmaUnmapFlag,
  IrqSetFlag,
  REGION_INFO_SIZE,
  RegionIndex,
  VERSION_MAJOR,
  VERSION_MINOR,
} from '../protocol/constants';
import {
  decodeDeviceInfo,
  decodeIrqInfo,
  decodeRegionAccess,
  decodeRegionInfo,
  decodeVersion,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeIrqInfo,
  encodeIrqSet,
  encodeRegionAccess,
  encodeRegionInfo,
  encodeRegionWriteMulti,
  encodeVersion,
  encodeDeviceInfo,
  parseCapabilities,
  type DeviceInfo,
  type IrqInfo,
  type MultiWrite,
  type RegionInfo,
  type VersionCapabilities,
} from '../protocol/messages';
import { Connection, type ClientOptions } from './connection';
import { GuestMemory } from './guest-memory';

export { GuestMemory } from './guest-memory';
export { Mapping } from '../../../ffi/libc';
export { Command, Errno, IrqIndex, IrqSetFlag, RegionFlag, RegionIndex, DmaMapFlag, DmaUnmapFlag, DeviceFlag, IrqInfoFlag } from '../protocol/constants';
export type { DeviceInfo, IrqInfo, RegionInfo, VersionCapabilities } from '../protocol/messages';

export { Connection, DisconnectedError, VfioUserError, type ClientOptions, type Reply } from './connection';

/** Region info plus the fd the server sent with it (owned by the client; closed by close()). */
export interface RegionInfoWithFd extends RegionInfo {
  readonly fd: number | null;
}

export class VfioUserClient extends Connection {
  /** Capabilities the server answered in VERSION. */
  serverCaps: VersionCapabilities = {};

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
    c.start();
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
    this.dma.add({ addr, size: BigInt(size), readable, writable, memory: mem });
  }

  /** DMA_UNMAP of exactly one mapped region; `all` unmaps everything (VFIO_DMA_UNMAP_FLAG_ALL). */
  async dmaUnmap(addr: bigint, size: number | bigint, all = false): Promise<void> {
    await this.request(
      Command.DmaUnmap,
      encodeDmaUnmap({ argsz: 24, flags: all ? DmaUnmapFlag.All : 0, addr: all ? 0n : addr, size: all ? 0n : BigInt(size) }),
    );
    if (all) this.dma.clear();
    else this.dma.remove(addr, BigInt(size));
  }

  // ---- interrupts ----

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
    this.irqs.replace(index, start, fds);
    this.wake();
  }

  /** Removes every eventfd of an IRQ index (DATA_NONE, count 0). */
  async disableIrqs(index: number): Promise<void> {
    await this.request(Command.DeviceSetIrqs, encodeIrqSet({ argsz: 20, flags: IrqSetFlag.DataNone | IrqSetFlag.ActionTrigger, index, start: 0, count: 0, data: Buffer.alloc(0) }));
    this.irqs.removeIndex(index);
  }

  /** SET_IRQS ACTION_MASK or ACTION_UNMASK (DATA_NONE) of [start, start + count). */
  async maskIrqs(index: number, start: number, count: number, mask: boolean): Promise<void> {
    const action = mask ? IrqSetFlag.ActionMask : IrqSetFlag.ActionUnmask;
    await this.request(Command.DeviceSetIrqs, encodeIrqSet({ argsz: 20, flags: IrqSetFlag.DataNone | action, index, start, count, data: Buffer.alloc(0) }));
  }

  /** How many times (index, vector) fired since last asked, without waiting; 0n when none. */
  takeIrq(index: number, vector: number): bigint {
    return this.irqs.take(index, vector);
  }

  /** Resolves with the eventfd count once (index, vector) has fired (immediately if it already has). */
  waitIrq(index: number, vector: number, timeoutMs = this.timeoutMs): Promise<bigint> {
    return this.irqs.wait(index, vector, timeoutMs, () => this.wake());
  }

  /** DEVICE_RESET. */
  async reset(): Promise<void> {
    await this.request(Command.DeviceReset);
  }
}
