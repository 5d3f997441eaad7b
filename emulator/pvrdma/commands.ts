// PVRDMA device commands: each request in the command slot checked and answered in the response slot, and the objects they create.
//
// Every handle, index and size the driver sends is checked; a bad one gets the response's err
// field set (the driver turns it into an error of the verb), never a crash. The driver waits for a
// response (and its interrupt) only for commands whose answer it needs; for the *_RESP_NOOP
// commands it returns at once (pvrdma_cmd_post with resp NULL), so the device does not interrupt
// for those: an interrupt arriving later would complete the driver's next command too early.
import { DmaError, type DmaAccess } from '../framework/device';
import { defaultQpAttrs, newQpProto, QpState, QpType, type DpMr, type DpQp, type QpAttrs } from '../datapath/model';
import {
  Cmd, CMD_HDR_SIZE, CMD_NAMES, CMD_RESP_BIT, CMD_RESP_SIZE, Cqe, MR_FLAG_DMA, MTU_1024, MTU_4096, PAGE_DIR_MAX_PAGES, PAGE_SIZE, PHYS_STATE_LINK_UP, PORT_ACTIVE, QP_ATTR_SIZE,
  QP_STATE_MAX, QpAttr, QpMask, RQ_WQE_HDR_SIZE, SGE_SIZE, SqWqe,
} from './abi';
import type { PvrdmaConfig } from './config';
import type { Pvrdma } from './device';

export interface UContext { readonly handle: number; readonly uarPfn: bigint }
export interface Pd { readonly handle: number; readonly ctx: number }
/** An MR is the engine's DpMr (its pages resolved from the page directory at CREATE_MR) plus its handle. */
export interface Mr extends DpMr { readonly handle: number; readonly key: number; readonly dma: boolean }
export interface Cq {
  readonly handle: number;
  readonly cqe: number;
  readonly ctx: number;
  /** Page 0 holds the ring state (its rx half: the device produces), CQEs start at page 1. */
  readonly pages: readonly bigint[];
  armed: boolean;
  armedSolicited: boolean;
  /** Completions of several QPs land here: one CQE write at a time keeps prod_tail in order. */
  tail: Promise<void>;
  /** Overflowed or unwritable: completions are dropped until the CQ is destroyed. */
  error: boolean;
}
/** One work queue inside the QP's pages: `count` WQEs of `wqeSize` bytes from page `firstPage`. */
export interface WorkQueue { readonly firstPage: number; readonly count: number; readonly wqeSize: number; readonly maxSge: number }
export interface Qp extends DpQp {
  readonly handle: number;
  readonly sendCq: number;
  readonly recvCq: number;
  readonly qpType: number;
  readonly sqSigAll: boolean;
  /** The QP's pages from its page directory: page 0 ring state, then the send pages, then the receive pages. */
  readonly pages: readonly bigint[];
  readonly sq: WorkQueue;
  readonly rq: WorkQueue;
  /** struct pvrdma_qp_attr as last modified (QUERY_QP returns it, with the current state). */
  rawAttrs: Buffer;
  /** The send queue is being worked on. */
  running: boolean;
  sendDoorbells: number;
  recvDoorbells: number;
}

const pow2 = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/** The queue geometry the driver and libvmw_pvrdma compute (pvrdma_set_sq_size, pvrdma_create_qp): only powers of two reach the rings. */
export function queueGeometry(firstPage: number, maxWr: number, maxSge: number, header: number): WorkQueue {
  const sges = Math.max(1, maxSge);
  return { firstPage, count: pow2(maxWr), wqeSize: pow2(header + SGE_SIZE * sges), maxSge: sges };
}

/** Allocates the lowest free handle in [1, max): the driver indexes its tables by handle % max. */
class Table<T> extends Map<number, T> {
  constructor(readonly max: number) {
    super();
  }
  alloc(): number | null {
    for (let h = 1; h < this.max; h++) if (!this.has(h)) return h;
    return null;
  }
}

/** QP numbers: 0 and 1 are the special QPs of IB; data QPs start above them. */
const QPN_BASE = 2;

export class PvrdmaObjects {
  readonly contexts: Table<UContext>;
  readonly pds: Table<Pd>;
  readonly mrs: Table<Mr>;
  readonly cqs: Table<Cq>;
  readonly qps: Table<Qp>;
  private mrKey = 0;

  constructor(readonly config: PvrdmaConfig) {
    this.contexts = new Table(config.numUars);
    this.pds = new Table(config.maxPd);
    this.mrs = new Table(config.maxMr);
    this.cqs = new Table(config.maxCq);
    this.qps = new Table(config.maxQp);
  }

  reset(): void {
    for (const t of [this.contexts, this.pds, this.mrs, this.cqs, this.qps]) t.clear();
  }

  summary(): Record<string, number> {
    return { contexts: this.contexts.size, pds: this.pds.size, mrs: this.mrs.size, cqs: this.cqs.size, qps: this.qps.size };
  }

  nextKey(handle: number): number {
    this.mrKey = (this.mrKey + 1) & 0xff;
    return ((handle << 8) | this.mrKey) >>> 0;
  }

  /** The MR a key names: the key's upper bits are the handle, the low byte must match the current key. */
  mrByKey(key: number): Mr | undefined {
    const mr = this.mrs.get(key >>> 8);
    return mr !== undefined && mr.key === key >>> 0 ? mr : undefined;
  }

  qpByQpn(qpn: number): Qp | undefined {
    return this.qps.get(qpn - QPN_BASE);
  }
}

export interface CommandOutcome {
  readonly response: Buffer;
  /** True when the driver waits for this response (its interrupt completes the wait). */
  readonly interrupt: boolean;
}

/** The commands the driver posts without waiting for a response (pvrdma_cmd_post(..., NULL, 0)). */
const NO_WAIT = new Set<number>([Cmd.DestroyPd, Cmd.DestroyMr, Cmd.DestroyCq, Cmd.DestroyUc, Cmd.CreateBind, Cmd.DestroyBind, Cmd.DestroySrq, Cmd.ModifySrq]);

/** Response err values: the driver only tests for nonzero (an errno-like code, as VMware's device sends). */
const ERR_INVALID = 22; // EINVAL
const ERR_NOSPACE = 12; // ENOMEM
const ERR_UNSUPPORTED = 95; // EOPNOTSUPP

class CommandError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** Runs one command from the command slot; always returns a response (err set on failure). */
export async function executeCommand(dev: Pvrdma, req: Buffer): Promise<CommandOutcome> {
  const response = Buffer.alloc(CMD_RESP_SIZE);
  const key = req.readBigUInt64LE(0);
  const cmd = req.readUInt32LE(8);
  response.writeBigUInt64LE(key, 0);
  if (cmd >= Cmd.Max) {
    dev.guestErrors.report('unknown command', { cmd });
    response.writeUInt32LE(0, 8);
    response.writeUInt8(ERR_INVALID, 12);
    return { response, interrupt: true };
  }
  response.writeUInt32LE((CMD_RESP_BIT + cmd) >>> 0, 8);
  try {
    await run(dev, cmd, req, response);
  } catch (err) {
    if (err instanceof DmaError) err = new CommandError(ERR_INVALID, `page directory unreadable: ${err.message}`);
    if (!(err instanceof CommandError)) throw err;
    dev.guestErrors.report('command failed', { cmd: CMD_NAMES[cmd], reason: err.message });
    response.fill(0, CMD_HDR_SIZE);
    response.writeUInt8(err.code, 12);
  }
  return { response, interrupt: !NO_WAIT.has(cmd) };
}

function need<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new CommandError(ERR_INVALID, `${what} does not exist`);
  return v;
}

function alloc(h: number | null, what: string): number {
  if (h === null) throw new CommandError(ERR_NOSPACE, `no free ${what}`);
  return h;
}

async function run(dev: Pvrdma, cmd: number, req: Buffer, resp: Buffer): Promise<void> {
  const o = dev.objects;
  const c = dev.config;
  switch (cmd) {
    case Cmd.QueryPort: {
      const port = req.readUInt8(16);
      if (port !== 1) throw new CommandError(ERR_INVALID, `port ${port}`);
      // struct pvrdma_port_attr at 16
      resp.writeUInt32LE(PORT_ACTIVE, 16);
      resp.writeUInt32LE(MTU_4096, 20);
      resp.writeUInt32LE(MTU_1024, 24);
      resp.writeUInt32LE(c.gidTableLength, 28);
      resp.writeUInt32LE(0, 32); // port_cap_flags (the driver adds CM_SUP)
      resp.writeUInt32LE(0x80000000, 36); // max_msg_sz
      resp.writeUInt16LE(1, 48); // pkey_tbl_len
      resp.writeUInt8(1, 55); // max_vl_num: VL0 only
      resp.writeUInt8(1, 59); // active_width 1X
      resp.writeUInt8(1, 60); // active_speed SDR
      resp.writeUInt8(PHYS_STATE_LINK_UP, 61);
      return;
    }
    case Cmd.QueryPkey: {
      if (req.readUInt8(16) !== 1 || req.readUInt8(17) !== 0) throw new CommandError(ERR_INVALID, 'pkey index');
      resp.writeUInt16LE(0xffff, 16);
      return;
    }
    case Cmd.CreateUc: {
      const h = alloc(o.contexts.alloc(), 'context');
      o.contexts.set(h, { handle: h, uarPfn: req.readBigUInt64LE(16) });
      resp.writeUInt32LE(h, 16);
      return;
    }
    case Cmd.DestroyUc:
      o.contexts.delete(need(o.contexts.get(req.readUInt32LE(16)), 'context').handle);
      return;
    case Cmd.CreatePd: {
      const ctx = req.readUInt32LE(16);
      // kernel PDs carry ctx_handle 0
      if (ctx !== 0) need(o.contexts.get(ctx), 'context');
      const h = alloc(o.pds.alloc(), 'PD');
      o.pds.set(h, { handle: h, ctx });
      resp.writeUInt32LE(h, 16);
      return;
    }
    case Cmd.DestroyPd:
      o.pds.delete(need(o.pds.get(req.readUInt32LE(16)), 'PD').handle);
      return;
    case Cmd.CreateMr: {
      const start = req.readBigUInt64LE(16);
      const length = req.readBigUInt64LE(24);
      const pdirDma = req.readBigUInt64LE(32);
      const pd = req.readUInt32LE(40);
      const access = req.readUInt32LE(44);
      const flags = req.readUInt32LE(48);
      const nchunks = req.readUInt32LE(52);
      need(o.pds.get(pd), 'PD');
      const dma = (flags & MR_FLAG_DMA) !== 0;
      let pages: DpMr['pages'];
      if (dma) {
        // A DMA MR addresses guest memory directly (pvrdma_get_dma_mr): every address is its own IOVA.
        pages = { kind: 'contiguous', dmaAddr: 0n };
      } else {
        if (length === 0n || length > c.maxMrSize) throw new CommandError(ERR_INVALID, `MR length ${length}`);
        if (nchunks < 1 || nchunks > PAGE_DIR_MAX_PAGES) throw new CommandError(ERR_INVALID, `MR of ${nchunks} pages`);
        // The pages must hold [start, start + length) from start's offset in the first page.
        if ((start & BigInt(PAGE_SIZE - 1)) + length > BigInt(nchunks) * BigInt(PAGE_SIZE)) throw new CommandError(ERR_INVALID, `MR of ${length} bytes in ${nchunks} pages`);
        pages = { kind: 'page-list', pageShift: 12, pages: await resolvePageDir(dev.dma, pdirDma, nchunks) };
      }
      const h = alloc(o.mrs.alloc(), 'MR');
      const k = o.nextKey(h);
      o.mrs.set(h, { handle: h, key: k, pdn: pd, iova: dma ? 0n : start, length: dma ? (1n << 64n) - 1n : length, pages, access, dma });
      resp.writeUInt32LE(h, 16);
      resp.writeUInt32LE(k, 20);
      resp.writeUInt32LE(k, 24);
      return;
    }
    case Cmd.DestroyMr:
      o.mrs.delete(need(o.mrs.get(req.readUInt32LE(16)), 'MR').handle);
      return;
    case Cmd.CreateCq: {
      const pdirDma = req.readBigUInt64LE(16);
      const ctx = req.readUInt32LE(24);
      const cqe = req.readUInt32LE(28);
      const nchunks = req.readUInt32LE(32);
      if (ctx !== 0) need(o.contexts.get(ctx), 'context');
      if (cqe < 1 || cqe > c.maxCqe) throw new CommandError(ERR_INVALID, `${cqe} CQEs`);
      if ((cqe & (cqe - 1)) !== 0) throw new CommandError(ERR_INVALID, `${cqe} CQEs is not a power of two`);
      if (nchunks < 2 || nchunks > PAGE_DIR_MAX_PAGES) throw new CommandError(ERR_INVALID, `CQ of ${nchunks} pages`);
      if ((nchunks - 1) * PAGE_SIZE < cqe * Cqe.size) throw new CommandError(ERR_INVALID, `${cqe} CQEs do not fit ${nchunks - 1} pages`);
      const pages = await resolvePageDir(dev.dma, pdirDma, nchunks);
      const h = alloc(o.cqs.alloc(), 'CQ');
      o.cqs.set(h, { handle: h, cqe, ctx, pages, armed: false, armedSolicited: false, tail: Promise.resolve(), error: false });
      resp.writeUInt32LE(h, 16);
      resp.writeUInt32LE(cqe, 20);
      return;
    }
    case Cmd.ResizeCq:
      throw new CommandError(ERR_UNSUPPORTED, 'RESIZE_CQ is not emulated');
    case Cmd.DestroyCq:
      o.cqs.delete(need(o.cqs.get(req.readUInt32LE(16)), 'CQ').handle);
      return;
    case Cmd.CreateQp: {
      const pdirDma = req.readBigUInt64LE(16);
      const pd = req.readUInt32LE(24);
      const sendCq = req.readUInt32LE(28);
      const recvCq = req.readUInt32LE(32);
      const maxSendWr = req.readUInt32LE(40);
      const maxRecvWr = req.readUInt32LE(44);
      const maxSendSge = req.readUInt32LE(48);
      const maxRecvSge = req.readUInt32LE(52);
      const totalChunks = req.readUInt16LE(68);
      const sendChunks = req.readUInt16LE(70);
      const sqSigAll = req.readUInt8(74) !== 0;
      const qpType = req.readUInt8(75);
      const isSrq = req.readUInt8(76);
      need(o.pds.get(pd), 'PD');
      need(o.cqs.get(sendCq), 'send CQ');
      need(o.cqs.get(recvCq), 'receive CQ');
      if (isSrq) throw new CommandError(ERR_UNSUPPORTED, 'QP on an SRQ');
      if (maxSendWr > c.maxQpWr || maxRecvWr > c.maxQpWr || maxSendSge > c.maxSge || maxRecvSge > c.maxSge) throw new CommandError(ERR_INVALID, 'QP capacity above the device limits');
      if (sendChunks + 1 > totalChunks) throw new CommandError(ERR_INVALID, 'send_chunks + the ring page > total_chunks');
      // Page 0 is the ring state, then send_chunks send pages, then the receive pages (pvrdma_create_qp).
      const sq = queueGeometry(1, maxSendWr, maxSendSge, SqWqe.size);
      const rq = queueGeometry(1 + sendChunks, maxRecvWr, maxRecvSge, RQ_WQE_HDR_SIZE);
      if (sq.count * sq.wqeSize > sendChunks * PAGE_SIZE) throw new CommandError(ERR_INVALID, `${sq.count} send WQEs of ${sq.wqeSize} bytes do not fit ${sendChunks} pages`);
      const recvPages = totalChunks - 1 - sendChunks;
      if (maxRecvWr > 0 && rq.count * rq.wqeSize > recvPages * PAGE_SIZE) throw new CommandError(ERR_INVALID, `${rq.count} receive WQEs of ${rq.wqeSize} bytes do not fit ${recvPages} pages`);
      const pages = await resolvePageDir(dev.dma, pdirDma, totalChunks);
      const h = alloc(o.qps.alloc(), 'QP');
      const qpn = QPN_BASE + h;
      // SMI and GSI QPs (the MAD layer's) carry no traffic here; they are datagram QPs to the engine.
      const type = qpType === QpType.Rc || qpType === QpType.Uc ? (qpType as QpType) : QpType.Ud;
      const attrs = defaultQpAttrs();
      o.qps.set(h, {
        handle: h, qpn, pdn: pd, type, hasRecvQueue: maxRecvWr > 0, state: QpState.Reset, attrs, proto: newQpProto(attrs),
        sendCq, recvCq, qpType, sqSigAll, pages, sq, rq, rawAttrs: Buffer.alloc(QP_ATTR_SIZE), running: false, sendDoorbells: 0, recvDoorbells: 0,
      });
      // struct pvrdma_cmd_create_qp_resp_v2 (device version >= PVRDMA_QPHANDLE_VERSION)
      resp.writeUInt32LE(qpn, 16);
      resp.writeUInt32LE(h, 20);
      resp.writeUInt32LE(maxSendWr, 24);
      resp.writeUInt32LE(maxRecvWr, 28);
      resp.writeUInt32LE(maxSendSge, 32);
      resp.writeUInt32LE(maxRecvSge, 36);
      resp.writeUInt32LE(0, 40);
      return;
    }
    case Cmd.ModifyQp: {
      const qp = need(o.qps.get(req.readUInt32LE(16)), 'QP');
      const mask = req.readUInt32LE(20);
      const raw = req.subarray(24, 24 + QP_ATTR_SIZE);
      const state = mask & QpMask.State ? raw.readUInt32LE(QpAttr.qpState) : qp.state;
      if (state > QP_STATE_MAX || state === 4 || state === 5) throw new CommandError(ERR_UNSUPPORTED, `QP state ${state}`);
      const next = Buffer.from(qp.rawAttrs);
      if (mask !== 0) raw.copy(next, 4, 4);
      qp.rawAttrs = next;
      modifyQpAttrs(qp.attrs, mask, raw, (gid) => dev.gidToLid(gid));
      dev.datapath.moveQp(qp, state as QpState);
      return;
    }
    case Cmd.QueryQp: {
      const qp = need(o.qps.get(req.readUInt32LE(16)), 'QP');
      qp.rawAttrs.copy(resp, 16);
      // The state is the device's: an error completion may have moved the QP to ERR since.
      resp.writeUInt32LE(qp.state, 16 + QpAttr.qpState);
      resp.writeUInt32LE(qp.state, 16 + 4);
      return;
    }
    case Cmd.DestroyQp:
      dev.datapath.destroyQp(need(o.qps.get(req.readUInt32LE(16)), 'QP'));
      resp.writeUInt32LE(0, 16);
      return;
    case Cmd.CreateBind: {
      const index = req.readUInt32LE(24);
      if (index >= dev.gids.length) throw new CommandError(ERR_INVALID, `GID index ${index}`);
      dev.bindGid(index, Buffer.from(req.subarray(28, 44)));
      return;
    }
    case Cmd.DestroyBind: {
      const index = req.readUInt32LE(16);
      if (index >= dev.gids.length) throw new CommandError(ERR_INVALID, `GID index ${index}`);
      dev.bindGid(index, null);
      return;
    }
    default:
      throw new CommandError(ERR_UNSUPPORTED, `${CMD_NAMES[cmd]} is not emulated (the device offers no SRQ)`);
  }
}

/** Applies the attributes MODIFY_QP's mask names to the engine's view of the QP; `route` turns the AV's GID into a LID. */
export function modifyQpAttrs(a: QpAttrs, mask: number, raw: Buffer, route: (gid: Buffer) => number | undefined): void {
  if (mask & QpMask.AccessFlags) a.accessFlags = raw.readUInt32LE(QpAttr.accessFlags);
  if (mask & QpMask.Qkey) a.qkey = raw.readUInt32LE(QpAttr.qkey);
  if (mask & QpMask.DestQpn) a.destQpn = raw.readUInt32LE(QpAttr.destQpNum) & 0xffffff;
  if (mask & QpMask.RqPsn) a.rqPsn = raw.readUInt32LE(QpAttr.rqPsn) & 0xffffff;
  if (mask & QpMask.SqPsn) a.sqPsn = raw.readUInt32LE(QpAttr.sqPsn) & 0xffffff;
  if (mask & QpMask.PathMtu) a.pathMtu = raw.readUInt32LE(QpAttr.pathMtu);
  if (mask & QpMask.Timeout) a.timeout = raw.readUInt8(QpAttr.timeout) & 31;
  if (mask & QpMask.RetryCnt) a.retryCnt = raw.readUInt8(QpAttr.retryCnt) & 7;
  if (mask & QpMask.RnrRetry) a.rnrRetry = raw.readUInt8(QpAttr.rnrRetry) & 7;
  if (mask & QpMask.MinRnrTimer) a.minRnrTimer = raw.readUInt8(QpAttr.minRnrTimer) & 31;
  if (mask & QpMask.Av) {
    // RoCE: the peer is named by its GID. An unknown GID routes nowhere (LID 0xffff): the requester's
    // retries then end the WQE with RETRY_EXC, as on a wire with no such host.
    a.dlid = route(raw.subarray(QpAttr.ahAttr, QpAttr.ahAttr + 16)) ?? 0xffff;
  }
}

/** Resolves `count` pages of a page directory: dir[i >> 9] names a table, table[i & 511] the page (pvrdma_page_dir_get_dma). */
export async function resolvePageDir(dma: DmaAccess, pdirDma: bigint, count: number): Promise<bigint[]> {
  if (!Number.isInteger(count) || count < 1 || count > PAGE_DIR_MAX_PAGES) throw new CommandError(ERR_INVALID, `page directory of ${count} pages`);
  const dir = await dma.read(pdirDma, PAGE_SIZE);
  const pages: bigint[] = [];
  for (let t = 0; t * 512 < count; t++) {
    const table = await dma.read(dir.readBigUInt64LE(t * 8), PAGE_SIZE);
    for (let i = 0; i < 512 && t * 512 + i < count; i++) pages.push(table.readBigUInt64LE(i * 8));
  }
  return pages;
}
