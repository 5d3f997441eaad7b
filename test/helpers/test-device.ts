// A small PCI device for the transport suites: scratch registers, a DMA copy engine, memory BAR, MSI-X, MSI or INTx only.
//
// BAR0 (trapped, 4 KiB):
//   0x00 ID (RO, 0x7e570001)        0x04..0x3c scratch (RW, 15 dwords)
//   0x40 IRQ: writing v raises vector v (MSI-X, or MSI folded onto the enabled vectors)
//   0x48 LEVEL: writing 1 asserts the device's INTx condition, 0 deasserts it
//   0x50 DMA source (64-bit)        0x58 DMA destination (64-bit)
//   0x60 DMA length                 0x64 DMA go: copies source -> destination through DmaAccess,
//                                        then raises vector 0
//   0x68 DMA status (RO): 0 idle, 1 busy, 2 done, 3 failed
//   any other offset reads 0xffffffff (logged as a guest error)
// BAR2 (memory, 16 KiB): shared memory the client can mmap.
// BAR4: MSI-X, 4 vectors, table at 0, PBA at 0x800 (owned by the framework); with irq 'msi' an
// MSI capability with 4 vectors instead, with 'intx' neither.
import type { BarDecl, CapabilityDecl, DeviceContext, PciDevice, TrappedBar } from '../../emulator/framework/device';
import { SharedMemory } from '../../ffi/libc';

export const TEST_DEVICE_ID = 0x7e570001;
export const REG = { id: 0x00, scratch: 0x04, irq: 0x40, level: 0x48, dmaSrc: 0x50, dmaDst: 0x58, dmaLen: 0x60, dmaGo: 0x64, dmaStatus: 0x68 } as const;
export const DMA_STATUS = { idle: 0, busy: 1, done: 2, failed: 3 } as const;

export class TestDevice implements PciDevice {
  readonly name = 'test-device';
  readonly identity = { vendorId: 0x1b36, deviceId: 0x00f0, subsystemVendorId: 0x1af4, subsystemId: 0x1100, classCode: 0xff0000, revision: 1 };
  readonly capabilities: CapabilityDecl;
  readonly bars: BarDecl[];
  readonly memory: SharedMemory;
  private regs = Buffer.alloc(0x70);
  private ctx: DeviceContext | null = null;
  resets = 0;
  clientEvents: boolean[] = [];
  /** The last DMA copy finished (resolves after the status is set). */
  lastDma: Promise<void> = Promise.resolve();

  constructor(irq: 'msix' | 'msi' | 'intx' = 'msix') {
    const msix = { vectors: 4, bar: 4 as const, tableOffset: 0, pbaOffset: 0x800 };
    this.capabilities = { pm: true, pcie: true, ...(irq === 'msix' ? { msix } : irq === 'msi' ? { msi: { vectors: 4 } } : {}) };
    this.memory = new SharedMemory('vrnic-test-bar2', 16 * 1024);
    const bar0: TrappedBar = {
      kind: 'trapped',
      index: 0,
      size: 4096,
      read: (offset, data) => this.read(offset, data),
      write: (offset, data) => this.write(offset, data),
    };
    this.bars = [bar0, { kind: 'memory', index: 2, size: 16 * 1024, memory: this.memory }];
    this.regs.writeUInt32LE(TEST_DEVICE_ID, REG.id);
  }

  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
  }

  private read(offset: number, data: Buffer): void {
    if (offset + data.length > this.regs.length) {
      this.ctx?.log.warn({ guestError: true, offset, length: data.length }, 'read of an unimplemented register');
      data.fill(0xff);
      return;
    }
    this.regs.copy(data, 0, offset, offset + data.length);
  }

  private write(offset: number, data: Buffer): void {
    if (offset + data.length > this.regs.length || offset < REG.scratch) {
      this.ctx?.log.warn({ guestError: true, offset, length: data.length }, 'write to a read-only or unimplemented register');
      return;
    }
    if (offset === REG.irq && data.length === 4) {
      this.ctx?.irq.trigger(data.readUInt32LE(0));
      return;
    }
    if (offset === REG.level && data.length === 4) {
      this.ctx?.irq.setLevel(data.readUInt32LE(0) !== 0);
      return;
    }
    if (offset === REG.dmaGo && data.length === 4) {
      this.lastDma = this.copy();
      return;
    }
    if (offset === REG.dmaStatus) return;
    data.copy(this.regs, offset);
  }

  private async copy(): Promise<void> {
    const ctx = this.ctx!;
    const src = this.regs.readBigUInt64LE(REG.dmaSrc);
    const dst = this.regs.readBigUInt64LE(REG.dmaDst);
    const len = this.regs.readUInt32LE(REG.dmaLen);
    this.regs.writeUInt32LE(DMA_STATUS.busy, REG.dmaStatus);
    try {
      const data = await ctx.dma.read(src, len);
      await ctx.dma.write(dst, data);
      this.regs.writeUInt32LE(DMA_STATUS.done, REG.dmaStatus);
    } catch (err) {
      ctx.log.warn({ guestError: true, err: (err as Error).message }, 'DMA copy failed');
      this.regs.writeUInt32LE(DMA_STATUS.failed, REG.dmaStatus);
    }
    ctx.irq.trigger(0);
  }

  reset(): void {
    this.resets++;
    this.regs.fill(0);
    this.regs.writeUInt32LE(TEST_DEVICE_ID, REG.id);
    this.memory.buffer.fill(0);
  }

  clientChanged(connected: boolean): void {
    this.clientEvents.push(connected);
  }

  close(): void {
    this.memory.close();
  }
}
