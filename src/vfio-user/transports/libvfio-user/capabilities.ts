// Where the libvfio-user transport puts capabilities, so libvfio-user's own copy of config space agrees with the framework's.
//
// Config space content comes from the framework's model (emulator/framework/config-space.ts), so
// both transports show the same bytes: PM at 0x40, MSI at 0x48 or MSI-X at 0x50, PCI Express v2
// endpoint at 0x60, nothing in extended space. The capabilities are also registered with
// vfu_pci_add_capability at those explicit offsets, so libvfio-user's own copy
// (vfu_pci_get_config_space) agrees. (Declarations are checked by the framework's PciFunction.)
import type { CapabilityDecl } from '../../../../emulator/framework/device';
import { MSI_CAP, MSI_CAP_SIZE, MSIX_CAP, PCIE_CAP, PCIE_CAP_SIZE, PM_CAP } from '../../../../emulator/framework/config-space';

/** libvfio-user's PCI_PM_SIZEOF, VFIO_USER_PCI_CAP_MSI_SIZEOF, PCI_CAP_MSIX_SIZEOF and VFIO_USER_PCI_CAP_EXP_SIZEOF. */
export const PCI_PM_SIZEOF = 8;
export const VFIO_USER_PCI_CAP_MSI_SIZEOF = 0x18;
export const PCI_CAP_MSIX_SIZEOF = 12;
export const VFIO_USER_PCI_CAP_EXP_SIZEOF = 0x3c;


/** A capability to register: its offset and its power-on bytes (libvfio-user links the next pointers). */
export interface CapabilityPlacement {
  readonly name: 'pm' | 'msi' | 'msix' | 'pcie';
  readonly offset: number;
  readonly bytes: Buffer;
}

/** The capabilities caps declares, cut out of the model's power-on config space. */
export function capabilityLayout(caps: CapabilityDecl, powerOn: Buffer): CapabilityPlacement[] {
  if (PCIE_CAP_SIZE !== VFIO_USER_PCI_CAP_EXP_SIZEOF) throw new Error('PCIe capability sizes of the model and libvfio-user differ');
  if (MSI_CAP_SIZE !== VFIO_USER_PCI_CAP_MSI_SIZEOF) throw new Error('MSI capability sizes of the model and libvfio-user differ');
  const cut = (offset: number, size: number): Buffer => Buffer.from(powerOn.subarray(offset, offset + size));
  const out: CapabilityPlacement[] = [];
  if (caps.pm) out.push({ name: 'pm', offset: PM_CAP, bytes: cut(PM_CAP, PCI_PM_SIZEOF) });
  if (caps.msi) out.push({ name: 'msi', offset: MSI_CAP, bytes: cut(MSI_CAP, VFIO_USER_PCI_CAP_MSI_SIZEOF) });
  if (caps.msix) out.push({ name: 'msix', offset: MSIX_CAP, bytes: cut(MSIX_CAP, PCI_CAP_MSIX_SIZEOF) });
  if (caps.pcie) out.push({ name: 'pcie', offset: PCIE_CAP, bytes: cut(PCIE_CAP, VFIO_USER_PCI_CAP_EXP_SIZEOF) });
  return out;
}
