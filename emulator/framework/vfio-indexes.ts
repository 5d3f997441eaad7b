// How VFIO numbers a PCI function's regions and interrupt kinds (linux/vfio.h): the indexes every transport and the PCI function share.

/** VFIO_PCI_*_REGION_INDEX */
export const enum RegionIndex {
  Bar0 = 0,
  Bar1 = 1,
  Bar2 = 2,
  Bar3 = 3,
  Bar4 = 4,
  Bar5 = 5,
  Rom = 6,
  Config = 7,
  Vga = 8,
}
/** VFIO_PCI_NUM_REGIONS */
export const PCI_NUM_REGIONS = 9;

/** VFIO_PCI_*_IRQ_INDEX */
export const enum IrqIndex {
  Intx = 0,
  Msi = 1,
  Msix = 2,
  Err = 3,
  Req = 4,
}
/** VFIO_PCI_NUM_IRQS */
export const PCI_NUM_IRQS = 5;
