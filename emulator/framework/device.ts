// The device framework's contract: what a PCI device declares, and what a transport gives it back.
//
// A device (emulator/nic/) declares its identity, capabilities, BARs, MSI-X vectors and reset
// handler as plain data plus handlers. A transport (src/vfio-user/transports/native or
// src/vfio-user/transports/libvfio-user) realizes that declaration towards a vfio-user client and hands
// the device a DeviceContext: DMA access to guest memory and a way to raise interrupts.
// Nothing here knows which transport is in use.
import type { Logger } from 'pino';
import type { SharedMemory } from '../../ffi/libc';

/** PCI identity, as it appears in the configuration header. */
export interface PciIdentity {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly subsystemVendorId: number;
  readonly subsystemId: number;
  /** 24-bit class code: base class << 16 | subclass << 8 | programming interface. */
  readonly classCode: number;
  readonly revision: number;
}

export type BarIndex = 0 | 1 | 2 | 3 | 4 | 5;

/**
 * A BAR whose every access is trapped and forwarded to the device.
 * `data.length` is the access size (1, 2, 4 or 8 for guest accesses; a vfio-user client may ask
 * for more). The transport has already checked offset + data.length <= size.
 * A handler never throws for guest mistakes: it logs them and reads as all-ones / ignores writes.
 */
export interface TrappedBar {
  readonly kind: 'trapped';
  readonly index: BarIndex;
  /** Power of two, at least 4096. */
  readonly size: number;
  read(offset: number, data: Buffer): void;
  write(offset: number, data: Buffer): void;
}

/**
 * A BAR backed by shared memory that the client mmaps (a sparse-mmap area covering the whole
 * BAR), so guest accesses never reach the device: the device polls the memory instead.
 * Trapped accesses through REGION_READ/REGION_WRITE read and write the same memory.
 */
export interface MemoryBar {
  readonly kind: 'memory';
  readonly index: BarIndex;
  /** Power of two, at least 4096; equals memory.size. */
  readonly size: number;
  readonly memory: SharedMemory;
}

export type BarDecl = TrappedBar | MemoryBar;

/**
 * MSI-X: the framework emulates the table and PBA in the BAR given here (a trapped BAR the
 * framework owns; the device must not declare that index itself).
 */
export interface MsixDecl {
  readonly vectors: number;
  readonly bar: BarIndex;
  /** Offsets inside that BAR; the PBA follows the table. */
  readonly tableOffset: number;
  readonly pbaOffset: number;
}

/**
 * MSI: the framework emulates a 64-bit MSI capability with per-vector masking in config space.
 * `vectors` is the Multiple Message Capable count (a power of two, 1..32); how many the guest
 * enables can be fewer, and the framework folds the device's vectors onto those (vector % enabled).
 */
export interface MsiDecl {
  readonly vectors: number;
}

/**
 * A device declares MSI-X or MSI or neither (INTx only). INTx (pin INTA#) is always there, as the
 * interrupt a function uses while neither message kind is enabled.
 */
export interface CapabilityDecl {
  /** PCI power management capability (D0/D3hot). */
  readonly pm: boolean;
  /** PCI Express capability, endpoint type. */
  readonly pcie: boolean;
  readonly msix?: MsixDecl;
  readonly msi?: MsiDecl;
}

/** Thrown by DmaAccess when the guest address range is not inside one mapped DMA region. */
export class DmaError extends Error {
  readonly addr: bigint;
  readonly length: number;

  constructor(addr: bigint, length: number, reason: string) {
    super(`DMA ${reason}: [0x${addr.toString(16)}, +0x${length.toString(16)})`);
    this.name = 'DmaError';
    this.addr = addr;
    this.length = length;
  }
}

/**
 * Bounds-checked access to guest memory by guest physical (IO virtual) address.
 * Every call checks that [addr, addr + length) lies wholly inside one region the client mapped
 * with the needed permission; otherwise it rejects with DmaError and touches nothing.
 */
export interface DmaAccess {
  read(addr: bigint, length: number): Promise<Buffer>;
  write(addr: bigint, data: Buffer): Promise<void>;
  /** True when the range is inside one mapped region (for validating a queue base up front). */
  isMapped(addr: bigint, length: number, writable: boolean): boolean;
  /**
   * Runs `fn` on a live view of [addr, addr + length) when this process maps that guest memory
   * (a region the client gave an fd for) and returns fn's result; undefined when the range is
   * mapped but reachable only through messages (then use read/write). Throws DmaError as read and
   * write reject. The view is valid only while `fn` runs: fn must not keep it or await, because the
   * client may unmap the region as soon as control returns to the event loop. It spares the copy
   * into a fresh Buffer that read makes, for a device that moves bulk data between guest ranges.
   */
  withView?<T>(addr: bigint, length: number, writable: boolean, fn: (view: Buffer) => T): T | undefined;
}

/**
 * Interrupt delivery, as the PCI function's rules allow it (emulator/framework/pci-function.ts).
 * Triggering a vector nobody wired up is counted and otherwise ignored.
 */
export interface InterruptSink {
  /**
   * Sends message `vector` (the device's own numbering): as that MSI-X vector while MSI-X is
   * enabled, folded onto the enabled MSI vectors while MSI is. False when it was not delivered
   * now (masked and left pending, no eventfd, or no message interrupt enabled).
   */
  trigger(vector: number): boolean;
  /**
   * The device's interrupt condition for INTx: asserted while true (level-triggered). The function
   * signals INTx only while neither MSI nor MSI-X is enabled and the command register allows it.
   * True when an asserted condition reaches the client as INTx (signalled now, or signalled before
   * and waiting for the client's unmask).
   */
  setLevel(asserted: boolean): boolean;
}

export interface DeviceContext {
  readonly dma: DmaAccess;
  readonly irq: InterruptSink;
  /** The device's own child logger. */
  readonly log: Logger;
}

/** What a device model implements. */
export interface PciDevice {
  readonly name: string;
  readonly identity: PciIdentity;
  readonly capabilities: CapabilityDecl;
  readonly bars: readonly BarDecl[];
  /** Called once by the transport before the first client is served. */
  attach(ctx: DeviceContext): void;
  /** Back to power-on state: DEVICE_RESET from the client, FLR, or a reset register write. */
  reset(): void;
  /** A client connected (true) or went away (false); DMA regions are gone after false. */
  clientChanged?(connected: boolean): void;
  /** Releases host resources (shared memory, timers). */
  close(): void;
}

/**
 * DMA as the PCI command register allows it: with Bus Master Enable clear (a driver that has not
 * called pci_set_master, or one tearing down) the device may not touch guest memory, so every
 * access fails as a DmaError and the device takes its documented error path.
 */
export function busMasterGated(dma: DmaAccess, busMasterEnabled: () => boolean): DmaAccess {
  const refuse = (addr: bigint, length: number) => new DmaError(addr, length, 'refused: bus mastering is disabled (PCI command bit 2 clear)');
  return {
    read: (addr, length) => (busMasterEnabled() ? dma.read(addr, length) : Promise.reject(refuse(addr, length))),
    write: (addr, data) => (busMasterEnabled() ? dma.write(addr, data) : Promise.reject(refuse(addr, data.length))),
    isMapped: (addr, length, writable) => busMasterEnabled() && dma.isMapped(addr, length, writable),
    withView:
      dma.withView === undefined
        ? undefined
        : (addr, length, writable, fn) => {
            if (!busMasterEnabled()) throw refuse(addr, length);
            return dma.withView!(addr, length, writable, fn);
          },
  };
}
