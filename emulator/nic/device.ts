// The vrnic RDMA NIC as a PciDevice: identity, BARs, its interrupt mode, and the device state the register, admin, event and doorbell parts share.
import pino, { type Logger } from 'pino';
import { SharedMemory } from '../../ffi/libc';
import type { BarDecl, CapabilityDecl, DeviceContext, DmaAccess, PciDevice, PciIdentity } from '../framework/device';
import { DmaError } from '../framework/device';
import { AdminCommands } from './admin-commands';
import { AdminQueue } from './admin-queue';
import type { NicCore } from './core';
import { nicConfigToJson, validateNicConfig, type IrqMode, type NicConfig, type NicConfigInput } from './config';
import { sharedFabric, type Fabric } from '../datapath/fabric';
import { DataPath } from './datapath';
import { dispatchDoorbell, DoorbellPoller, type PollerStats } from './doorbells';
import { EventQueue } from './event-queue';
import { NicObjects, UAR_PAGE_SIZE } from './objects';
import { BAR0_SIZE, barRead, barWrite, INT_CAUSE_COMPLETION, RegisterFile, type RegisterHost } from './regs';
import { hex, Observer, type NicCounters, type NicTrace } from './trace';
import { ACQ_ENTRY_SIZE, ADMIN_QUEUE_MAX, ASQ_ENTRY_SIZE, EQ_ENTRY_SIZE, EventType, FATAL_NAMES, FatalCode, isPowerOfTwo, QUEUE_ALIGN } from './wire';

export const UAR_BAR = 2;
export const MSIX_BAR = 4;
/** InfiniBand controller: network (0x02), InfiniBand (0x07), prog-if 0. */
export const NIC_CLASS_CODE = 0x020700;

/** The interrupt capability of each mode (docs/device.md section 2): MSI-X in BAR4, or MSI, or neither. */
function interruptCapabilities(mode: IrqMode, vectors: number): Pick<CapabilityDecl, 'msix' | 'msi'> {
  if (mode === 'msix') return { msix: { vectors, bar: MSIX_BAR, tableOffset: 0x000, pbaOffset: 0x800 } };
  if (mode === 'msi') return { msi: { vectors: msiVectors(vectors) } };
  return {};
}

/** The MSI capability offers the device's vectors rounded up to a power of two, at most 32. */
export function msiVectors(vectors: number): number {
  let n = 1;
  while (n < vectors && n < 32) n *= 2;
  return n;
}

/** INT_CAUSE bit for a source vector: 0 admin, 1 event queue, 2.. every completion vector. */
export function causeBit(vector: number): number {
  return vector <= 1 ? 1 << vector : INT_CAUSE_COMPLETION;
}

/** Before a transport attaches there is no guest memory and no interrupt wire. */
const DETACHED_DMA: DmaAccess = {
  read: (addr, length) => Promise.reject(new DmaError(addr, length, 'no client attached')),
  write: (addr, data) => Promise.reject(new DmaError(addr, data.length, 'no client attached')),
  isMapped: () => false,
};

/** What `vrnic status` shows about the device. */
export interface NicStatus {
  readonly ready: boolean;
  readonly fatal: boolean;
  readonly fatalCode: number;
  readonly fatalReason: string | null;
  readonly objects: Record<string, number>;
  readonly counters: NicCounters;
  readonly poller: PollerStats;
  readonly config: Record<string, unknown>;
}

export interface CreateNicOptions {
  /**
   * Where the device logs until a transport attaches it (a model driven directly, as in tests);
   * default: nowhere. From attach on it logs through the logger of its device context.
   */
  readonly log?: Logger;
  /** Trace sinks to attach from the start (e.g. a TraceFile). */
  readonly trace?: NicTrace;
  /** The wire this device's port attaches to; default: the one all devices of this process share. */
  readonly fabric?: Fabric;
}

export class Nic implements PciDevice, NicCore, RegisterHost {
  readonly name = 'vrnic';
  readonly identity: PciIdentity;
  readonly capabilities: CapabilityDecl;
  readonly bars: readonly BarDecl[];

  readonly config: NicConfig;
  readonly obs: Observer;
  readonly regs = new RegisterFile();
  readonly objects: NicObjects;
  readonly admin: AdminQueue;
  readonly events: EventQueue;
  readonly datapath: DataPath;
  readonly poller: DoorbellPoller;
  /** BAR2: the UAR pages, shared with the client. */
  readonly uarMemory: SharedMemory;
  private readonly uarView: Buffer;

  /** Bumped on reset, disable and fatal: async work started under an older epoch is abandoned. */
  epoch = 0;
  ready = false;
  fatalCode: FatalCode = FatalCode.None;
  private fatalReason: string | null = null;
  private ctx: DeviceContext | null = null;
  private closed = false;

  constructor(config: NicConfig, opts: CreateNicOptions = {}) {
    this.config = config;
    this.obs = new Observer(opts.log ?? pino({ level: 'silent' }));
    if (opts.trace !== undefined) this.obs.addTrace(opts.trace);
    this.identity = {
      vendorId: config.vendorId,
      deviceId: config.deviceId,
      subsystemVendorId: config.subsystemVendorId,
      subsystemId: config.subsystemId,
      classCode: NIC_CLASS_CODE,
      revision: config.revision,
    };
    this.capabilities = { pm: true, pcie: true, ...interruptCapabilities(config.irq, config.msixVectors) };
    this.uarMemory = new SharedMemory('vrnic-uar', config.numUars * UAR_PAGE_SIZE);
    this.uarView = this.uarMemory.buffer;
    // Power-on is a reset: no page belongs to anyone, and a page nobody owns reads all-ones.
    this.uarView.fill(0xff);
    this.bars = [
      {
        kind: 'trapped',
        index: 0,
        size: BAR0_SIZE,
        read: (offset: number, data: Buffer) => this.guard(() => barRead(this, offset, data), () => data.fill(0xff)),
        write: (offset: number, data: Buffer) => this.guard(() => barWrite(this, offset, data)),
      },
      { kind: 'memory', index: UAR_BAR, size: this.uarMemory.size, memory: this.uarMemory },
    ];
    this.objects = new NicObjects(config);
    this.events = new EventQueue(this);
    this.datapath = new DataPath(this, this.objects, this.events, opts.fabric ?? sharedFabric());
    this.admin = new AdminQueue(this, new AdminCommands(this, this.objects, this.datapath).handlers);
    this.poller = new DoorbellPoller(
      this.uarView,
      config.numUars,
      config.poll,
      (page, offset, value, old) => dispatchDoorbell(this, page, offset, value, old),
      (err) => this.obs.log.error({ err }, 'doorbell handling failed'),
    );
    this.poller.resync();
  }

  get dma(): DmaAccess {
    return this.ctx?.dma ?? DETACHED_DMA;
  }

  addTrace(sink: NicTrace): void {
    this.obs.addTrace(sink);
  }

  removeTrace(sink: NicTrace): void {
    this.obs.removeTrace(sink);
  }

  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
    this.obs.useLogger(ctx.log);
    this.obs.log.info({ config: nicConfigToJson(this.config) }, 'NIC attached');
  }

  clientChanged(connected: boolean): void {
    // The client's DMA regions and eventfds are gone: nothing a previous guest set up can stay.
    if (!connected) this.reset('client disconnected');
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.epoch++;
    this.poller.stop();
    this.datapath.close();
    this.uarMemory.close();
    this.obs.flushGuestErrors();
  }

  /** Transport reset (DEVICE_RESET, FLR). */
  reset(reason = 'transport reset'): void {
    // After close() the UAR memory is unmapped: nothing left to reset, and the poller must not touch it.
    if (this.closed) return;
    this.epoch++;
    this.poller.stop();
    this.admin.stop();
    this.events.stop();
    this.datapath.reset();
    this.objects.reset();
    this.regs.reset();
    this.ctx?.irq.setLevel(false);
    this.ready = false;
    this.fatalCode = FatalCode.None;
    this.fatalReason = null;
    // A gone or reset device answers like one: every UAR page reads all-ones until ALLOC_UAR
    // hands it out again (zeroed). A stale user mapping then reads what hardware would give.
    this.uarView.fill(0xff);
    this.poller.resync();
    this.obs.counters.resets++;
    this.obs.emit('event', { event: 'RESET', reason }, 'device reset');
  }

  /** CTRL.ENABLE 0 -> 1: check and latch the queues (docs/device.md 3.1). */
  enable(): void {
    const r = this.regs;
    if (r.enable || this.closed) return;
    if (this.fatalCode !== FatalCode.None) {
      this.obs.guestError({ fatalCode: this.fatalCode }, 'ENABLE written while FATAL; ignored until RESET');
      return;
    }
    r.enable = true;
    r.asqTail = r.acqHead = r.eqHead = 0;
    const asqBad = this.checkQueue(r.asqBase, r.asqSize, ASQ_ENTRY_SIZE, false, false);
    if (asqBad !== null) return this.fatal(FatalCode.AdminQueueAddress, `ASQ ${asqBad}`);
    const acqBad = this.checkQueue(r.acqBase, r.acqSize, ACQ_ENTRY_SIZE, true, false);
    if (acqBad !== null) return this.fatal(FatalCode.AdminQueueAddress, `ACQ ${acqBad}`);
    const eqBad = this.checkQueue(r.eqBase, r.eqSize, EQ_ENTRY_SIZE, true, true);
    if (eqBad !== null) return this.fatal(FatalCode.EventQueueAddress, `EQ ${eqBad}`);
    this.admin.start(r.asqBase, r.asqSize, r.acqBase, r.acqSize);
    if (r.eqSize > 0) this.events.start(r.eqBase, r.eqSize);
    this.ready = true;
    this.obs.emit('event', { event: 'ENABLE', asqSize: r.asqSize, acqSize: r.acqSize, eqSize: r.eqSize }, 'device enabled');
    this.poller.start();
    this.events.post({ type: EventType.PortStateChange, data0: 1, data1: 4 });
  }

  /** CTRL.ENABLE 1 -> 0: the queues stop; objects stay. */
  disable(): void {
    const r = this.regs;
    if (!r.enable) return;
    r.enable = false;
    this.epoch++;
    this.ready = false;
    this.poller.stop();
    this.admin.stop();
    this.events.stop();
    this.datapath.reset();
    r.asqTail = r.acqHead = r.eqHead = 0;
    this.obs.emit('event', { event: 'DISABLE' }, 'device disabled');
  }

  private checkQueue(base: bigint, size: number, entrySize: number, writable: boolean, optional: boolean): string | null {
    if (optional && size === 0) return null;
    if (!isPowerOfTwo(size) || size < 2 || size > ADMIN_QUEUE_MAX) return `size ${size} not a power of two in 2..${ADMIN_QUEUE_MAX}`;
    if (base % BigInt(QUEUE_ALIGN) !== 0n) return `base ${hex(base)} not ${QUEUE_ALIGN}-byte aligned`;
    if (!this.dma.isMapped(base, size * entrySize, writable)) return `[${hex(base)}, +${hex(size * entrySize)}) not in mapped guest memory${writable ? ' (writable)' : ''}`;
    return null;
  }

  /** Enters the FATAL state (docs/device.md 3.2); the reason is logged as a guest error. */
  fatal(code: FatalCode, reason: string): void {
    if (this.fatalCode !== FatalCode.None) return;
    this.epoch++;
    this.fatalCode = code;
    this.fatalReason = reason;
    this.ready = false;
    this.poller.stop();
    this.admin.stop();
    this.datapath.reset();
    this.obs.guestError({ fatalCode: code, fatal: FATAL_NAMES[code], reason }, 'device FATAL');
    if (code !== FatalCode.EventQueueAddress && code !== FatalCode.EventQueueIndex) {
      this.events.post({ type: EventType.FatalError, data0: code, data1: 0 });
    }
  }

  asqDoorbell(tail: number): void {
    if (!this.ready) {
      this.obs.guestError({ reg: 'ASQ_TAIL', value: tail }, 'ASQ_TAIL written while not READY; ignored');
      return;
    }
    if (!this.admin.setTail(tail)) {
      this.fatal(FatalCode.AdminQueueIndex, `ASQ_TAIL ${tail} is more than ASQ_SIZE ${this.regs.asqSize} ahead of ASQ_HEAD ${this.admin.head}`);
    }
  }

  acqHeadWritten(head: number): void {
    if (!this.ready) {
      this.obs.guestError({ reg: 'ACQ_HEAD', value: head }, 'ACQ_HEAD written while not READY; ignored');
      return;
    }
    if (!this.admin.setAcqHead(head)) {
      this.fatal(FatalCode.AdminQueueIndex, `ACQ_HEAD ${head} is beyond ACQ_TAIL ${this.admin.acqTail}`);
    }
  }

  eqHeadWritten(head: number): void {
    if (!this.ready) {
      this.obs.guestError({ reg: 'EQ_HEAD', value: head }, 'EQ_HEAD written while not READY; ignored');
      return;
    }
    if (!this.events.setHead(head)) {
      this.fatal(FatalCode.EventQueueIndex, `EQ_HEAD ${head} is beyond EQ_TAIL ${this.events.tail}`);
    }
  }

  /** INT_CAUSE write: the bits written as 1 are acknowledged; the INTx level follows what is left. */
  ackCause(bits: number): void {
    this.regs.intCause &= ~bits;
    this.ctx?.irq.setLevel(this.regs.intCause !== 0);
  }

  /** A page nobody owns reads all-ones; the poller is told so it takes the fill for no doorbell. */
  fillUarPages(first: number, count: number, value: 0 | 0xff): void {
    if (this.closed) return;
    this.uarView.fill(value, first * UAR_PAGE_SIZE, (first + count) * UAR_PAGE_SIZE);
    this.poller.resync();
  }

  expectDoorbells(): void {
    this.poller.poke();
  }

  /**
   * The only way the device interrupts: the source's INT_CAUSE bit is set, then the message goes
   * out (MSI-X vector, or folded onto the enabled MSI vectors) and the INTx level follows
   * INT_CAUSE (the framework's PCI function decides which of them reaches the client).
   */
  raise(vector: number, reason: string, fields: Record<string, number> = {}): void {
    this.regs.intCause |= causeBit(vector);
    const sent = this.ctx?.irq.trigger(vector) ?? false;
    const asserted = this.ctx?.irq.setLevel(true) ?? false;
    const delivered = sent || asserted;
    this.obs.counters.interrupts++;
    if (!delivered) this.obs.counters.interruptsUndelivered++;
    if (this.obs.verbose) this.obs.emit('irq', { vector, reason, delivered, ...fields }, 'interrupt');
  }

  status(): NicStatus {
    return {
      ready: this.ready,
      fatal: this.fatalCode !== FatalCode.None,
      fatalCode: this.fatalCode,
      fatalReason: this.fatalReason,
      objects: this.objects.summary(),
      counters: this.counters(),
      poller: this.poller.stats(),
      config: nicConfigToJson(this.config),
    };
  }

  /** Counters for `vrnic status`. */
  counters(): NicCounters {
    return { ...this.obs.counters, pollerWakeups: this.poller.stats().wakeups };
  }

  /** A register access must never throw into a transport (and from there into C). */
  private guard(fn: () => void, onError?: () => void): void {
    try {
      fn();
    } catch (err) {
      this.obs.log.error({ err }, 'BAR0 access failed');
      onError?.();
    }
  }
}

/**
 * The factory the daemon calls. `config` is validated (a partial config takes the defaults of
 * docs/device.md section 8); a bad one throws NicConfigError naming each bad field.
 */
export function createNic(config: NicConfigInput | NicConfig | unknown = {}, opts: CreateNicOptions = {}): Nic {
  return new Nic(validateNicConfig(config), opts);
}
