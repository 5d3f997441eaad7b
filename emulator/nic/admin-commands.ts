// The admin commands (docs/device.md 5.5): one handler per opcode, each decoding its named layout from wire.ts, checking in the documented order, and deciding a status and results.
import { defaultQpAttrs, newQpProto, type QpAttrs } from '../datapath/model';
import type { NicCore } from './core';
import type { DataPath } from './datapath';
import type { Ah, Cq, Mr, MrPages, NicObjects, Qp } from './objects';
import { hex } from './trace';
import {
  Access,
  ACCESS_KNOWN,
  AH_PER_QP,
  ALLOC_UAR_CMD,
  CQE_SIZE,
  CREATE_AH_CMD,
  CREATE_CQ_CMD,
  CREATE_QP_CMD,
  DEREG_MR_CMD,
  DESTROY_AH_CMD,
  DESTROY_CQ_CMD,
  DESTROY_PD_CMD,
  DESTROY_QP_CMD,
  FREE_UAR_CMD,
  IF_VERSION,
  isPowerOfTwo,
  MAX_INLINE,
  MAX_MR_PAGES,
  MAX_OUT_LEN,
  MAX_RECV_SGE,
  MAX_SEND_SGE,
  MAX_UARS_PER_ALLOC,
  MODIFY_QP_CMD,
  Opcode,
  OPCODE_NAMES,
  QP_ATTR_KNOWN,
  QP_STATE_NAMES,
  QpAttrMask,
  QpState,
  QpType,
  QUERY_DEVICE_CMD,
  QUERY_DEVICE_OUT,
  QUERY_DEVICE_SIZE,
  QUERY_PORT_CMD,
  QUERY_PORT_OUT,
  QUERY_PORT_SIZE,
  QUEUE_ALIGN,
  REG_MR_CMD,
  REG_MR_PAGE_LIST,
  Status,
  WQE_SIZE,
  type AdminCommand,
} from './wire';

/** What a handler decides; null when the device was reset under it (nothing is posted). */
export type Outcome = { readonly status: Status; readonly result0?: number; readonly result1?: number; readonly why?: string } | null;

/** One command's handler; `epoch` is the device's when the command was read. */
export type AdminHandler = (cmd: AdminCommand, epoch: number) => Promise<Outcome> | Outcome;

export const ok = (result0 = 0, result1 = 0): Outcome => ({ status: Status.Ok, result0, result1 });
export const fail = (status: Status, why: string): Outcome => ({ status, why });

const WRITE_ACCESS = Access.LocalWrite | Access.RemoteWrite | Access.RemoteAtomic;

/** QP transitions the device allows (docs/device.md, MODIFY_QP); any -> RESET and any -> ERR are added in code. */
const QP_TRANSITIONS: ReadonlySet<string> = new Set(['0>1', '1>1', '1>2', '2>3', '3>3']);

export class AdminCommands {
  /** The handler of each opcode the device knows. */
  readonly handlers: Readonly<Record<number, AdminHandler>>;

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
    const { outAddr, outLen } = QUERY_DEVICE_CMD.decode(cmd.raw);
    if (outLen < 1 || outLen > MAX_OUT_LEN) return fail(Status.BadParam, `out_len ${outLen} not in 1..${MAX_OUT_LEN}`);
    const n = Math.min(outLen, QUERY_DEVICE_SIZE);
    if (!this.mapped(outAddr, n, true)) return fail(Status.BadAddress, `output buffer ${hex(outAddr)}+${n} not mapped writable`);
    const cfg = this.core.config;
    const out = QUERY_DEVICE_OUT.encode({
      ifVersion: IF_VERSION,
      vendorId: cfg.vendorId,
      deviceId: cfg.deviceId,
      hwRev: cfg.revision,
      nodeGuid: cfg.nodeGuid,
      maxMrSize: cfg.maxMrSize,
      pageSizeCap: 0x1000n,
      numUars: cfg.numUars,
      numPorts: 1,
      maxPd: cfg.maxPd,
      maxCq: cfg.maxCq,
      maxQp: cfg.maxQp,
      maxMr: cfg.maxMr,
      maxCqe: cfg.maxCqe,
      maxQpWr: cfg.maxQpWr,
      maxSge: MAX_SEND_SGE,
      numCompVectors: cfg.msixVectors - 2,
      maxUarsPerAlloc: MAX_UARS_PER_ALLOC,
      maxMrPages: MAX_MR_PAGES,
      maxRecvSge: MAX_RECV_SGE,
      maxInlineData: MAX_INLINE,
      maxAh: cfg.maxQp * AH_PER_QP,
      // IB_ATOMIC_HCA: atomics are atomic among this daemon's devices.
      atomicCap: 1,
      maxQpRdAtom: 1,
    });
    if (epoch !== this.core.epoch) return null;
    await this.writeOutput(cmd, outAddr, out.subarray(0, n));
    return ok(n, QUERY_DEVICE_SIZE);
  }

  private async queryPort(cmd: AdminCommand, epoch: number): Promise<Outcome> {
    const { outAddr, outLen, port } = QUERY_PORT_CMD.decode(cmd.raw);
    if (outLen < 1 || outLen > MAX_OUT_LEN) return fail(Status.BadParam, `out_len ${outLen} not in 1..${MAX_OUT_LEN}`);
    if (port !== 1) return fail(Status.BadParam, `port ${port} does not exist (only port 1)`);
    const n = Math.min(outLen, QUERY_PORT_SIZE);
    if (!this.mapped(outAddr, n, true)) return fail(Status.BadAddress, `output buffer ${hex(outAddr)}+${n} not mapped writable`);
    const gid = Buffer.alloc(16);
    gid.writeBigUInt64BE(0xfe80000000000000n, 0);
    gid.writeBigUInt64BE(this.core.config.nodeGuid, 8);
    // Enum values are Linux's: IB_PORT_ACTIVE or DOWN, LinkUp, IB_MTU_4096, IB_WIDTH_4X, IB_SPEED_EDR, InfiniBand.
    const out = QUERY_PORT_OUT.encode({
      state: this.core.ready ? 4 : 1,
      physState: 5,
      maxMtu: 5,
      activeMtu: 5,
      lid: this.datapath.lid,
      smLid: 1,
      gidTblLen: 1,
      pkeyTblLen: 1,
      activeWidth: 2,
      activeSpeed: 32,
      linkLayer: 1,
      maxMsgSz: 0x80000000,
      gid0: gid,
    });
    if (epoch !== this.core.epoch) return null;
    await this.writeOutput(cmd, outAddr, out.subarray(0, n));
    return ok(n, QUERY_PORT_SIZE);
  }

  private allocUar(cmd: AdminCommand): Outcome {
    const { count } = ALLOC_UAR_CMD.decode(cmd.raw);
    if (count < 1 || count > MAX_UARS_PER_ALLOC) return fail(Status.BadParam, `count ${count} not in 1..${MAX_UARS_PER_ALLOC}`);
    const first = this.objects.uars.alloc(count);
    if (first === null) return fail(Status.NoResources, `no run of ${count} free UAR pages`);
    this.core.fillUarPages(first, count, 0);
    return ok(first, count);
  }

  private freeUar(cmd: AdminCommand): Outcome {
    const { index } = FREE_UAR_CMD.decode(cmd.raw);
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
    const { pdn } = DESTROY_PD_CMD.decode(cmd.raw);
    const pd = this.objects.pds.get(pdn);
    if (pd === undefined) return fail(Status.BadHandle, `no PD ${pdn}`);
    if (pd.users > 0) return fail(Status.InUse, `PD ${pdn} has ${pd.users} QPs/MRs`);
    this.objects.pds.free(pdn);
    return ok();
  }

  private createCq(cmd: AdminCommand): Outcome {
    const { bufAddr, entries, compVector, uarIndex } = CREATE_CQ_CMD.decode(cmd.raw);
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
    const { cqn } = DESTROY_CQ_CMD.decode(cmd.raw);
    const objs = this.objects;
    const cq = objs.cqs.get(cqn);
    if (cq === undefined) return fail(Status.BadHandle, `no CQ ${cqn}`);
    if (cq.users > 0) return fail(Status.InUse, `CQ ${cqn} is used by QPs`);
    objs.uars.unbindCq(cq);
    objs.cqs.free(cqn);
    return ok();
  }

  private createQp(cmd: AdminCommand): Outcome {
    const { pdn, sendCqn, recvCqn, uarIndex, sqAddr, rqAddr, sqEntries, rqEntries, qpType } = CREATE_QP_CMD.decode(cmd.raw);
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
    const { qpn, state, attrMask: mask, accessFlags, qkey, destQpn, rqPsn, sqPsn, dlid, portNum: port, pathMtu, timeout, retryCnt, rnrRetry, minRnrTimer, pkeyIndex } =
      MODIFY_QP_CMD.decode(cmd.raw);
    const qp = this.objects.qps.get(qpn);
    if (qp === undefined) return fail(Status.BadHandle, `no QP ${qpn}`);
    if (QP_STATE_NAMES[state] === undefined) return fail(Status.BadParam, `state ${state} is not RESET(0), INIT(1), RTR(2), RTS(3) or ERR(6)`);
    const prev = qp.state;
    const allowed = state === QpState.Reset || state === QpState.Err || QP_TRANSITIONS.has(`${prev}>${state}`);
    if (!allowed) return fail(Status.BadState, `QP ${qpn}: ${QP_STATE_NAMES[prev]} -> ${QP_STATE_NAMES[state]} not allowed`);
    const has = (bit: QpAttrMask): boolean => (mask & bit) !== 0;
    if ((mask & ~QP_ATTR_KNOWN) !== 0) return fail(Status.BadParam, `attr_mask ${hex(mask)} has unknown bits`);
    if (has(QpAttrMask.AccessFlags) && (accessFlags & ~ACCESS_KNOWN) !== 0) return fail(Status.BadParam, `access_flags ${hex(accessFlags)} has unknown bits`);
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
    const { pdn, dlid, portNum: port, sl } = CREATE_AH_CMD.decode(cmd.raw);
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
    const { ah: h } = DESTROY_AH_CMD.decode(cmd.raw);
    const objs = this.objects;
    const ah = objs.ahs.get(h);
    if (ah === undefined) return fail(Status.BadHandle, `no AH ${h}`);
    objs.ahs.free(h);
    ah.pd.users--;
    return ok();
  }

  private destroyQp(cmd: AdminCommand): Outcome {
    const { qpn } = DESTROY_QP_CMD.decode(cmd.raw);
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
    const { pdn, access, iova, length, addr, pageCount, pageShift } = REG_MR_CMD.decode(cmd.raw);
    const pageList = (cmd.flags & REG_MR_PAGE_LIST) !== 0;
    const cfg = this.core.config;
    const objs = this.objects;
    const pd = objs.pds.get(pdn);
    if (pd === undefined) return fail(Status.BadHandle, `no PD ${pdn}`);
    if ((access & ~ACCESS_KNOWN) !== 0) return fail(Status.BadParam, `access ${hex(access)} has unknown bits`);
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
      for (let i = 0; i < pageCount; i++) {
        const page = raw.readBigUInt64LE(8 * i);
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
    const { lkey: key } = DEREG_MR_CMD.decode(cmd.raw);
    const objs = this.objects;
    const mr = objs.mrByKey(key);
    if (mr === undefined) return fail(Status.BadHandle, `no MR with lkey ${hex(key)}`);
    objs.mrs.free(mr.index);
    mr.pd.users--;
    return ok();
  }
}
