// MSI-X table and pending-bit array, emulated in a trapped BAR that the framework owns.
//
// QEMU's vfio-pci emulates the table itself and never forwards table accesses (only PBA reads),
// so with QEMU the per-vector mask lives in QEMU. A client that does forward table writes
// (vrnic's own VfioUserClient) gets real per-vector masking: a vector's table mask gates delivery
// once the client has written that vector's control word since reset.
import type { MsixDecl, TrappedBar } from './device';

export const MSIX_ENTRY_SIZE = 16;
const VECTOR_CTRL = 12;

/** The BAR size that holds the table and PBA of decl: a power of two, at least 4 KiB. */
export function msixBarSize(decl: MsixDecl): number {
  const end = Math.max(decl.tableOffset + decl.vectors * MSIX_ENTRY_SIZE, decl.pbaOffset + pbaBytes(decl.vectors));
  let size = 4096;
  while (size < end) size *= 2;
  return size;
}

export function pbaBytes(vectors: number): number {
  return Math.ceil(vectors / 64) * 8;
}

export class MsixTable {
  readonly decl: MsixDecl;
  readonly size: number;
  private readonly table: Buffer;
  private readonly pba: Buffer;
  private readonly clientOwned: boolean[];
  /** Called after a table write that may have unmasked a vector. */
  onUnmask: (() => void) | null = null;

  constructor(decl: MsixDecl) {
    if (decl.tableOffset % 8 !== 0 || decl.pbaOffset % 8 !== 0) throw new RangeError('MSI-X table and PBA offsets must be 8-byte aligned');
    const tEnd = decl.tableOffset + decl.vectors * MSIX_ENTRY_SIZE;
    const pEnd = decl.pbaOffset + pbaBytes(decl.vectors);
    if (decl.tableOffset < pEnd && decl.pbaOffset < tEnd) throw new RangeError('MSI-X table and PBA overlap');
    this.decl = decl;
    this.size = msixBarSize(decl);
    this.table = Buffer.alloc(decl.vectors * MSIX_ENTRY_SIZE);
    this.pba = Buffer.alloc(pbaBytes(decl.vectors));
    this.clientOwned = new Array<boolean>(decl.vectors).fill(false);
    this.reset();
  }

  /** Power-on state: every vector masked, nothing pending, addresses and data zero. */
  reset(): void {
    this.table.fill(0);
    for (let v = 0; v < this.decl.vectors; v++) this.table.writeUInt32LE(1, v * MSIX_ENTRY_SIZE + VECTOR_CTRL);
    this.pba.fill(0);
    this.clientOwned.fill(false);
  }

  /** True when the table's mask bit for vector gates delivery (see the file comment). */
  vectorMasked(vector: number): boolean {
    if (!this.clientOwned[vector]) return false;
    return (this.table.readUInt32LE(vector * MSIX_ENTRY_SIZE + VECTOR_CTRL) & 1) !== 0;
  }

  isPending(vector: number): boolean {
    return (this.pba[vector >> 3]! & (1 << (vector & 7))) !== 0;
  }

  setPending(vector: number, on: boolean): void {
    const i = vector >> 3;
    const bit = 1 << (vector & 7);
    this.pba[i] = on ? this.pba[i]! | bit : this.pba[i]! & ~bit;
  }

  /** The trapped BAR the transport exposes at decl.bar. */
  bar(): TrappedBar {
    return {
      kind: 'trapped',
      index: this.decl.bar,
      size: this.size,
      read: (offset, data) => this.read(offset, data),
      write: (offset, data) => this.write(offset, data),
    };
  }

  private read(offset: number, data: Buffer): void {
    data.fill(0);
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      const t = at - this.decl.tableOffset;
      const p = at - this.decl.pbaOffset;
      if (t >= 0 && t < this.table.length) data[i] = this.table[t]!;
      else if (p >= 0 && p < this.pba.length) data[i] = this.pba[p]!;
    }
  }

  private write(offset: number, data: Buffer): void {
    let touchedControl = false;
    for (let i = 0; i < data.length; i++) {
      const t = offset + i - this.decl.tableOffset;
      if (t < 0 || t >= this.table.length) continue; // PBA and the rest of the BAR are read-only
      const field = t % MSIX_ENTRY_SIZE;
      if (field >= VECTOR_CTRL) {
        const vector = Math.floor(t / MSIX_ENTRY_SIZE);
        this.clientOwned[vector] = true;
        touchedControl = true;
        if (field === VECTOR_CTRL) this.table[t] = (this.table[t]! & ~1) | (data[i]! & 1); // only the mask bit is writable
      } else {
        this.table[t] = data[i]!;
      }
    }
    if (touchedControl) this.onUnmask?.();
  }
}
