// The admin queue (docs/device.md section 5): commands read by DMA one at a time, in order; one handler per opcode; completions then MSI-X vector 0.
import { DmaError } from '../framework/device';
import type { NicCore } from './core';
import type { DataPath } from './datapath';
import { defaultQpAttrs, newQpProto, type QpAttrs } from '../datapath/model';
import type { Ah, Cq, Mr, MrPages, NicObjects, Qp } from './objects';
import { hex } from './trace';
import {
  ACQ_ENTRY_SIZE,
  AH_PER_QP,
  ASQ_ENTRY_SIZE,
  MAX_INLINE,
  MAX_RECV_SGE,
  MAX_SEND_SGE,
  QP_ATTR_KNOWN,
  QpAttrMask,
  decodeAdminCommand,
  encodeAdminCompletion,
  FatalCode,
  IF_VERSION,
  isPowerOfTwo,
  MAX_MR_PAGES,
  MAX_OUT_LEN,
  MAX_UARS_PER_ALLOC,
  MrAccess,
  Opcode,
  OPCODE_NAMES,
  phaseOf,
  QP_STATE_NAMES,
  QpState,
  QpType,
  QUERY_DEVICE_SIZE,
  QUERY_PORT_SIZE,
  QUEUE_ALIGN,
  Reader,
  REG_MR_PAGE_LIST,
  Status,
  STATUS_NAMES,
  WQE_SIZE,
  Writer,
  CQE_SIZE,
  type AdminCommand,
  type AdminCompletion,
} from './wire';

export const ADMIN_VECTOR = 0;

/** What a handler decides; null when the device was reset under it (nothing is posted). */
type Outcome = { readonly status: Status; readonly result0?: number; readonly result1?: number; readonly why?: string } | null;

const ok = (result0 = 0, result1 = 0): Outcome => ({ status: Status.Ok, result0, result1 });
const fail = (status: Status, why: string): Outcome => ({ status, why });

const WRITE_ACCESS = MrAccess.LocalWrite | MrAccess.RemoteWrite | MrAccess.RemoteAtomic;

/** QP transitions the device allows (docs/device.md, MODIFY_QP); any -> RESET and any -> ERR are added in code. */
const QP_TRANSITIONS: ReadonlySet<string> = new Set(['0>1', '1>1', '1>2', '2>3', '3>3']);

export class AdminQueue {
  private asqBase = 0n;
  private asqSize = 0;
  private acqBase = 0n;
  private acqSize = 0;
  /** ASQ_HEAD: the device's consumer index. */
  head = 0;
  /** The driver's producer index from ASQ_TAIL. */
  tail = 0;
  /** ACQ_TAIL: the device's producer index. */
  acqTail = 0;
  /** ACQ_HEAD: the driver's consumer index. */
  acqHead = 0;
  private active = false;
  /** One command at a time: a doorbell during processing only moves `tail`. */
  private running = false;

  private readonly handlers: Readonly<Record<number, (cmd: AdminCommand, epoch: number) => Promise<Outcome> | Outcome>>;

  constructor(
    private readonly core: NicCore,
    private readonly objects: NicObjects,
    /** MODIFY_QP starts or flushes a QP's work; QUERY_PORT reports the port's LID. */
    private readonly datapath: Pick<DataPath, 'lid' | 'schedule' | 'toError'>,
  ) {
    this.handlers = {
      [Opcode.QueryDevice]: (c, e) => this.queryDevice(c, e),
      [Opcode.QueryPort]: (c, e) => this.queryPort(c, e),
      [Opcode.AllocUar]: (c) => this.allocUar(c),
      [Opcode.FreeUar]: (c) => this.freeUar(c),
      [Opcode.CreatePd]: () => this.createPd(),
      [Opcode.DestroyPd]: (c) => this.destroyPd(c),
      [Opcode.CreateCq]: (c) => this.createCq(c),
      [Opcode.DestroyCq]: (c) => this.destroyCq(c),
      [Opcode.CreateQp]: (c) => this.createQp(c),
      [Opcode.ModifyQp]: (c) => this.modifyQp(c),
      [Opcode.DestroyQp]: (c) => this.destroyQp(c),
      [Opcode.RegMr]: (c, e) => this.regMr(c, e),
      [Opcode.DeregMr]: (c) => this.deregMr(c),
      [Opcode.CreateAh]: (c) => this.createAh(c),
      [Opcode.DestroyAh]: (c) => this.destroyAh(c),
    };
  }

  start(asqBase: bigint, asqSize: number, acqBase: bigint, acqSize: number): void {
    this.asqBase = asqBase;
    this.asqSize = asqSize;
    this.acqBase = acqBase;
    this.acqSize = acqSize;
    this.head = this.tail = this.acqTail = this.acqHead = 0;
    this.active = true;
  }

  stop(): void {
    this.active = false;
    this.head = this.tail = this.acqTail = this.acqHead = 0;
  }

  /** ASQ_TAIL write. False when it claims more entries than the ring holds (fatal code 3 for the caller). */
  setTail(v: number): boolean {
    if (((v - this.head) >>> 0) > this.asqSize) return false;
    this.tail = v >>> 0;
    this.kick();
    return true;
  }

  /** ACQ_HEAD write. False when it is beyond what the device posted (fatal code 3 for the caller). */
  setAcqHead(v: number): boolean {
    if (((this.acqTail - v) >>> 0) > this.acqSize) return false;
    this.acqHead = v >>> 0;
    this.kick();
    return true;
  }

  private kick(): void {
    if (!this.running && this.active) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    const epoch = this.core.epoch;
    let posted = 0;
    try {
      while (this.active && epoch === this.core.epoch && this.head !== this.tail) {
        // Never more completions outstanding than the ACQ holds: wait for ACQ_HEAD instead.
        if (((this.acqTail - this.acqHead) >>> 0) >= this.acqSize) break;
        const addr = this.asqBase + BigInt(ASQ_ENTRY_SIZE * (this.head & (this.asqSize - 1)));
        let raw: Buffer;
        try {
          raw = await this.core.dma.read(addr, ASQ_ENTRY_SIZE);
        } catch (err) {
          if (epoch !== this.core.epoch) break;
          if (!(err instanceof DmaError)) throw err;
          this.core.fatal(FatalCode.AdminQueueAddress, `admin submission queue read failed: ${err.message}`);
          break;
        }
        if (epoch !== this.core.epoch) break;
        this.head = (this.head + 1) >>> 0;
        const cmd = decodeAdminCommand(raw);
        const outcome = await this.execute(cmd, epoch);
        if (outcome === null || epoch !== this.core.epoch) break;
        if (!(await this.complete(cmd, outcome, epoch))) break;
        posted++;
      }
    } catch (err) {
      // Only a bug gets here; the queue must keep working for the next doorbell.
      this.core.obs.log.error({ err }, 'admin queue processing failed');
    } finally {
      this.running = false;
    }
    try {
      if (posted > 0 && epoch === this.core.epoch) this.core.raise(ADMIN_VECTOR, 'admin-completion', { completions: posted });
    } catch (err) {
      this.core.obs.log.error({ err }, 'raising the admin completion vector failed');
    }
    // A doorbell or an ACQ_HEAD that arrived while the last command ran, possibly after a reset and
    // re-enable under a newer epoch (kick() refused to start a second loop while this one ran).
    if (this.active && this.head !== this.tail && ((this.acqTail - this.acqHead) >>> 0) < this.acqSize) {
      this.kick();
    }
  }

  private async execute(cmd: AdminCommand, epoch: number): Promise<Outcome> {
    const handler = this.handlers[cmd.opcode];
    if (handler === undefined) return fail(Status.BadOpcode, `unknown opcode 0x${cmd.opcode.toString(16)}`);
    const { stallAdminOpcode, stallAdminMs } = this.core.config;
    if (stallAdminMs > 0 && cmd.opcode === stallAdminOpcode) {
      // Fault injection (config stallAdminOpcode/stallAdminMs): a command the device sits on, so a
      // driver's timeout path can be tested. A reset meanwhile abandons it like any command.
      const fields = { opcode: cmd.opcode, op: OPCODE_NAMES[cmd.opcode] ?? 'UNKNOWN', cmdId: cmd.cmdId, ms: stallAdminMs };
      this.core.obs.log.warn(fields, 'stalling admin command (fault injection)');
      this.core.obs.emit('admin-stall', { ...fields, phase: 'start' }, 'admin command stalled');
      await new Promise((r) => setTimeout(r, stallAdminMs));
      const abandoned = epoch !== this.core.epoch;
      this.core.obs.emit('admin-stall', { ...fields, phase: abandoned ? 'abandoned' : 'resumed' }, 'admin command stall over');
      if (abandoned) return null;
    }
    this.core.expectDoorbells();
    try {
      return await handler(cmd, epoch);
    } catch (err) {
      if (err instanceof DmaError) return fail(Status.BadAddress, err.message);
      this.core.obs.log.error({ err, opcode: cmd.opcode, cmdId: cmd.cmdId }, 'admin command handler failed');
      return fail(Status.BadParam, 'internal error');
    }
  }

  /** Writes the completion (flags with the phase last); false when the ACQ is gone (fatal). */
  private async complete(cmd: AdminCommand, o: NonNullable<Outcome>, epoch: number): Promise<boolean> {
    const c: AdminCompletion = { cmdId: cmd.cmdId, status: o.status, result0: o.result0 ?? 0, result1: o.result1 ?? 0 };
    const index = this.acqTail;
    const phase = phaseOf(index, this.acqSize);
    const addr = this.acqBase + BigInt(ACQ_ENTRY_SIZE * (index & (this.acqSize - 1)));
    const entry = encodeAdminCompletion(c, phase);
    const stale = encodeAdminCompletion(c, phase ^ 1);
    try {
      await this.core.dma.write(addr, stale);
      if (epoch !== this.core.epoch) return false;
      // The phase write hands the entry to the guest, which may write ACQ_HEAD past it before this
      // DMA's completion reaches us (DMA through client messages): count it posted first.
      this.acqTail = (this.acqTail + 1) >>> 0;
      await this.core.dma.write(addr + 6n, entry.subarray(6, 8));
    } catch (err) {
      if (epoch !== this.core.epoch) return false;
      if (!(err instanceof DmaError)) throw err;
      this.core.fatal(FatalCode.AdminQueueAddress, `admin completion queue write failed: ${err.message}`);
      return false;
    }
    if (epoch !== this.core.epoch) return false;
    const obs = this.core.obs;
    obs.counters.adminCommands++;
    const fields = {
      opcode: cmd.opcode,
      op: OPCODE_NAMES[cmd.opcode] ?? 'UNKNOWN',
      cmdId: cmd.cmdId,
      status: c.status,
      statusName: STATUS_NAMES[c.status],
      result0: c.result0,
      result1: c.result1,
      why: o.why ?? null,
    };
    if (c.status !== Status.Ok) {
      obs.counters.adminErrors++;
      // A failed command is the driver's mistake: worth a warning, not only a debug line.
      obs.log.warn({ guestError: true, ...fields }, 'admin command failed');
      obs.emit('admin', fields, 'admin command failed');
    } else {
      obs.emit('admin', fields, 'admin command');
    }
    return true;
  }

  // ---- helpers shared by handlers ----

  /** A query's answer into the driver's buffer, traced with its address: a driver test checks it lands only in live memory. */
  private async writeOutput(cmd: AdminCommand, addr: bigint, data: Buffer): Promise<void> {
    await this.core.dma.write(addr, data);
    this.core.obs.emit('admin-output', { opcode: cmd.opcode, op: OPCODE_NAMES[cmd.opcode] ?? 'UNKNOWN', cmdId: cmd.cmdId, addr: hex(addr), len: data.length }, 'admin output written');
  }

  private mapped(addr: bigint, length: number, writable: boolean): boolean {
    return length > 0 && addr >= 0n && this.core.dma.isMapped(addr, length, writable);
  }

  private checkRing(addr: bigint, entries: number, max: number, allowZero = false): string | null {
    if (allowZero && entries === 0) return null;
    if (!isPowerOfTwo(entries) || entries < 2 || entries > max) return `entries ${entries} not a power of two in 2..${max}`;
    if (addr % BigInt(QUEUE_ALIGN) !== 0n) return `ring address ${hex(addr)} not ${QUEUE_ALIGN}-byte aligned`;
    return null;
  }

  // ---- one handler per opcode ----

  private async queryDevice(cmd: AdminCommand, epoch: number): Promise<Outcome> {
    const r = new Reader(cmd.raw).at(8);
    const outAddr = r.u64();
    const outLen = r.u32();
    if (outLen < 1 || outLen > MAX_OUT_LEN) return fail(Status.BadParam, `out_len ${outLen} not in 1..${MAX_OUT_LEN}`);
    const n = Math.min(outLen, QUERY_DEVICE_SIZE);
    if (!this.mapped(outAddr, n, true)) return fail(Status.BadAddress, `output buffer ${hex(outAddr)}+${n} not mapped writable`);
    const cfg = this.core.config;
    const out = new Writer(QUERY_DEVICE_SIZE)
      .u32(IF_VERSION)
      .u32(cfg.vendorId)
      .u32(cfg.deviceId)
      .u32(cfg.revision)
      .u64(cfg.nodeGuid)
      .u64(cfg.maxMrSize)
      .u64(0x1000n)
      .u32(cfg.numUars)
      .u32(1)
      .u32(cfg.maxPd)
      .u32(cfg.maxCq)
      .u32(cfg.maxQp)
      .u32(cfg.maxMr)
      .u32(cfg.maxCqe)
      .u32(cfg.maxQpWr)
      .u32(MAX_SEND_SGE)
      .u32(cfg.msixVectors - 2)
      .u32(MAX_UARS_PER_ALLOC)
      .u32(MAX_MR_PAGES)
      .u32(MAX_RECV_SGE)
      .u32(MAX_INLINE)
      .u32(cfg.maxQp * AH_PER_QP)
      .u32(1)
      .u32(1).buf;
    if (epoch !== this.core.epoch) return null;
    await this.writeOutput(cmd, outAddr, out.subarray(0, n));
    return ok(n, QUERY_DEVICE_SIZE);
  }

  private async queryPort(cmd: AdminCommand, epoch: number): Promise<Outcome> {
    const r = new Reader(cmd.raw).at(8);
    const outAddr = r.u64();
    const outLen = r.u32();
    const port = r.u32();
    if (outLen < 1 || outLen > MAX_OUT_LEN) return fail(Status.BadParam, `out_len ${outLen} not in 1..${MAX_OUT_LEN}`);
    if (port !== 1) return fail(Status.BadParam, `port ${port} does not exist (only port 1)`);
    const n = Math.min(outLen, QUERY_PORT_SIZE);
    if (!this.mapped(outAddr, n, true)) return fail(Status.BadAddress, `output buffer ${hex(outAddr)}+${n} not mapped writable`);
    const gid = Buffer.alloc(16);
    gid.writeBigUInt64BE(0xfe80000000000000n, 0);
    gid.writeBigUInt64BE(this.core.config.nodeGuid, 8);
    const out = new Writer(QUERY_PORT_SIZE)
      .u32(this.core.ready ? 4 : 1)
      .u32(5)
      .u32(5)
      .u32(5)
      .u32(this.datapath.lid)
      .u32(1)
      .u32(1)
      .u32(1)
      .u32(2)
      .u32(32)
      .u32(1)
      .u32(0x80000000)
      .bytes(gid).buf;
    if (epoch !== this.core.epoch) return null;
    await this.writeOutput(cmd, outAddr, out.subarray(0, n));
    return ok(n, QUERY_PORT_SIZE);
  }

  private allocUar(cmd: AdminCommand): Outcome {
    const count = new Reader(cmd.raw).at(8).u32();
    if (count < 1 || count > MAX_UARS_PER_ALLOC) return fail(Status.BadParam, `count ${count} not in 1..${MAX_UARS_PER_ALLOC}`);
    const first = this.objects.uars.alloc(count);
    if (first === null) return fail(Status.NoResources, `no run of ${count} free UAR pages`);
    this.core.fillUarPages(first, count, 0);
    return ok(first, count);
  }

  private freeUar(cmd: AdminCommand): Outcome {
    const index = new Reader(cmd.raw).at(8).u32();
    const uars = this.objects.uars;
    const run = uars.run(index);
    if (run === undefined) return fail(Status.BadHandle, `UAR index ${index} does not start an allocated run`);
    if (uars.runInUse(run)) return fail(Status.InUse, `UAR run at ${index} still carries CQ or QP doorbells`);
    uars.free(run);
    this.core.fillUarPages(run.start, run.count, 0xff);
    return ok();
  }

  private createPd(): Outcome {
    const pd = this.objects.pds.alloc((pdn) => ({ pdn, users: 0 }));
    if (pd === null) return fail(Status.NoResources, 'PD table full');
    return ok(pd.pdn);
  }

  private destroyPd(cmd: AdminCommand): Outcome {
    const pdn = new Reader(cmd.raw).at(8).u32();
    const pd = this.objects.pds.get(pdn);
    if (pd === undefined) return fail(Status.BadHandle, `no PD ${pdn}`);
    if (pd.users > 0) return fail(Status.InUse, `PD ${pdn} has ${pd.users} QPs/MRs`);
    this.objects.pds.free(pdn);
    return ok();
  }

  private createCq(cmd: AdminCommand): Outcome {
    const r = new Reader(cmd.raw).at(8);
    const bufAddr = r.u64();
    const entries = r.u32();
    const compVector = r.u32();
    const uarIndex = r.u32();
    const cfg = this.core.config;
    const objs = this.objects;
    const ringBad = this.checkRing(bufAddr, entries, cfg.maxCqe);
    if (ringBad !== null) return fail(Status.BadParam, `CQ ${ringBad}`);
    if (compVector >= cfg.msixVectors - 2) return fail(Status.BadParam, `comp_vector ${compVector} not in 0..${cfg.msixVectors - 3}`);
    if (!objs.uars.isAllocated(uarIndex)) return fail(Status.BadHandle, `UAR index ${uarIndex} not allocated`);
    if (!this.mapped(bufAddr, entries * CQE_SIZE, true)) return fail(Status.BadAddress, `CQ buffer ${hex(bufAddr)}+${entries * CQE_SIZE} not mapped writable`);
    if (objs.cqs.size >= objs.cqs.max) return fail(Status.NoResources, 'CQ table full');
    const dbOffset = objs.uars.freeSlot(uarIndex, 'cq');
    if (dbOffset === null) return fail(Status.NoResources, `no free CQ doorbell slot on UAR page ${uarIndex}`);
    const cq = objs.cqs.alloc(
      (cqn): Cq => ({ cqn, bufAddr, entries, compVector, uarIndex, dbOffset, pi: 0, ci: 0, armed: false, error: false, users: 0 }),
    );
    if (cq === null) return fail(Status.NoResources, 'CQ table full');
    objs.uars.bindCq(cq);
    return ok(cq.cqn, dbOffset);
  }

  private destroyCq(cmd: AdminCommand): Outcome {
    const cqn = new Reader(cmd.raw).at(8).u32();
    const objs = this.objects;
    const cq = objs.cqs.get(cqn);
    if (cq === undefined) return fail(Status.BadHandle, `no CQ ${cqn}`);
    if (cq.users > 0) return fail(Status.InUse, `CQ ${cqn} is used by QPs`);
    objs.uars.unbindCq(cq);
    objs.cqs.free(cqn);
    return ok();
  }

  private createQp(cmd: AdminCommand): Outcome {
    const r = new Reader(cmd.raw).at(8);
    const pdn = r.u32();
    const sendCqn = r.u32();
    const recvCqn = r.u32();
    const uarIndex = r.u32();
    const sqAddr = r.u64();
    const rqAddr = r.u64();
    const sqEntries = r.u32();
    const rqEntries = r.u32();
    const qpType = r.u32();
    const cfg = this.core.config;
    const objs = this.objects;
    if (qpType !== QpType.Rc && qpType !== QpType.Uc && qpType !== QpType.Ud) return fail(Status.BadParam, `qp_type ${qpType} not RC(2), UC(3) or UD(4)`);
    const sqBad = this.checkRing(sqAddr, sqEntries, cfg.maxQpWr);
    if (sqBad !== null) return fail(Status.BadParam, `SQ: ${sqBad}`);
    const rqBad = this.checkRing(rqAddr, rqEntries, cfg.maxQpWr, true);
    if (rqBad !== null) return fail(Status.BadParam, `RQ: ${rqBad}`);
    const pd = objs.pds.get(pdn);
    if (pd === undefined) return fail(Status.BadHandle, `no PD ${pdn}`);
    const sendCq = objs.cqs.get(sendCqn);
    if (sendCq === undefined) return fail(Status.BadHandle, `no send CQ ${sendCqn}`);
    const recvCq = objs.cqs.get(recvCqn);
    if (recvCq === undefined) return fail(Status.BadHandle, `no receive CQ ${recvCqn}`);
    if (!objs.uars.isAllocated(uarIndex)) return fail(Status.BadHandle, `UAR index ${uarIndex} not allocated`);
    if (!this.mapped(sqAddr, sqEntries * WQE_SIZE, false)) return fail(Status.BadAddress, `SQ ${hex(sqAddr)}+${sqEntries * WQE_SIZE} not mapped`);
    if (rqEntries > 0 && !this.mapped(rqAddr, rqEntries * WQE_SIZE, false)) return fail(Status.BadAddress, `RQ ${hex(rqAddr)}+${rqEntries * WQE_SIZE} not mapped`);
    if (objs.qps.size >= objs.qps.max) return fail(Status.NoResources, 'QP table full');
    const dbOffset = objs.uars.freeSlot(uarIndex, 'qp');
    if (dbOffset === null) return fail(Status.NoResources, `no free QP doorbell slot on UAR page ${uarIndex}`);
    const qp = objs.qps.alloc(
      (qpn): Qp => ({
        qpn,
        type: qpType as QpType,
        pd,
        pdn: pd.pdn,
        hasRecvQueue: rqEntries > 0,
        sendCq,
        recvCq,
        uarIndex,
        dbOffset,
        sq: { addr: sqAddr, entries: sqEntries, pi: 0, ci: 0 },
        rq: rqEntries === 0 ? null : { addr: rqAddr, entries: rqEntries, pi: 0, ci: 0 },
        state: QpState.Reset,
        attrs: defaultQpAttrs(),
        proto: newQpProto(defaultQpAttrs()),
        running: false,
      }),
    );
    if (qp === null) return fail(Status.NoResources, 'QP table full');
    pd.users++;
    sendCq.users++;
    recvCq.users++;
    objs.uars.bindQp(qp);
    return ok(qp.qpn, dbOffset);
  }

  private modifyQp(cmd: AdminCommand): Outcome {
    const r = new Reader(cmd.raw).at(8);
    const qpn = r.u32();
    const state = r.u32();
    const mask = r.u32();
    const accessFlags = r.u32();
    const qkey = r.u32();
    const destQpn = r.u32();
    const rqPsn = r.u32();
    const sqPsn = r.u32();
    const dlid = r.u16();
    const port = r.u8();
    const pathMtu = r.u8();
    const timeout = r.u8();
    const retryCnt = r.u8();
    const rnrRetry = r.u8();
    const minRnrTimer = r.u8();
    const pkeyIndex = r.u16();
    const qp = this.objects.qps.get(qpn);
    if (qp === undefined) return fail(Status.BadHandle, `no QP ${qpn}`);
    if (QP_STATE_NAMES[state] === undefined) return fail(Status.BadParam, `state ${state} is not RESET(0), INIT(1), RTR(2), RTS(3) or ERR(6)`);
    const prev = qp.state;
    const allowed = state === QpState.Reset || state === QpState.Err || QP_TRANSITIONS.has(`${prev}>${state}`);
    if (!allowed) return fail(Status.BadState, `QP ${qpn}: ${QP_STATE_NAMES[prev]} -> ${QP_STATE_NAMES[state]} not allowed`);
    const has = (bit: QpAttrMask): boolean => (mask & bit) !== 0;
    if ((mask & ~QP_ATTR_KNOWN) !== 0) return fail(Status.BadParam, `attr_mask ${hex(mask)} has unknown bits`);
    if (has(QpAttrMask.AccessFlags) && (accessFlags & ~MrAccess.All) !== 0) return fail(Status.BadParam, `access_flags ${hex(accessFlags)} has unknown bits`);
    if (has(QpAttrMask.Port) && port !== 1) return fail(Status.BadParam, `port_num ${port} does not exist (only port 1)`);
    if (has(QpAttrMask.PkeyIndex) && pkeyIndex !== 0) return fail(Status.BadParam, `pkey_index ${pkeyIndex}: the table has one entry`);
    if (has(QpAttrMask.PathMtu) && (pathMtu < 1 || pathMtu > 5)) return fail(Status.BadParam, `path_mtu ${pathMtu} not in 1..5`);
    if (has(QpAttrMask.Timeout) && timeout > 31) return fail(Status.BadParam, `timeout ${timeout} not in 0..31`);
    if (has(QpAttrMask.RetryCnt) && retryCnt > 7) return fail(Status.BadParam, `retry_cnt ${retryCnt} not in 0..7`);
    if (has(QpAttrMask.RnrRetry) && rnrRetry > 7) return fail(Status.BadParam, `rnr_retry ${rnrRetry} not in 0..7`);
    if (has(QpAttrMask.MinRnrTimer) && minRnrTimer > 31) return fail(Status.BadParam, `min_rnr_timer ${minRnrTimer} not in 0..31`);
    qp.state = state as QpState;
    if (state === QpState.Reset) {
      qp.sq.pi = qp.sq.ci = 0;
      if (qp.rq !== null) qp.rq.pi = qp.rq.ci = 0;
      qp.attrs = defaultQpAttrs();
      qp.proto = newQpProto(qp.attrs);
      return ok(state, prev);
    }
    const a: QpAttrs = qp.attrs;
    if (has(QpAttrMask.AccessFlags)) a.accessFlags = accessFlags;
    if (has(QpAttrMask.Qkey)) a.qkey = qkey;
    if (has(QpAttrMask.DestQpn)) a.destQpn = destQpn & 0xffffff;
    if (has(QpAttrMask.Av)) a.dlid = dlid;
    if (has(QpAttrMask.PathMtu)) a.pathMtu = pathMtu;
    if (has(QpAttrMask.Timeout)) a.timeout = timeout;
    if (has(QpAttrMask.RetryCnt)) a.retryCnt = retryCnt;
    if (has(QpAttrMask.RnrRetry)) a.rnrRetry = rnrRetry;
    if (has(QpAttrMask.MinRnrTimer)) a.minRnrTimer = minRnrTimer;
    // The PSNs start the engine's sequence numbers in both directions.
    if (has(QpAttrMask.RqPsn)) qp.proto.expectPsn = a.rqPsn = rqPsn & 0xffffff;
    if (has(QpAttrMask.SqPsn)) qp.proto.sendPsn = a.sqPsn = sqPsn & 0xffffff;
    // WQEs rung before RTS run now; in ERR both queues flush.
    if (state === QpState.Rts) this.datapath.schedule(qp);
    if (state === QpState.Err) {
      qp.state = prev;
      this.datapath.toError(qp, 'MODIFY_QP to ERR');
    }
    return ok(state, prev);
  }

  private createAh(cmd: AdminCommand): Outcome {
    const r = new Reader(cmd.raw).at(8);
    const pdn = r.u32();
    const dlid = r.u16();
    const port = r.u8();
    const sl = r.u8();
    const objs = this.objects;
    const pd = objs.pds.get(pdn);
    if (pd === undefined) return fail(Status.BadHandle, `no PD ${pdn}`);
    if (port !== 1) return fail(Status.BadParam, `port_num ${port} does not exist (only port 1)`);
    const ah = objs.ahs.alloc((h): Ah => ({ ah: h, pd, dlid, sl }));
    if (ah === null) return fail(Status.NoResources, 'AH table full');
    pd.users++;
    return ok(ah.ah);
  }

  private destroyAh(cmd: AdminCommand): Outcome {
    const h = new Reader(cmd.raw).at(8).u32();
    const objs = this.objects;
    const ah = objs.ahs.get(h);
    if (ah === undefined) return fail(Status.BadHandle, `no AH ${h}`);
    objs.ahs.free(h);
    ah.pd.users--;
    return ok();
  }

  private destroyQp(cmd: AdminCommand): Outcome {
    const qpn = new Reader(cmd.raw).at(8).u32();
    const objs = this.objects;
    const qp = objs.qps.get(qpn);
    if (qp === undefined) return fail(Status.BadHandle, `no QP ${qpn}`);
    objs.uars.unbindQp(qp);
    objs.qps.free(qpn);
    qp.pd.users--;
    qp.sendCq.users--;
    qp.recvCq.users--;
    return ok();
  }

  private async regMr(cmd: AdminCommand, epoch: number): Promise<Outcome> {
    const r = new Reader(cmd.raw).at(8);
    const pdn = r.u32();
    const access = r.u32();
    const iova = r.u64();
    const length = r.u64();
    const addr = r.u64();
    const pageCount = r.u32();
    const pageShift = r.u32();
    const pageList = (cmd.flags & REG_MR_PAGE_LIST) !== 0;
    const cfg = this.core.config;
    const objs = this.objects;
    const pd = objs.pds.get(pdn);
    if (pd === undefined) return fail(Status.BadHandle, `no PD ${pdn}`);
    if ((access & ~MrAccess.All) !== 0) return fail(Status.BadParam, `access ${hex(access)} has unknown bits`);
    if (length < 1n || length > cfg.maxMrSize) return fail(Status.BadParam, `length ${hex(length)} not in 1..${hex(cfg.maxMrSize)}`);
    const writable = (access & WRITE_ACCESS) !== 0;
    let pages: MrPages;
    if (!pageList) {
      if (length > BigInt(Number.MAX_SAFE_INTEGER) || !this.mapped(addr, Number(length), writable)) {
        return fail(Status.BadAddress, `range ${hex(addr)}+${hex(length)} not mapped${writable ? ' writable' : ''}`);
      }
      pages = { kind: 'contiguous', dmaAddr: addr };
    } else {
      if (pageShift < 12 || pageShift > 30) return fail(Status.BadParam, `page_shift ${pageShift} not in 12..30`);
      if (pageCount < 1 || pageCount > MAX_MR_PAGES) return fail(Status.BadParam, `page_count ${pageCount} not in 1..${MAX_MR_PAGES}`);
      const pageSize = 1n << BigInt(pageShift);
      const first = iova & (pageSize - 1n);
      const need = (first + length + pageSize - 1n) / pageSize;
      if (BigInt(pageCount) !== need) return fail(Status.BadParam, `page_count ${pageCount} but iova/length need ${need}`);
      if (!this.mapped(addr, pageCount * 8, false)) return fail(Status.BadAddress, `page list ${hex(addr)}+${pageCount * 8} not mapped`);
      const raw = await this.core.dma.read(addr, pageCount * 8);
      if (epoch !== this.core.epoch) return null;
      const list: bigint[] = [];
      const lr = new Reader(raw);
      for (let i = 0; i < pageCount; i++) {
        const page = lr.u64();
        if ((page & (pageSize - 1n)) !== 0n) return fail(Status.BadParam, `page ${i} address ${hex(page)} not aligned to ${hex(pageSize)}`);
        if (!this.mapped(page, Number(pageSize), writable)) return fail(Status.BadAddress, `page ${i} ${hex(page)}+${hex(pageSize)} not mapped${writable ? ' writable' : ''}`);
        list.push(page);
      }
      pages = { kind: 'page-list', pageShift, pages: list };
    }
    const mr = objs.mrs.alloc((index): Mr => ({ index, key: ((index << 8) | objs.nextMrTag(index)) >>> 0, pd, pdn: pd.pdn, access, iova, length, pages }));
    if (mr === null) return fail(Status.NoResources, 'MR table full');
    pd.users++;
    return ok(mr.key, mr.key);
  }

  private deregMr(cmd: AdminCommand): Outcome {
    const key = new Reader(cmd.raw).at(8).u32();
    const objs = this.objects;
    const mr = objs.mrByKey(key);
    if (mr === undefined) return fail(Status.BadHandle, `no MR with lkey ${hex(key)}`);
    objs.mrs.free(mr.index);
    mr.pd.users--;
    return ok();
  }
}
