// The data path engine: executes send work requests as requester and incoming packets as responder on RC, UC and UD QPs, for any device model that implements DataPathHost.
//
// The engine knows no ring, WQE or CQE layout: the device model reads its own rings, hands the
// engine neutral work requests (model.ts), and writes the results in its own CQE format. What the
// engine owns is the IB semantics: memory checks, RNR and transport retries, PSNs, error classes.
import type { Logger } from 'pino';
import { DmaError, type DmaAccess } from '../framework/device';
import { checkLocal, checkRemote, copyDirect, gather, scatter, type Segment } from './memory';
import type { Fabric, Packet, Reply } from './fabric';
import { PacketOp } from './fabric';
import {
  Access,
  ackTimeoutMs,
  PSN_MASK,
  QpState,
  QpType,
  rnrDelayMs,
  UD_GRH_BYTES,
  WcStatus,
  WrOpcode,
  type DpMr,
  type DpQp,
  type RecvCompletion,
  type RecvWr,
  type SendResult,
  type SendWr,
} from './model';

/** What a device model gives the engine. */
export interface DataPathHost {
  readonly dma: DmaAccess;
  readonly log: Logger;
  /** Changes when the device resets: work begun under an older epoch writes nothing more. */
  epoch(): number;
  qp(qpn: number): DpQp | undefined;
  mrByLkey(key: number): DpMr | undefined;
  mrByRkey(key: number): DpMr | undefined;
  /** The next posted receive WR of `qp`, not consumed; null when none is posted. May reject with DmaError. */
  peekRecv(qp: DpQp): Promise<RecvWr | null>;
  /** Consumes the receive WR peekRecv returned and writes its completion. */
  completeRecv(qp: DpQp, wr: RecvWr, c: RecvCompletion): Promise<void>;
  /** The QP goes to ERR (the device flushes its queues); `why` is for the log. */
  qpError(qp: DpQp, why: string): void;
  /** The receive queue could not be read: the device's own fatal QP path. */
  recvUnreadable(qp: DpQp, err: DmaError): void;
}

export interface EngineStats {
  sends: number;
  received: number;
  retries: number;
  rnrRetries: number;
  udDropped: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const TIMEOUT: unique symbol = Symbol('timeout');

const OP_OF: Readonly<Record<WrOpcode, PacketOp>> = {
  [WrOpcode.Send]: PacketOp.Send,
  [WrOpcode.SendImm]: PacketOp.SendImm,
  [WrOpcode.RdmaWrite]: PacketOp.RdmaWrite,
  [WrOpcode.RdmaWriteImm]: PacketOp.RdmaWriteImm,
  [WrOpcode.RdmaRead]: PacketOp.RdmaRead,
  [WrOpcode.AtomicCmpSwp]: PacketOp.AtomicCmpSwp,
  [WrOpcode.AtomicFetchAdd]: PacketOp.AtomicFetchAdd,
};

/** Which opcodes each QP type takes (IB's transport service table). */
export function opcodeAllowed(type: QpType, op: WrOpcode): boolean {
  if (type === QpType.Rc) return true;
  if (type === QpType.Uc) return op === WrOpcode.Send || op === WrOpcode.SendImm || op === WrOpcode.RdmaWrite || op === WrOpcode.RdmaWriteImm;
  return op === WrOpcode.Send || op === WrOpcode.SendImm;
}

/**
 * Atomics of every device in the process go through one queue: two responders on one fabric may
 * target the same guest word (loopback, or two devices of one guest), and a read-modify-write
 * through asynchronous DMA would otherwise interleave.
 */
let atomicTail: Promise<unknown> = Promise.resolve();
function serializeAtomic<T>(fn: () => Promise<T>): Promise<T> {
  const run = atomicTail.then(fn, fn);
  atomicTail = run.catch(() => undefined);
  return run;
}

const ok = (byteLen: number): SendResult => ({ status: WcStatus.Success, byteLen });
const err = (status: WcStatus): SendResult => ({ status, byteLen: 0 });

export class DataPathEngine {
  readonly lid: number;
  readonly stats: EngineStats = { sends: 0, received: 0, retries: 0, rnrRetries: 0, udDropped: 0 };
  private closed = false;

  constructor(
    private readonly host: DataPathHost,
    private readonly fabric: Fabric,
  ) {
    this.lid = fabric.attach((pkt) => this.receive(pkt));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.fabric.detach(this.lid);
  }

  private alive(qp: DpQp, epoch: number): boolean {
    return !this.closed && epoch === this.host.epoch() && this.host.qp(qp.qpn) === qp;
  }

  // ---- requester ----

  /**
   * Executes one send WR of `qp` (in RTS) to its end: local checks, the packet, retries.
   * Null when the device was reset or the QP destroyed meanwhile (nothing is to be completed).
   */
  async execute(qp: DpQp, wr: SendWr): Promise<SendResult | null> {
    const epoch = this.host.epoch();
    const host = this.host;
    if (!opcodeAllowed(qp.type, wr.opcode)) return err(WcStatus.LocQpOpErr);
    if (qp.type === QpType.Ud && wr.ud === null) return err(WcStatus.LocQpOpErr);
    const lookup = (k: number) => host.mrByLkey(k);
    const isRead = wr.opcode === WrOpcode.RdmaRead;
    const isAtomic = wr.opcode === WrOpcode.AtomicCmpSwp || wr.opcode === WrOpcode.AtomicFetchAdd;
    let payload: Buffer = Buffer.alloc(0);
    let source: Packet['source'] = null;
    let local: Segment[] = [];
    let length = 0;
    if (isRead || isAtomic) {
      if (wr.inline !== null) return err(WcStatus.LocQpOpErr);
      const c = checkLocal(lookup, qp.pdn, wr.sges, true);
      if (!c.ok) return this.localFail(qp, c.status, c.why);
      if (isAtomic && c.length !== 8) return this.localFail(qp, WcStatus.LocLenErr, `atomic SGE length ${c.length}, not 8`);
      local = c.segs;
      length = c.length;
    } else if (wr.inline !== null) {
      payload = wr.inline;
      length = payload.length;
    } else {
      const c = checkLocal(lookup, qp.pdn, wr.sges, false);
      if (!c.ok) return this.localFail(qp, c.status, c.why);
      length = c.length;
      // A lossless wire to a connected QP: the responder copies straight from this guest memory.
      if (this.fabric.faults === null && qp.type !== QpType.Ud && host.dma.withView !== undefined) {
        if (!c.segs.every((s) => host.dma.isMapped(s.addr, s.length, false))) return this.localFail(qp, WcStatus.LocAccessErr, 'gather list not in mapped guest memory');
        source = { dma: host.dma, segs: c.segs };
      } else {
        try {
          payload = await gather(host.dma, c.segs, c.length);
        } catch (e) {
          if (!(e instanceof DmaError)) throw e;
          return this.alive(qp, epoch) ? this.localFail(qp, WcStatus.LocAccessErr, e.message) : null;
        }
      }
    }
    if (!this.alive(qp, epoch)) return null;
    this.stats.sends++;
    const attrs = qp.attrs;
    const ud = wr.ud;
    const dlid = ud !== null ? ud.dlid : attrs.dlid;
    const pkt: Packet = {
      transport: qp.type,
      srcLid: this.lid,
      srcQpn: qp.qpn,
      dstLid: dlid === 0 ? this.lid : dlid,
      dstQpn: ud !== null ? ud.remoteQpn : attrs.destQpn,
      psn: qp.proto.sendPsn,
      op: OP_OF[wr.opcode],
      // IB: a qkey with the high bit set means "use the QP's own".
      qkey: ud !== null ? (ud.qkey & 0x80000000 ? attrs.qkey : ud.qkey) >>> 0 : 0,
      remoteAddr: wr.remoteAddr,
      rkey: wr.rkey,
      imm: wr.imm,
      solicited: wr.solicited,
      readLength: isRead ? length : isAtomic ? 8 : 0,
      compareAdd: wr.compareAdd,
      swap: wr.swap,
      payload,
      source,
      length: isRead ? 0 : length,
      icrc: null,
    };
    if (qp.type !== QpType.Rc) {
      // Unreliable services: the message leaves, nobody answers.
      qp.proto.sendPsn = (qp.proto.sendPsn + 1) & PSN_MASK;
      await this.fabric.transmit(pkt);
      return this.alive(qp, epoch) ? ok(length) : null;
    }
    let retries = attrs.retryCnt;
    let rnr = attrs.rnrRetry;
    for (;;) {
      const timeout = ackTimeoutMs(qp.attrs.timeout);
      const sent = this.fabric.transmit({ ...pkt });
      // Without a fault plan the wire answers (or reports a loss) at once: the ACK timer only matters
      // when a delay can make an answer late, and a timer per message costs throughput.
      const timed = timeout !== null && this.fabric.faults !== null;
      const reply: Reply | null | typeof TIMEOUT = timed ? await Promise.race([sent, sleep(timeout).then((): typeof TIMEOUT => TIMEOUT)]) : await sent;
      if (!this.alive(qp, epoch)) return null;
      // A QP moved to ERR (or RESET) while this WQE waited for an answer: the WQE is flushed.
      if (qp.state !== QpState.Rts) return err(WcStatus.WrFlushErr);
      if (reply === null || reply === TIMEOUT) {
        if (reply === null && timeout !== null) await sleep(timeout);
        if (!this.alive(qp, epoch)) return null;
        if (qp.state !== QpState.Rts) return err(WcStatus.WrFlushErr);
        if (retries-- <= 0) return this.localFail(qp, WcStatus.RetryExcErr, `no answer from LID ${pkt.dstLid} QP ${pkt.dstQpn} after ${attrs.retryCnt + 1} tries`);
        this.stats.retries++;
        continue;
      }
      if (reply.kind === 'rnr') {
        // rnr_retry 7 means forever, as in IB.
        if (attrs.rnrRetry !== 7 && rnr-- <= 0) return this.localFail(qp, WcStatus.RnrRetryExcErr, `receiver not ready after ${attrs.rnrRetry + 1} tries`);
        this.stats.rnrRetries++;
        await sleep(reply.delayMs);
        if (!this.alive(qp, epoch)) return null;
        if (qp.state !== QpState.Rts) return err(WcStatus.WrFlushErr);
        continue;
      }
      if (reply.kind === 'nak') return this.localFail(qp, reply.status, 'responder refused the request');
      qp.proto.sendPsn = (qp.proto.sendPsn + 1) & PSN_MASK;
      if (reply.kind === 'ack') return ok(length);
      const data = reply.kind === 'read' ? reply.data : u64le(reply.value);
      try {
        await scatter(host.dma, local, data.subarray(0, length));
      } catch (e) {
        if (!(e instanceof DmaError)) throw e;
        return this.alive(qp, epoch) ? this.localFail(qp, WcStatus.LocAccessErr, e.message) : null;
      }
      return this.alive(qp, epoch) ? ok(length) : null;
    }
  }

  private localFail(qp: DpQp, status: WcStatus, why: string): SendResult {
    this.host.log.debug({ qpn: qp.qpn, status, why }, 'send work request failed');
    return err(status);
  }

  // ---- responder ----

  /** A packet for this port: one at a time per QP, in arrival order. */
  private receive(pkt: Packet): Promise<Reply | null> {
    const qp = this.host.qp(pkt.dstQpn);
    if (qp === undefined || this.closed) return Promise.resolve(null);
    const run = qp.proto.respTail.then(() => this.respond(qp, pkt));
    qp.proto.respTail = run.then(
      () => undefined,
      () => undefined,
    );
    return run.catch((e: unknown) => {
      // Only a bug gets here; the wire must not break for it: the packet is lost.
      this.host.log.error({ err: e, qpn: qp.qpn }, 'responder failed');
      return null;
    });
  }

  private async respond(qp: DpQp, pkt: Packet): Promise<Reply | null> {
    const host = this.host;
    const epoch = host.epoch();
    if (!this.alive(qp, epoch)) return null;
    if (qp.state !== QpState.Rtr && qp.state !== QpState.Rts) return null;
    if (qp.type !== pkt.transport) return null;
    if (qp.type === QpType.Ud) {
      if (pkt.qkey !== qp.attrs.qkey || (pkt.op !== PacketOp.Send && pkt.op !== PacketOp.SendImm)) {
        this.stats.udDropped++;
        return null;
      }
      return this.respondSend(qp, pkt, epoch);
    }
    // A connected QP takes packets from its peer only.
    const peerLid = qp.attrs.dlid === 0 ? this.lid : qp.attrs.dlid;
    if (pkt.srcQpn !== qp.attrs.destQpn || pkt.srcLid !== peerLid) return null;
    const proto = qp.proto;
    if (qp.type === QpType.Rc && pkt.psn !== proto.expectPsn) {
      const behind = (proto.expectPsn - pkt.psn) & PSN_MASK;
      // A retransmission of something already done: answer again, never execute twice.
      if (behind > 0 && behind <= 0x800000) return this.replay(qp, pkt, epoch);
      return null;
    }
    const reply = await this.execute1(qp, pkt, epoch);
    if (reply === null) return null;
    // IB's responder error classes put an RC responder in ERR; UC and UD drop what they cannot take.
    if (reply.kind === 'nak' && qp.type === QpType.Rc) {
      host.qpError(qp, `responder error ${reply.status}`);
    } else if (reply.kind !== 'rnr') {
      proto.expectPsn = (pkt.psn + 1) & PSN_MASK;
    }
    return qp.type === QpType.Rc ? reply : null;
  }

  private async replay(qp: DpQp, pkt: Packet, epoch: number): Promise<Reply | null> {
    if (pkt.op === PacketOp.RdmaRead) return this.respondRead(qp, pkt, epoch);
    if (pkt.op === PacketOp.AtomicCmpSwp || pkt.op === PacketOp.AtomicFetchAdd) {
      const last = qp.proto.lastAtomic;
      return last !== null && last.psn === pkt.psn ? { kind: 'atomic', value: last.value } : null;
    }
    return { kind: 'ack' };
  }

  private async execute1(qp: DpQp, pkt: Packet, epoch: number): Promise<Reply | null> {
    switch (pkt.op) {
      case PacketOp.Send:
      case PacketOp.SendImm:
        return this.respondSend(qp, pkt, epoch);
      case PacketOp.RdmaWrite:
      case PacketOp.RdmaWriteImm:
        return this.respondWrite(qp, pkt, epoch);
      case PacketOp.RdmaRead:
        return qp.type === QpType.Rc ? this.respondRead(qp, pkt, epoch) : nak(WcStatus.RemInvReqErr);
      default:
        return qp.type === QpType.Rc ? this.respondAtomic(qp, pkt, epoch) : nak(WcStatus.RemInvReqErr);
    }
  }

  /** The next receive WR, or the reply that ends the message when there is none. */
  private async takeRecv(qp: DpQp): Promise<RecvWr | Reply | null> {
    if (!qp.hasRecvQueue) return qp.type === QpType.Rc ? nak(WcStatus.RemInvReqErr) : null;
    let wr: RecvWr | null;
    try {
      wr = await this.host.peekRecv(qp);
    } catch (e) {
      if (!(e instanceof DmaError)) throw e;
      this.host.recvUnreadable(qp, e);
      return nak(WcStatus.RemOpErr);
    }
    if (wr === null) {
      if (qp.type === QpType.Rc) return { kind: 'rnr', delayMs: rnrDelayMs(qp.attrs.minRnrTimer) };
      this.stats.udDropped++;
      return null;
    }
    return wr;
  }

  private recvDone(pkt: Packet, status: WcStatus, byteLen: number): RecvCompletion {
    return {
      status,
      byteLen: status === WcStatus.Success ? byteLen : 0,
      rdmaWithImm: pkt.op === PacketOp.RdmaWriteImm,
      imm: pkt.op === PacketOp.SendImm || pkt.op === PacketOp.RdmaWriteImm ? pkt.imm : null,
      srcQpn: pkt.srcQpn,
      slid: pkt.srcLid,
      solicited: pkt.solicited,
    };
  }

  /** A receive WQE ends in error: its CQE, and the QP to ERR. */
  private async recvFail(qp: DpQp, wr: RecvWr, pkt: Packet, status: WcStatus, why: string, epoch: number): Promise<void> {
    if (!this.alive(qp, epoch)) return;
    await this.host.completeRecv(qp, wr, this.recvDone(pkt, status, 0));
    this.host.qpError(qp, why);
  }

  private async respondSend(qp: DpQp, pkt: Packet, epoch: number): Promise<Reply | null> {
    const got = await this.takeRecv(qp);
    if (got === null || 'kind' in got) return got;
    const wr = got;
    if (!this.alive(qp, epoch)) return null;
    // The error classes: a malformed or unreachable receive WQE is the responder's own problem (REM_OP to the sender),
    // a message that does not fit is the sender's (REM_INV_REQ).
    if (!wr.valid) {
      await this.recvFail(qp, wr, pkt, WcStatus.LocQpOpErr, 'malformed receive WQE', epoch);
      return nak(WcStatus.RemOpErr);
    }
    const c = checkLocal((k) => this.host.mrByLkey(k), qp.pdn, wr.sges, true);
    if (!c.ok) {
      await this.recvFail(qp, wr, pkt, c.status, c.why, epoch);
      return nak(WcStatus.RemOpErr);
    }
    const grh = qp.type === QpType.Ud ? UD_GRH_BYTES : 0;
    const total = grh + pkt.length;
    if (total > c.length) {
      await this.recvFail(qp, wr, pkt, WcStatus.LocLenErr, `message of ${total} bytes, receive WQE holds ${c.length}`, epoch);
      return nak(WcStatus.RemInvReqErr);
    }
    try {
      if (grh > 0) await this.place({ ...pkt, source: null, payload: Buffer.concat([Buffer.alloc(grh), await this.bytes(pkt)]), length: total }, c.segs);
      else await this.place(pkt, c.segs);
    } catch (e) {
      if (!(e instanceof DmaError)) throw e;
      await this.recvFail(qp, wr, pkt, WcStatus.LocAccessErr, e.message, epoch);
      return nak(WcStatus.RemOpErr);
    }
    if (!this.alive(qp, epoch)) return null;
    this.stats.received++;
    await this.host.completeRecv(qp, wr, this.recvDone(pkt, WcStatus.Success, total));
    return { kind: 'ack' };
  }

  private async respondWrite(qp: DpQp, pkt: Packet, epoch: number): Promise<Reply | null> {
    const c = checkRemote(this.host.mrByRkey(pkt.rkey), qp.pdn, qp.attrs.accessFlags, pkt.remoteAddr, pkt.length, Access.RemoteWrite);
    if (!c.ok) return this.remoteFail(qp, c.status, c.why);
    let wr: RecvWr | null = null;
    if (pkt.op === PacketOp.RdmaWriteImm) {
      // The immediate needs a receive WQE: without one, nothing is written yet (RNR).
      const got = await this.takeRecv(qp);
      if (got === null || 'kind' in got) return got;
      wr = got;
    }
    try {
      await this.place(pkt, c.segs);
    } catch (e) {
      if (!(e instanceof DmaError)) throw e;
      return this.remoteFail(qp, WcStatus.RemOpErr, e.message);
    }
    if (!this.alive(qp, epoch)) return null;
    if (wr !== null) await this.host.completeRecv(qp, wr, this.recvDone(pkt, WcStatus.Success, pkt.length));
    this.stats.received++;
    return { kind: 'ack' };
  }

  private async respondRead(qp: DpQp, pkt: Packet, epoch: number): Promise<Reply | null> {
    const c = checkRemote(this.host.mrByRkey(pkt.rkey), qp.pdn, qp.attrs.accessFlags, pkt.remoteAddr, pkt.readLength, Access.RemoteRead);
    if (!c.ok) return this.remoteFail(qp, c.status, c.why);
    let data: Buffer;
    try {
      data = c.segs.length === 0 ? Buffer.alloc(0) : await gather(this.host.dma, c.segs, pkt.readLength);
    } catch (e) {
      if (!(e instanceof DmaError)) throw e;
      return this.remoteFail(qp, WcStatus.RemOpErr, e.message);
    }
    if (!this.alive(qp, epoch)) return null;
    return { kind: 'read', data };
  }

  private async respondAtomic(qp: DpQp, pkt: Packet, epoch: number): Promise<Reply | null> {
    if ((pkt.remoteAddr & 7n) !== 0n) return this.remoteFail(qp, WcStatus.RemInvReqErr, 'atomic address not 8-byte aligned');
    const c = checkRemote(this.host.mrByRkey(pkt.rkey), qp.pdn, qp.attrs.accessFlags, pkt.remoteAddr, 8, Access.RemoteAtomic);
    if (!c.ok) return this.remoteFail(qp, c.status, c.why);
    // 8 aligned bytes never straddle a page, so one segment.
    const seg = c.segs[0];
    const dma = this.host.dma;
    let value: bigint;
    try {
      value = await serializeAtomic(async () => {
        const old = (await dma.read(seg.addr, 8)).readBigUInt64LE(0);
        const next = pkt.op === PacketOp.AtomicCmpSwp ? (old === pkt.compareAdd ? pkt.swap : old) : BigInt.asUintN(64, old + pkt.compareAdd);
        if (next !== old && this.alive(qp, epoch)) await dma.write(seg.addr, u64le(next));
        return old;
      });
    } catch (e) {
      if (!(e instanceof DmaError)) throw e;
      return this.remoteFail(qp, WcStatus.RemOpErr, e.message);
    }
    if (!this.alive(qp, epoch)) return null;
    qp.proto.lastAtomic = { psn: pkt.psn, value };
    return { kind: 'atomic', value };
  }

  /** The message's bytes (read from the sender's guest memory when the packet only names them). */
  private async bytes(pkt: Packet): Promise<Buffer> {
    return pkt.source === null ? pkt.payload : gather(pkt.source.dma, pkt.source.segs, pkt.length);
  }

  /** Writes the message into `segs` of this device's guest memory: guest to guest when both ends allow it. */
  private async place(pkt: Packet, segs: readonly Segment[]): Promise<void> {
    if (pkt.source !== null && copyDirect(pkt.source.dma, pkt.source.segs, this.host.dma, segs, pkt.length)) return;
    await scatter(this.host.dma, segs, await this.bytes(pkt));
  }

  private remoteFail(qp: DpQp, status: WcStatus, why: string): Reply {
    this.host.log.debug({ qpn: qp.qpn, status, why }, 'incoming request refused');
    return nak(status);
  }
}

function nak(status: WcStatus): Reply {
  return { kind: 'nak', status };
}

function u64le(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
}
