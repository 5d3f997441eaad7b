// vfio-user messages: readonly types plus an encoder and a decoder per message payload.
//
// Payload codecs work on the bytes after the 16-byte header; `encodeMessage` and `decodeHeader`
// handle the header. Decoders throw ShortMessageError when the payload is shorter than the layout.
import { Reader } from './reader';
import { Writer } from './writer';
import { HEADER_SIZE, HeaderFlag, REGION_INFO_SIZE, RegionCapId } from './constants';

// ---- header ----

export interface Header {
  readonly msgId: number;
  readonly command: number;
  /** Size of the whole message including the header. */
  readonly size: number;
  readonly flags: number;
  readonly error: number;
}

export function decodeHeader(buf: Buffer): Header {
  const r = new Reader(buf);
  return { msgId: r.u16(), command: r.u16(), size: r.u32(), flags: r.u32(), error: r.u32() };
}

export function encodeHeader(h: Header): Buffer {
  return new Writer(HEADER_SIZE).u16(h.msgId).u16(h.command).u32(h.size).u32(h.flags).u32(h.error).finish();
}

export function isReply(h: Header): boolean {
  return (h.flags & HeaderFlag.TypeMask) === HeaderFlag.TypeReply;
}

/** A whole message: header (size computed) followed by payload. */
export function encodeMessage(msgId: number, command: number, flags: number, payload: Uint8Array = Buffer.alloc(0), error = 0): Buffer {
  return new Writer(HEADER_SIZE + payload.length)
    .u16(msgId)
    .u16(command)
    .u32(HEADER_SIZE + payload.length)
    .u32(flags)
    .u32(error)
    .bytes(payload)
    .finish();
}

/** A reply carrying only a header with the error bit and errno. */
export function encodeErrorReply(msgId: number, command: number, errno: number): Buffer {
  return encodeMessage(msgId, command, HeaderFlag.TypeReply | HeaderFlag.Error, undefined, errno);
}

// ---- VERSION ----

export interface VersionCapabilities {
  readonly max_msg_fds?: number;
  readonly max_data_xfer_size?: number;
  readonly pgsizes?: number;
  readonly max_dma_maps?: number;
  readonly migration?: Record<string, unknown>;
  readonly write_multiple?: boolean;
  readonly [other: string]: unknown;
}

export interface Version {
  readonly major: number;
  readonly minor: number;
  /** The JSON text (without its NUL), or null when the message had none. */
  readonly json: string | null;
}

export function encodeVersion(v: { major: number; minor: number; capabilities?: VersionCapabilities }): Buffer {
  const w = new Writer().u16(v.major).u16(v.minor);
  if (v.capabilities !== undefined) {
    w.bytes(Buffer.from(JSON.stringify({ capabilities: v.capabilities }), 'utf8')).u8(0);
  }
  return w.finish();
}

/** The JSON part must be NUL-terminated; a missing NUL is reported as json === undefined by throwing. */
export function decodeVersion(payload: Buffer): Version {
  const r = new Reader(payload);
  const major = r.u16();
  const minor = r.u16();
  const rest = r.rest();
  if (rest.length === 0) return { major, minor, json: null };
  if (rest[rest.length - 1] !== 0) throw new SyntaxError('version data is not NUL-terminated');
  const nul = rest.indexOf(0);
  return { major, minor, json: rest.subarray(0, nul).toString('utf8') };
}

/** Parses the capabilities object out of version JSON; throws SyntaxError when malformed. */
export function parseCapabilities(json: string | null): VersionCapabilities {
  if (json === null) return {};
  const top: unknown = JSON.parse(json);
  if (top === null || typeof top !== 'object' || Array.isArray(top)) throw new SyntaxError('version data is not an object');
  const caps = (top as Record<string, unknown>).capabilities;
  if (caps === undefined) return {};
  if (caps === null || typeof caps !== 'object' || Array.isArray(caps)) throw new SyntaxError('capabilities is not an object');
  return caps as VersionCapabilities;
}

// ---- DMA_MAP / DMA_UNMAP ----

export interface DmaMap {
  readonly argsz: number;
  readonly flags: number;
  /** Offset into the fd passed with the message (0 without fd). */
  readonly offset: bigint;
  readonly addr: bigint;
  readonly size: bigint;
}
export const DMA_MAP_SIZE = 32;

export function encodeDmaMap(m: DmaMap): Buffer {
  return new Writer(DMA_MAP_SIZE).u32(m.argsz).u32(m.flags).u64(m.offset).u64(m.addr).u64(m.size).finish();
}

export function decodeDmaMap(payload: Buffer): DmaMap {
  const r = new Reader(payload);
  return { argsz: r.u32(), flags: r.u32(), offset: r.u64(), addr: r.u64(), size: r.u64() };
}

export interface DmaUnmap {
  readonly argsz: number;
  readonly flags: number;
  readonly addr: bigint;
  readonly size: bigint;
}
export const DMA_UNMAP_SIZE = 24;

export function encodeDmaUnmap(m: DmaUnmap): Buffer {
  return new Writer(DMA_UNMAP_SIZE).u32(m.argsz).u32(m.flags).u64(m.addr).u64(m.size).finish();
}

export function decodeDmaUnmap(payload: Buffer): DmaUnmap {
  const r = new Reader(payload);
  return { argsz: r.u32(), flags: r.u32(), addr: r.u64(), size: r.u64() };
}

// ---- DEVICE_GET_INFO ----

export interface DeviceInfo {
  readonly argsz: number;
  readonly flags: number;
  readonly numRegions: number;
  readonly numIrqs: number;
}
export const DEVICE_INFO_SIZE = 16;

export function encodeDeviceInfo(d: DeviceInfo): Buffer {
  return new Writer(DEVICE_INFO_SIZE).u32(d.argsz).u32(d.flags).u32(d.numRegions).u32(d.numIrqs).finish();
}

export function decodeDeviceInfo(payload: Buffer): DeviceInfo {
  const r = new Reader(payload);
  return { argsz: r.u32(), flags: r.u32(), numRegions: r.u32(), numIrqs: r.u32() };
}

// ---- DEVICE_GET_REGION_INFO ----

export interface SparseMmapArea {
  readonly offset: bigint;
  readonly size: bigint;
}

export interface RegionInfo {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly capOffset: number;
  readonly size: bigint;
  readonly offset: bigint;
  /** The sparse-mmap capability's areas, when the reply carries it. */
  readonly sparseAreas?: readonly SparseMmapArea[];
}

/** Bytes the sparse-mmap capability takes for n areas: cap header 8 + nr_areas/reserved 8 + 16 per area. */
export function sparseCapSize(areas: number): number {
  return 16 + 16 * areas;
}

/** The request (only argsz and index matter) and the reply share this layout. */
export function encodeRegionInfo(info: RegionInfo): Buffer {
  const w = new Writer(REGION_INFO_SIZE).u32(info.argsz).u32(info.flags).u32(info.index).u32(info.capOffset).u64(info.size).u64(info.offset);
  if (info.sparseAreas !== undefined) {
    // The capability sits right after the fixed struct; cap_offset points at it.
    w.u16(RegionCapId.SparseMmap).u16(1).u32(0).u32(info.sparseAreas.length).u32(0);
    for (const a of info.sparseAreas) w.u64(a.offset).u64(a.size);
  }
  return w.finish();
}

export function decodeRegionInfo(payload: Buffer): RegionInfo {
  const r = new Reader(payload);
  const base = { argsz: r.u32(), flags: r.u32(), index: r.u32(), capOffset: r.u32(), size: r.u64(), offset: r.u64() };
  if (base.capOffset === 0 || base.capOffset >= payload.length) return base;
  // Walk the capability chain; offsets are relative to the start of the struct.
  let at = base.capOffset;
  const seen = new Set<number>();
  while (at !== 0 && at + 8 <= payload.length && !seen.has(at)) {
    seen.add(at);
    const c = new Reader(payload, at);
    const id = c.u16();
    c.u16();
    const next = c.u32();
    if (id === RegionCapId.SparseMmap) {
      const n = c.u32();
      c.u32();
      const areas: SparseMmapArea[] = [];
      for (let i = 0; i < n; i++) areas.push({ offset: c.u64(), size: c.u64() });
      return { ...base, sparseAreas: areas };
    }
    at = next;
  }
  return base;
}

// ---- DEVICE_GET_REGION_IO_FDS ----

export interface RegionIoFdsRequest {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly count: number;
}
export const REGION_IO_FDS_SIZE = 16;

/** The reply without sub-regions has the same layout as the request. */
export function encodeRegionIoFds(m: RegionIoFdsRequest): Buffer {
  return new Writer(REGION_IO_FDS_SIZE).u32(m.argsz).u32(m.flags).u32(m.index).u32(m.count).finish();
}

export function decodeRegionIoFds(payload: Buffer): RegionIoFdsRequest {
  const r = new Reader(payload);
  return { argsz: r.u32(), flags: r.u32(), index: r.u32(), count: r.u32() };
}

// ---- DEVICE_GET_IRQ_INFO ----

export interface IrqInfo {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly count: number;
}
export const IRQ_INFO_SIZE = 16;

export function encodeIrqInfo(i: IrqInfo): Buffer {
  return new Writer(IRQ_INFO_SIZE).u32(i.argsz).u32(i.flags).u32(i.index).u32(i.count).finish();
}

export function decodeIrqInfo(payload: Buffer): IrqInfo {
  const r = new Reader(payload);
  return { argsz: r.u32(), flags: r.u32(), index: r.u32(), count: r.u32() };
}

// ---- DEVICE_SET_IRQS ----

export interface IrqSet {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly start: number;
  readonly count: number;
  /** DATA_BOOL: one byte per sub-index. Empty otherwise (eventfds travel as SCM_RIGHTS). */
  readonly data: Buffer;
}
export const IRQ_SET_SIZE = 20;

export function encodeIrqSet(s: IrqSet): Buffer {
  return new Writer(IRQ_SET_SIZE + s.data.length).u32(s.argsz).u32(s.flags).u32(s.index).u32(s.start).u32(s.count).bytes(s.data).finish();
}

export function decodeIrqSet(payload: Buffer): IrqSet {
  const r = new Reader(payload);
  return { argsz: r.u32(), flags: r.u32(), index: r.u32(), start: r.u32(), count: r.u32(), data: r.rest() };
}

// ---- REGION_READ / REGION_WRITE ----

export interface RegionAccess {
  readonly offset: bigint;
  readonly region: number;
  readonly count: number;
  /** REGION_WRITE request and REGION_READ reply: the bytes; empty otherwise. */
  readonly data: Buffer;
}
export const REGION_ACCESS_SIZE = 16;

export function encodeRegionAccess(a: RegionAccess): Buffer {
  return new Writer(REGION_ACCESS_SIZE + a.data.length).u64(a.offset).u32(a.region).u32(a.count).bytes(a.data).finish();
}

export function decodeRegionAccess(payload: Buffer): RegionAccess {
  const r = new Reader(payload);
  return { offset: r.u64(), region: r.u32(), count: r.u32(), data: r.rest() };
}

// ---- DMA_READ / DMA_WRITE (server -> client) ----

export interface DmaAccessMessage {
  readonly addr: bigint;
  readonly count: bigint;
  /** DMA_WRITE request and DMA_READ reply: the bytes; empty otherwise. */
  readonly data: Buffer;
}
export const DMA_ACCESS_SIZE = 16;

export function encodeDmaAccess(a: DmaAccessMessage): Buffer {
  return new Writer(DMA_ACCESS_SIZE + a.data.length).u64(a.addr).u64(a.count).bytes(a.data).finish();
}

export function decodeDmaAccess(payload: Buffer): DmaAccessMessage {
  const r = new Reader(payload);
  return { addr: r.u64(), count: r.u64(), data: r.rest() };
}

// ---- REGION_WRITE_MULTI ----

export interface MultiWrite {
  readonly offset: bigint;
  readonly region: number;
  /** 1..8 */
  readonly count: number;
  /** The first `count` bytes of the 8-byte data field. */
  readonly data: Buffer;
}
export const MULTI_WRITE_ONE_SIZE = 24;

export function encodeRegionWriteMulti(writes: readonly MultiWrite[]): Buffer {
  const w = new Writer(8 + writes.length * MULTI_WRITE_ONE_SIZE).u64(writes.length);
  for (const one of writes) {
    const data = Buffer.alloc(8);
    one.data.copy(data, 0, 0, Math.min(8, one.data.length));
    w.u64(one.offset).u32(one.region).u32(one.count).bytes(data);
  }
  return w.finish();
}

/** Decodes wr_cnt entries; the caller checks wr_cnt against the payload size first. */
export function decodeRegionWriteMulti(payload: Buffer): { readonly wrCnt: bigint; readonly writes: MultiWrite[] } {
  const r = new Reader(payload);
  const wrCnt = r.u64();
  const n = Number(wrCnt > BigInt(r.remaining) ? BigInt(Math.floor(r.remaining / MULTI_WRITE_ONE_SIZE) + 1) : wrCnt);
  const writes: MultiWrite[] = [];
  for (let i = 0; i < n; i++) {
    const offset = r.u64();
    const region = r.u32();
    const count = r.u32();
    const data = r.bytes(8);
    writes.push({ offset, region, count, data: data.subarray(0, Math.min(count, 8)) });
  }
  return { wrCnt, writes };
}

export function encodeWriteMultiReply(wrCnt: number): Buffer {
  return new Writer(8).u64(wrCnt).finish();
}

export function decodeWriteMultiReply(payload: Buffer): bigint {
  return new Reader(payload).u64();
}
