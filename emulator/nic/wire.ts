// The NIC's binary layouts in guest memory (docs/device.md sections 5-7): wire values, and one named layout per structure the device reads or writes.
import { Access } from '../datapath/model';

/**
 * The datasheet's names of an enum's values, by value: QueryDevice -> QUERY_DEVICE. The enum is
 * the one list of a concept's values; logs, traces and `vrnic when` show these names.
 */
export function datasheetNames(values: Readonly<Record<string, string | number>>): Readonly<Record<number, string>> {
  const out: Record<number, string> = {};
  for (const [key, value] of Object.entries(values)) {
    if (typeof value === 'number') out[value] = key.replace(/(?<=[a-z0-9])(?=[A-Z])/g, '_').toUpperCase();
  }
  return out;
}

/** Admin opcodes (submission entry byte 0). */
export enum Opcode {
  QueryDevice = 0x01,
  QueryPort = 0x02,
  AllocUar = 0x03,
  FreeUar = 0x04,
  CreatePd = 0x05,
  DestroyPd = 0x06,
  CreateCq = 0x07,
  DestroyCq = 0x08,
  CreateQp = 0x09,
  ModifyQp = 0x0a,
  DestroyQp = 0x0b,
  RegMr = 0x0c,
  DeregMr = 0x0d,
  CreateAh = 0x0e,
  DestroyAh = 0x0f,
}

export const OPCODE_NAMES: Readonly<Record<number, string>> = datasheetNames(Opcode);

/** Admin completion status. */
export enum Status {
  Ok = 0,
  BadOpcode = 1,
  BadParam = 2,
  BadAddress = 3,
  NoResources = 4,
  BadHandle = 5,
  InUse = 6,
  BadState = 7,
}

export const STATUS_NAMES: Readonly<Record<number, string>> = datasheetNames(Status);

export enum FatalCode {
  None = 0,
  AdminQueueAddress = 1,
  EventQueueAddress = 2,
  AdminQueueIndex = 3,
  EventQueueIndex = 4,
}

export const FATAL_NAMES: Readonly<Record<number, string>> = datasheetNames(FatalCode);

export enum EventType {
  PortStateChange = 1,
  FatalError = 2,
  CqError = 3,
  QpFatal = 4,
}

export const EVENT_NAMES: Readonly<Record<number, string>> = datasheetNames(EventType);

export const enum CqErrorReason {
  Overflow = 1,
  BufferUnmapped = 2,
}

export const enum QpFatalReason {
  WqeUnreadable = 1,
  DoorbellIndex = 2,
}

// The QP states and types and the access bits are Linux's, shared with the device-independent data path.
export { Access, QpState, QpType } from '../datapath/model';

export const QP_STATE_NAMES: Readonly<Record<number, string>> = { 0: 'RESET', 1: 'INIT', 2: 'RTR', 3: 'RTS', 6: 'ERR' };

/** Send WQE opcodes (docs/device.md 7.1); the CQE repeats them. */
export const enum WqeOpcode {
  Nop = 0,
  Send = 1,
  SendImm = 2,
  RdmaWrite = 3,
  RdmaWriteImm = 4,
  RdmaRead = 5,
  AtomicCmpSwp = 6,
  AtomicFetchAdd = 7,
}

/** Receive CQE opcodes. */
export const enum RecvOpcode {
  Recv = 0x80,
  RecvRdmaImm = 0x81,
}

/** WQE flags byte. */
export const enum WqeFlags {
  Unsignaled = 1,
  Inline = 2,
  Solicited = 4,
  Fence = 8,
}

/** CQE status (docs/device.md 7.3); BAD_OPCODE is the old name of LOC_QP_OP. */
export const enum CqeStatus {
  Ok = 0,
  BadOpcode = 1,
  Flushed = 2,
  LocLen = 3,
  LocProt = 4,
  RemAccess = 5,
  RemInvReq = 6,
  RnrRetryExc = 7,
  RetryExc = 8,
  RemOp = 9,
  LocAccess = 10,
}

export const MAX_SEND_SGE = 2;
export const MAX_RECV_SGE = 3;
export const MAX_INLINE = 32;
/** Address handles per device, relative to MAX_QP. */
export const AH_PER_QP = 4;
/** MODIFY_QP attr_mask bits (Linux IB_QP_*). */
export const enum QpAttrMask {
  State = 0x1,
  AccessFlags = 0x8,
  PkeyIndex = 0x10,
  Port = 0x20,
  Qkey = 0x40,
  Av = 0x80,
  PathMtu = 0x100,
  Timeout = 0x200,
  RetryCnt = 0x400,
  RnrRetry = 0x800,
  RqPsn = 0x1000,
  MaxQpRdAtomic = 0x2000,
  MinRnrTimer = 0x8000,
  SqPsn = 0x10000,
  MaxDestRdAtomic = 0x20000,
  DestQpn = 0x100000,
}
export const QP_ATTR_KNOWN = 0x13bff9;

/** Every IB_ACCESS_* bit an MR (REG_MR access) or a QP (MODIFY_QP access_flags) may carry; others are BAD_PARAM. */
export const ACCESS_KNOWN = Access.LocalWrite | Access.RemoteWrite | Access.RemoteRead | Access.RemoteAtomic;

/** REG_MR flags byte, bit0. */
export const REG_MR_PAGE_LIST = 1;

export const ASQ_ENTRY_SIZE = 64;
export const ACQ_ENTRY_SIZE = 16;
export const EQ_ENTRY_SIZE = 16;
export const CQE_SIZE = 32;
export const WQE_SIZE = 64;
export const QUEUE_ALIGN = 64;
export const QUERY_DEVICE_SIZE = 128;
export const QUERY_PORT_SIZE = 64;
export const MAX_OUT_LEN = 4096;
export const MAX_UARS_PER_ALLOC = 8;
export const MAX_MR_PAGES = 65536;
export const ADMIN_QUEUE_MAX = 4096;
export const IF_VERSION = 0x00010000;
export const MAGIC = 0x43494e56;

// ---- layouts ----
//
// Every structure the device reads or writes in guest memory is a Layout: named fields at the
// offsets of docs/device.md's tables, which the Layout alone decodes and encodes. A field's
// name, offset and width are written once, next to its siblings, where a reader can hold them
// against the datasheet.

type FieldKind = 'u8' | 'u16' | 'u32' | 'u64' | 'bytes';

/** One field of a layout: its byte offset, its width, and for `bytes` its length. */
interface Field<K extends FieldKind = FieldKind> {
  readonly at: number;
  readonly kind: K;
  readonly length: number;
}

const u8 = (at: number): Field<'u8'> => ({ at, kind: 'u8', length: 1 });
const u16 = (at: number): Field<'u16'> => ({ at, kind: 'u16', length: 2 });
const u32 = (at: number): Field<'u32'> => ({ at, kind: 'u32', length: 4 });
const u64 = (at: number): Field<'u64'> => ({ at, kind: 'u64', length: 8 });
const bytes = (at: number, length: number): Field<'bytes'> => ({ at, kind: 'bytes', length });

type FieldValue<F> = F extends Field<'u64'> ? bigint : F extends Field<'bytes'> ? Buffer : number;

/** The values of a layout's fields, by name: what a decoder returns and an encoder takes. */
export type Fields<S extends Readonly<Record<string, Field>>> = { readonly [K in keyof S]: FieldValue<S[K]> };

const READ: Readonly<Record<FieldKind, string>> = { u8: 'readUInt8', u16: 'readUInt16LE', u32: 'readUInt32LE', u64: 'readBigUInt64LE', bytes: 'subarray' };

/** A little-endian record of `size` bytes; bytes no field covers are reserved and encode as 0. */
export class Layout<S extends Readonly<Record<string, Field>>> {
  private readonly decodeAt: (buf: Buffer, base: number) => Fields<S>;
  private readonly encodeNew: (values: Fields<S>) => Buffer;

  constructor(
    readonly size: number,
    /** The fields by name; `typeof X.spec` names a layout's decoded type. */
    readonly spec: S,
  ) {
    const fields = Object.entries(spec);
    for (const [name, f] of fields) {
      if (!/^[a-z][A-Za-z0-9]*$/.test(name)) throw new SyntaxError(`layout field name ${JSON.stringify(name)} is not a plain identifier`);
      if (!Number.isInteger(f.at) || !Number.isInteger(f.length) || f.at < 0 || f.at + f.length > size) {
        throw new RangeError(`layout field ${name} at ${f.at}+${f.length} outside ${size} bytes`);
      }
    }
    // The decoder and encoder are written out as straight-line code, one statement per field, as
    // one would write them by hand: a loop over the fields costs about twice as much per record,
    // and a send WQE and a CQE are decoded and encoded once per work request. The source text is
    // made only of the checked names and integer offsets above (constants of this file), never
    // of anything a guest wrote.
    const reads = fields.map(([name, f]) =>
      f.kind === 'bytes' ? `${name}: b.subarray(o + ${f.at}, o + ${f.at + f.length})` : `${name}: b.${READ[f.kind]}(o + ${f.at})`,
    );
    const writes = fields.map(([name, f]) => {
      switch (f.kind) {
        case 'u8': return `b.writeUInt8(v.${name}, ${f.at});`;
        case 'u16': return `b.writeUInt16LE(v.${name}, ${f.at});`;
        case 'u32': return `b.writeUInt32LE(v.${name} >>> 0, ${f.at});`;
        case 'u64': return `b.writeBigUInt64LE(BigInt.asUintN(64, v.${name}), ${f.at});`;
        case 'bytes': return `v.${name}.copy(b, ${f.at}, 0, ${f.length});`;
      }
    });
    this.decodeAt = new Function('b', 'o', `return { ${reads.join(', ')} };`) as (buf: Buffer, base: number) => Fields<S>;
    this.encodeNew = new Function('v', `const b = Buffer.alloc(${size}); ${writes.join(' ')} return b;`) as (values: Fields<S>) => Buffer;
  }

  /** The fields of the record at `base` in `buf`; `bytes` fields are views of `buf`, not copies. Throws RangeError when `buf` is short. */
  decode(buf: Buffer, base = 0): Fields<S> {
    if (!Number.isInteger(base) || base < 0 || base + this.size > buf.length) throw new RangeError(`${buf.length} bytes hold no ${this.size}-byte record at ${base}`);
    return this.decodeAt(buf, base);
  }

  /**
   * A fresh record. u32 and u64 values are taken modulo 2^32 and 2^64; a u8 or u16 value out of
   * range throws (a bug in the caller, not a guest's doing); a short `bytes` value leaves zeros.
   */
  encode(values: Fields<S>): Buffer {
    return this.encodeNew(values);
  }
}

// ---- admin queue (docs/device.md section 5) ----

/** 5.1: the header every submission entry starts with; bytes 0x08..0x3F are the command's. */
export const ADMIN_COMMAND = new Layout(ASQ_ENTRY_SIZE, { opcode: u8(0x00), flags: u8(0x01), cmdId: u32(0x04) });

/** A decoded admin submission entry: the common header plus the raw command bytes. */
export interface AdminCommand extends Fields<typeof ADMIN_COMMAND.spec> {
  /** The whole 64-byte entry, for the per-command layouts below. */
  readonly raw: Buffer;
}

export function decodeAdminCommand(raw: Buffer): AdminCommand {
  return { ...ADMIN_COMMAND.decode(raw), raw };
}

/** 5.2: the completion entry; flags bit0 is the phase. */
export const ADMIN_COMPLETION = new Layout(ACQ_ENTRY_SIZE, { cmdId: u32(0x00), status: u16(0x04), flags: u16(0x06), result0: u32(0x08), result1: u32(0x0c) });

export interface AdminCompletion {
  readonly cmdId: number;
  readonly status: Status;
  readonly result0: number;
  readonly result1: number;
}

/** The completion with its phase bit; the device writes bytes 6..7 (flags) last. */
export function encodeAdminCompletion(c: AdminCompletion, phase: number): Buffer {
  return ADMIN_COMPLETION.encode({ cmdId: c.cmdId, status: c.status, flags: phase & 1, result0: c.result0, result1: c.result1 });
}

/** 5.5: each command's fields, at their offsets in the 64-byte submission entry. */
export const QUERY_DEVICE_CMD = new Layout(ASQ_ENTRY_SIZE, { outAddr: u64(0x08), outLen: u32(0x10) });
export const QUERY_PORT_CMD = new Layout(ASQ_ENTRY_SIZE, { outAddr: u64(0x08), outLen: u32(0x10), port: u32(0x14) });
export const ALLOC_UAR_CMD = new Layout(ASQ_ENTRY_SIZE, { count: u32(0x08) });
export const FREE_UAR_CMD = new Layout(ASQ_ENTRY_SIZE, { index: u32(0x08) });
export const DESTROY_PD_CMD = new Layout(ASQ_ENTRY_SIZE, { pdn: u32(0x08) });
export const CREATE_CQ_CMD = new Layout(ASQ_ENTRY_SIZE, { bufAddr: u64(0x08), entries: u32(0x10), compVector: u32(0x14), uarIndex: u32(0x18) });
export const DESTROY_CQ_CMD = new Layout(ASQ_ENTRY_SIZE, { cqn: u32(0x08) });
export const CREATE_QP_CMD = new Layout(ASQ_ENTRY_SIZE, {
  pdn: u32(0x08),
  sendCqn: u32(0x0c),
  recvCqn: u32(0x10),
  uarIndex: u32(0x14),
  sqAddr: u64(0x18),
  rqAddr: u64(0x20),
  sqEntries: u32(0x28),
  rqEntries: u32(0x2c),
  qpType: u32(0x30),
});
export const MODIFY_QP_CMD = new Layout(ASQ_ENTRY_SIZE, {
  qpn: u32(0x08),
  state: u32(0x0c),
  attrMask: u32(0x10),
  accessFlags: u32(0x14),
  qkey: u32(0x18),
  destQpn: u32(0x1c),
  rqPsn: u32(0x20),
  sqPsn: u32(0x24),
  dlid: u16(0x28),
  portNum: u8(0x2a),
  pathMtu: u8(0x2b),
  timeout: u8(0x2c),
  retryCnt: u8(0x2d),
  rnrRetry: u8(0x2e),
  minRnrTimer: u8(0x2f),
  pkeyIndex: u16(0x30),
});
export const DESTROY_QP_CMD = new Layout(ASQ_ENTRY_SIZE, { qpn: u32(0x08) });
/** `addr` is the first byte's dma_addr (contiguous) or the page list's list_addr (flags bit0, REG_MR_PAGE_LIST). */
export const REG_MR_CMD = new Layout(ASQ_ENTRY_SIZE, {
  pdn: u32(0x08),
  access: u32(0x0c),
  iova: u64(0x10),
  length: u64(0x18),
  addr: u64(0x20),
  pageCount: u32(0x28),
  pageShift: u32(0x2c),
});
export const DEREG_MR_CMD = new Layout(ASQ_ENTRY_SIZE, { lkey: u32(0x08) });
export const CREATE_AH_CMD = new Layout(ASQ_ENTRY_SIZE, { pdn: u32(0x08), dlid: u16(0x0c), portNum: u8(0x0e), sl: u8(0x0f) });
export const DESTROY_AH_CMD = new Layout(ASQ_ENTRY_SIZE, { ah: u32(0x08) });

/** QUERY_DEVICE's output (Linux ib_device_attr's subset a driver needs). */
export const QUERY_DEVICE_OUT = new Layout(QUERY_DEVICE_SIZE, {
  ifVersion: u32(0x00),
  vendorId: u32(0x04),
  deviceId: u32(0x08),
  hwRev: u32(0x0c),
  nodeGuid: u64(0x10),
  maxMrSize: u64(0x18),
  pageSizeCap: u64(0x20),
  numUars: u32(0x28),
  numPorts: u32(0x2c),
  maxPd: u32(0x30),
  maxCq: u32(0x34),
  maxQp: u32(0x38),
  maxMr: u32(0x3c),
  maxCqe: u32(0x40),
  maxQpWr: u32(0x44),
  maxSge: u32(0x48),
  numCompVectors: u32(0x4c),
  maxUarsPerAlloc: u32(0x50),
  maxMrPages: u32(0x54),
  maxRecvSge: u32(0x58),
  maxInlineData: u32(0x5c),
  maxAh: u32(0x60),
  atomicCap: u32(0x64),
  maxQpRdAtom: u32(0x68),
});

/** QUERY_PORT's output; the enum values are Linux's. gid0 is 16 bytes in network order. */
export const QUERY_PORT_OUT = new Layout(QUERY_PORT_SIZE, {
  state: u32(0x00),
  physState: u32(0x04),
  maxMtu: u32(0x08),
  activeMtu: u32(0x0c),
  lid: u32(0x10),
  smLid: u32(0x14),
  gidTblLen: u32(0x18),
  pkeyTblLen: u32(0x1c),
  activeWidth: u32(0x20),
  activeSpeed: u32(0x24),
  linkLayer: u32(0x28),
  maxMsgSz: u32(0x2c),
  gid0: bytes(0x30, 16),
});

// ---- event queue (docs/device.md section 6) ----

/** flags bit0 is the phase; bytes 0x0C..0x0F are reserved. */
export const EVENT_ENTRY = new Layout(EQ_ENTRY_SIZE, { type: u16(0x00), flags: u16(0x02), data0: u32(0x04), data1: u32(0x08) });

export interface NicEvent {
  readonly type: EventType;
  readonly data0: number;
  readonly data1: number;
}

export function encodeEvent(e: NicEvent, phase: number): Buffer {
  return EVENT_ENTRY.encode({ type: e.type, flags: phase & 1, data0: e.data0, data1: e.data1 });
}

// ---- work queues and completions (docs/device.md section 7) ----

/** 7.3: flags bit0 phase, bit1 SEND, bit2 IMM, bit3 SOLICITED, bits 31..16 slid. */
export const CQE = new Layout(CQE_SIZE, {
  wrId: u64(0x00),
  qpn: u32(0x08),
  byteLen: u32(0x0c),
  opcode: u8(0x10),
  status: u8(0x11),
  wqeIndex: u16(0x12),
  imm: u32(0x14),
  srcQpn: u32(0x18),
  flags: u32(0x1c),
});

export interface Cqe {
  readonly wrId: bigint;
  readonly qpn: number;
  readonly byteLen: number;
  readonly opcode: number;
  readonly status: CqeStatus;
  readonly wqeIndex: number;
  readonly send: boolean;
  readonly imm?: number | null;
  readonly srcQpn?: number;
  readonly solicited?: boolean;
  readonly slid?: number;
}

export function encodeCqe(c: Cqe, phase: number): Buffer {
  const imm = c.imm ?? null;
  const flags = (phase & 1) | (c.send ? 2 : 0) | (imm !== null ? 4 : 0) | (c.solicited === true ? 8 : 0) | (((c.slid ?? 0) & 0xffff) << 16);
  return CQE.encode({
    wrId: c.wrId,
    qpn: c.qpn,
    byteLen: c.byteLen,
    opcode: c.opcode,
    status: c.status,
    wqeIndex: c.wqeIndex & 0xffff,
    imm: imm ?? 0,
    srcQpn: c.srcQpn ?? 0,
    flags,
  });
}

/** 7.1: a scatter/gather entry. */
export const SGE = new Layout(16, { addr: u64(0x00), length: u32(0x08), lkey: u32(0x0c) });
export type WqeSge = Fields<typeof SGE.spec>;

/**
 * 7.1: a send WQE. Which fields mean something depends on the opcode: 0x10..0x1F is
 * remote_addr + rkey, or for a UD SEND ah + remote_qpn + remote_qkey; 0x20..0x3F holds the
 * SGEs or the inline data (`body`), and for atomics compare_add and swap. `imm` is the four bytes
 * at 0x04 as a little-endian u32: written back to the CQE unchanged.
 */
export const SEND_WQE = new Layout(WQE_SIZE, {
  opcode: u8(0x00),
  flags: u8(0x01),
  numSge: u8(0x02),
  inlineLen: u8(0x03),
  imm: u32(0x04),
  wrId: u64(0x08),
  remoteAddr: u64(0x10),
  rkey: u32(0x18),
  ah: u32(0x10),
  remoteQpn: u32(0x14),
  remoteQkey: u32(0x18),
  compareAdd: u64(0x20),
  swap: u64(0x28),
  body: bytes(0x20, 32),
});
export type Wqe = Fields<typeof SEND_WQE.spec>;

export function decodeWqe(raw: Buffer): Wqe {
  return SEND_WQE.decode(raw);
}

/** 7.2: a receive WQE's header; its SGEs follow at RECV_WQE_SGES. */
export const RECV_WQE = new Layout(WQE_SIZE, { numSge: u8(0x02), wrId: u64(0x08) });
export const RECV_WQE_SGES = 0x10;

/** `count` SGEs of 16 bytes from `raw` at `offset`. */
export function decodeSges(raw: Buffer, offset: number, count: number): WqeSge[] {
  const out: WqeSge[] = [];
  for (let i = 0; i < count; i++) out.push(SGE.decode(raw, offset + SGE.size * i));
  return out;
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Phase of the entry with free-running index `index` in a ring of `size` (a power of two): 1 on the first pass. */
export function phaseOf(index: number, size: number): number {
  return 1 - (Math.floor((index >>> 0) / size) & 1);
}
