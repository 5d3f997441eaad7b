// The NIC's binary layouts in guest memory (docs/device.md sections 5-7): wire values, a cursor reader, a chained writer.

/** Admin opcodes (submission entry byte 0). */
export const enum Opcode {
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

export const OPCODE_NAMES: Readonly<Record<number, string>> = {
  0x01: 'QUERY_DEVICE',
  0x02: 'QUERY_PORT',
  0x03: 'ALLOC_UAR',
  0x04: 'FREE_UAR',
  0x05: 'CREATE_PD',
  0x06: 'DESTROY_PD',
  0x07: 'CREATE_CQ',
  0x08: 'DESTROY_CQ',
  0x09: 'CREATE_QP',
  0x0a: 'MODIFY_QP',
  0x0b: 'DESTROY_QP',
  0x0c: 'REG_MR',
  0x0d: 'DEREG_MR',
  0x0e: 'CREATE_AH',
  0x0f: 'DESTROY_AH',
};

/** Admin completion status. */
export const enum Status {
  Ok = 0,
  BadOpcode = 1,
  BadParam = 2,
  BadAddress = 3,
  NoResources = 4,
  BadHandle = 5,
  InUse = 6,
  BadState = 7,
}

export const STATUS_NAMES: readonly string[] = [
  'OK',
  'BAD_OPCODE',
  'BAD_PARAM',
  'BAD_ADDRESS',
  'NO_RESOURCES',
  'BAD_HANDLE',
  'IN_USE',
  'BAD_STATE',
];

export const enum FatalCode {
  None = 0,
  AdminQueueAddress = 1,
  EventQueueAddress = 2,
  AdminQueueIndex = 3,
  EventQueueIndex = 4,
}

export const FATAL_NAMES: readonly string[] = [
  'NONE',
  'ADMIN_QUEUE_ADDRESS',
  'EVENT_QUEUE_ADDRESS',
  'ADMIN_QUEUE_INDEX',
  'EVENT_QUEUE_INDEX',
];

export const enum EventType {
  PortStateChange = 1,
  FatalError = 2,
  CqError = 3,
  QpFatal = 4,
}

export const enum CqErrorReason {
  Overflow = 1,
  BufferUnmapped = 2,
}

export const enum QpFatalReason {
  WqeUnreadable = 1,
  DoorbellIndex = 2,
}

// The QP states and types are Linux's, shared with the device-independent data path.
export { QpState, QpType } from '../datapath/model';

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

export const enum MrAccess {
  LocalWrite = 1,
  RemoteWrite = 2,
  RemoteRead = 4,
  RemoteAtomic = 8,
  All = 15,
}

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

/** Reads little-endian fields at a moving cursor; every read is bounds-checked by Buffer. */
export class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  at(offset: number): this {
    this.pos = offset;
    return this;
  }
  u8(): number {
    const v = this.buf.readUInt8(this.pos);
    this.pos += 1;
    return v;
  }
  u16(): number {
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
}

/** Builds a fixed-size little-endian record; unset bytes stay 0. */
export class Writer {
  private pos = 0;
  readonly buf: Buffer;
  constructor(size: number) {
    this.buf = Buffer.alloc(size);
  }
  at(offset: number): this {
    this.pos = offset;
    return this;
  }
  u8(v: number): this {
    this.buf.writeUInt8(v, this.pos);
    this.pos += 1;
    return this;
  }
  u16(v: number): this {
    this.buf.writeUInt16LE(v, this.pos);
    this.pos += 2;
    return this;
  }
  u32(v: number): this {
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }
  u64(v: bigint): this {
    this.buf.writeBigUInt64LE(BigInt.asUintN(64, v), this.pos);
    this.pos += 8;
    return this;
  }
  bytes(b: Buffer): this {
    b.copy(this.buf, this.pos);
    this.pos += b.length;
    return this;
  }
}

/** A decoded admin submission entry: the common header plus the raw command bytes. */
export interface AdminCommand {
  readonly opcode: number;
  readonly flags: number;
  readonly cmdId: number;
  /** The whole 64-byte entry, for the per-opcode decoders. */
  readonly raw: Buffer;
}

export function decodeAdminCommand(raw: Buffer): AdminCommand {
  const r = new Reader(raw);
  const opcode = r.u8();
  const flags = r.u8();
  const cmdId = r.at(4).u32();
  return { opcode, flags, cmdId, raw };
}

export interface AdminCompletion {
  readonly cmdId: number;
  readonly status: Status;
  readonly result0: number;
  readonly result1: number;
}

/** The completion with its phase bit; the device writes bytes 6..7 (flags) last. */
export function encodeAdminCompletion(c: AdminCompletion, phase: number): Buffer {
  return new Writer(ACQ_ENTRY_SIZE).u32(c.cmdId).u16(c.status).u16(phase & 1).u32(c.result0).u32(c.result1).buf;
}

export interface NicEvent {
  readonly type: EventType;
  readonly data0: number;
  readonly data1: number;
}

export function encodeEvent(e: NicEvent, phase: number): Buffer {
  return new Writer(EQ_ENTRY_SIZE).u16(e.type).u16(phase & 1).u32(e.data0).u32(e.data1).u32(0).buf;
}

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

/** flags word at 0x1C: bit0 phase, bit1 SEND, bit2 IMM, bit3 SOLICITED, bits 31..16 slid. */
export function encodeCqe(c: Cqe, phase: number): Buffer {
  const imm = c.imm ?? null;
  const flags = (phase & 1) | (c.send ? 2 : 0) | (imm !== null ? 4 : 0) | (c.solicited === true ? 8 : 0) | (((c.slid ?? 0) & 0xffff) << 16);
  return new Writer(CQE_SIZE)
    .u64(c.wrId)
    .u32(c.qpn)
    .u32(c.byteLen)
    .u8(c.opcode)
    .u8(c.status)
    .u16(c.wqeIndex & 0xffff)
    .u32(imm ?? 0)
    .u32(c.srcQpn ?? 0)
    .u32(flags).buf;
}

export interface WqeSge {
  readonly addr: bigint;
  readonly length: number;
  readonly lkey: number;
}

/** A send WQE as laid out in docs/device.md 7.1; which fields mean something depends on the opcode. */
export interface Wqe {
  readonly opcode: number;
  readonly flags: number;
  readonly numSge: number;
  readonly inlineLen: number;
  /** The four bytes at 0x04 as a little-endian u32: written back to the CQE unchanged. */
  readonly imm: number;
  readonly wrId: bigint;
  readonly remoteAddr: bigint;
  readonly rkey: number;
  /** UD: the fields at 0x10. */
  readonly ah: number;
  readonly remoteQpn: number;
  readonly remoteQkey: number;
  readonly compareAdd: bigint;
  readonly swap: bigint;
  /** The 32 bytes at 0x20 (SGEs or inline data). */
  readonly body: Buffer;
}

export function decodeWqe(raw: Buffer): Wqe {
  const r = new Reader(raw);
  return {
    opcode: r.u8(),
    flags: r.u8(),
    numSge: r.u8(),
    inlineLen: r.u8(),
    imm: r.u32(),
    wrId: r.u64(),
    remoteAddr: r.at(0x10).u64(),
    rkey: r.u32(),
    ah: r.at(0x10).u32(),
    remoteQpn: r.u32(),
    remoteQkey: r.u32(),
    compareAdd: r.at(0x20).u64(),
    swap: r.u64(),
    body: raw.subarray(0x20, 0x40),
  };
}

/** `count` SGEs of 16 bytes from `raw` at `offset`. */
export function decodeSges(raw: Buffer, offset: number, count: number): WqeSge[] {
  const r = new Reader(raw);
  const out: WqeSge[] = [];
  for (let i = 0; i < count; i++) {
    r.at(offset + 16 * i);
    out.push({ addr: r.u64(), length: r.u32(), lkey: r.u32() });
  }
  return out;
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Phase of the entry with free-running index `index` in a ring of `size` (a power of two): 1 on the first pass. */
export function phaseOf(index: number, size: number): number {
  return 1 - (Math.floor((index >>> 0) / size) & 1);
}
