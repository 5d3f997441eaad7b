// Test support for the NIC's data path: one side of a conversation (its PD, CQ, QPs, MRs) written from docs/device.md section 7, with its own byte layouts.
import { command, type DeviceAccess, type GuestHeap, OP, type TestDriver, until } from './nic-driver';

export const WOP = { NOP: 0, SEND: 1, SEND_IMM: 2, WRITE: 3, WRITE_IMM: 4, READ: 5, CMP_SWP: 6, FETCH_ADD: 7 } as const;
export const WF = { UNSIGNALED: 1, INLINE: 2, SOLICITED: 4 } as const;
export const CS = { OK: 0, LOC_QP_OP: 1, FLUSHED: 2, LOC_LEN: 3, LOC_PROT: 4, REM_ACCESS: 5, REM_INV_REQ: 6, RNR_RETRY_EXC: 7, RETRY_EXC: 8, REM_OP: 9, LOC_ACCESS: 10 } as const;
export const ACC = { LOCAL_WRITE: 1, REMOTE_WRITE: 2, REMOTE_READ: 4, REMOTE_ATOMIC: 8, ALL: 15 } as const;
export const QPT = { RC: 2, UC: 3, UD: 4 } as const;
export const QPS = { RESET: 0, INIT: 1, RTR: 2, RTS: 3, ERR: 6 } as const;
/** MODIFY_QP attr_mask bits (Linux IB_QP_*). */
export const M = { ACCESS: 0x8, PKEY: 0x10, PORT: 0x20, QKEY: 0x40, AV: 0x80, MTU: 0x100, TIMEOUT: 0x200, RETRY: 0x400, RNR_RETRY: 0x800, RQ_PSN: 0x1000, MIN_RNR: 0x8000, SQ_PSN: 0x10000, DEST_QPN: 0x100000 } as const;

export interface Sge {
  readonly addr: bigint;
  readonly length: number;
  readonly lkey: number;
}

export interface SendWqe {
  readonly opcode: number;
  readonly wrId: bigint;
  readonly flags?: number;
  readonly sges?: readonly Sge[];
  readonly inline?: Buffer;
  readonly imm?: number;
  readonly remoteAddr?: bigint;
  readonly rkey?: number;
  readonly ah?: number;
  readonly remoteQpn?: number;
  readonly qkey?: number;
  readonly compareAdd?: bigint;
  readonly swap?: bigint;
  /** Overrides num_sge (to send a malformed count). */
  readonly numSge?: number;
}

export interface Cqe {
  readonly wrId: bigint;
  readonly qpn: number;
  readonly byteLen: number;
  readonly opcode: number;
  readonly status: number;
  readonly wqeIndex: number;
  readonly imm: number;
  readonly srcQpn: number;
  readonly send: boolean;
  readonly hasImm: boolean;
  readonly solicited: boolean;
  readonly slid: number;
}

export interface DpQp {
  readonly qpn: number;
  readonly type: number;
  readonly sq: bigint;
  readonly rq: bigint;
  readonly entries: number;
  readonly dbOffset: number;
  sqPi: number;
  rqPi: number;
}

export interface ModifyAttrs {
  readonly access?: number;
  readonly qkey?: number;
  readonly destQpn?: number;
  readonly rqPsn?: number;
  readonly sqPsn?: number;
  readonly dlid?: number;
  readonly port?: number;
  readonly timeout?: number;
  readonly retry?: number;
  readonly rnrRetry?: number;
  readonly minRnr?: number;
}

/** One side of a conversation on a device: its own UAR page, PD and CQ (as one user process would have). */
export class Side {
  private cqCi = 0;
  private constructor(
    readonly drv: TestDriver,
    readonly lid: number,
    readonly uar: number,
    readonly pd: number,
    readonly cq: { cqn: number; buf: bigint; entries: number; dbOffset: number },
  ) {}

  static async create(drv: TestDriver, lid: number, cqEntries = 64): Promise<Side> {
    const uar = await drv.allocUar();
    const pd = await drv.createPd();
    const cq = await drv.createCq(uar, cqEntries);
    return new Side(drv, lid, uar, pd, cq);
  }

  get dev(): DeviceAccess {
    return this.drv.dev;
  }

  get heap(): GuestHeap {
    return this.drv.heap;
  }

  /** A guest buffer, filled with `fill` (a byte or the bytes themselves). */
  buffer(length: number, fill: number | Buffer = 0): bigint {
    const addr = this.heap.alloc(length, 64);
    this.dev.memWrite(addr, typeof fill === 'number' ? Buffer.alloc(length, fill) : fill);
    return addr;
  }

  /** REG_MR of one contiguous range, known by its own guest address as iova; returns the key. */
  async mr(addr: bigint, length: number, access: number, pd = this.pd): Promise<number> {
    const c = await this.drv.ok(command(OP.REG_MR, this.drv.nextCmdId(), [[8, 'u32', pd], [0x0c, 'u32', access], [0x10, 'u64', addr], [0x18, 'u64', BigInt(length)], [0x20, 'u64', addr]]));
    return c.result0;
  }

  async createAh(dlid: number): Promise<number> {
    const b = command(0x0e, this.drv.nextCmdId(), [[8, 'u32', this.pd]]);
    b.writeUInt16LE(dlid, 0x0c);
    b[0x0e] = 1;
    return (await this.drv.ok(b)).result0;
  }

  async qp(type: number, entries = 16, withRq = true, pd = this.pd): Promise<DpQp> {
    const sq = this.heap.alloc(entries * 64);
    const rq = this.heap.alloc(entries * 64);
    this.dev.memWrite(sq, Buffer.alloc(entries * 64));
    this.dev.memWrite(rq, Buffer.alloc(entries * 64));
    const c = await this.drv.ok(
      command(OP.CREATE_QP, this.drv.nextCmdId(), [
        [0x08, 'u32', pd],
        [0x0c, 'u32', this.cq.cqn],
        [0x10, 'u32', this.cq.cqn],
        [0x14, 'u32', this.uar],
        [0x18, 'u64', sq],
        [0x20, 'u64', rq],
        [0x28, 'u32', entries],
        [0x2c, 'u32', withRq ? entries : 0],
        [0x30, 'u32', type],
      ]),
    );
    return { qpn: c.result0, type, sq, rq, entries, dbOffset: c.result1, sqPi: 0, rqPi: 0 };
  }

  /** MODIFY_QP with the attributes given (each sets its attr_mask bit); returns the admin status. */
  async modify(qpn: number, state: number, a: ModifyAttrs = {}): Promise<number> {
    const b = command(OP.MODIFY_QP, this.drv.nextCmdId(), [[8, 'u32', qpn], [0x0c, 'u32', state]]);
    let mask = 0;
    const u32 = (bit: number, off: number, v: number | undefined): void => {
      if (v === undefined) return;
      mask |= bit;
      b.writeUInt32LE(v >>> 0, off);
    };
    const u8 = (bit: number, off: number, v: number | undefined): void => {
      if (v === undefined) return;
      mask |= bit;
      b[off] = v;
    };
    u32(M.ACCESS, 0x14, a.access);
    u32(M.QKEY, 0x18, a.qkey);
    u32(M.DEST_QPN, 0x1c, a.destQpn);
    u32(M.RQ_PSN, 0x20, a.rqPsn);
    u32(M.SQ_PSN, 0x24, a.sqPsn);
    if (a.dlid !== undefined) {
      mask |= M.AV;
      b.writeUInt16LE(a.dlid, 0x28);
    }
    u8(M.PORT, 0x2a, a.port);
    u8(M.TIMEOUT, 0x2c, a.timeout);
    u8(M.RETRY, 0x2d, a.retry);
    u8(M.RNR_RETRY, 0x2e, a.rnrRetry);
    u8(M.MIN_RNR, 0x2f, a.minRnr);
    b.writeUInt32LE(mask >>> 0, 0x10);
    return (await this.drv.submit(b)).status;
  }

  /** Writes a send WQE at the SQ's producer index and rings the SQ doorbell. */
  post(qp: DpQp, w: SendWqe, ring = true): number {
    const b = Buffer.alloc(64);
    const index = qp.sqPi;
    b[0] = w.opcode;
    b[1] = (w.flags ?? 0) | (w.inline !== undefined ? WF.INLINE : 0);
    const sges = w.sges ?? [];
    b[2] = w.numSge ?? sges.length;
    b[3] = w.inline?.length ?? 0;
    b.writeUInt32LE(w.imm ?? 0, 4);
    b.writeBigUInt64LE(w.wrId, 8);
    if (w.ah !== undefined) {
      b.writeUInt32LE(w.ah, 0x10);
      b.writeUInt32LE(w.remoteQpn ?? 0, 0x14);
      b.writeUInt32LE((w.qkey ?? 0) >>> 0, 0x18);
    } else {
      b.writeBigUInt64LE(w.remoteAddr ?? 0n, 0x10);
      b.writeUInt32LE(w.rkey ?? 0, 0x18);
    }
    const atomic = w.opcode === WOP.CMP_SWP || w.opcode === WOP.FETCH_ADD;
    if (w.inline !== undefined) w.inline.copy(b, 0x20);
    else if (atomic) {
      b.writeBigUInt64LE(w.compareAdd ?? 0n, 0x20);
      b.writeBigUInt64LE(w.swap ?? 0n, 0x28);
      writeSges(b, 0x30, sges.slice(0, 1));
    } else writeSges(b, 0x20, sges.slice(0, 2));
    this.dev.memWrite(qp.sq + BigInt(64 * (index % qp.entries)), b);
    qp.sqPi = (qp.sqPi + 1) & 0xffff;
    if (ring) this.ringSq(qp);
    return index;
  }

  ringSq(qp: DpQp): void {
    this.dev.uar.writeUInt32LE(((qp.qpn << 16) | qp.sqPi) >>> 0, this.uar * 4096 + qp.dbOffset);
  }

  /** Writes a receive WQE and rings the RQ doorbell. */
  recv(qp: DpQp, wrId: bigint, sges: readonly Sge[], numSge = sges.length): number {
    const b = Buffer.alloc(64);
    const index = qp.rqPi;
    b[2] = numSge;
    b.writeBigUInt64LE(wrId, 8);
    writeSges(b, 0x10, sges.slice(0, 3));
    this.dev.memWrite(qp.rq + BigInt(64 * (index % qp.entries)), b);
    qp.rqPi = (qp.rqPi + 1) & 0xffff;
    this.dev.uar.writeUInt32LE(((qp.qpn << 16) | qp.rqPi) >>> 0, this.uar * 4096 + qp.dbOffset + 4);
    return index;
  }

  /** The next CQE if its phase says it is there (consumed, CQ doorbell rung), else null. */
  tryPoll(): Cqe | null {
    const cq = this.cq;
    const index = this.cqCi;
    const e = this.dev.memRead(cq.buf + BigInt(32 * (index % cq.entries)), 32);
    const flags = e.readUInt32LE(0x1c);
    if ((flags & 1) !== 1 - (Math.floor(index / cq.entries) & 1)) return null;
    this.cqCi = (this.cqCi + 1) & 0xffff;
    this.dev.uar.writeUInt32LE(((cq.cqn << 16) | this.cqCi) >>> 0, this.uar * 4096 + cq.dbOffset);
    return {
      wrId: e.readBigUInt64LE(0),
      qpn: e.readUInt32LE(8),
      byteLen: e.readUInt32LE(0x0c),
      opcode: e[0x10],
      status: e[0x11],
      wqeIndex: e.readUInt16LE(0x12),
      imm: e.readUInt32LE(0x14),
      srcQpn: e.readUInt32LE(0x18),
      send: (flags & 2) !== 0,
      hasImm: (flags & 4) !== 0,
      solicited: (flags & 8) !== 0,
      slid: flags >>> 16,
    };
  }

  private armSeq = 0;

  /** Arms the CQ at the current consumer index: the CQ's vector fires at the next CQE (or at once if one is there). */
  arm(): void {
    this.armSeq = (this.armSeq + 1) & 0x7fff;
    this.dev.uar.writeUInt32LE((0x80000000 | (this.armSeq << 16) | this.cqCi) >>> 0, this.uar * 4096 + this.cq.dbOffset + 4);
  }

  async poll(what = 'a CQE', limitMs = 10_000): Promise<Cqe> {
    let c: Cqe | null = null;
    await until(() => (c = this.tryPoll()) !== null, what, limitMs);
    return c!;
  }

  /** `n` CQEs, in the order they were written. */
  async pollN(n: number, what = 'CQEs'): Promise<Cqe[]> {
    const out: Cqe[] = [];
    for (let i = 0; i < n; i++) out.push(await this.poll(`${what} (${i + 1} of ${n})`));
    return out;
  }
}

function writeSges(b: Buffer, offset: number, sges: readonly Sge[]): void {
  sges.forEach((s, i) => {
    b.writeBigUInt64LE(s.addr, offset + 16 * i);
    b.writeUInt32LE(s.length, offset + 16 * i + 8);
    b.writeUInt32LE(s.lkey, offset + 16 * i + 12);
  });
}

export interface RcOptions {
  readonly access?: number;
  readonly timeout?: number;
  readonly retry?: number;
  readonly rnrRetry?: number;
  readonly minRnr?: number;
}

/** Brings `qp` on `side` to RTS connected to `peerQpn` at `peerLid` (INIT, RTR, RTS with the attributes each takes). */
export async function connect(side: Side, qp: DpQp, peerLid: number, peerQpn: number, o: RcOptions = {}): Promise<void> {
  const st = [
    await side.modify(qp.qpn, QPS.INIT, { port: 1, access: o.access ?? ACC.REMOTE_WRITE | ACC.REMOTE_READ | ACC.REMOTE_ATOMIC }),
    await side.modify(qp.qpn, QPS.RTR, { destQpn: peerQpn, dlid: peerLid, rqPsn: 100, minRnr: o.minRnr ?? 1 }),
    await side.modify(qp.qpn, QPS.RTS, { sqPsn: 100, timeout: o.timeout ?? 8, retry: o.retry ?? 7, rnrRetry: o.rnrRetry ?? 7 }),
  ];
  if (st.some((s) => s !== 0)) throw new Error(`connecting QP ${qp.qpn} failed: ${st.join(',')}`);
}

/** A UD QP to RTS with `qkey`. */
export async function readyUd(side: Side, qp: DpQp, qkey: number): Promise<void> {
  const st = [await side.modify(qp.qpn, QPS.INIT, { port: 1, qkey }), await side.modify(qp.qpn, QPS.RTR), await side.modify(qp.qpn, QPS.RTS, { sqPsn: 0 })];
  if (st.some((s) => s !== 0)) throw new Error(`UD QP ${qp.qpn} to RTS failed: ${st.join(',')}`);
}

/** Deterministic bytes for a test payload. */
export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}
