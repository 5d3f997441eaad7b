// PVRDMA device commands: each request in the command slot checked and answered in the response slot, and the objects they create.
//
// Every handle, index and size the driver sends is checked; a bad one gets the response's err
// field set (the driver turns it into an error of the verb), never a crash. The driver waits for a
// response (and its interrupt) only for commands whose answer it needs; for the *_RESP_NOOP
// commands it returns at once (pvrdma_cmd_post with resp NULL), so the device does not interrupt
// for those: an interrupt arriving later would complete the driver's next command too early.
import { Cmd, CMD_HDR_SIZE, CMD_NAMES, CMD_RESP_BIT, CMD_RESP_SIZE, MTU_1024, MTU_4096, PAGE_DIR_MAX_PAGES, PHYS_STATE_LINK_UP, PORT_ACTIVE, QP_ATTR_SIZE } from './abi';
import type { PvrdmaConfig } from './config';
import type { Pvrdma } from './device';

export interface UContext { readonly handle: number; readonly uarPfn: bigint }
export interface Pd { readonly handle: number; readonly ctx: number }
export interface Mr { readonly handle: number; readonly pd: number; readonly start: bigint; readonly length: bigint; readonly pdirDma: bigint; readonly nchunks: number; readonly access: number; readonly dma: boolean }
export interface Cq { readonly handle: number; readonly pdirDma: bigint; readonly nchunks: number; readonly cqe: number; readonly ctx: number; armed: boolean; armedSolicited: boolean }
export interface Qp {
  readonly handle: number;
  readonly qpn: number;
  readonly pd: number;
  readonly sendCq: number;
  readonly recvCq: number;
  readonly pdirDma: bigint;
  readonly totalChunks: number;
  readonly sendChunks: number;
  readonly qpType: number;
  readonly maxSendWr: number;
  readonly maxRecvWr: number;
  readonly maxSendSge: number;
  readonly maxRecvSge: number;
  /** struct pvrdma_qp_attr as last modified (QUERY_QP returns it). */
  attrs: Buffer;
  sendDoorbells: number;
  recvDoorbells: number;
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

  /** A QP doorbell on a UAR page; the work requests themselves are the data path's. */
  qpDoorbell(_page: number, handle: number, send: boolean, recv: boolean): boolean {
    const qp = this.qps.get(handle);
    if (qp === undefined) return false;
    if (send) qp.sendDoorbells++;
    if (recv) qp.recvDoorbells++;
    return true;
  }

  nextKey(handle: number): number {
    this.mrKey = (this.mrKey + 1) & 0xff;
    return ((handle << 8) | this.mrKey) >>> 0;
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
export function executeCommand(dev: Pvrdma, req: Buffer): CommandOutcome {
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
    run(dev, cmd, req, response);
  } catch (err) {
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

function run(dev: Pvrdma, cmd: number, req: Buffer, resp: Buffer): void {
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
      const dma = (flags & 1) !== 0;
      if (!dma && (length === 0n || length > c.maxMrSize)) throw new CommandError(ERR_INVALID, `MR length ${length}`);
      if (nchunks > PAGE_DIR_MAX_PAGES) throw new CommandError(ERR_INVALID, `MR of ${nchunks} pages`);
      const h = alloc(o.mrs.alloc(), 'MR');
      o.mrs.set(h, { handle: h, pd, start, length, pdirDma, nchunks, access, dma });
      const k = o.nextKey(h);
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
      if (nchunks < 1 || nchunks > PAGE_DIR_MAX_PAGES) throw new CommandError(ERR_INVALID, `CQ of ${nchunks} pages`);
      const h = alloc(o.cqs.alloc(), 'CQ');
      o.cqs.set(h, { handle: h, pdirDma, nchunks, cqe, ctx, armed: false, armedSolicited: false });
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
      const qpType = req.readUInt8(75);
      const isSrq = req.readUInt8(76);
      need(o.pds.get(pd), 'PD');
      need(o.cqs.get(sendCq), 'send CQ');
      need(o.cqs.get(recvCq), 'receive CQ');
      if (isSrq) throw new CommandError(ERR_UNSUPPORTED, 'QP on an SRQ');
      if (maxSendWr > c.maxQpWr || maxRecvWr > c.maxQpWr || maxSendSge > c.maxSge || maxRecvSge > c.maxSge) throw new CommandError(ERR_INVALID, 'QP capacity above the device limits');
      if (sendChunks > totalChunks) throw new CommandError(ERR_INVALID, 'send_chunks > total_chunks');
      const h = alloc(o.qps.alloc(), 'QP');
      const qpn = QPN_BASE + h;
      o.qps.set(h, { handle: h, qpn, pd, sendCq, recvCq, pdirDma, totalChunks, sendChunks, qpType, maxSendWr, maxRecvWr, maxSendSge, maxRecvSge, attrs: Buffer.alloc(QP_ATTR_SIZE), sendDoorbells: 0, recvDoorbells: 0 });
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
      const attrs = req.subarray(24, 24 + QP_ATTR_SIZE);
      // Keep the attributes the mask names (IB_QP_* bit order = pvrdma_qp_attr_mask); the state always.
      const next = Buffer.from(qp.attrs);
      if (mask & 1) next.writeUInt32LE(attrs.readUInt32LE(0), 0);
      if (mask !== 0) attrs.copy(next, 4, 4);
      qp.attrs = next;
      return;
    }
    case Cmd.QueryQp: {
      const qp = need(o.qps.get(req.readUInt32LE(16)), 'QP');
      qp.attrs.copy(resp, 16);
      return;
    }
    case Cmd.DestroyQp:
      o.qps.delete(need(o.qps.get(req.readUInt32LE(16)), 'QP').handle);
      resp.writeUInt32LE(0, 16);
      return;
    case Cmd.CreateBind: {
      const index = req.readUInt32LE(24);
      if (index >= dev.gids.length) throw new CommandError(ERR_INVALID, `GID index ${index}`);
      dev.gids[index] = Buffer.from(req.subarray(28, 44));
      return;
    }
    case Cmd.DestroyBind: {
      const index = req.readUInt32LE(16);
      if (index >= dev.gids.length) throw new CommandError(ERR_INVALID, `GID index ${index}`);
      dev.gids[index] = null;
      return;
    }
    default:
      throw new CommandError(ERR_UNSUPPORTED, `${CMD_NAMES[cmd]} is not emulated (the device offers no SRQ)`);
  }
}
