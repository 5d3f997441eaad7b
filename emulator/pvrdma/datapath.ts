// The PVRDMA data path: reads pvrdma send/receive rings and WQEs, hands them to the device-independent engine (emulator/datapath), writes the results as pvrdma CQEs.
//
// Every ring here lives in guest pages the QP's or CQ's page directory named at creation: page 0
// holds struct pvrdma_ring_state (pvrdma_ring.h), whose indices run over twice the ring size so
// that full and empty differ. The driver (or libvmw_pvrdma, for a user QP) produces into the send
// and receive rings and consumes the CQ ring; the device does the other side. Indices, counts and
// addresses read from those pages are the guest's: each is checked before use.
import { DmaError } from '../framework/device';
import { DataPathEngine, type DataPathHost } from '../datapath/engine';
import type { Fabric } from '../datapath/fabric';
import { QpState, QpType, UD_GRH_BYTES, WcStatus, WrOpcode, newQpProto, type RecvCompletion, type RecvWr, type SendWr, type Sge } from '../datapath/model';
import {
  Cqe, EventType, idxValid, PAGE_SIZE, RING_RX_CONS, RING_RX_PROD, RING_TX_CONS, RING_TX_PROD, ringInc, RQ_WQE_HDR_SIZE, SEND_SIGNALED, SEND_SOLICITED, SGE_SIZE, SqWqe, WC_GRH,
  WC_WITH_IMM, WcOp, WrOp,
} from './abi';
import type { Cq, Qp, WorkQueue } from './commands';
import type { Pvrdma } from './device';

/** pvrdma's WR opcodes as the engine's. */
const WR_OPCODE: Readonly<Record<number, WrOpcode>> = {
  [WrOp.RdmaWrite]: WrOpcode.RdmaWrite,
  [WrOp.RdmaWriteImm]: WrOpcode.RdmaWriteImm,
  [WrOp.Send]: WrOpcode.Send,
  [WrOp.SendImm]: WrOpcode.SendImm,
  [WrOp.RdmaRead]: WrOpcode.RdmaRead,
  [WrOp.AtomicCmpSwp]: WrOpcode.AtomicCmpSwp,
  [WrOp.AtomicFetchAdd]: WrOpcode.AtomicFetchAdd,
};

/** The send CQE's opcode for each engine opcode (pvrdma_wc_opcode). */
const WC_OPCODE: Readonly<Record<WrOpcode, number>> = {
  [WrOpcode.Send]: WcOp.Send,
  [WrOpcode.SendImm]: WcOp.Send,
  [WrOpcode.RdmaWrite]: WcOp.RdmaWrite,
  [WrOpcode.RdmaWriteImm]: WcOp.RdmaWrite,
  [WrOpcode.RdmaRead]: WcOp.RdmaRead,
  [WrOpcode.AtomicCmpSwp]: WcOp.CompSwap,
  [WrOpcode.AtomicFetchAdd]: WcOp.FetchAdd,
};

/** A completion as this model writes it; the status values of pvrdma_wc_status are Linux's ib_wc_status, the engine's. */
export interface PvrdmaCompletion {
  readonly wrId: bigint;
  readonly qpHandle: number;
  readonly opcode: number;
  readonly status: WcStatus;
  readonly byteLen: number;
  readonly imm?: number | null;
  readonly srcQp?: number;
  readonly slid?: number;
  readonly grh?: boolean;
}

/** struct pvrdma_cqe bytes for one completion. */
export function encodeCqe(c: PvrdmaCompletion): Buffer {
  const b = Buffer.alloc(Cqe.size);
  b.writeBigUInt64LE(c.wrId, Cqe.wrId);
  // libvmw_pvrdma and the driver find the QP by `cqe->qp & 0xffff` in their handle tables.
  b.writeBigUInt64LE(BigInt(c.qpHandle), Cqe.qp);
  b.writeUInt32LE(c.opcode, Cqe.opcode);
  b.writeUInt32LE(c.status, Cqe.status);
  b.writeUInt32LE(c.byteLen >>> 0, Cqe.byteLen);
  // imm_data is __be32 on both sides: the bytes the sender wrote travel unchanged.
  const imm = c.imm ?? null;
  if (imm !== null) b.writeUInt32LE(imm >>> 0, Cqe.imm);
  b.writeUInt32LE((c.srcQp ?? 0) >>> 0, Cqe.srcQp);
  b.writeUInt32LE((imm !== null ? WC_WITH_IMM : 0) | (c.grh === true ? WC_GRH : 0), Cqe.wcFlags);
  b.writeUInt16LE((c.slid ?? 0) & 0xffff, Cqe.slid);
  b.writeUInt8(1, Cqe.portNum);
  return b;
}

interface DecodedSend {
  readonly wrId: bigint;
  readonly signaled: boolean;
  /** The engine's work request, or the status that completes the WQE without executing it. */
  readonly wr: SendWr | WcStatus;
  readonly opcode: WrOpcode | null;
}

/** Reads the SGE array at `at` of a WQE; null when `count` exceeds what the WQE can hold. */
function decodeSges(raw: Buffer, at: number, count: number, max: number): Sge[] | null {
  if (count > max || at + count * SGE_SIZE > raw.length) return null;
  const sges: Sge[] = [];
  for (let i = 0; i < count; i++) {
    const o = at + i * SGE_SIZE;
    sges.push({ addr: raw.readBigUInt64LE(o), length: raw.readUInt32LE(o + 8), lkey: raw.readUInt32LE(o + 12) });
  }
  return sges;
}

/** A send WQE (struct pvrdma_sq_wqe_hdr + SGEs) as the engine's work request; `route` turns a UD AV's GID into a LID. */
export function decodeSendWqe(raw: Buffer, qp: Pick<Qp, 'type' | 'sqSigAll' | 'sq'>, route: (gid: Buffer) => number | undefined): DecodedSend {
  const wrId = raw.readBigUInt64LE(SqWqe.wrId);
  const flags = raw.readUInt32LE(SqWqe.sendFlags);
  const signaled = qp.sqSigAll || (flags & SEND_SIGNALED) !== 0;
  const opcode = WR_OPCODE[raw.readUInt32LE(SqWqe.opcode)];
  if (opcode === undefined) return { wrId, signaled, wr: WcStatus.LocQpOpErr, opcode: null };
  // The device offers no inline data (max_inline_data 0): libvmw_pvrdma writes SGEs even when IBV_SEND_INLINE is set.
  const sges = decodeSges(raw, SqWqe.size, raw.readUInt32LE(SqWqe.numSge), qp.sq.maxSge);
  if (sges === null) return { wrId, signaled, wr: WcStatus.LocLenErr, opcode };
  const atomic = opcode === WrOpcode.AtomicCmpSwp || opcode === WrOpcode.AtomicFetchAdd;
  let ud: SendWr['ud'] = null;
  if (qp.type === QpType.Ud) {
    const dlid = route(raw.subarray(SqWqe.udDgid, SqWqe.udDgid + 16));
    ud = { dlid: dlid ?? 0xffff, remoteQpn: raw.readUInt32LE(SqWqe.udRemoteQpn) & 0xffffff, qkey: raw.readUInt32LE(SqWqe.udRemoteQkey) };
  }
  const withImm = opcode === WrOpcode.SendImm || opcode === WrOpcode.RdmaWriteImm;
  const wr: SendWr = {
    opcode,
    sges,
    inline: null,
    imm: withImm ? raw.readUInt32LE(SqWqe.imm) : null,
    solicited: (flags & SEND_SOLICITED) !== 0,
    remoteAddr: qp.type === QpType.Ud ? 0n : raw.readBigUInt64LE(SqWqe.remoteAddr),
    rkey: qp.type === QpType.Ud ? 0 : raw.readUInt32LE(atomic ? SqWqe.atomicRkey : SqWqe.rdmaRkey),
    compareAdd: atomic ? raw.readBigUInt64LE(SqWqe.compareAdd) : 0n,
    swap: atomic ? raw.readBigUInt64LE(SqWqe.swap) : 0n,
    ud,
  };
  return { wrId, signaled, wr, opcode };
}

/** A receive WQE (struct pvrdma_rq_wqe_hdr + SGEs) as the engine's; invalid when num_sge is beyond the queue's. */
export function decodeRecvWqe(raw: Buffer, rq: WorkQueue): RecvWr {
  const wrId = raw.readBigUInt64LE(0);
  const sges = decodeSges(raw, RQ_WQE_HDR_SIZE, raw.readUInt32LE(8), rq.maxSge);
  return sges === null ? { wrId, sges: [], valid: false } : { wrId, sges, valid: true };
}

/** Where WQE `index` of a work queue is in guest memory. */
function wqeAddr(qp: Qp, q: WorkQueue, index: number): bigint {
  const off = (index & (q.count - 1)) * q.wqeSize;
  return qp.pages[q.firstPage + Math.floor(off / PAGE_SIZE)]! + BigInt(off % PAGE_SIZE);
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
};

export class PvrdmaDataPath {
  readonly engine: DataPathEngine;

  constructor(
    private readonly dev: Pvrdma,
    readonly fabric: Fabric,
  ) {
    const host: DataPathHost = {
      get dma() {
        return dev.dma;
      },
      // The device takes the transport's logger at attach unless it was given one: read it at each use.
      get log() {
        return dev.log;
      },
      epoch: () => dev.epochNow,
      qp: (qpn) => dev.objects.qpByQpn(qpn),
      mrByLkey: (key) => dev.objects.mrByKey(key),
      mrByRkey: (key) => dev.objects.mrByKey(key),
      peekRecv: (qp) => this.peekRecv(qp as Qp),
      completeRecv: (qp, wr, c) => this.completeRecv(qp as Qp, wr, c),
      qpError: (qp, why) => this.toError(qp as Qp, why),
      recvUnreadable: (qp, err) => this.qpFatal(qp as Qp, `receive queue unreadable: ${err.message}`),
    };
    this.engine = new DataPathEngine(host, fabric);
  }

  get lid(): number {
    return this.engine.lid;
  }

  close(): void {
    this.engine.close();
  }

  /** MODIFY_QP's state change: PSNs start at RTR/RTS, RTS starts the send queue, ERR flushes both queues. */
  moveQp(qp: Qp, state: QpState): void {
    const from = qp.state;
    if (state === from) return;
    if (state === QpState.Err) {
      this.toError(qp, 'MODIFY_QP to ERR');
      return;
    }
    qp.state = state;
    if (state === QpState.Reset || state === QpState.Init) qp.proto = newQpProto(qp.attrs);
    if (state === QpState.Rtr) qp.proto.expectPsn = qp.attrs.rqPsn;
    if (state === QpState.Rts) {
      if (from !== QpState.Rts) qp.proto.sendPsn = qp.attrs.sqPsn;
      this.schedule(qp);
    }
  }

  destroyQp(qp: Qp): void {
    qp.state = QpState.Reset;
    this.dev.objects.qps.delete(qp.handle);
  }

  /** PVRDMA_UAR_QP_SEND: the send ring's prod_tail has moved. */
  sendDoorbell(qp: Qp): void {
    qp.sendDoorbells++;
    this.schedule(qp);
  }

  /** PVRDMA_UAR_QP_RECV: receive WQEs are taken when a message arrives; in ERR they flush now. */
  recvDoorbell(qp: Qp): void {
    qp.recvDoorbells++;
    if (qp.state === QpState.Err) void this.flushRecv(qp, this.dev.epochNow);
  }

  /** The QP enters ERR (MODIFY_QP, an error completion, a responder error): both queues flush. */
  toError(qp: Qp, why: string): void {
    if (qp.state === QpState.Err) return;
    this.dev.log.debug({ qpn: qp.qpn, why }, 'QP to ERR');
    qp.state = QpState.Err;
    this.schedule(qp);
    void this.flushRecv(qp, this.dev.epochNow);
  }

  /** A guest mistake the QP cannot survive: ERR, and QP_FATAL on the async ring (the driver reports it as IB_EVENT_QP_FATAL). */
  private qpFatal(qp: Qp, why: string): void {
    this.dev.guestErrors.report('QP fatal', { qpn: qp.qpn, why });
    this.toError(qp, why);
    this.dev.postEvent(EventType.QpFatal, qp.handle);
  }

  private live(qp: Qp, epoch: number): boolean {
    return epoch === this.dev.epochNow && this.dev.objects.qps.get(qp.handle) === qp;
  }

  private schedule(qp: Qp): void {
    if (qp.running) return;
    if (qp.state !== QpState.Rts && qp.state !== QpState.Err) return;
    void this.drainSend(qp, this.dev.epochNow);
  }

  /** Reads a ring's (prod_tail, cons_head) pair at `at` in page 0; null (and the QP fatal) when either index is invalid. */
  private async ringIndices(qp: Qp, at: number, count: number): Promise<{ prod: number; cons: number } | null> {
    const raw = await this.dev.dma.read(qp.pages[0]! + BigInt(at), 8);
    const prod = raw.readUInt32LE(0);
    const cons = raw.readUInt32LE(4);
    if (!idxValid(prod, count) || !idxValid(cons, count)) {
      this.qpFatal(qp, `ring indices prod ${prod} cons ${cons} invalid for ${count} entries`);
      return null;
    }
    return { prod, cons };
  }

  /** Executes (or, in ERR, flushes) the send WQEs up to prod_tail, in order, one at a time. */
  private async drainSend(qp: Qp, epoch: number): Promise<void> {
    qp.running = true;
    const dma = this.dev.dma;
    try {
      for (;;) {
        if (!this.live(qp, epoch) || (qp.state !== QpState.Rts && qp.state !== QpState.Err)) return;
        const ring = await this.ringIndices(qp, RING_TX_PROD, qp.sq.count);
        if (ring === null || ring.prod === ring.cons || !this.live(qp, epoch)) return;
        const raw = await dma.read(wqeAddr(qp, qp.sq, ring.cons), qp.sq.wqeSize);
        if (!this.live(qp, epoch)) return;
        const w = decodeSendWqe(raw, qp, (gid) => this.dev.gidToLid(gid));
        let status: WcStatus;
        let byteLen = 0;
        if (qp.state === QpState.Err) status = WcStatus.WrFlushErr;
        else if (typeof w.wr === 'number') status = w.wr;
        else {
          const result = await this.engine.execute(qp, w.wr);
          if (result === null || !this.live(qp, epoch)) return;
          // MODIFY_QP to RESET or INIT meanwhile restarted the queue: this WQE is gone.
          if (qp.state !== QpState.Rts && qp.state !== QpState.Err) return;
          status = result.status;
          byteLen = result.byteLen;
        }
        await dma.write(qp.pages[0]! + BigInt(RING_TX_CONS), u32(ringInc(ring.cons, qp.sq.count)));
        if (status !== WcStatus.Success || w.signaled) {
          await this.complete(qp.sendCq, { wrId: w.wrId, qpHandle: qp.handle, opcode: w.opcode === null ? WcOp.Send : WC_OPCODE[w.opcode], status, byteLen }, epoch);
        }
        if (status !== WcStatus.Success && status !== WcStatus.WrFlushErr) this.toError(qp, `send WQE ${ring.cons} completed with status ${status}`);
      }
    } catch (err) {
      if (!(err instanceof DmaError)) {
        // Only a bug gets here (guest mistakes are handled where they happen); the device must survive it.
        this.dev.log.error({ err, qpn: qp.qpn }, 'data path failed');
      } else if (this.live(qp, epoch)) {
        this.qpFatal(qp, `send queue unreadable: ${err.message}`);
      }
    } finally {
      qp.running = false;
    }
  }

  private async peekRecv(qp: Qp): Promise<RecvWr | null> {
    if (qp.state === QpState.Reset || qp.state === QpState.Init) return null;
    const ring = await this.ringIndices(qp, RING_RX_PROD, qp.rq.count);
    if (ring === null || ring.prod === ring.cons) return null;
    return decodeRecvWqe(await this.dev.dma.read(wqeAddr(qp, qp.rq, ring.cons), qp.rq.wqeSize), qp.rq);
  }

  private async completeRecv(qp: Qp, wr: RecvWr, c: RecvCompletion): Promise<void> {
    // The QP entered ERR while the message was placed: the flush completes the WQE.
    if (qp.state === QpState.Err && c.status === WcStatus.Success) return;
    const epoch = this.dev.epochNow;
    const ring = await this.ringIndices(qp, RING_RX_PROD, qp.rq.count);
    if (ring === null || ring.prod === ring.cons || !this.live(qp, epoch)) return;
    await this.dev.dma.write(qp.pages[0]! + BigInt(RING_RX_CONS), u32(ringInc(ring.cons, qp.rq.count)));
    await this.complete(
      qp.recvCq,
      {
        wrId: wr.wrId,
        qpHandle: qp.handle,
        opcode: c.rdmaWithImm ? WcOp.RecvRdmaImm : WcOp.Recv,
        status: c.status,
        byteLen: c.byteLen,
        imm: c.imm,
        srcQp: c.srcQpn,
        slid: c.slid,
        grh: qp.type === QpType.Ud && c.byteLen >= UD_GRH_BYTES,
      },
      epoch,
    );
  }

  /** Every posted receive WQE completes WR_FLUSH_ERR, in order. */
  private async flushRecv(qp: Qp, epoch: number): Promise<void> {
    if (!qp.hasRecvQueue) return;
    try {
      while (this.live(qp, epoch) && qp.state === QpState.Err) {
        const ring = await this.ringIndices(qp, RING_RX_PROD, qp.rq.count);
        if (ring === null || ring.prod === ring.cons || !this.live(qp, epoch)) return;
        const wrId = (await this.dev.dma.read(wqeAddr(qp, qp.rq, ring.cons), 8)).readBigUInt64LE(0);
        const again = await this.ringIndices(qp, RING_RX_PROD, qp.rq.count);
        // Another flush (a second doorbell) took this WQE meanwhile.
        if (again === null || again.cons !== ring.cons || !this.live(qp, epoch)) return;
        await this.dev.dma.write(qp.pages[0]! + BigInt(RING_RX_CONS), u32(ringInc(ring.cons, qp.rq.count)));
        await this.complete(qp.recvCq, { wrId, qpHandle: qp.handle, opcode: WcOp.Recv, status: WcStatus.WrFlushErr, byteLen: 0 }, epoch);
      }
    } catch (err) {
      if (!(err instanceof DmaError)) throw err;
      this.dev.guestErrors.report('receive queue unreadable during the flush', { qpn: qp.qpn, error: err.message });
    }
  }

  /** Writes one CQE into the CQ's ring, then notifies an armed CQ. One write at a time per CQ. */
  complete(cqHandle: number, c: PvrdmaCompletion, epoch: number): Promise<void> {
    const cq = this.dev.objects.cqs.get(cqHandle);
    if (cq === undefined) return Promise.resolve();
    const run = cq.tail.then(() => this.writeCqe(cq, c, epoch));
    cq.tail = run.catch(() => undefined);
    return run;
  }

  private async writeCqe(cq: Cq, c: PvrdmaCompletion, epoch: number): Promise<void> {
    if (epoch !== this.dev.epochNow || this.dev.objects.cqs.get(cq.handle) !== cq) return;
    if (cq.error) {
      this.dev.guestErrors.report('completion dropped: CQ in error', { cq: cq.handle, qp: c.qpHandle });
      return;
    }
    const dma = this.dev.dma;
    const state = cq.pages[0]!;
    try {
      const raw = await dma.read(state + BigInt(RING_RX_PROD), 8);
      const prod = raw.readUInt32LE(0);
      const cons = raw.readUInt32LE(4);
      if (!idxValid(prod, cq.cqe) || !idxValid(cons, cq.cqe) || prod === (cons ^ cq.cqe)) {
        cq.error = true;
        this.dev.guestErrors.report('CQ overflow or invalid ring indices: completion dropped, CQ in error', { cq: cq.handle, prod, cons });
        this.dev.postEvent(EventType.CqErr, cq.handle);
        return;
      }
      const off = (prod & (cq.cqe - 1)) * Cqe.size;
      await dma.write(cq.pages[1 + Math.floor(off / PAGE_SIZE)]! + BigInt(off % PAGE_SIZE), encodeCqe(c));
      if (epoch !== this.dev.epochNow) return;
      // prod_tail last: the consumer sees the CQE only once it is whole.
      await dma.write(state + BigInt(RING_RX_PROD), u32(ringInc(prod, cq.cqe)));
    } catch (err) {
      if (epoch !== this.dev.epochNow) return;
      if (!(err instanceof DmaError)) {
        this.dev.log.error({ err, cq: cq.handle }, 'CQE write failed');
        return;
      }
      cq.error = true;
      this.dev.guestErrors.report('CQ ring not writable: CQ in error', { cq: cq.handle, error: err.message });
      this.dev.postEvent(EventType.CqErr, cq.handle);
      return;
    }
    this.dev.counters.completions++;
    // A solicited-only arm is treated as a plain arm: one notification too many is harmless, one too few hangs a waiter.
    if (cq.armed) this.dev.notifyCq(cq.handle);
  }
}
