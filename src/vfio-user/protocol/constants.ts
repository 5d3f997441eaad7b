// vfio-user wire values (QEMU docs/interop/vfio-user.rst, libvfio-user include/vfio-user.h, linux/vfio.h).
//
// const enums so every use compiles to the literal wire value.

/** Size of the header that starts every message. */
export const HEADER_SIZE = 16;

export const enum Command {
  Version = 1,
  DmaMap = 2,
  DmaUnmap = 3,
  DeviceGetInfo = 4,
  DeviceGetRegionInfo = 5,
  DeviceGetRegionIoFds = 6,
  DeviceGetIrqInfo = 7,
  DeviceSetIrqs = 8,
  RegionRead = 9,
  RegionWrite = 10,
  DmaRead = 11,
  DmaWrite = 12,
  DeviceReset = 13,
  DirtyPages = 14,
  RegionWriteMulti = 15,
  DeviceFeature = 16,
  MigDataRead = 17,
  MigDataWrite = 18,
}

export const COMMAND_NAMES: Readonly<Record<number, string>> = {
  1: 'VERSION',
  2: 'DMA_MAP',
  3: 'DMA_UNMAP',
  4: 'DEVICE_GET_INFO',
  5: 'DEVICE_GET_REGION_INFO',
  6: 'DEVICE_GET_REGION_IO_FDS',
  7: 'DEVICE_GET_IRQ_INFO',
  8: 'DEVICE_SET_IRQS',
  9: 'REGION_READ',
  10: 'REGION_WRITE',
  11: 'DMA_READ',
  12: 'DMA_WRITE',
  13: 'DEVICE_RESET',
  14: 'DIRTY_PAGES',
  15: 'REGION_WRITE_MULTI',
  16: 'DEVICE_FEATURE',
  17: 'MIG_DATA_READ',
  18: 'MIG_DATA_WRITE',
};

export function commandName(cmd: number): string {
  return COMMAND_NAMES[cmd] ?? `UNKNOWN(${cmd})`;
}

/** Header flags word. */
export const enum HeaderFlag {
  TypeMask = 0xf,
  TypeCommand = 0x0,
  TypeReply = 0x1,
  NoReply = 0x10,
  Error = 0x20,
}

export const VERSION_MAJOR = 0;
export const VERSION_MINOR = 0;

/** Defaults and limits of the VERSION capabilities. */
export const DEFAULT_MAX_MSG_FDS = 1;
export const DEFAULT_MAX_DATA_XFER_SIZE = 1024 * 1024;
export const DEFAULT_PGSIZES = 4096;
export const DEFAULT_MAX_DMA_MAPS = 65535;

/** DMA_MAP flags. */
export const enum DmaMapFlag {
  Read = 1 << 0,
  Write = 1 << 1,
}

/** DMA_UNMAP flags. */
export const enum DmaUnmapFlag {
  GetDirtyBitmap = 1 << 0,
  All = 1 << 1,
}

/** vfio_device_info.flags */
export const enum DeviceFlag {
  Reset = 1 << 0,
  Pci = 1 << 1,
}

// The PCI function's region and IRQ indexes are the device framework's (it applies their rules).
export { IrqIndex, PCI_NUM_IRQS, PCI_NUM_REGIONS, RegionIndex } from '../../../emulator/framework/vfio-indexes';

/** vfio_region_info.flags */
export const enum RegionFlag {
  Read = 1 << 0,
  Write = 1 << 1,
  Mmap = 1 << 2,
  Caps = 1 << 3,
}

/** vfio_info_cap_header ids for regions. */
export const enum RegionCapId {
  SparseMmap = 1,
  Type = 2,
}

/** sizeof(struct vfio_region_info) */
export const REGION_INFO_SIZE = 32;


/** vfio_irq_info.flags */
export const enum IrqInfoFlag {
  Eventfd = 1 << 0,
  Maskable = 1 << 1,
  Automasked = 1 << 2,
  Noresize = 1 << 3,
}

/** vfio_irq_set.flags */
export const enum IrqSetFlag {
  DataNone = 1 << 0,
  DataBool = 1 << 1,
  DataEventfd = 1 << 2,
  ActionMask = 1 << 3,
  ActionUnmask = 1 << 4,
  ActionTrigger = 1 << 5,
  DataTypeMask = 0x7,
  ActionTypeMask = 0x38,
}

/** REGION_WRITE_MULTI: data bytes per write and writes per message. */
export const MULTI_DATA = 8;
export const MULTI_MAX = 200;

/** The errnos vfio-user replies carry: Linux's, from the project's one table. */
export { Errno } from '../../../ffi/errors';
