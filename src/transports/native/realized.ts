// A PciDevice declaration realized as vfio-user regions: config space, BARs, the framework's MSI-X BAR.
import type { Logger } from 'pino';
import type { BarDecl, PciDevice } from '../../../emulator/framework/device';
import { CONFIG_SPACE_SIZE, ConfigSpace } from '../../../emulator/framework/config-space';
import { MsixTable } from '../../../emulator/framework/msix';
import { Errno, PCI_NUM_REGIONS, RegionFlag, RegionIndex } from '../../protocol/constants';

export interface RegionDescription {
  readonly flags: number;
  readonly size: number;
  /** Memory BARs: the fd the client mmaps, and the areas (here: the whole BAR). */
  readonly mmap?: { readonly fd: number; readonly areas: readonly { offset: number; size: number }[] };
}

export class RealizedDevice {
  readonly config: ConfigSpace;
  readonly msix: MsixTable | null;
  readonly bars: (BarDecl | null)[] = [null, null, null, null, null, null];
  /** Called when a config write may have unmasked MSI-X (enable set, function mask cleared). */
  onMsixChange: (() => void) | null = null;

  constructor(readonly device: PciDevice, private readonly log: Logger) {
    for (const bar of device.bars) {
      if (this.bars[bar.index] !== null) throw new Error(`${device.name}: BAR${bar.index} declared twice`);
      if (bar.kind === 'memory' && bar.memory.size !== bar.size) throw new Error(`${device.name}: BAR${bar.index} size differs from its memory`);
      this.bars[bar.index] = bar;
    }
    const m = device.capabilities.msix;
    if (m !== undefined) {
      if (this.bars[m.bar] !== null) throw new Error(`${device.name}: BAR${m.bar} is the MSI-X BAR, owned by the framework`);
      this.msix = new MsixTable(m);
      this.bars[m.bar] = this.msix.bar();
    } else {
      this.msix = null;
    }
    this.config = new ConfigSpace(
      device.identity,
      device.capabilities,
      this.bars.filter((b): b is BarDecl => b !== null).map((b) => ({ index: b.index, size: b.size })),
    );
  }

  regionSize(index: number): number {
    if (index === RegionIndex.Config) return CONFIG_SPACE_SIZE;
    if (index >= 0 && index <= 5) return this.bars[index]?.size ?? 0;
    return 0;
  }

  describe(index: number): RegionDescription {
    if (index === RegionIndex.Config) return { flags: RegionFlag.Read | RegionFlag.Write, size: CONFIG_SPACE_SIZE };
    const bar = index >= 0 && index <= 5 ? this.bars[index] : null;
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

  /**
   * One checked region access. Returns 0 or an errno. `data` is filled on reads.
   * A BAR access while memory decoding is off reads all-ones and drops writes, as a PCI
   * function that does not claim the transaction.
   */
  access(index: number, offset: bigint, data: Buffer, write: boolean): number {
    if (index < 0 || index >= PCI_NUM_REGIONS) return Errno.EINVAL;
    const size = BigInt(this.regionSize(index));
    if (offset < 0n || offset + BigInt(data.length) > size) return Errno.EINVAL;
    const off = Number(offset);
    if (index === RegionIndex.Config) {
      if (write) {
        const effect = this.config.write(off, data);
        if (effect.msixControlChanged) this.onMsixChange?.();
      } else {
        this.config.read(off, data);
      }
      return 0;
    }
    const bar = this.bars[index]!;
    if (!this.config.memoryEnabled) {
      this.log.warn({ guestError: true, bar: index, offset: off, length: data.length, write }, 'BAR access while memory decoding is disabled');
      if (!write) data.fill(0xff);
      return 0;
    }
    try {
      if (bar.kind === 'memory') {
        if (write) data.copy(bar.memory.buffer, off);
        else bar.memory.buffer.copy(data, 0, off, off + data.length);
      } else if (write) {
        bar.write(off, data);
      } else {
        bar.read(off, data);
      }
    } catch (err) {
      // A device handler must not throw; if it does, the client gets EIO and the device goes on.
      this.log.error({ err, bar: index, offset: off, write }, 'BAR handler threw');
      return Errno.EIO;
    }
    return 0;
  }

  /** Device reset: the device model, MSI-X table and PBA, config space to power-on values. */
  reset(): void {
    this.device.reset();
    this.msix?.reset();
    this.config.reset();
  }
}
