// BAR0, the control registers (docs/device.md section 3): the register map as named offsets, the access rules, one read switch and one write switch.
import type { NicConfig } from './config';
import { hex, type Observer } from './trace';
import { datasheetNames, FatalCode, IF_VERSION, MAGIC } from './wire';

export const BAR0_SIZE = 4096;

/** The register map: offsets in BAR0, named as in the datasheet (AsqBaseLo is ASQ_BASE_LO). */
export enum Reg {
  Version = 0x000,
  Magic = 0x004,
  NumUars = 0x008,
  NumPorts = 0x00c,
  MaxPd = 0x010,
  MaxCq = 0x014,
  MaxQp = 0x018,
  MaxMr = 0x01c,
  MaxCqe = 0x020,
  MaxQpWr = 0x024,
  NumVectors = 0x028,
  Ctrl = 0x040,
  Status = 0x044,
  FatalCode = 0x048,
  IntCause = 0x04c,
  AsqBaseLo = 0x080,
  AsqBaseHi = 0x084,
  AsqSize = 0x088,
  AsqTail = 0x08c,
  AsqHead = 0x090,
  AcqBaseLo = 0x0a0,
  AcqBaseHi = 0x0a4,
  AcqSize = 0x0a8,
  AcqHead = 0x0ac,
  AcqTail = 0x0b0,
  EqBaseLo = 0x0c0,
  EqBaseHi = 0x0c4,
  EqSize = 0x0c8,
  EqHead = 0x0cc,
  EqTail = 0x0d0,
  CntAdminCmds = 0x100,
  CntDoorbells = 0x104,
  CntInterrupts = 0x108,
  CntGuestErrors = 0x10c,
  CntEventsDropped = 0x110,
}

export const REG_NAMES: Readonly<Record<number, string>> = datasheetNames(Reg);

export const CTRL_ENABLE = 1;
export const CTRL_RESET = 2;
export const STATUS_READY = 1;
export const STATUS_FATAL = 2;
/** INT_CAUSE bits (write 1 to clear): which sources raised an interrupt since the driver last acknowledged. */
export const INT_CAUSE_ADMIN = 1 << 0;
export const INT_CAUSE_EVENT = 1 << 1;
export const INT_CAUSE_COMPLETION = 1 << 2;
export const INT_CAUSE_ALL = INT_CAUSE_ADMIN | INT_CAUSE_EVENT | INT_CAUSE_COMPLETION;

/** The registers' stored values; everything else is computed from device state. Zero is power-on. */
export class RegisterFile {
  enable = false;
  asqBase = 0n;
  asqSize = 0;
  acqBase = 0n;
  acqSize = 0;
  eqBase = 0n;
  eqSize = 0;
  /** Last values written to the doorbell-like registers (they read back). */
  asqTail = 0;
  acqHead = 0;
  eqHead = 0;
  /** INT_CAUSE: set by the device when it raises an interrupt, cleared by the driver's write-1. */
  intCause = 0;

  reset(): void {
    this.enable = false;
    this.asqBase = this.acqBase = this.eqBase = 0n;
    this.asqSize = this.acqSize = this.eqSize = 0;
    this.asqTail = this.acqHead = this.eqHead = 0;
    this.intCause = 0;
  }
}

function setLo(v: bigint, lo: number): bigint {
  return (v & 0xffffffff00000000n) | BigInt(lo >>> 0);
}

function setHi(v: bigint, hi: number): bigint {
  return (v & 0xffffffffn) | (BigInt(hi >>> 0) << 32n);
}

const lo32 = (v: bigint): number => Number(v & 0xffffffffn);
const hi32 = (v: bigint): number => Number(v >> 32n);

/**
 * The device as its registers see it: the state they show and the transitions a write starts
 * (docs/device.md section 3). The device implements it; the switches below know nothing else.
 */
export interface RegisterHost {
  readonly config: NicConfig;
  readonly regs: RegisterFile;
  readonly obs: Observer;
  readonly ready: boolean;
  readonly fatalCode: FatalCode;
  /** ASQ_HEAD and ACQ_TAIL are the admin queue's indexes. */
  readonly admin: { readonly head: number; readonly acqTail: number };
  /** EQ_TAIL is the event queue's. */
  readonly events: { readonly tail: number };
  reset(reason: string): void;
  enable(): void;
  disable(): void;
  ackCause(bits: number): void;
  asqDoorbell(tail: number): void;
  acqHeadWritten(head: number): void;
  eqHeadWritten(head: number): void;
}

/** One 32-bit register read; offsets not in the map read 0 (a guest error). */
export function readRegister(nic: RegisterHost, off: number): number {
  const cfg = nic.config;
  const r = nic.regs;
  const c = nic.obs.counters;
  switch (off) {
    case Reg.Version: return IF_VERSION;
    case Reg.Magic: return MAGIC;
    case Reg.NumUars: return cfg.numUars;
    case Reg.NumPorts: return 1;
    case Reg.MaxPd: return cfg.maxPd;
    case Reg.MaxCq: return cfg.maxCq;
    case Reg.MaxQp: return cfg.maxQp;
    case Reg.MaxMr: return cfg.maxMr;
    case Reg.MaxCqe: return cfg.maxCqe;
    case Reg.MaxQpWr: return cfg.maxQpWr;
    case Reg.NumVectors: return cfg.msixVectors;
    case Reg.Ctrl: return r.enable ? 1 : 0;
    case Reg.Status: return (nic.ready ? STATUS_READY : 0) | (nic.fatalCode !== FatalCode.None ? STATUS_FATAL : 0);
    case Reg.FatalCode: return nic.fatalCode;
    case Reg.IntCause: return r.intCause;
    case Reg.AsqBaseLo: return lo32(r.asqBase);
    case Reg.AsqBaseHi: return hi32(r.asqBase);
    case Reg.AsqSize: return r.asqSize;
    case Reg.AsqTail: return r.asqTail;
    case Reg.AsqHead: return nic.admin.head;
    case Reg.AcqBaseLo: return lo32(r.acqBase);
    case Reg.AcqBaseHi: return hi32(r.acqBase);
    case Reg.AcqSize: return r.acqSize;
    case Reg.AcqHead: return r.acqHead;
    case Reg.AcqTail: return nic.admin.acqTail;
    case Reg.EqBaseLo: return lo32(r.eqBase);
    case Reg.EqBaseHi: return hi32(r.eqBase);
    case Reg.EqSize: return r.eqSize;
    case Reg.EqHead: return r.eqHead;
    case Reg.EqTail: return nic.events.tail;
    case Reg.CntAdminCmds: return c.adminCommands >>> 0;
    case Reg.CntDoorbells: return c.doorbells >>> 0;
    case Reg.CntInterrupts: return c.interrupts >>> 0;
    case Reg.CntGuestErrors: return c.guestErrors >>> 0;
    case Reg.CntEventsDropped: return c.eventsDropped >>> 0;
    default:
      nic.obs.guestError({ bar: 0, offset: hex(off), op: 'read' }, 'read of an undefined BAR0 offset (reads 0)');
      return 0;
  }
}

/** One 32-bit register write; read-only and undefined offsets ignore it (a guest error). */
export function writeRegister(nic: RegisterHost, off: number, value: number): void {
  const r = nic.regs;
  const queueRegsLocked = (): boolean => {
    if (!r.enable) return false;
    nic.obs.guestError({ bar: 0, offset: hex(off), reg: REG_NAMES[off], value: hex(value) }, 'queue register written while ENABLE is set; ignored');
    return true;
  };
  switch (off) {
    case Reg.Ctrl:
      if ((value & ~(CTRL_ENABLE | CTRL_RESET)) !== 0) {
        nic.obs.guestError({ bar: 0, reg: 'CTRL', value: hex(value) }, 'reserved CTRL bits set; ignored');
      }
      if ((value & CTRL_RESET) !== 0) {
        nic.reset('CTRL.RESET');
        return;
      }
      if ((value & CTRL_ENABLE) !== 0) nic.enable();
      else nic.disable();
      return;
    case Reg.IntCause:
      if ((value & ~INT_CAUSE_ALL) !== 0) nic.obs.guestError({ bar: 0, reg: 'INT_CAUSE', value: hex(value) }, 'reserved INT_CAUSE bits written; ignored');
      nic.ackCause(value & INT_CAUSE_ALL);
      return;
    case Reg.AsqBaseLo: if (!queueRegsLocked()) r.asqBase = setLo(r.asqBase, value); return;
    case Reg.AsqBaseHi: if (!queueRegsLocked()) r.asqBase = setHi(r.asqBase, value); return;
    case Reg.AsqSize: if (!queueRegsLocked()) r.asqSize = value; return;
    case Reg.AcqBaseLo: if (!queueRegsLocked()) r.acqBase = setLo(r.acqBase, value); return;
    case Reg.AcqBaseHi: if (!queueRegsLocked()) r.acqBase = setHi(r.acqBase, value); return;
    case Reg.AcqSize: if (!queueRegsLocked()) r.acqSize = value; return;
    case Reg.EqBaseLo: if (!queueRegsLocked()) r.eqBase = setLo(r.eqBase, value); return;
    case Reg.EqBaseHi: if (!queueRegsLocked()) r.eqBase = setHi(r.eqBase, value); return;
    case Reg.EqSize: if (!queueRegsLocked()) r.eqSize = value; return;
    case Reg.AsqTail:
      r.asqTail = value;
      nic.asqDoorbell(value);
      return;
    case Reg.AcqHead:
      r.acqHead = value;
      nic.acqHeadWritten(value);
      return;
    case Reg.EqHead:
      r.eqHead = value;
      nic.eqHeadWritten(value);
      return;
    default:
      nic.obs.guestError(
        { bar: 0, offset: hex(off), reg: REG_NAMES[off] ?? null, value: hex(value), op: 'write' },
        REG_NAMES[off] === undefined ? 'write to an undefined BAR0 offset; ignored' : 'write to a read-only register; ignored',
      );
  }
}

/**
 * The access rules: aligned 32-bit accesses, and aligned 64-bit ones as two 32-bit halves (low
 * first); anything else reads all-ones and drops writes, as a guest error.
 */
export function barRead(nic: RegisterHost, offset: number, data: Buffer): void {
  if (data.length === 4 && offset % 4 === 0) {
    data.writeUInt32LE(traceRead(nic, offset), 0);
  } else if (data.length === 8 && offset % 8 === 0) {
    data.writeUInt32LE(traceRead(nic, offset), 0);
    data.writeUInt32LE(traceRead(nic, offset + 4), 4);
  } else {
    data.fill(0xff);
    nic.obs.counters.regReads++;
    nic.obs.guestError({ bar: 0, offset: hex(offset), size: data.length, op: 'read' }, 'BAR0 read of unsupported size or alignment (reads all-ones)');
  }
}

export function barWrite(nic: RegisterHost, offset: number, data: Buffer): void {
  if (data.length === 4 && offset % 4 === 0) {
    traceWrite(nic, offset, data.readUInt32LE(0));
  } else if (data.length === 8 && offset % 8 === 0) {
    traceWrite(nic, offset, data.readUInt32LE(0));
    traceWrite(nic, offset + 4, data.readUInt32LE(4));
  } else {
    nic.obs.counters.regWrites++;
    nic.obs.guestError({ bar: 0, offset: hex(offset), size: data.length, op: 'write' }, 'BAR0 write of unsupported size or alignment (ignored)');
  }
}

function traceRead(nic: RegisterHost, offset: number): number {
  const value = readRegister(nic, offset) >>> 0;
  nic.obs.counters.regReads++;
  if (nic.obs.verbose) nic.obs.emit('reg', { op: 'read', offset: hex(offset), reg: REG_NAMES[offset] ?? null, value: hex(value) }, 'register read');
  return value;
}

function traceWrite(nic: RegisterHost, offset: number, value: number): void {
  nic.obs.counters.regWrites++;
  if (nic.obs.verbose) nic.obs.emit('reg', { op: 'write', offset: hex(offset), reg: REG_NAMES[offset] ?? null, value: hex(value) }, 'register write');
  writeRegister(nic, offset, value >>> 0);
}
