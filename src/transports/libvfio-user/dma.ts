// DmaAccess over libvfio-user: vfu_addr_to_sgl to check and translate, vfu_sgl_read/write to copy.
//
// Only regions libvfio-user mapped into this process (the client passed an fd, as QEMU does with
// memory-backend-memfd share=on) are used. For a region without an fd libvfio-user would send a
// DMA_READ/DMA_WRITE message and block the main thread until the client answers; we refuse
// those ranges with DmaError instead.
import { DmaError, type DmaAccess } from '../../../emulator/framework/device';
import { PROT_READ, PROT_WRITE, type VfuContext } from '../../../ffi/libvfio-user';
import { SysError } from '../../../ffi/errors';

/** Largest single DMA transfer: far above a queue page, far below what could hurt the daemon. */
export const MAX_DMA_TRANSFER = 64 * 1024 * 1024;
const U64_END = 1n << 64n;

export class VfuDma implements DmaAccess {
  /** The context of the current client, or null between clients. */
  ctx: VfuContext | null = null;

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

  readSync(addr: bigint, length: number): Buffer {
    const ctx = this.translate(addr, length, false);
    const data = Buffer.alloc(length);
    if (length > 0) this.copy(addr, length, () => ctx.sglRead(data));
    return data;
  }

  writeSync(addr: bigint, data: Buffer): void {
    const ctx = this.translate(addr, data.length, true);
    if (data.length > 0) this.copy(addr, data.length, () => ctx.sglWrite(data));
  }

  private copy(addr: bigint, length: number, op: () => void): void {
    try {
      op();
    } catch (err) {
      throw new DmaError(addr, length, `failed (${err instanceof Error ? err.message : String(err)})`);
    }
  }

  /** Leaves the context's scatter-gather entry describing [addr, addr + length); throws DmaError otherwise. */
  private translate(addr: bigint, length: number, writable: boolean): VfuContext {
    if (typeof addr !== 'bigint' || addr < 0n || !Number.isSafeInteger(length) || length < 0) {
      throw new DmaError(BigInt.asUintN(64, BigInt(addr)), Math.max(0, Number(length) || 0), 'bad address or length');
    }
    if (length > MAX_DMA_TRANSFER) throw new DmaError(addr, length, `longer than ${MAX_DMA_TRANSFER} bytes`);
    if (addr + BigInt(length) > U64_END) throw new DmaError(addr, length, 'wraps past 2^64');
    const ctx = this.ctx;
    if (ctx === null || ctx.destroyed) throw new DmaError(addr, length, 'with no client connected');
    // vfu_addr_to_sgl wants at least one byte; a zero-length access only needs its address mapped
    const probe = Math.max(1, length);
    let n: number;
    try {
      n = ctx.addrToSgl(addr, probe, writable ? PROT_READ | PROT_WRITE : PROT_READ);
    } catch (err) {
      const code = err instanceof SysError ? err.code : 'error';
      throw new DmaError(addr, length, code === 'EACCES' ? 'to a read-only region' : `outside guest memory (${code})`);
    }
    if (n !== 1) throw new DmaError(addr, length, 'spans more than one region');
    if (!ctx.sgIsMappable()) throw new DmaError(addr, length, 'to a region the client gave no fd for');
    return ctx;
  }
}
