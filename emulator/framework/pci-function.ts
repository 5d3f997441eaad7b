// One PCI function: the rules every transport must apply the same way, in one place.
//
// A transport (src/vfio-user/transports/native, src/vfio-user/transports/libvfio-user) only speaks the wire: it hands
// each config or BAR access to this object, tells it about SET_IRQS masks and eventfds and about
// clients coming and going, and gives it one way out: "signal the client's eventfd for
// (index, sub-index)". Everything PCI decides lives here:
//   - the device's declaration, checked once (BAR indexes and sizes, the MSI-X BAR, MSI or MSI-X);
//   - config space (emulator/framework/config-space.ts) and the BAR access gate: with memory
//     decoding off a BAR access reads all-ones and drops writes, as a function that does not claim
//     the transaction;
//   - every interrupt gate: MSI-X (enable, function mask, per-vector table mask, PBA), MSI (enable,
//     Multiple Message Enable, per-vector mask and pending bits), INTx (level-triggered, the
//     command register's Interrupt Disable bit, the status register's Interrupt Status bit), and
//     the client's SET_IRQS masks; a masked or undeliverable message is left pending and sent on
//     unmask;
//   - the bus-master gate on DMA;
//   - the reset when the client changes: each client starts from power-on config space, MSI-X
//     table and interrupt state, whatever the previous one left.
//
// INTx is level-triggered, as vfio's INTx: signalling the eventfd masks the line (auto-mask) until
// the client unmasks it (QEMU does, with SET_IRQS ACTION_UNMASK, after the guest's end of
// interrupt); if the device's condition is still asserted then, the line is signalled again.
import type { Logger } from 'pino';
import { Errno } from '../../ffi/errors';
import { IrqIndex, RegionIndex } from './vfio-indexes';
import { busMasterGated, type BarDecl, type DeviceContext, type DmaAccess, type InterruptSink, type PciDevice } from './device';
import { CONFIG_SPACE_SIZE, ConfigSpace } from './config-space';
import { GuestErrorLog } from './guest-errors';
import { MsixTable } from './msix';

/** What a transport gives the function: the wire to the client's interrupt eventfds. */
export interface IrqWire {
  /** Signals the client's eventfd for (index, sub); false when the client set none there. */
  signal(index: IrqIndex, sub: number): boolean;
}

export type InterruptMode = 'msix' | 'msi' | 'intx' | 'none';

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Checks a declaration before any transport realizes it; throws with what is wrong (a setup error, not a guest's). */
export function validateDeclaration(device: PciDevice): void {
  const seen = new Set<number>();
  for (const bar of device.bars) {
    if (!Number.isInteger(bar.index) || bar.index < 0 || bar.index > 5) throw new Error(`${device.name}: BAR index ${bar.index} is not 0..5`);
    if (seen.has(bar.index)) throw new Error(`${device.name}: BAR${bar.index} is declared twice`);
    seen.add(bar.index);
    if (!isPowerOfTwo(bar.size) || bar.size < 4096 || bar.size > 0x80000000) {
      throw new Error(`${device.name}: BAR${bar.index}: size ${bar.size} is not a power of two in [4 KiB, 2 GiB]`);
    }
    if (bar.kind === 'memory' && bar.memory.size !== bar.size) {
      throw new Error(`${device.name}: BAR${bar.index}: shared memory is ${bar.memory.size} bytes, the BAR ${bar.size}`);
    }
  }
  const caps = device.capabilities;
  if (caps.msix !== undefined && seen.has(caps.msix.bar)) throw new Error(`${device.name}: BAR${caps.msix.bar} holds the MSI-X table; the device must not declare it`);
  if (caps.msix !== undefined && caps.msi !== undefined) throw new Error(`${device.name}: declares both MSI-X and MSI; one of them`);
  if (caps.msi !== undefined && (!isPowerOfTwo(caps.msi.vectors) || caps.msi.vectors > 32)) {
    throw new Error(`${device.name}: MSI vectors ${caps.msi.vectors} is not a power of two in 1..32`);
  }
}

export interface PciFunctionStats {
  /** Interrupts the device raised that were not delivered at once (pending, masked, no eventfd). */
  interruptsUndelivered: number;
  /** Guest errors the function saw (bad region accesses, BAR accesses with decoding off). */
  guestErrors: number;
}

export class PciFunction {
  readonly config: ConfigSpace;
  readonly msix: MsixTable | null;
  /** Per BAR index: the device's BAR, the framework's MSI-X BAR, or null. */
  readonly bars: readonly (BarDecl | null)[];
  /** Sub-indexes per vfio IRQ index (INTx, MSI, MSI-X, ERR, REQ), as DEVICE_GET_IRQ_INFO reports them. */
  readonly irqCounts: readonly number[];
  readonly guestErrors: GuestErrorLog;
  /** Per IRQ index and sub-index: masked by SET_IRQS ACTION_MASK (for INTx also by auto-mask). */
  private readonly masked: boolean[][];
  /** The device's INTx condition (InterruptSink.setLevel). */
  private intxLevel = false;
  private undelivered = 0;
  private wire: IrqWire | null = null;

  constructor(readonly device: PciDevice, private readonly log: Logger) {
    validateDeclaration(device);
    const bars: (BarDecl | null)[] = [null, null, null, null, null, null];
    for (const bar of device.bars) bars[bar.index] = bar;
    const m = device.capabilities.msix;
    this.msix = m !== undefined ? new MsixTable(m) : null;
    if (this.msix !== null) {
      bars[this.msix.decl.bar] = this.msix.bar();
      this.msix.onUnmask = () => this.deliverPending();
    }
    this.bars = bars;
    this.config = new ConfigSpace(
      device.identity,
      device.capabilities,
      bars.filter((b): b is BarDecl => b !== null).map((b) => ({ index: b.index, size: b.size })),
    );
    this.irqCounts = [1, device.capabilities.msi?.vectors ?? 0, m?.vectors ?? 0, 1, 1];
    this.masked = this.irqCounts.map((n) => new Array<boolean>(n).fill(false));
    this.guestErrors = new GuestErrorLog(log);
  }

  /** The transport's way to the client's eventfds; null while none is set up. */
  setWire(wire: IrqWire | null): void {
    this.wire = wire;
  }

  /** What the device gets: DMA behind the bus-master gate, interrupts behind the interrupt gates. */
  context(dma: DmaAccess, log: Logger): DeviceContext {
    const irq: InterruptSink = {
      trigger: (vector) => {
        const ok = this.trigger(vector);
        // with no message interrupt enabled a device's condition travels as INTx (setLevel)
        if (!ok && this.interruptMode !== 'intx') this.undelivered++;
        return ok;
      },
      setLevel: (asserted) => {
        this.intxLevel = asserted;
        return this.updateIntx();
      },
    };
    return { dma: busMasterGated(dma, () => this.config.busMasterEnabled), irq, log };
  }

  stats(): PciFunctionStats {
    return { interruptsUndelivered: this.undelivered, guestErrors: this.guestErrors.count() };
  }

  /** Which interrupt the guest has enabled now. */
  get interruptMode(): InterruptMode {
    if (this.msix !== null && this.config.msixEnabled) return 'msix';
    if (this.config.msi !== undefined && this.config.msiEnabled) return 'msi';
    return this.config.intxDisabled ? 'none' : 'intx';
  }

  // ---- accesses ----

  /** Size of a vfio region (config space or a BAR); 0 when absent. */
  regionSize(index: number): number {
    if (index === RegionIndex.Config) return CONFIG_SPACE_SIZE;
    if (index >= 0 && index <= 5) return this.bars[index]?.size ?? 0;
    return 0;
  }

  /** One access to a vfio region by index (config space or a BAR): 0 or an errno. `data` is filled on reads. */
  regionAccess(index: number, offset: bigint, data: Buffer, write: boolean): number {
    const size = this.regionSize(index);
    if (size === 0 || offset < 0n || offset + BigInt(data.length) > BigInt(size)) {
      this.guestErrors.report('region access outside the region', { region: index, offset: `0x${offset.toString(16)}`, length: data.length, write });
      return Errno.EINVAL;
    }
    return index === RegionIndex.Config ? this.configAccess(Number(offset), data, write) : this.barAccess(index, Number(offset), data, write);
  }

  /** A config space access: 0 or an errno. */
  configAccess(offset: number, data: Buffer, write: boolean): number {
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > CONFIG_SPACE_SIZE) {
      this.guestErrors.report('config space access outside 4096 bytes', { offset, length: data.length, write });
      return Errno.EINVAL;
    }
    if (!write) {
      this.config.read(offset, data);
      return 0;
    }
    const effect = this.config.write(offset, data);
    if (effect.commandChanged || effect.msixControlChanged || effect.msiChanged) {
      // an enable, an unmask, or Interrupt Disable cleared: what was held back may go now
      this.deliverPending();
      this.updateIntx();
    }
    return 0;
  }

  /** A BAR access behind the memory-decoding gate: 0 or an errno. */
  barAccess(index: number, offset: number, data: Buffer, write: boolean): number {
    const bar = index >= 0 && index <= 5 ? this.bars[index] : null;
    if (bar === null || bar === undefined || !Number.isInteger(offset) || offset < 0 || offset + data.length > bar.size) {
      this.guestErrors.report('region access outside the BAR', { bar: index, offset, length: data.length, write });
      return Errno.EINVAL;
    }
    if (!this.config.memoryEnabled) {
      this.guestErrors.report('BAR access while memory decoding is disabled', { bar: index, offset, length: data.length, write });
      if (!write) data.fill(0xff);
      return 0;
    }
    try {
      if (bar.kind === 'memory') {
        if (write) data.copy(bar.memory.buffer, offset);
        else bar.memory.buffer.copy(data, 0, offset, offset + data.length);
      } else if (write) {
        bar.write(offset, data);
      } else {
        bar.read(offset, data);
      }
    } catch (err) {
      // A device handler must not throw; if it does, the client gets EIO and the device goes on.
      this.log.error({ err, bar: index, offset, write }, 'BAR handler threw');
      return Errno.EIO;
    }
    return 0;
  }

  // ---- what the client does to interrupts (SET_IRQS) ----

  /** SET_IRQS ACTION_MASK / ACTION_UNMASK of [start, start + count) of index (already range-checked). */
  setIrqMask(index: number, start: number, count: number, mask: boolean, selected: (i: number) => boolean = () => true): void {
    const row = this.masked[index];
    if (row === undefined) return;
    for (let i = 0; i < count && start + i < row.length; i++) if (selected(i)) row[start + i] = mask;
    if (!mask) {
      this.deliverPending();
      this.updateIntx();
    }
  }

  /**
   * The client set (or removed) eventfds of index. Pending messages go to new eventfds; disabling
   * INTx clears its mask, as vfio does, so the next client-set eventfd starts unmasked.
   */
  irqEventfdsChanged(index: number, assigned: boolean): void {
    if (!assigned && index === IrqIndex.Intx) this.masked[IrqIndex.Intx]!.fill(false);
    if (assigned) {
      this.deliverPending();
      this.updateIntx();
    }
  }

  // ---- reset ----

  /** DEVICE_RESET or FLR: the device, the MSI-X table and PBA, config space to power-on values. */
  reset(): void {
    this.device.reset();
    this.resetState();
  }

  /**
   * A client connected or went away. Either way the function returns to power-on state (config
   * space, MSI-X table, masks): nothing one client programmed is seen by the next. The device is
   * told after.
   */
  clientChanged(connected: boolean): void {
    this.resetState();
    for (const row of this.masked) row.fill(false);
    try {
      this.device.clientChanged?.(connected);
    } catch (err) {
      this.log.error({ err, connected }, 'device clientChanged threw');
    }
  }

  private resetState(): void {
    this.msix?.reset();
    this.config.reset();
    this.intxLevel = false;
  }

  // ---- delivery ----

  private trigger(vector: number): boolean {
    if (!Number.isInteger(vector) || vector < 0) return false;
    const cfg = this.config;
    const msix = this.msix;
    if (msix !== null) {
      if (vector >= msix.decl.vectors) {
        this.log.warn({ vector }, 'interrupt for a vector the device does not have');
        return false;
      }
      if (!cfg.msixEnabled || cfg.msixFunctionMasked || msix.vectorMasked(vector) || this.masked[IrqIndex.Msix]![vector] || !this.signal(IrqIndex.Msix, vector)) {
        msix.setPending(vector, true);
        return false;
      }
      msix.setPending(vector, false);
      return true;
    }
    if (cfg.msi !== undefined && cfg.msiEnabled) return this.sendMsi(vector % cfg.msiEnabledVectors);
    return false; // INTx follows the device's level (setLevel), not messages
  }

  private sendMsi(sub: number): boolean {
    const cfg = this.config;
    if (cfg.msiVectorMasked(sub) || this.masked[IrqIndex.Msi]![sub] || !this.signal(IrqIndex.Msi, sub)) {
      cfg.setMsiPending(sub, true);
      return false;
    }
    cfg.setMsiPending(sub, false);
    return true;
  }

  /** After an unmask or enable anywhere: pending messages that can now be delivered are. */
  private deliverPending(): void {
    const cfg = this.config;
    const msix = this.msix;
    if (msix !== null) {
      if (!cfg.msixEnabled || cfg.msixFunctionMasked) return;
      for (let v = 0; v < msix.decl.vectors; v++) {
        if (!msix.isPending(v) || msix.vectorMasked(v) || this.masked[IrqIndex.Msix]![v]) continue;
        if (this.signal(IrqIndex.Msix, v)) msix.setPending(v, false);
      }
      return;
    }
    if (cfg.msi === undefined || !cfg.msiEnabled) return;
    for (let v = 0; v < cfg.msiEnabledVectors; v++) if (cfg.msiPending(v)) this.sendMsi(v);
  }

  /**
   * INTx follows the level: the status bit, then a signal unless disabled or (auto-)masked.
   * True when the asserted condition has reached the client (now or by an earlier signal).
   */
  private updateIntx(): boolean {
    const cfg = this.config;
    const active = this.intxLevel && !cfg.msiEnabled && !cfg.msixEnabled;
    cfg.setInterruptStatus(active);
    if (!active || cfg.intxDisabled) return false;
    if (this.masked[IrqIndex.Intx]![0]) return true;
    // masked until the client unmasks after the guest's end of interrupt; unmasked with the
    // condition still asserted, this runs again and signals again
    if (!this.signal(IrqIndex.Intx, 0)) return false;
    this.masked[IrqIndex.Intx]![0] = true;
    return true;
  }

  private signal(index: IrqIndex, sub: number): boolean {
    return this.wire?.signal(index, sub) ?? false;
  }
}
