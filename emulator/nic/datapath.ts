// The NIC's data path (docs/device.md 7): reads its SQ/RQ rings, translates WQEs for the device-independent engine (emulator/datapath), writes the engine's results as CQEs; CQ arming raises the CQ's vector.
import { DmaError } from '../framework/device';
import { DataPathEngine, type DataPathHost } from '../datapath/engine';
import type { Fabric } from '../datapath/fabric';
import { WcStatus, WrOpcode, type DpMr, type DpQp, type RecvCompletion, type RecvWr, type SendWr, type Sge } from '../datapath/model';
import type { NicCore } from './core';
import type { EventQueue } from './event-queue';
import type { Cq, NicObjects, Qp } from './objects';
import {
  CQE,
  CQE_SIZE,
  CqErrorReason,
  CqeStatus,
  decodeSges,
  decodeWqe,
  encodeCqe,
  EventType,
  MAX_INLINE,
  MAX_RECV_SGE,
  MAX_SEND_SGE,
  phaseOf,
  QpFatalReason,
  QpState,
  QpType,
  RECV_WQE,
  RECV_WQE_SGES,
  RecvOpcode,
  WQE_SIZE,
  WqeFlags,
  WqeOpcode,
  type Cqe,
  type Wqe,
} from './wire';

/** MSI-X vector of completion vector `v`: 0 and 1 are the admin queue's and the event queue's. */
export function cqVector(cq: Cq): number {
  return 2 + cq.compVector;
}

const U16 = 0xffff;

/** The CQE's flags word (with the phase) is its last field: written after the rest. */
const FLAGS_AT = CQE.spec.flags.at;

/** The engine's ib_wc_status as this device's CQE status (docs/device.md 7.3). */
const CQE_STATUS: Readonly<Record<number, CqeStatus>> = {
  [WcStatus.Success]: CqeStatus.Ok,
  [WcStatus.LocQpOpErr]: CqeStatus.BadOpcode,
  [WcStatus.WrFlushErr]: CqeStatus.Flushed,
  [WcStatus.LocLenErr]: CqeStatus.LocLen,
  [WcStatus.LocProtErr]: CqeStatus.LocProt,
  [WcStatus.RemAccessErr]: CqeStatus.RemAccess,
  [WcStatus.RemInvReqErr]: CqeStatus.RemInvReq,
  [WcStatus.RnrRetryExcErr]: CqeStatus.RnrRetryExc,
  [WcStatus.RetryExcErr]: CqeStatus.RetryExc,
  [WcStatus.RemOpErr]: CqeStatus.RemOp,
  [WcStatus.LocAccessErr]: CqeStatus.LocAccess,
};

const WR_OPCODE: Readonly<Record<number, WrOpcode>> = {
  [WqeOpcode.Send]: WrOpcode.Send,
  [WqeOpcode.SendImm]: WrOpcode.SendImm,
  [WqeOpcode.RdmaWrite]: WrOpcode.RdmaWrite,
  [WqeOpcode.RdmaWriteImm]: WrOpcode.RdmaWriteImm,
  [WqeOpcode.RdmaRead]: WrOpcode.RdmaRead,
  [WqeOpcode.AtomicCmpSwp]: WrOpcode.AtomicCmpSwp,
  [WqeOpcode.AtomicFetchAdd]: WrOpcode.AtomicFetchAdd,
};

export class DataPath {
  readonly engine: DataPathEngine;

  constructor(
    private readonly core: NicCore,
    private readonly objects: NicObjects,
    /** Where QP_FATAL and CQ_ERROR go. */
    private readonly events: Pick<EventQueue, 'post'>,
    fabric: Fabric,
  ) {
    const host: DataPathHost = {
      get dma() {
        return core.dma;
      },
      get log() {
        return core.obs.log;
      },
      epoch: () => core.epoch,
      qp: (qpn) => objects.qps.get(qpn),
      mrByLkey: (key) => objects.mrByKey(key),
      mrByRkey: (key) => objects.mrByKey(key),
      peekRecv: (qp) => this.peekRecv(qp as Qp),
      completeRecv: (qp, wr, c) => this.completeRecv(qp as Qp, wr, c),
      qpError: (qp, why) => this.toError(qp as Qp, why),
      recvUnreadable: (qp, err) => {
        core.obs.guestError({ qpn: qp.qpn, err: err.message }, 'receive WQE not readable (RQ memory unmapped); QP to ERR');
        this.qpFatal(qp as Qp, QpFatalReason.WqeUnreadable);
      },
    };
    this.engine = new DataPathEngine(host, fabric);
  }

  /** The port's LID on the fabric. */
  get lid(): number {
    return this.engine.lid;
  }

  reset(): void {
    // Running loops see the epoch change and stop; nothing else is queued here.
  }

  close(): void {
    this.engine.close();
  }

  /** SQ doorbell value already matched to `qp`: records the producer index and schedules the work. */
  sqDoorbell(qp: Qp, pi: number): void {
    if (((pi - qp.sq.ci) & U16) > qp.sq.entries) {
      this.core.obs.guestError({ qpn: qp.qpn, pi, ci: qp.sq.ci, entries: qp.sq.entries }, 'SQ doorbell claims more WQEs than the SQ holds; QP to ERR');
      this.qpFatal(qp, QpFatalReason.DoorbellIndex);
      return;
    }
    qp.sq.pi = pi;
    this.schedule(qp);
  }

  /** RQ doorbell: the receive WQEs up to `pi` become available (in ERR they flush at once). */
  rqDoorbell(qp: Qp, pi: number): void {
    const rq = qp.rq;
    if (rq === null) return;
    if (((pi - rq.ci) & U16) > rq.entries) {
      this.core.obs.guestError({ qpn: qp.qpn, pi, ci: rq.ci, entries: rq.entries }, 'RQ doorbell claims more WQEs than the RQ holds; QP to ERR');
      this.qpFatal(qp, QpFatalReason.DoorbellIndex);
      return;
    }
    rq.pi = pi;
    if (qp.state === QpState.Err) void this.flushRq(qp);
  }

  cqDoorbell(cq: Cq, ci: number): void {
    const outstanding = (cq.pi - cq.ci) & U16;
    if (((ci - cq.ci) & U16) > outstanding) {
      this.core.obs.guestError({ cqn: cq.cqn, ci, deviceCi: cq.ci, pi: cq.pi }, 'CQ doorbell consumer index beyond the completions produced; ignored');
      return;
    }
    cq.ci = ci;
  }

  /** Arm word with ARM set; `ci` is the consumer index the driver had when it armed. */
  cqArm(cq: Cq, ci: number): void {
    if (((cq.pi - ci) & U16) !== 0) {
      // Completions arrived before the arm took effect: tell the driver now, or it would sleep on them.
      cq.armed = false;
      this.core.raise(cqVector(cq), 'cq-armed-with-completions', { cqn: cq.cqn });
      return;
    }
    cq.armed = true;
  }

  /** Called when a QP reaches RTS or ERR, so WQEs rung earlier run (or flush). */
  schedule(qp: Qp): void {
    if (qp.running) return;
    void this.drainSq(qp, this.core.epoch);
  }

  /** The QP enters ERR (MODIFY_QP, an error completion, a responder error): both queues flush. */
  toError(qp: Qp, why: string): void {
    if (qp.state === QpState.Err) return;
    this.core.obs.log.debug({ qpn: qp.qpn, why }, 'QP to ERR');
    qp.state = QpState.Err;
    this.schedule(qp);
    void this.flushRq(qp);
  }

  private qpFatal(qp: Qp, reason: QpFatalReason): void {
    this.toError(qp, `QP_FATAL reason ${reason}`);
    this.events.post({ type: EventType.QpFatal, data0: qp.qpn, data1: reason });
  }

  private live(qp: Qp, epoch: number): boolean {
    return epoch === this.core.epoch && this.objects.qps.get(qp.qpn) === qp;
  }

  /** Executes (or flushes) this QP's WQEs in order, one at a time; QPs run concurrently. */
  private async drainSq(qp: Qp, epoch: number): Promise<void> {
    qp.running = true;
    try {
      const sq = qp.sq;
      while (this.live(qp, epoch) && sq.ci !== sq.pi && (qp.state === QpState.Rts || qp.state === QpState.Err)) {
        const index = sq.ci;
        const addr = sq.addr + BigInt(WQE_SIZE * (index & (sq.entries - 1)));
        let raw: Buffer;
        try {
          raw = this.readNow(addr, WQE_SIZE) ?? (await this.core.dma.read(addr, WQE_SIZE));
        } catch (err) {
          if (!this.live(qp, epoch)) return;
          if (!(err instanceof DmaError)) throw err;
          this.core.obs.guestError({ qpn: qp.qpn, wqeIndex: index, addr: `0x${addr.toString(16)}` }, 'WQE not readable (SQ memory unmapped); QP to ERR');
          this.qpFatal(qp, QpFatalReason.WqeUnreadable);
          return;
        }
        if (!this.live(qp, epoch)) return;
        const wqe = decodeWqe(raw);
        let status: CqeStatus;
        let byteLen = 0;
        if (qp.state === QpState.Err) status = CqeStatus.Flushed;
        else if (wqe.opcode === WqeOpcode.Nop) status = CqeStatus.Ok;
        else {
          const wr = this.translate(qp, wqe);
          if (typeof wr === 'number') status = wr;
          else {
            const result = await this.engine.execute(qp, wr);
            if (result === null || !this.live(qp, epoch)) return;
            // MODIFY_QP to RESET (or back to INIT) meanwhile restarted the queue: this WQE is gone.
            if (qp.state !== QpState.Rts && qp.state !== QpState.Err) return;
            status = CQE_STATUS[result.status] ?? CqeStatus.RemOp;
            byteLen = result.byteLen;
          }
        }
        sq.ci = (sq.ci + 1) & U16;
        // An unsignaled WQE that succeeds leaves no CQE; errors and flushes always complete.
        if (status !== CqeStatus.Ok || (wqe.flags & WqeFlags.Unsignaled) === 0) {
          await this.complete(qp.sendCq, { wrId: wqe.wrId, qpn: qp.qpn, byteLen, opcode: wqe.opcode, status, wqeIndex: index, send: true }, epoch);
        }
        if (status !== CqeStatus.Ok && status !== CqeStatus.Flushed) this.toError(qp, `send WQE ${index} completed with status ${status}`);
      }
    } catch (err) {
      // Only a bug gets here (guest mistakes are handled where they happen); the device must survive it.
      this.core.obs.log.error({ err, qpn: qp.qpn }, 'data path failed');
    } finally {
      qp.running = false;
    }
    // A doorbell or state change under a newer epoch, or while this loop was finishing.
    const sq = qp.sq;
    if (this.objects.qps.get(qp.qpn) === qp && sq.ci !== sq.pi && (qp.state === QpState.Rts || qp.state === QpState.Err) && epoch !== this.core.epoch) {
      this.schedule(qp);
    }
  }

  /** A send WQE as the engine's work request, or the CQE status that rejects it. */
  private translate(qp: Qp, w: Wqe): SendWr | CqeStatus {
    const opcode = WR_OPCODE[w.opcode];
    if (opcode === undefined) return CqeStatus.BadOpcode;
    const atomic = opcode === WrOpcode.AtomicCmpSwp || opcode === WrOpcode.AtomicFetchAdd;
    const inline = (w.flags & WqeFlags.Inline) !== 0;
    let sges: Sge[] = [];
    let data: Buffer | null = null;
    if (inline) {
      if (atomic || opcode === WrOpcode.RdmaRead) return CqeStatus.BadOpcode;
      if (w.inlineLen > MAX_INLINE) return CqeStatus.LocLen;
      data = Buffer.from(w.body.subarray(0, w.inlineLen));
    } else if (atomic) {
      if (w.numSge !== 1) return CqeStatus.BadOpcode;
      sges = decodeSges(w.body, 0x10, 1);
    } else {
      if (w.numSge > MAX_SEND_SGE) return CqeStatus.BadOpcode;
      sges = decodeSges(w.body, 0, w.numSge);
    }
    let ud: SendWr['ud'] = null;
    if (qp.type === QpType.Ud) {
      const ah = this.objects.ahs.get(w.ah);
      if (ah === undefined || ah.pd !== qp.pd) return CqeStatus.BadOpcode;
      ud = { dlid: ah.dlid, remoteQpn: w.remoteQpn, qkey: w.remoteQkey };
    }
    const withImm = opcode === WrOpcode.SendImm || opcode === WrOpcode.RdmaWriteImm;
    return {
      opcode,
      sges,
      inline: data,
      imm: withImm ? w.imm : null,
      solicited: (w.flags & WqeFlags.Solicited) !== 0,
      remoteAddr: w.remoteAddr,
      rkey: w.rkey,
      compareAdd: w.compareAdd,
      swap: w.swap,
      ud,
    };
  }

  /** A copy of guest bytes read through a live view, without a DMA round trip; undefined when there is none. Throws DmaError. */
  private readNow(addr: bigint, length: number): Buffer | undefined {
    return this.core.dma.withView?.(addr, length, false, (view) => Buffer.from(view));
  }

  private recvAddr(qp: Qp, index: number): bigint {
    const rq = qp.rq!;
    return rq.addr + BigInt(WQE_SIZE * (index & (rq.entries - 1)));
  }

  private async peekRecv(qp: Qp): Promise<RecvWr | null> {
    const rq = qp.rq;
    if (rq === null || rq.ci === rq.pi) return null;
    const addr = this.recvAddr(qp, rq.ci);
    const raw = this.readNow(addr, WQE_SIZE) ?? (await this.core.dma.read(addr, WQE_SIZE));
    const { numSge, wrId } = RECV_WQE.decode(raw);
    if (numSge > MAX_RECV_SGE) return { wrId, sges: [], valid: false };
    return { wrId, sges: decodeSges(raw, RECV_WQE_SGES, numSge), valid: true };
  }

  private async completeRecv(qp: Qp, wr: RecvWr, c: RecvCompletion): Promise<void> {
    const rq = qp.rq!;
    // The QP entered ERR while this message was being placed: the flush completes the WQE (FLUSHED).
    if (qp.state === QpState.Err) return;
    const index = rq.ci;
    rq.ci = (rq.ci + 1) & U16;
    await this.complete(
      qp.recvCq,
      {
        wrId: wr.wrId,
        qpn: qp.qpn,
        byteLen: c.byteLen,
        opcode: c.rdmaWithImm ? RecvOpcode.RecvRdmaImm : RecvOpcode.Recv,
        status: CQE_STATUS[c.status] ?? CqeStatus.RemOp,
        wqeIndex: index,
        send: false,
        imm: c.imm,
        srcQpn: c.srcQpn,
        solicited: c.solicited,
        slid: c.slid,
      },
      this.core.epoch,
    );
  }

  /** Every posted receive WQE completes FLUSHED, in order. */
  private async flushRq(qp: Qp): Promise<void> {
    const rq = qp.rq;
    const epoch = this.core.epoch;
    if (rq === null) return;
    while (this.live(qp, epoch) && qp.state === QpState.Err && rq.ci !== rq.pi) {
      const index = rq.ci;
      let wrId = 0n;
      try {
        const wrIdField = RECV_WQE.spec.wrId;
        wrId = (await this.core.dma.read(this.recvAddr(qp, index) + BigInt(wrIdField.at), wrIdField.length)).readBigUInt64LE(0);
      } catch (err) {
        if (!(err instanceof DmaError)) throw err;
        // The CQE still tells the driver which WQE ended; only wr_id is unknown.
      }
      if (!this.live(qp, epoch) || rq.ci !== index) return;
      rq.ci = (rq.ci + 1) & U16;
      await this.complete(qp.recvCq, { wrId, qpn: qp.qpn, byteLen: 0, opcode: RecvOpcode.Recv, status: CqeStatus.Flushed, wqeIndex: index, send: false }, epoch);
    }
  }

  /** Writes one CQE (flags word last), then raises the CQ's vector if it was armed. */
  async complete(cq: Cq, cqe: Cqe, epoch: number): Promise<void> {
    const obs = this.core.obs;
    if (cq.error) {
      obs.guestError({ cqn: cq.cqn, qpn: cqe.qpn }, 'completion dropped: CQ is in error');
      return;
    }
    if (((cq.pi - cq.ci) & U16) >= cq.entries) {
      cq.error = true;
      obs.guestError({ cqn: cq.cqn, pi: cq.pi, ci: cq.ci }, 'CQ overflow: completion dropped, CQ in error');
      this.events.post({ type: EventType.CqError, data0: cq.cqn, data1: CqErrorReason.Overflow });
      return;
    }
    const index = cq.pi;
    const phase = phaseOf(index, cq.entries);
    const addr = cq.bufAddr + BigInt(CQE_SIZE * (index & (cq.entries - 1)));
    const entry = encodeCqe(cqe, phase);
    cq.pi = (cq.pi + 1) & U16;
    try {
      // Through a live view both stores happen in this tick, the flags word (with the phase) last.
      const done = this.core.dma.withView?.(addr, CQE_SIZE, true, (view) => {
        entry.copy(view, 0, 0, FLAGS_AT);
        entry.copy(view, FLAGS_AT, FLAGS_AT);
        return true;
      });
      if (done !== true) {
        await this.core.dma.write(addr, entry.subarray(0, FLAGS_AT));
        if (epoch !== this.core.epoch) return;
        await this.core.dma.write(addr + BigInt(FLAGS_AT), entry.subarray(FLAGS_AT));
      }
    } catch (err) {
      if (epoch !== this.core.epoch) return;
      if (!(err instanceof DmaError)) throw err;
      cq.error = true;
      obs.guestError({ cqn: cq.cqn, addr: `0x${addr.toString(16)}` }, 'CQ buffer not writable (unmapped); CQ in error');
      this.events.post({ type: EventType.CqError, data0: cq.cqn, data1: CqErrorReason.BufferUnmapped });
      return;
    }
    if (epoch !== this.core.epoch) return;
    obs.counters.completions++;
    if (obs.verbose) {
      obs.emit('event', { event: 'CQE', cqn: cq.cqn, qpn: cqe.qpn, index, status: cqe.status, wqeIndex: cqe.wqeIndex }, 'completion written');
    }
    if (cq.armed) {
      cq.armed = false;
      this.core.raise(cqVector(cq), 'completion', { cqn: cq.cqn });
    }
  }
}

export type { DpMr, DpQp };
