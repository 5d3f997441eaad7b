// A minimal MSI-X table and PBA behind the trapped MSI-X BAR of the libvfio-user transport.
//
// QEMU's vfio-user client emulates the MSI-X table itself (the guest's table writes never reach
// the server) and masks vectors through SET_IRQS, so this store only has to read back what a raw
// client wrote: entries are stored as written (Vector Control's mask bit reset to 1 as the spec
// requires), the PBA reads as zero and ignores writes, and nothing here gates interrupt delivery.
import type { MsixDecl } from '../../../emulator/framework/device';

const ENTRY_SIZE = 16;
const VECTOR_CONTROL = 12;

export class MsixStore {
  private readonly table: Buffer;

  constructor(private readonly decl: MsixDecl) {
    this.table = Buffer.alloc(decl.vectors * ENTRY_SIZE);
    this.reset();
  }

  /** Power-on state: every vector masked, no address or data. */
  reset(): void {
    this.table.fill(0);
    for (let v = 0; v < this.decl.vectors; v++) this.table.writeUInt32LE(1, v * ENTRY_SIZE + VECTOR_CONTROL);
  }

  /** Fills data with the bytes at [offset, offset + data.length) of the BAR; unbacked bytes read 0. */
  read(offset: number, data: Buffer): void {
    data.fill(0);
    this.overlap(offset, data.length, this.decl.tableOffset, this.table.length, (src, dst, len) => {
      this.table.copy(data, dst, src, src + len);
    });
    // the PBA stays zero: pending state lives in the client, which does the masking
  }

  /** Stores the table bytes the write covers; writes elsewhere (PBA, holes) are ignored. */
  write(offset: number, data: Buffer): void {
    this.overlap(offset, data.length, this.decl.tableOffset, this.table.length, (src, dst, len) => {
      data.copy(this.table, src, dst, dst + len);
    });
  }

  /** Calls fn(offsetInArea, offsetInAccess, length) for the part of the access inside [base, base + size). */
  private overlap(offset: number, length: number, base: number, size: number, fn: (a: number, b: number, n: number) => void): void {
    const start = Math.max(offset, base);
    const end = Math.min(offset + length, base + size);
    if (start < end) fn(start - base, start - offset, end - start);
  }
}
