// DmaAccess over libvfio-user: guest addresses checked against the registered DMA regions, bytes copied through their mapped views.
//
// Only regions libvfio-user mapped into this process (the client passed an fd, as QEMU does with
// memory-backend-memfd share=on) are used. For a region without an fd libvfio-user would send a
// DMA_READ/DMA_WRITE message and block the main thread until the client answers; we refuse
// those ranges with DmaError instead.
//
// The transport feeds the region table from libvfio-user's dma_register/dma_unregister callbacks.
// A region's bytes are copied through its DmaMemory view (ffi/libvfio-user.ts says why a view
// never outlives the mapping), one memcpy per access instead of vfu_addr_to_sgl plus
// vfu_sgl_read/write (two or three ffi-napi calls). Writing directly skips nothing
// libvfio-user would do: vfu_sgl_write only adds dirty-page tracking, which needs migration
// callbacks this transport never registers. A mapped region too long for a Buffer still goes
// through vfu_addr_to_sgl + vfu_sgl_read/write.
import { DmaError, type DmaAccess } from '../../../../emulator/framework/device';
import { PROT_READ, PROT_WRITE, type DmaMemory, type DmaRegionInfo, type VfuContext } from '../../../../ffi/libvfio-user';
import { SysError } from '../../../../ffi/errors';

/** Largest single DMA transfer: far above a queue page, far below what could hurt the daemon. */
export const MAX_DMA_TRANSFER = 64 * 1024 * 1024;
const U64_END = 1n << 64n;

interface Region {
  readonly start: bigint;
  readonly end: bigint;
  readonly info: DmaRegionInfo;
}

/** Where an access lands: a view and an offset in it, or (region too long to view) the sgl path. */
type Target = { readonly memory: DmaMemory; readonly offset: number } | { readonly memory: null; readonly ctx: VfuContext };

export class VfuDma implements DmaAccess {
  /** The context of the current client, or null between clients. */
  ctx: VfuContext | null = null;
  /** Registered regions sorted by start; libvfio-user refuses overlapping ones. */
  private regions: Region[] = [];

  /** From dma_register. */
  addRegion(info: DmaRegionInfo): void {
    this.removeRegion(info.iova);
    const region = { start: info.iova, end: info.iova + info.length, info };
    const at = this.regions.findIndex((r) => r.start > region.start);
    if (at < 0) this.regions.push(region);
    else this.regions.splice(at, 0, region);
  }

  /** From dma_unregister. */
  removeRegion(iova: bigint): void {
    const at = this.regions.findIndex((r) => r.start === iova);
    if (at >= 0) this.regions.splice(at, 1);
  }

  /** The client is gone (libvfio-user has unregistered every region). */
  clear(): void {
    this.regions = [];
  }

  get regionCount(): number {
    return this.regions.length;
  }

  read(addr: bigint, length: number): Promise<Buffer> {
    try {
      return Promise.resolve(this.readSync(addr, length));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  write(addr: bigint, data: Buffer): Promise<void> {
    try {
      this.writeSync(addr, data);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  isMapped(addr: bigint, length: number, writable: boolean): boolean {
    try {
      this.translate(addr, length, writable);
      return true;
    } catch {
      return false;
    }
  }

  /** DmaAccess.withView: fn on the live bytes of a region libvfio-user mapped for us; undefined for fd-less regions. */
  withView<T>(addr: bigint, length: number, writable: boolean, fn: (view: Buffer) => T): T | undefined {
    const where = this.translate(addr, length, writable);
    if (where.memory === null) return undefined;
    return fn(this.live(where.memory, addr, length).subarray(where.offset, where.offset + length));
  }

  readSync(addr: bigint, length: number): Buffer {
    const where = this.translate(addr, length, false);
    if (length === 0) return Buffer.alloc(0);
    if (where.memory === null) {
      const data = Buffer.alloc(length);
      this.copy(addr, length, () => where.ctx.sglRead(data));
      return data;
    }
    const view = this.live(where.memory, addr, length);
    return Buffer.from(view.subarray(where.offset, where.offset + length));
  }

  writeSync(addr: bigint, data: Buffer): void {
    const where = this.translate(addr, data.length, true);
    if (data.length === 0) return;
    if (where.memory === null) {
      this.copy(addr, data.length, () => where.ctx.sglWrite(data));
      return;
    }
    data.copy(this.live(where.memory, addr, data.length), where.offset);
  }

  private live(memory: DmaMemory, addr: bigint, length: number): Buffer {
    // revoked means unregistered: the table should not have offered it, but never touch it
    if (!memory.live) throw new DmaError(addr, length, 'to a region the client has unmapped');
    return memory.buffer;
  }

  private copy(addr: bigint, length: number, op: () => void): void {
    try {
      op();
    } catch (err) {
      throw new DmaError(addr, length, `failed (${err instanceof Error ? err.message : String(err)})`);
    }
  }

  /** The region (and offset in it) holding all of [addr, addr + length); throws DmaError otherwise. */
  private translate(addr: bigint, length: number, writable: boolean): Target {
    if (typeof addr !== 'bigint' || addr < 0n || !Number.isSafeInteger(length) || length < 0) {
      throw new DmaError(BigInt.asUintN(64, BigInt(addr)), Math.max(0, Number(length) || 0), 'bad address or length');
    }
    if (length > MAX_DMA_TRANSFER) throw new DmaError(addr, length, `longer than ${MAX_DMA_TRANSFER} bytes`);
    if (addr + BigInt(length) > U64_END) throw new DmaError(addr, length, 'wraps past 2^64');
    const ctx = this.ctx;
    if (ctx === null || ctx.destroyed) throw new DmaError(addr, length, 'with no client connected');
    // a zero-length access only needs its address mapped
    const end = addr + BigInt(Math.max(1, length));
    const region = this.find(addr);
    if (region === null) throw new DmaError(addr, length, 'outside guest memory (ENOENT)');
    if (end > region.end) {
      const next = this.find(region.end);
      throw new DmaError(addr, length, next !== null ? 'spans more than one region' : 'outside guest memory (ENOENT)');
    }
    const { info } = region;
    if (writable && (info.prot & PROT_WRITE) === 0) throw new DmaError(addr, length, 'to a read-only region');
    if (!info.mapped) throw new DmaError(addr, length, 'to a region the client gave no fd for');
    // libvfio-user mmaps with the region's prot: a read of a mapping without PROT_READ would fault
    if (!writable && (info.prot & PROT_READ) === 0) throw new DmaError(addr, length, 'from a region the client did not make readable');
    const memory = info.memory;
    if (memory === null) return this.viaSgl(ctx, addr, length, writable);
    return { memory, offset: Number(addr - region.start) };
  }

  /** The last region starting at or below addr, when it contains addr. */
  private find(addr: bigint): Region | null {
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length - 1;
    let best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (rs[mid]!.start <= addr) {
        best = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (best < 0) return null;
    const r = rs[best]!;
    return addr < r.end ? r : null;
  }

  /** A mapped region too long to view: vfu_addr_to_sgl leaves the context's entry describing the range. */
  private viaSgl(ctx: VfuContext, addr: bigint, length: number, writable: boolean): Target {
    let n: number;
    try {
      n = ctx.addrToSgl(addr, Math.max(1, length), writable ? PROT_READ | PROT_WRITE : PROT_READ);
    } catch (err) {
      const code = err instanceof SysError ? err.code : 'error';
      throw new DmaError(addr, length, code === 'EACCES' ? 'to a read-only region' : `outside guest memory (${code})`);
    }
    if (n !== 1) throw new DmaError(addr, length, 'spans more than one region');
    if (!ctx.sgIsMappable()) throw new DmaError(addr, length, 'to a region the client gave no fd for');
    return { memory: null, ctx };
  }
}
