// The PCI configuration space of an emulated device: 4096 bytes with read-only, read-write and write-1-to-clear bits.
//
// Layout (what QEMU's vfio-pci and the Linux PCI core walk):
//   0x00 type-0 header, 32-bit non-prefetchable memory BARs sized by the all-ones write
//   0x40 power management (PM 1.2), then MSI at 0x48 or MSI-X at 0x50 (whichever is declared),
//   0x60 PCI Express v2 endpoint
//   0x100 extended space: no extended capabilities (the header at 0x100 reads 0, which ends the list)
// Both transports use this model so the bytes a client sees do not depend on the transport.
import type { CapabilityDecl, MsiDecl, MsixDecl, PciIdentity } from './device';

export const CONFIG_SPACE_SIZE = 4096;

export const enum Cfg {
  VendorId = 0x00,
  DeviceId = 0x02,
  Command = 0x04,
  Status = 0x06,
  Revision = 0x08,
  ClassProg = 0x09,
  CacheLineSize = 0x0c,
  LatencyTimer = 0x0d,
  HeaderType = 0x0e,
  Bar0 = 0x10,
  SubsystemVendorId = 0x2c,
  SubsystemId = 0x2e,
  RomAddress = 0x30,
  CapPtr = 0x34,
  InterruptLine = 0x3c,
  InterruptPin = 0x3d,
}

export const enum CommandBit {
  Io = 1 << 0,
  Memory = 1 << 1,
  BusMaster = 1 << 2,
  Parity = 1 << 6,
  Serr = 1 << 8,
  IntxDisable = 1 << 10,
}

export const enum CapId {
  PowerManagement = 0x01,
  Msi = 0x05,
  PciExpress = 0x10,
  Msix = 0x11,
}

/** Where each capability sits; fixed so the layout is the same for every device. */
export const PM_CAP = 0x40;
/** MSI, 64-bit with per-vector masking (0x18 bytes), fits between PM and PCI Express. */
export const MSI_CAP = 0x48;
export const MSI_CAP_SIZE = 0x18;
export const MSIX_CAP = 0x50;
export const PCIE_CAP = 0x60;
/** PCI Express capability structure v2 length. */
export const PCIE_CAP_SIZE = 0x3c;

export const MSIX_CTRL_ENABLE = 0x8000;
export const MSIX_CTRL_FUNCTION_MASK = 0x4000;

/** Status register bit 3: the function's INTx condition, whatever the Interrupt Disable bit says. */
export const STATUS_INTERRUPT = 0x0008;

/** MSI message control bits and register offsets inside the capability. */
export const MSI_CTRL_ENABLE = 0x0001;
export const MSI_CTRL_64BIT = 0x0080;
export const MSI_CTRL_MASKBIT = 0x0100;
export const MSI_MASK = 0x10;
export const MSI_PENDING = 0x14;

/** A BAR as the configuration header sees it. */
export interface BarShape {
  readonly index: number;
  /** Power of two, at least 4096. */
  readonly size: number;
}

/** What changed after a write, so the PCI function can react (an unmask delivers pending interrupts). */
export interface ConfigWriteEffect {
  readonly commandChanged: boolean;
  readonly msixControlChanged: boolean;
  /** Anything in the MSI capability (enable, vector count, masks). */
  readonly msiChanged: boolean;
}

/**
 * The configuration space. Offsets and lengths are checked by the transport before calling;
 * every method here still clamps to the 4096 bytes so a bug cannot reach outside.
 */
export class ConfigSpace {
  private readonly initial = Buffer.alloc(CONFIG_SPACE_SIZE);
  private readonly bytes = Buffer.alloc(CONFIG_SPACE_SIZE);
  /** Bits the client can change. */
  private readonly wmask = Buffer.alloc(CONFIG_SPACE_SIZE);
  /** Bits a written 1 clears. */
  private readonly w1cmask = Buffer.alloc(CONFIG_SPACE_SIZE);
  readonly msix: MsixDecl | undefined;
  readonly msi: MsiDecl | undefined;

  constructor(identity: PciIdentity, caps: CapabilityDecl, bars: readonly BarShape[]) {
    if (caps.msix !== undefined && caps.msi !== undefined) throw new RangeError('a device declares MSI-X or MSI, not both (the layout has room for one)');
    this.msix = caps.msix;
    this.msi = caps.msi;
    const b = this.initial;
    b.writeUInt16LE(identity.vendorId, Cfg.VendorId);
    b.writeUInt16LE(identity.deviceId, Cfg.DeviceId);
    b.writeUInt8(identity.revision, Cfg.Revision);
    b.writeUIntLE(identity.classCode & 0xffffff, Cfg.ClassProg, 3);
    b.writeUInt16LE(identity.subsystemVendorId, Cfg.SubsystemVendorId);
    b.writeUInt16LE(identity.subsystemId, Cfg.SubsystemId);
    b.writeUInt8(0x01, Cfg.InterruptPin); // INTA#, matching the INTx count of 1 in IRQ info
    // No I/O BARs, so I/O space enable is hardwired to 0.
    this.setW(Cfg.Command, 2, CommandBit.Memory | CommandBit.BusMaster | CommandBit.Parity | CommandBit.Serr | CommandBit.IntxDisable);
    this.setW1c(Cfg.Status, 2, 0xf900); // parity, target/master aborts, SERR, parity error
    this.setW(Cfg.CacheLineSize, 1, 0xff);
    this.setW(Cfg.InterruptLine, 1, 0xff);

    for (const bar of bars) {
      if (bar.index < 0 || bar.index > 5) throw new RangeError(`BAR index ${bar.index}`);
      if (bar.size < 4096 || (bar.size & (bar.size - 1)) !== 0 || bar.size > 0x80000000) {
        throw new RangeError(`BAR${bar.index} size ${bar.size} is not a power of two in [4 KiB, 2 GiB]`);
      }
      // Memory, 32-bit, non-prefetchable: type bits 0. Address bits below the size stay 0.
      this.setW(Cfg.Bar0 + 4 * bar.index, 4, ~(bar.size - 1) >>> 0);
    }

    const chain: number[] = [];
    if (caps.pm) chain.push(PM_CAP);
    if (caps.msi !== undefined) chain.push(MSI_CAP);
    if (caps.msix !== undefined) chain.push(MSIX_CAP);
    if (caps.pcie) chain.push(PCIE_CAP);
    if (chain.length > 0) {
      b.writeUInt8(chain[0]!, Cfg.CapPtr);
      b.writeUInt16LE(0x0010, Cfg.Status); // capabilities list
    }
    const next = (at: number): number => chain[chain.indexOf(at) + 1] ?? 0;

    if (caps.pm) {
      b.writeUInt8(CapId.PowerManagement, PM_CAP);
      b.writeUInt8(next(PM_CAP), PM_CAP + 1);
      b.writeUInt16LE(0x0003, PM_CAP + 2); // PMC: version 1.2, no PME, D1/D2 unsupported
      b.writeUInt16LE(0x0008, PM_CAP + 4); // PMCSR: D0, No_Soft_Reset (D3hot->D0 keeps state)
      this.setW(PM_CAP + 4, 2, 0x0003); // power state
    }
    if (caps.msi !== undefined) {
      const n = caps.msi.vectors;
      if (!Number.isInteger(n) || n < 1 || n > 32 || (n & (n - 1)) !== 0) throw new RangeError(`MSI vectors ${n} is not a power of two in 1..32`);
      const mmc = Math.log2(n);
      b.writeUInt8(CapId.Msi, MSI_CAP);
      b.writeUInt8(next(MSI_CAP), MSI_CAP + 1);
      b.writeUInt16LE(MSI_CTRL_MASKBIT | MSI_CTRL_64BIT | (mmc << 1), MSI_CAP + 2);
      // enable and Multiple Message Enable (bits 6:4); the count is clamped to MMC when read
      this.setW(MSI_CAP + 2, 2, MSI_CTRL_ENABLE | 0x0070);
      this.setW(MSI_CAP + 4, 4, 0xfffffffc); // message address, dword aligned
      this.setW(MSI_CAP + 8, 4, 0xffffffff); // upper address
      this.setW(MSI_CAP + 0x0c, 2, 0xffff); // message data
      this.setW(MSI_CAP + MSI_MASK, 4, n === 32 ? 0xffffffff : (1 << n) - 1);
      // the pending bits (MSI_PENDING) are read-only to the client; the function sets them
    }
    if (caps.msix !== undefined) {
      const m = caps.msix;
      if (m.vectors < 1 || m.vectors > 2048) throw new RangeError(`MSI-X vectors ${m.vectors}`);
      b.writeUInt8(CapId.Msix, MSIX_CAP);
      b.writeUInt8(next(MSIX_CAP), MSIX_CAP + 1);
      b.writeUInt16LE(m.vectors - 1, MSIX_CAP + 2);
      this.setW(MSIX_CAP + 2, 2, MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK);
      b.writeUInt32LE((m.tableOffset | m.bar) >>> 0, MSIX_CAP + 4);
      b.writeUInt32LE((m.pbaOffset | m.bar) >>> 0, MSIX_CAP + 8);
    }
    if (caps.pcie) {
      const p = PCIE_CAP;
      b.writeUInt8(CapId.PciExpress, p);
      b.writeUInt8(next(p), p + 1);
      b.writeUInt16LE(0x0002, p + 0x02); // capability version 2, device/port type 0: endpoint
      b.writeUInt32LE(0x00008000, p + 0x04); // DevCap: max payload 128 B, role-based error reporting
      b.writeUInt16LE(0x2810, p + 0x08); // DevCtl: relaxed ordering, no snoop, max read request 512 B
      this.setW(p + 0x08, 2, 0x7fff); // everything but initiate-FLR (FLR is not advertised)
      this.setW1c(p + 0x0a, 2, 0x000f); // DevSta error bits
      b.writeUInt32LE(0x00000011, p + 0x0c); // LnkCap: 2.5 GT/s, x1, port 0
      this.setW(p + 0x10, 2, 0x01c3); // LnkCtl: ASPM control, RCB, common clock, extended synch
      b.writeUInt16LE(0x0011, p + 0x12); // LnkSta: 2.5 GT/s, x1
      b.writeUInt32LE(0x00000000, p + 0x24); // DevCap2
      b.writeUInt32LE(0x00000002, p + 0x2c); // LnkCap2: supported speeds 2.5 GT/s
      b.writeUInt16LE(0x0001, p + 0x30); // LnkCtl2: target link speed 2.5 GT/s
    }
    this.initial.copy(this.bytes);
  }

  private setW(at: number, len: number, mask: number): void {
    this.wmask.writeUIntLE(len === 4 ? mask >>> 0 : mask & ((1 << (8 * len)) - 1), at, len);
  }

  private setW1c(at: number, len: number, mask: number): void {
    this.w1cmask.writeUIntLE(mask, at, len);
  }

  /** Power-on values (a reset). */
  reset(): void {
    this.initial.copy(this.bytes);
  }

  /** Copies config bytes [offset, offset + out.length) into out. */
  read(offset: number, out: Buffer): void {
    const end = Math.min(CONFIG_SPACE_SIZE, offset + out.length);
    out.fill(0);
    if (offset < 0 || offset >= end) return;
    this.bytes.copy(out, 0, offset, end);
  }

  /** Applies a write through the RO / RW / RW1C masks. */
  write(offset: number, data: Buffer): ConfigWriteEffect {
    const cmdBefore = this.command;
    const msixBefore = this.msixControl;
    const msiBefore = this.msiState();
    const end = Math.min(CONFIG_SPACE_SIZE, offset + data.length);
    for (let at = Math.max(0, offset); at < end; at++) {
      const v = data[at - offset]!;
      const w = this.wmask[at]!;
      let cur = (this.bytes[at]! & ~w) | (v & w);
      cur &= ~(v & this.w1cmask[at]!);
      this.bytes[at] = cur;
    }
    return { commandChanged: this.command !== cmdBefore, msixControlChanged: this.msixControl !== msixBefore, msiChanged: this.msiState() !== msiBefore };
  }

  /** Message control and mask bits in one string, to tell whether a write changed them. */
  private msiState(): string {
    if (this.msi === undefined) return '';
    return `${this.bytes.readUInt16LE(MSI_CAP + 2)}:${this.bytes.readUInt32LE(MSI_CAP + MSI_MASK)}`;
  }

  /** A copy of all 4096 bytes. */
  snapshot(): Buffer {
    return Buffer.from(this.bytes);
  }

  /** The power-on bytes (for a transport that seeds another config-space implementation). */
  powerOnBytes(): Buffer {
    return Buffer.from(this.initial);
  }

  get command(): number {
    return this.bytes.readUInt16LE(Cfg.Command);
  }

  /** Memory space decoding: BAR accesses are answered only while it is on. */
  get memoryEnabled(): boolean {
    return (this.command & CommandBit.Memory) !== 0;
  }

  get busMasterEnabled(): boolean {
    return (this.command & CommandBit.BusMaster) !== 0;
  }

  private get msixControl(): number {
    return this.msix === undefined ? 0 : this.bytes.readUInt16LE(MSIX_CAP + 2);
  }

  get msixEnabled(): boolean {
    return (this.msixControl & MSIX_CTRL_ENABLE) !== 0;
  }

  get msixFunctionMasked(): boolean {
    return (this.msixControl & MSIX_CTRL_FUNCTION_MASK) !== 0;
  }

  get intxDisabled(): boolean {
    return (this.command & CommandBit.IntxDisable) !== 0;
  }

  /** Status bit 3, set by the function (read-only to the client). */
  setInterruptStatus(on: boolean): void {
    const v = this.bytes.readUInt16LE(Cfg.Status);
    this.bytes.writeUInt16LE(on ? v | STATUS_INTERRUPT : v & ~STATUS_INTERRUPT, Cfg.Status);
  }

  get interruptStatus(): boolean {
    return (this.bytes.readUInt16LE(Cfg.Status) & STATUS_INTERRUPT) !== 0;
  }

  private get msiControl(): number {
    return this.msi === undefined ? 0 : this.bytes.readUInt16LE(MSI_CAP + 2);
  }

  get msiEnabled(): boolean {
    return (this.msiControl & MSI_CTRL_ENABLE) !== 0;
  }

  /** Vectors the guest enabled (Multiple Message Enable), never more than the device is capable of. */
  get msiEnabledVectors(): number {
    if (this.msi === undefined) return 0;
    return Math.min(1 << ((this.msiControl >> 4) & 7), this.msi.vectors);
  }

  msiVectorMasked(vector: number): boolean {
    return vector < 32 && (this.bytes.readUInt32LE(MSI_CAP + MSI_MASK) & (1 << vector)) !== 0;
  }

  msiPending(vector: number): boolean {
    return vector < 32 && (this.bytes.readUInt32LE(MSI_CAP + MSI_PENDING) & (1 << vector)) !== 0;
  }

  /** The MSI pending bit of vector (read-only to the client, set by the function). */
  setMsiPending(vector: number, on: boolean): void {
    if (this.msi === undefined || vector >= this.msi.vectors) return;
    const v = this.bytes.readUInt32LE(MSI_CAP + MSI_PENDING);
    this.bytes.writeUInt32LE((on ? v | (1 << vector) : v & ~(1 << vector)) >>> 0, MSI_CAP + MSI_PENDING);
  }

  /** The BAR register's current value (address bits as the client programmed them). */
  barRegister(index: number): number {
    return this.bytes.readUInt32LE(Cfg.Bar0 + 4 * index);
  }
}
