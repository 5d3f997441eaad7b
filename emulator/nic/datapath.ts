// The minimal data path (docs/device.md 7.1-7.2): SQ doorbells execute NOP WQEs into CQEs; CQ arming raises the CQ's vector.
import { DmaError } from '../framework/device';
import type { Nic } from './device';
import type { Cq, Qp } from './objects';
import {
  CQE_SIZE,
  CqErrorReason,
  CqeStatus,
  decodeWqe,
  encodeCqe,
  EventType,
  phaseOf,
  QpFatalReason,
  QpState,
  WQE_SIZE,
  WqeOpcode,
  type Cqe,
} from './wire';

/** MSI-X vector of completion vector `v`: 0 and 1 are the admin queue's and the event queue's. */
export function cqVector(cq: Cq): number {
  return 2 + cq.compVector;
}

const U16 = 0xffff;

export class DataPath {
  /** QPs with WQEs to execute; processed one at a time, in doorbell order. */
  private readonly pending = new Set<Qp>();
  private running = false;

  constructor(private readonly nic: Nic) {}

  reset(): void {
    this.pending.clear();
  }

  /** SQ doorbell value already matched to `qp`: records the producer index and schedules the work. */
  sqDoorbell(qp: Qp, pi: number): void {
    if (((pi - qp.sq.ci) & U16) > qp.sq.entries) {
      this.nic.obs.guestError({ qpn: qp.qpn, pi, ci: qp.sq.ci, entries: qp.sq.entries }, 'SQ doorbell claims more WQEs than the SQ holds; QP to ERR');
      this.qpFatal(qp, QpFatalReason.DoorbellIndex);
      return;
    }
    qp.sq.pi = pi;
    this.schedule(qp);
  }

  /** RQ doorbell: recorded; receive WQEs are consumed by incoming messages (a later version). */
  rqDoorbell(qp: Qp, pi: number): void {
    const rq = qp.rq;
    if (rq === null) return;
    if (((pi - rq.ci) & U16) > rq.entries) {
      this.nic.obs.guestError({ qpn: qp.qpn, pi, ci: rq.ci, entries: rq.entries }, 'RQ doorbell claims more WQEs than the RQ holds; QP to ERR');
      this.qpFatal(qp, QpFatalReason.DoorbellIndex);
      return;
    }
    rq.pi = pi;
  }

  cqDoorbell(cq: Cq, ci: number): void {
    const outstanding = (cq.pi - cq.ci) & U16;
    if (((ci - cq.ci) & U16) > outstanding) {
      this.nic.obs.guestError({ cqn: cq.cqn, ci, deviceCi: cq.ci, pi: cq.pi }, 'CQ doorbell consumer index beyond the completions produced; ignored');
      return;
    }
    cq.ci = ci;
  }

  /** Arm word with ARM set; `ci` is the consumer index the driver had when it armed. */
  cqArm(cq: Cq, ci: number): void {
    if (((cq.pi - ci) & U16) !== 0) {
      // Completions arrived before the arm took effect: tell the driver now, or it would sleep on them.
      cq.armed = false;
      this.nic.raise(cqVector(cq), 'cq-armed-with-completions', { cqn: cq.cqn });
      return;
    }
    cq.armed = true;
  }

  /** Called when a QP reaches RTS or ERR, so WQEs rung earlier run (or flush). */
  schedule(qp: Qp): void {
    this.pending.add(qp);
    if (!this.running) void this.run();
  }

  private qpFatal(qp: Qp, reason: QpFatalReason): void {
    qp.state = QpState.Err;
    this.nic.events.post({ type: EventType.QpFatal, data0: qp.qpn, data1: reason });
  }

  private async run(): Promise<void> {
    this.running = true;
    const epoch = this.nic.epoch;
    try {
      while (this.pending.size > 0 && epoch === this.nic.epoch) {
        const qp = this.pending.values().next().value as Qp;
        this.pending.delete(qp);
        await this.drainSq(qp, epoch);
      }
    } catch (err) {
      // Only a bug gets here (guest mistakes are handled where they happen); the loop must survive it.
      this.nic.obs.log.error({ err }, 'data path failed');
    } finally {
      this.running = false;
    }
    // Work scheduled under a newer epoch (after a reset or re-enable) while this loop was draining.
    if (this.pending.size > 0) void this.run();
  }

  private live(qp: Qp, epoch: number): boolean {
    return epoch === this.nic.epoch && this.nic.objects.qps.get(qp.qpn) === qp;
  }

  private async drainSq(qp: Qp, epoch: number): Promise<void> {
    const sq = qp.sq;
    while (this.live(qp, epoch) && sq.ci !== sq.pi && (qp.state === QpState.Rts || qp.state === QpState.Err)) {
      const index = sq.ci;
      const addr = sq.addr + BigInt(WQE_SIZE * (index & (sq.entries - 1)));
      let raw: Buffer;
      try {
        raw = await this.nic.dma.read(addr, WQE_SIZE);
      } catch (err) {
        if (!this.live(qp, epoch)) return;
        if (!(err instanceof DmaError)) throw err;
        this.nic.obs.guestError({ qpn: qp.qpn, wqeIndex: index, addr: `0x${addr.toString(16)}` }, 'WQE not readable (SQ memory unmapped); QP to ERR');
        this.qpFatal(qp, QpFatalReason.WqeUnreadable);
        return;
      }
      if (!this.live(qp, epoch)) return;
      const wqe = decodeWqe(raw);
      let status: CqeStatus;
      if (qp.state === QpState.Err) status = CqeStatus.Flushed;
      else if (wqe.opcode === WqeOpcode.Nop) status = CqeStatus.Ok;
      else status = CqeStatus.BadOpcode;
      sq.ci = (sq.ci + 1) & U16;
      await this.complete(
        qp.sendCq,
        { wrId: wqe.wrId, qpn: qp.qpn, byteLen: 0, opcode: wqe.opcode, status, wqeIndex: index, send: true },
        epoch,
      );
    }
  }

  /** Writes one CQE (flags word last), then raises the CQ's vector if it was armed. */
  async complete(cq: Cq, cqe: Cqe, epoch: number): Promise<void> {
    const obs = this.nic.obs;
    if (cq.error) {
      obs.guestError({ cqn: cq.cqn, qpn: cqe.qpn }, 'completion dropped: CQ is in error');
      return;
    }
    if (((cq.pi - cq.ci) & U16) >= cq.entries) {
      cq.error = true;
      obs.guestError({ cqn: cq.cqn, pi: cq.pi, ci: cq.ci }, 'CQ overflow: completion dropped, CQ in error');
      this.nic.events.post({ type: EventType.CqError, data0: cq.cqn, data1: CqErrorReason.Overflow });
      return;
    }
    const index = cq.pi;
    const phase = phaseOf(index, cq.entries);
    const addr = cq.bufAddr + BigInt(CQE_SIZE * (index & (cq.entries - 1)));
    const entry = encodeCqe(cqe, phase);
    cq.pi = (cq.pi + 1) & U16;
    try {
      await this.nic.dma.write(addr, entry.subarray(0, CQE_SIZE - 4));
      if (epoch !== this.nic.epoch) return;
      await this.nic.dma.write(addr + BigInt(CQE_SIZE - 4), entry.subarray(CQE_SIZE - 4));
    } catch (err) {
      if (epoch !== this.nic.epoch) return;
      if (!(err instanceof DmaError)) throw err;
      cq.error = true;
      obs.guestError({ cqn: cq.cqn, addr: `0x${addr.toString(16)}` }, 'CQ buffer not writable (unmapped); CQ in error');
      this.nic.events.post({ type: EventType.CqError, data0: cq.cqn, data1: CqErrorReason.BufferUnmapped });
      return;
    }
    if (epoch !== this.nic.epoch) return;
    obs.counters.completions++;
    if (obs.verbose) {
      obs.emit('event', { event: 'CQE', cqn: cq.cqn, qpn: cqe.qpn, index, status: cqe.status, wqeIndex: cqe.wqeIndex }, 'completion written');
    }
    if (cq.armed) {
      cq.armed = false;
      this.nic.raise(cqVector(cq), 'completion', { cqn: cq.cqn });
    }
  }
}
