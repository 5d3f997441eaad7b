// The PVRDMA model as a PciDevice: VMware's paravirtual RDMA function (15ad:0820) as the upstream vmw_pvrdma driver drives it.
//
// BAR0 holds the MSI-X table (the framework's), BAR1 the registers, BAR2 the UAR pages. The driver
// hands the device a shared region (DSR) by writing its address to DSRLOW then DSRHIGH; the device
// answers by filling the DSR's capabilities, synchronously, because the driver reads them right
// after its write. Commands go through one command slot and one response slot (pages the DSR names),
// started by a write to REQUEST. Async events and CQ notifications are rings behind page
// directories. What is and is not emulated: docs/pvrdma.md.
import pino, { type Logger } from 'pino';
import type { BarDecl, CapabilityDecl, DeviceContext, DmaAccess, PciDevice, PciIdentity } from '../framework/device';
import { DmaError } from '../framework/device';
import { GuestErrorLog } from '../framework/guest-errors';
import {
  BAR_MSIX, BAR_REG, BAR_UAR, Caps, Ctl, DEVICE_MODE_ROCE, Dsr, EventType, GID_TYPE_FLAG_ROCE_V1, idxValid, PAGE_SIZE, PCI_DEVICE_ID_VMWARE_PVRDMA,
  PCI_VENDOR_ID_VMWARE, PVRDMA_CLASS_CODE, PVRDMA_MAX_INTERRUPTS, PVRDMA_PPN64_VERSION, PVRDMA_VERSION, Reg, ringInc, UAR_CQ_ARM, UAR_CQ_ARM_SOL, UAR_CQ_POLL,
  UAR_CQ_OFFSET, UAR_HANDLE_MASK, UAR_QP_OFFSET, UAR_QP_RECV, UAR_QP_SEND, UAR_SRQ_OFFSET, Vector,
} from './abi';
import { executeCommand, PvrdmaObjects, resolvePageDir } from './commands';
import { PvrdmaDataPath } from './datapath';
import { sharedFabric, type Fabric } from '../datapath/fabric';
import { validatePvrdmaConfig, type PvrdmaConfig, type PvrdmaConfigInput } from './config';

const BAR1_SIZE = 4096;
const BAR0_SIZE = 4096;

const DETACHED_DMA: DmaAccess = {
  read: (addr, length) => Promise.reject(new DmaError(addr, length, 'no client attached')),
  write: (addr, data) => Promise.reject(new DmaError(addr, data.length, 'no client attached')),
  isMapped: () => false,
};

/** A ring behind a page directory: page 0 holds the ring state, entries start at page 1. */
export interface PdirRing {
  /** Guest addresses of the ring's pages, page 0 first. */
  readonly pages: readonly bigint[];
  readonly entrySize: number;
  /** (num_pages - 1) * PAGE_SIZE / entrySize, as the driver computes it. */
  readonly slots: number;
}

export interface PvrdmaStatus {
  /** ACTIVATE done (what `vrnic status` shows as ready). */
  readonly ready: boolean;
  /** Contexts hold one UAR page each. */
  readonly uarPagesInUse: number;
  readonly dsr: string | null;
  readonly objects: Record<string, number>;
  readonly counters: Readonly<Record<string, number>>;
  readonly config: Record<string, unknown>;
}

export interface CreatePvrdmaOptions {
  readonly log?: Logger;
  /** The wire to other devices; the process's shared fabric by default. */
  readonly fabric?: Fabric;
}

export class Pvrdma implements PciDevice {
  readonly name = 'pvrdma';
  readonly identity: PciIdentity = {
    vendorId: PCI_VENDOR_ID_VMWARE,
    deviceId: PCI_DEVICE_ID_VMWARE_PVRDMA,
    subsystemVendorId: PCI_VENDOR_ID_VMWARE,
    subsystemId: PCI_DEVICE_ID_VMWARE_PVRDMA,
    classCode: PVRDMA_CLASS_CODE,
    revision: 0x00,
  };
  readonly capabilities: CapabilityDecl;
  readonly bars: readonly BarDecl[];
  readonly config: PvrdmaConfig;
  readonly objects: PvrdmaObjects;
  /** The logger given at creation, else the device context's from attach() on (silent before). */
  log: Logger;
  guestErrors: GuestErrorLog;
  private readonly ownLog: boolean;
  readonly counters = { commands: 0, commandErrors: 0, interrupts: 0, doorbells: 0, sendDoorbells: 0, recvDoorbells: 0, cqPolls: 0, cqArms: 0, events: 0, cqNotifications: 0, completions: 0, resets: 0 };
  readonly datapath: PvrdmaDataPath;

  /** GID table, written by CREATE_BIND (16 bytes per index). */
  readonly gids: (Buffer | null)[];
  private ctx: DeviceContext | null = null;
  private dsrLow = 0;
  private dsrAddr: bigint | null = null;
  private cmdSlot = 0n;
  private respSlot = 0n;
  private asyncRing: PdirRing | null = null;
  private cqRing: PdirRing | null = null;
  private active = false;
  private err = 0;
  private icr = 0;
  private imr = 0xffffffff;
  private mac = [0, 0];
  /** Commands run one at a time, in the order REQUEST was written. */
  private queue: Promise<void> = Promise.resolve();
  /** Bumped on reset: work started before it is dropped. */
  private epoch = 0;

  constructor(config: PvrdmaConfig, opts: CreatePvrdmaOptions = {}) {
    this.config = config;
    this.ownLog = opts.log !== undefined;
    this.log = opts.log ?? pino({ level: 'silent' });
    this.guestErrors = new GuestErrorLog(this.log);
    this.objects = new PvrdmaObjects(config);
    this.gids = new Array<Buffer | null>(config.gidTableLength).fill(null);
    this.datapath = new PvrdmaDataPath(this, opts.fabric ?? sharedFabric());
    this.mac = [config.mac & 0xffffffff, Math.floor(config.mac / 2 ** 32) & 0xffff];
    // The driver asks for up to three MSI-X vectors, else one MSI or INTx vector (pvrdma_alloc_intrs).
    this.capabilities =
      config.irq === 'msix'
        ? { pm: true, pcie: true, msix: { vectors: PVRDMA_MAX_INTERRUPTS, bar: BAR_MSIX, tableOffset: 0x000, pbaOffset: 0x800 } }
        : config.irq === 'msi'
          ? { pm: true, pcie: true, msi: { vectors: 1 } }
          : { pm: true, pcie: true };
    const bars: BarDecl[] = [
      { kind: 'trapped', index: BAR_REG, size: BAR1_SIZE, read: (o, d) => this.guard(() => this.regRead(o, d), d), write: (o, d) => this.guard(() => this.regWrite(o, d)) },
      { kind: 'trapped', index: BAR_UAR, size: config.numUars * PAGE_SIZE, read: (_o, d) => d.fill(0), write: (o, d) => this.guard(() => this.uarWrite(o, d)) },
    ];
    // The driver's probe insists BAR0 is memory even when it will not use MSI-X: without MSI-X the
    // BAR is there and empty.
    if (config.irq !== 'msix') bars.push({ kind: 'trapped', index: BAR_MSIX, size: BAR0_SIZE, read: (_o, d) => d.fill(0), write: () => undefined });
    this.bars = bars;
  }

  get dma(): DmaAccess {
    return this.ctx?.dma ?? DETACHED_DMA;
  }

  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
    if (!this.ownLog) {
      this.log = ctx.log;
      this.guestErrors = new GuestErrorLog(ctx.log);
    }
    this.log.info({ irq: this.config.irq, numUars: this.config.numUars }, 'PVRDMA attached');
  }

  clientChanged(connected: boolean): void {
    // What the guest did with the device, for a run's log (an unplug's evidence: traffic up to the end).
    if (!connected) this.log.info({ counters: this.counters, engine: this.datapath.engine.stats, guestErrors: this.guestErrors.count() }, 'client gone');
    if (!connected) this.reset();
  }

  close(): void {
    this.epoch++;
    this.datapath.close();
    this.log.info({ counters: this.counters, engine: this.datapath.engine.stats, guestErrors: this.guestErrors.count() }, 'PVRDMA closed');
  }

  /** Work begun under an older epoch (before a reset) writes nothing more. */
  get epochNow(): number {
    return this.epoch;
  }

  /** CREATE_BIND / DESTROY_BIND: the GID table, and the fabric's map from GIDs to this port. */
  bindGid(index: number, gid: Buffer | null): void {
    const old = this.gids[index];
    const fabric = this.datapath.fabric;
    if (old) fabric.unbindAddress(this.datapath.lid, old.toString('hex'));
    this.gids[index] = gid;
    if (gid !== null) fabric.bindAddress(this.datapath.lid, gid.toString('hex'));
  }

  /** The fabric LID a destination GID names: 0 (this port) for one of its own GIDs, undefined when nobody has it. */
  gidToLid(gid: Buffer): number | undefined {
    if (this.gids.some((g) => g !== null && g.equals(gid))) return 0;
    return this.datapath.fabric.resolve(gid.toString('hex'));
  }

  reset(): void {
    this.epoch++;
    this.queue = Promise.resolve();
    this.dsrLow = 0;
    this.dsrAddr = null;
    this.cmdSlot = this.respSlot = 0n;
    this.asyncRing = this.cqRing = null;
    this.active = false;
    this.err = 0;
    this.icr = 0;
    this.imr = 0xffffffff;
    for (let i = 0; i < this.gids.length; i++) this.bindGid(i, null);
    this.objects.reset();
    this.ctx?.irq.setLevel(false);
    this.counters.resets++;
  }

  status(): PvrdmaStatus {
    return {
      ready: this.active,
      uarPagesInUse: this.objects.contexts.size,
      dsr: this.dsrAddr === null ? null : `0x${this.dsrAddr.toString(16)}`,
      objects: this.objects.summary(),
      counters: { ...this.counters, guestErrors: this.guestErrors.count() },
      config: { ...this.config },
    };
  }

  // ---- registers (BAR1) ----

  private regRead(offset: number, data: Buffer): void {
    let v = 0;
    if (data.length !== 4 || offset % 4 !== 0) {
      this.guestErrors.report('register read not 4 bytes aligned', { offset, length: data.length });
      data.fill(0xff);
      return;
    }
    switch (offset) {
      case Reg.Version: v = PVRDMA_VERSION; break;
      case Reg.Err: v = this.err; break;
      case Reg.Icr:
        // Read to clear: the driver reads it once per interrupt when it has no MSI-X.
        v = this.icr;
        this.icr = 0;
        this.ctx?.irq.setLevel(false);
        break;
      case Reg.Imr: v = this.imr; break;
      case Reg.MacLow: v = this.mac[0]!; break;
      case Reg.MacHigh: v = this.mac[1]!; break;
      default: v = 0;
    }
    data.writeUInt32LE(v >>> 0, 0);
  }

  private regWrite(offset: number, data: Buffer): void {
    if (data.length !== 4 || offset % 4 !== 0) {
      this.guestErrors.report('register write not 4 bytes aligned', { offset, length: data.length });
      return;
    }
    const v = data.readUInt32LE(0);
    switch (offset) {
      case Reg.DsrLow: this.dsrLow = v; break;
      case Reg.DsrHigh: this.setDsr((BigInt(v) << 32n) | BigInt(this.dsrLow)); break;
      case Reg.Ctl: this.control(v); break;
      case Reg.Request: this.request(); break;
      case Reg.Imr:
        this.imr = v;
        this.updateLevel();
        break;
      case Reg.MacLow: this.mac[0] = v; break;
      case Reg.MacHigh: this.mac[1] = v & 0xffff; break;
      default: this.guestErrors.report('write to a read-only or unknown register', { offset, value: v });
    }
  }

  /** DSRHIGH written: read the region, fill its capabilities, resolve the rings (all before the driver reads them). */
  private setDsr(addr: bigint): void {
    this.epoch++;
    this.dsrAddr = null;
    this.err = 0;
    const dma = this.dma;
    if (!dma.isMapped(addr, Dsr.size, true)) {
      this.guestErrors.report('DSR not in writable guest memory', { addr: `0x${addr.toString(16)}` });
      this.err = 1;
      return;
    }
    const epoch = this.epoch;
    // The transports access guest memory synchronously: the caps are written when this returns.
    void dma
      .write(addr + BigInt(Dsr.caps), this.capsBlock())
      .then(async () => {
        const dsr = await dma.read(addr, Dsr.size);
        if (epoch !== this.epoch) return;
        this.dsrAddr = addr;
        this.cmdSlot = dsr.readBigUInt64LE(Dsr.cmdSlotDma);
        this.respSlot = dsr.readBigUInt64LE(Dsr.respSlotDma);
        this.asyncRing = await this.ring(dsr, Dsr.asyncRingPages, 8);
        this.cqRing = await this.ring(dsr, Dsr.cqRingPages, 4);
        const version = dsr.readUInt32LE(Dsr.driverVersion);
        this.log.info({ dsr: `0x${addr.toString(16)}`, driverVersion: version, uarPfn: version >= PVRDMA_PPN64_VERSION ? dsr.readBigUInt64LE(Dsr.uarPfn).toString(16) : dsr.readUInt32LE(Dsr.uarPfn).toString(16) }, 'shared region set');
      })
      .catch((err: Error) => {
        this.guestErrors.report('DSR unusable', { error: err.message });
        this.err = 1;
      });
  }

  private async ring(dsr: Buffer, at: number, entrySize: number): Promise<PdirRing | null> {
    const numPages = dsr.readUInt32LE(at);
    const pdir = dsr.readBigUInt64LE(at + 8);
    if (numPages < 2 || numPages > 64) {
      this.guestErrors.report('ring page count out of range', { numPages });
      return null;
    }
    const pages = await resolvePageDir(this.dma, pdir, numPages);
    return { pages, entrySize, slots: Math.floor(((numPages - 1) * PAGE_SIZE) / entrySize) };
  }

  /** struct pvrdma_device_caps as this device offers them (config.ts holds the limits). */
  private capsBlock(): Buffer {
    const c = this.config;
    const b = Buffer.alloc(Caps.size);
    b.writeBigUInt64LE((1n << 32n) | (0n << 16n) | 0n, Caps.fwVer);
    // node_guid is __be64 in the header: the guid's bytes in network order
    b.writeBigUInt64BE(c.nodeGuid, Caps.nodeGuid);
    b.writeBigUInt64BE(c.nodeGuid, Caps.sysImageGuid);
    b.writeBigUInt64LE(c.maxMrSize, Caps.maxMrSize);
    b.writeBigUInt64LE(0xfffff000n, Caps.pageSizeCap);
    b.writeUInt32LE(PCI_VENDOR_ID_VMWARE, Caps.vendorId);
    b.writeUInt32LE(PCI_DEVICE_ID_VMWARE_PVRDMA, Caps.vendorPartId);
    b.writeUInt32LE(1, Caps.hwVer);
    b.writeUInt32LE(c.maxQp, Caps.maxQp);
    b.writeUInt32LE(c.maxQpWr, Caps.maxQpWr);
    b.writeUInt32LE(c.maxSge, Caps.maxSge);
    b.writeUInt32LE(c.maxSge, Caps.maxSgeRd);
    b.writeUInt32LE(c.maxCq, Caps.maxCq);
    b.writeUInt32LE(c.maxCqe, Caps.maxCqe);
    b.writeUInt32LE(c.maxMr, Caps.maxMr);
    b.writeUInt32LE(c.maxPd, Caps.maxPd);
    b.writeUInt32LE(0, Caps.maxQpRdAtom);
    b.writeUInt32LE(0, Caps.maxQpInitRdAtom);
    b.writeUInt32LE(c.maxAh, Caps.maxAh);
    b.writeUInt32LE(0, Caps.maxSrq); // no SRQ: the driver then offers none
    b.writeUInt32LE(c.numUars, Caps.maxUar);
    b.writeUInt32LE(c.gidTableLength, Caps.gidTblLen);
    b.writeUInt16LE(1, Caps.maxPkeys);
    b.writeUInt8(15, Caps.localCaAckDelay);
    b.writeUInt8(1, Caps.physPortCnt);
    b.writeUInt8(DEVICE_MODE_ROCE, Caps.mode);
    b.writeUInt8(GID_TYPE_FLAG_ROCE_V1, Caps.gidTypes);
    b.writeUInt32LE(0, Caps.maxFastRegPageListLen);
    return b;
  }

  private control(v: number): void {
    if (v === Ctl.Activate) {
      if (this.dsrAddr === null) {
        this.guestErrors.report('ACTIVATE without a usable shared region');
        this.err = 1;
        return;
      }
      this.err = 0;
      this.active = true;
      this.log.info('device activated');
      this.postEvent(EventType.PortActive, 1);
    } else if (v === Ctl.Unquiesce) {
      this.err = 0;
    } else if (v === Ctl.Reset) {
      this.log.info('device reset by the driver');
      this.reset();
    } else {
      this.guestErrors.report('unknown CTL value', { value: v });
    }
  }

  /** REQUEST written: run the command in the command slot. ERR says at once whether it was taken. */
  private request(): void {
    if (!this.active || this.dsrAddr === null) {
      this.guestErrors.report('REQUEST before the device was activated');
      this.err = 1;
      return;
    }
    this.err = 0;
    const epoch = this.epoch;
    const slot = this.cmdSlot;
    const resp = this.respSlot;
    const dma = this.dma;
    // Read the slot now: a driver that does not wait for a response (the *_RESP_NOOP commands)
    // may write the next command into it at once.
    const cmd = dma.read(slot, PAGE_SIZE);
    this.queue = this.queue.then(async () => {
      let req: Buffer;
      try {
        req = await cmd;
      } catch (err) {
        this.guestErrors.report('command slot unreadable', { error: (err as Error).message });
        return;
      }
      if (epoch !== this.epoch) return;
      const out = await executeCommand(this, req);
      this.counters.commands++;
      if (out.response.readUInt8(12) !== 0) this.counters.commandErrors++;
      try {
        await dma.write(resp, out.response);
      } catch (err) {
        this.guestErrors.report('response slot unwritable', { error: (err as Error).message });
        return;
      }
      if (epoch !== this.epoch) return;
      if (out.interrupt) this.raise(Vector.Response);
    });
  }

  // ---- UAR doorbells (BAR2) ----

  private uarWrite(offset: number, data: Buffer): void {
    if (data.length !== 4) {
      this.guestErrors.report('UAR write not 4 bytes', { offset, length: data.length });
      return;
    }
    const page = Math.floor(offset / PAGE_SIZE);
    const at = offset % PAGE_SIZE;
    const v = data.readUInt32LE(0);
    const handle = v & UAR_HANDLE_MASK;
    this.counters.doorbells++;
    if (at === UAR_QP_OFFSET) {
      const qp = this.objects.qps.get(handle);
      if (qp === undefined) {
        this.guestErrors.report('QP doorbell for an unknown QP', { page, handle });
        return;
      }
      if (v & UAR_QP_SEND) {
        this.counters.sendDoorbells++;
        this.datapath.sendDoorbell(qp);
      }
      if (v & UAR_QP_RECV) {
        this.counters.recvDoorbells++;
        this.datapath.recvDoorbell(qp);
      }
    } else if (at === UAR_CQ_OFFSET) {
      const cq = this.objects.cqs.get(handle);
      if (cq === undefined) {
        this.guestErrors.report('CQ doorbell for an unknown CQ', { page, handle });
        return;
      }
      if (v & (UAR_CQ_ARM | UAR_CQ_ARM_SOL)) this.counters.cqArms++;
      if (v & UAR_CQ_ARM) cq.armed = true;
      if (v & UAR_CQ_ARM_SOL) cq.armedSolicited = true;
      // POLL: libvmw_pvrdma writes it at every empty poll, for a device whose CQ lives elsewhere; here the ring is in guest memory.
      if (v & UAR_CQ_POLL) this.counters.cqPolls++;
    } else if (at === UAR_SRQ_OFFSET) {
      this.guestErrors.report('SRQ doorbell, but the device offers no SRQ', { page, handle });
    } else {
      this.guestErrors.report('UAR write outside the doorbells', { page, at, value: v });
    }
  }

  // ---- rings and interrupts ----

  /** Posts an async event (struct pvrdma_eqe) to the async ring and raises the async vector. */
  postEvent(type: number, info: number): void {
    this.counters.events++;
    void this.postRing(this.asyncRing, (b) => {
      b.writeUInt32LE(type, 0);
      b.writeUInt32LE(info >>> 0, 4);
    }).then((ok) => ok && this.raise(Vector.Async));
  }

  /** Posts a CQ notification (struct pvrdma_cqne) for an armed CQ and raises the CQ vector. */
  notifyCq(handle: number): void {
    const cq = this.objects.cqs.get(handle);
    if (cq === undefined || !cq.armed) return;
    cq.armed = cq.armedSolicited = false;
    this.counters.cqNotifications++;
    void this.postRing(this.cqRing, (b) => b.writeUInt32LE(handle, 0)).then((ok) => ok && this.raise(Vector.Cq));
  }

  /** Producer side of a device-to-driver ring (the ring state's rx half): false when full or broken. */
  private async postRing(ring: PdirRing | null, fill: (b: Buffer) => void): Promise<boolean> {
    if (ring === null) return false;
    const dma = this.dma;
    try {
      const state = await dma.read(ring.pages[0]!, 16);
      const tail = state.readUInt32LE(8);
      const head = state.readUInt32LE(12);
      if (!idxValid(tail, ring.slots) || !idxValid(head, ring.slots)) {
        this.guestErrors.report('ring index invalid', { tail, head });
        return false;
      }
      if (tail === (head ^ ring.slots)) return false; // full: the driver has not consumed
      const pos = tail & (ring.slots - 1);
      const byteOff = PAGE_SIZE + pos * ring.entrySize;
      const page = ring.pages[Math.floor(byteOff / PAGE_SIZE)];
      if (page === undefined) return false;
      const entry = Buffer.alloc(ring.entrySize);
      fill(entry);
      await dma.write(page + BigInt(byteOff % PAGE_SIZE), entry);
      const t = Buffer.alloc(4);
      t.writeUInt32LE(ringInc(tail, ring.slots), 0);
      await dma.write(ring.pages[0]! + 8n, t);
      return true;
    } catch (err) {
      this.guestErrors.report('ring not accessible', { error: (err as Error).message });
      return false;
    }
  }

  /**
   * Interrupts the driver. With MSI-X each cause has its vector. Without it the driver has one
   * handler (pvrdma_intr0_handler) that reads ICR and completes a command only when ICR is exactly
   * the response cause, and handles nothing else: so without MSI-X only responses interrupt.
   */
  private raise(vector: number): void {
    const irq = this.ctx?.irq;
    if (irq === undefined) return;
    this.counters.interrupts++;
    if (this.config.irq === 'msix') {
      if ((this.imr & (1 << vector)) === 0) irq.trigger(vector);
      return;
    }
    if (vector !== Vector.Response) return;
    this.icr |= 1 << vector;
    if ((this.imr & this.icr) === 0) irq.trigger(0);
    this.updateLevel();
  }

  private updateLevel(): void {
    if (this.config.irq === 'msix') return;
    this.ctx?.irq.setLevel((this.icr & ~this.imr) !== 0);
  }

  private guard(fn: () => void, readData?: Buffer): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ err }, 'PVRDMA register access failed');
      readData?.fill(0xff);
    }
  }
}

/** The factory the daemon calls; a bad config throws naming each bad field. */
export function createPvrdma(config: PvrdmaConfigInput | unknown = {}, opts: CreatePvrdmaOptions = {}): Pvrdma {
  return new Pvrdma(validatePvrdmaConfig(config), opts);
}
