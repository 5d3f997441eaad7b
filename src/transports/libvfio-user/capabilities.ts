// The PCI capability bodies and BAR layout the libvfio-user transport puts in config space.
//
// Positions are fixed so that config space is byte-for-byte what the native transport shows:
// PM at 0x40, MSI-X at 0x50, PCI Express (v2, endpoint) at 0x60, nothing in extended space.
// libvfio-user links the "next" pointers itself, in the order capabilities are added.
import type { BarDecl, CapabilityDecl, MsixDecl } from '../../../emulator/framework/device';

export const PCI_CAP_ID_PM = 0x01;
export const PCI_CAP_ID_MSIX = 0x11;
export const PCI_CAP_ID_EXP = 0x10;

export const PM_CAP_OFFSET = 0x40;
export const MSIX_CAP_OFFSET = 0x50;
export const PCIE_CAP_OFFSET = 0x60;

export const PCI_PM_SIZEOF = 8;
export const PCI_CAP_MSIX_SIZEOF = 12;
/** libvfio-user's VFIO_USER_PCI_CAP_EXP_SIZEOF: an endpoint's v2 capability through Slot Status 2. */
export const PCI_CAP_EXP_SIZEOF = 0x3c;

export const PCI_REVISION_ID = 0x08;
export const PCI_BASE_ADDRESS_0 = 0x10;

/** A placed capability: where it goes and its bytes (the next pointer is left 0 for libvfio-user to link). */
export interface CapabilityBytes {
  readonly name: 'pm' | 'msix' | 'pcie';
  readonly offset: number;
  readonly bytes: Buffer;
}

/** PM: version 3 (PCI PM 1.2), no D1/D2, no PME; PMCSR in D0 with No_Soft_Reset clear. */
export function pmCapability(): Buffer {
  const b = Buffer.alloc(PCI_PM_SIZEOF);
  b.writeUInt8(PCI_CAP_ID_PM, 0);
  b.writeUInt16LE(0x0003, 2); // PMC: version 3
  b.writeUInt16LE(0x0000, 4); // PMCSR: D0
  return b;
}

/** MSI-X: table size N-1, table and PBA at their BAR offsets with the BAR index in the low 3 bits. */
export function msixCapability(msix: MsixDecl): Buffer {
  const b = Buffer.alloc(PCI_CAP_MSIX_SIZEOF);
  b.writeUInt8(PCI_CAP_ID_MSIX, 0);
  b.writeUInt16LE((msix.vectors - 1) & 0x7ff, 2); // Message Control: disabled, unmasked
  b.writeUInt32LE((msix.tableOffset & ~7) | msix.bar, 4);
  b.writeUInt32LE((msix.pbaOffset & ~7) | msix.bar, 8);
  return b;
}

/**
 * PCI Express v2, endpoint: role-based error reporting and FLR in Device Capabilities,
 * a 2.5 GT/s x1 link that is up.
 */
export function pcieCapability(): Buffer {
  const b = Buffer.alloc(PCI_CAP_EXP_SIZEOF);
  b.writeUInt8(PCI_CAP_ID_EXP, 0);
  b.writeUInt16LE(0x0002, 0x02); // PCIe Capabilities: version 2, device/port type 0 (endpoint)
  b.writeUInt32LE((1 << 15) | (1 << 28), 0x04); // Device Capabilities: RBER, FLR
  b.writeUInt16LE(0x0000, 0x08); // Device Control
  b.writeUInt32LE(0x00000011, 0x0c); // Link Capabilities: 2.5 GT/s, x1
  b.writeUInt16LE(0x0011, 0x12); // Link Status: 2.5 GT/s, x1
  return b;
}

export function capabilityLayout(caps: CapabilityDecl): CapabilityBytes[] {
  const out: CapabilityBytes[] = [];
  if (caps.pm) out.push({ name: 'pm', offset: PM_CAP_OFFSET, bytes: pmCapability() });
  if (caps.msix) out.push({ name: 'msix', offset: MSIX_CAP_OFFSET, bytes: msixCapability(caps.msix) });
  if (caps.pcie) out.push({ name: 'pcie', offset: PCIE_CAP_OFFSET, bytes: pcieCapability() });
  return out;
}

/** Size of the BAR that holds the MSI-X table and PBA: a power of two, at least 4 KiB. */
export function msixBarSize(msix: MsixDecl): number {
  const tableEnd = msix.tableOffset + 16 * msix.vectors;
  const pbaEnd = msix.pbaOffset + 8 * Math.ceil(msix.vectors / 64);
  let size = 4096;
  while (size < Math.max(tableEnd, pbaEnd)) size *= 2;
  return size;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/** Checks a declaration before it reaches C; throws with what is wrong (host/setup error). */
export function validateDeclaration(bars: readonly BarDecl[], caps: CapabilityDecl): void {
  const seen = new Set<number>();
  for (const bar of bars) {
    if (!Number.isInteger(bar.index) || bar.index < 0 || bar.index > 5) throw new Error(`BAR index ${bar.index} is not 0..5`);
    if (seen.has(bar.index)) throw new Error(`BAR${bar.index} is declared twice`);
    seen.add(bar.index);
    if (!isPowerOfTwo(bar.size) || bar.size < 4096) throw new Error(`BAR${bar.index}: size ${bar.size} is not a power of two >= 4096`);
    if (bar.kind === 'memory' && bar.memory.size !== bar.size) {
      throw new Error(`BAR${bar.index}: shared memory is ${bar.memory.size} bytes, the BAR ${bar.size}`);
    }
  }
  const msix = caps.msix;
  if (msix) {
    if (seen.has(msix.bar)) throw new Error(`BAR${msix.bar} holds the MSI-X table; the device must not declare it`);
    if (!Number.isInteger(msix.vectors) || msix.vectors < 1 || msix.vectors > 2048) throw new Error(`MSI-X: ${msix.vectors} vectors is not 1..2048`);
    if (msix.tableOffset % 8 !== 0 || msix.pbaOffset % 8 !== 0) throw new Error('MSI-X: table and PBA offsets must be 8-byte aligned');
    const tableEnd = msix.tableOffset + 16 * msix.vectors;
    if (msix.pbaOffset < tableEnd) throw new Error('MSI-X: the PBA must follow the table');
  }
}
