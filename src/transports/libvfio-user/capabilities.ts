// Where the libvfio-user transport puts capabilities, and the declaration checks it makes before calling C.
//
// Config space content comes from the framework's model (emulator/framework/config-space.ts), so
// both transports show the same bytes: PM at 0x40, MSI-X at 0x50, PCI Express v2 endpoint at 0x60,
// nothing in extended space. The capabilities are also registered with vfu_pci_add_capability at
// those explicit offsets, so libvfio-user's own copy (vfu_pci_get_config_space) agrees.
import type { BarDecl, CapabilityDecl } from '../../../emulator/framework/device';
import { MSIX_CAP, PCIE_CAP, PCIE_CAP_SIZE, PM_CAP } from '../../../emulator/framework/config-space';

/** libvfio-user's PCI_PM_SIZEOF, PCI_CAP_MSIX_SIZEOF and VFIO_USER_PCI_CAP_EXP_SIZEOF. */
export const PCI_PM_SIZEOF = 8;
export const PCI_CAP_MSIX_SIZEOF = 12;
export const VFIO_USER_PCI_CAP_EXP_SIZEOF = 0x3c;


/** A capability to register: its offset and its power-on bytes (libvfio-user links the next pointers). */
export interface CapabilityPlacement {
  readonly name: 'pm' | 'msix' | 'pcie';
  readonly offset: number;
  readonly bytes: Buffer;
}

/** The capabilities caps declares, cut out of the model's power-on config space. */
export function capabilityLayout(caps: CapabilityDecl, powerOn: Buffer): CapabilityPlacement[] {
  if (PCIE_CAP_SIZE !== VFIO_USER_PCI_CAP_EXP_SIZEOF) throw new Error('PCIe capability sizes of the model and libvfio-user differ');
  const cut = (offset: number, size: number): Buffer => Buffer.from(powerOn.subarray(offset, offset + size));
  const out: CapabilityPlacement[] = [];
  if (caps.pm) out.push({ name: 'pm', offset: PM_CAP, bytes: cut(PM_CAP, PCI_PM_SIZEOF) });
  if (caps.msix) out.push({ name: 'msix', offset: MSIX_CAP, bytes: cut(MSIX_CAP, PCI_CAP_MSIX_SIZEOF) });
  if (caps.pcie) out.push({ name: 'pcie', offset: PCIE_CAP, bytes: cut(PCIE_CAP, VFIO_USER_PCI_CAP_EXP_SIZEOF) });
  return out;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/** Checks a declaration before it reaches C; throws with what is wrong (a host/setup error). */
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
  if (caps.msix && seen.has(caps.msix.bar)) throw new Error(`BAR${caps.msix.bar} holds the MSI-X table; the device must not declare it`);
}
