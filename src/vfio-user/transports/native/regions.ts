// How the built-in transport describes the PCI function's regions on the wire (DEVICE_GET_REGION_INFO).
import type { PciFunction } from '../../../../emulator/framework/pci-function';
import { CONFIG_SPACE_SIZE } from '../../../../emulator/framework/config-space';
import { RegionFlag, RegionIndex } from '../../protocol/constants';

export interface RegionDescription {
  readonly flags: number;
  readonly size: number;
  /** Memory BARs: the fd the client mmaps, and the areas (here: the whole BAR). */
  readonly mmap?: { readonly fd: number; readonly areas: readonly { offset: number; size: number }[] };
}

export function describeRegion(fn: PciFunction, index: number): RegionDescription {
  if (index === RegionIndex.Config) return { flags: RegionFlag.Read | RegionFlag.Write, size: CONFIG_SPACE_SIZE };
  const bar = index >= 0 && index <= 5 ? fn.bars[index] : null;
  if (bar === null || bar === undefined) return { flags: 0, size: 0 };
  if (bar.kind === 'memory') {
    return {
      flags: RegionFlag.Read | RegionFlag.Write | RegionFlag.Mmap,
      size: bar.size,
      mmap: { fd: bar.memory.fd, areas: [{ offset: 0, size: bar.size }] },
    };
  }
  return { flags: RegionFlag.Read | RegionFlag.Write, size: bar.size };
}
