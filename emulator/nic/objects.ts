// The NIC's objects and their tables: UAR pages with doorbell slots, PDs, CQs, QPs, MRs, each bounded by the device's limits.
import type { NicConfig } from './config';
import type { DpQp, MrPages, QpAttrs, QpProto } from '../datapath/model';
import { AH_PER_QP, type QpState, type QpType } from './wire';

export type { MrPages } from '../datapath/model';

export const UAR_PAGE_SIZE = 4096;
/** The first half of a UAR page holds doorbell slots; the second half is the software's. */
export const UAR_DOORBELL_AREA = 2048;
/** Even 8-byte slots (16*k) are QPs', odd ones (16*k + 8) CQs'. */
export const SLOTS_PER_KIND = UAR_DOORBELL_AREA / 16;

/** Handles 1..max, lowest free first; 0 is never a handle. */
export class HandleTable<T> {
  private readonly items: (T | undefined)[];
  private count = 0;

  constructor(readonly max: number) {
    this.items = new Array<T | undefined>(max + 1);
  }

  get size(): number {
    return this.count;
  }

  /** Picks the lowest free handle and stores make(handle) there; null when full. */
  alloc(make: (handle: number) => T): T | null {
    if (this.count >= this.max) return null;
    for (let h = 1; h <= this.max; h++) {
      if (this.items[h] === undefined) {
        const obj = make(h);
        this.items[h] = obj;
        this.count++;
        return obj;
      }
    }
    return null;
  }

  /** Undefined for anything that is not a live handle (0, out of range, non-integer, freed). */
  get(handle: number): T | undefined {
    if (!Number.isInteger(handle) || handle < 1 || handle > this.max) return undefined;
    return this.items[handle];
  }

  free(handle: number): void {
    if (this.get(handle) === undefined) return;
    this.items[handle] = undefined;
    this.count--;
  }

  *values(): IterableIterator<T> {
    for (let h = 1; h <= this.max; h++) {
      const v = this.items[h];
      if (v !== undefined) yield v;
    }
  }

  clear(): void {
    this.items.fill(undefined);
    this.count = 0;
  }
}

export interface Pd {
  readonly pdn: number;
  /** QPs and MRs that name this PD. */
  users: number;
}

/**
 * A completion queue. Indexes are 16-bit free-running; `pi` is the device's producer index,
 * `ci` the driver's consumer index as last seen in its doorbell.
 */
export interface Cq {
  readonly cqn: number;
  readonly bufAddr: bigint;
  readonly entries: number;
  readonly compVector: number;
  readonly uarIndex: number;
  /** Offset of the doorbell slot in the UAR page; the arm word is at +4. */
  readonly dbOffset: number;
  pi: number;
  ci: number;
  armed: boolean;
  /** After a CQ_ERROR the CQ takes no more completions. */
  error: boolean;
  /** QPs that use this CQ (as send or receive CQ; a QP using it for both counts twice). */
  users: number;
}

/** A work queue (send or receive) of 64-byte WQEs; `pi` from the doorbell, `ci` the device's progress. */
export interface WorkQueue {
  readonly addr: bigint;
  readonly entries: number;
  pi: number;
  ci: number;
}

/** A QP: the device's rings and doorbell, and (DpQp) what the data path engine keeps per QP. */
export interface Qp extends DpQp {
  readonly qpn: number;
  readonly type: QpType;
  readonly pd: Pd;
  readonly pdn: number;
  readonly hasRecvQueue: boolean;
  readonly sendCq: Cq;
  readonly recvCq: Cq;
  readonly uarIndex: number;
  /** Offset of the doorbell slot: SQ doorbell at +0, RQ doorbell at +4. */
  readonly dbOffset: number;
  readonly sq: WorkQueue;
  /** Null when created with rq_entries = 0. */
  readonly rq: WorkQueue | null;
  state: QpState;
  attrs: QpAttrs;
  proto: QpProto;
  /** The send queue is being executed (one WQE at a time). */
  running: boolean;
}

/** A UD address handle: the destination port. */
export interface Ah {
  readonly ah: number;
  readonly pd: Pd;
  readonly dlid: number;
  readonly sl: number;
}

export interface Mr {
  readonly index: number;
  readonly key: number;
  readonly pd: Pd;
  readonly pdn: number;
  readonly access: number;
  readonly iova: bigint;
  readonly length: bigint;
  readonly pages: MrPages;
}

interface UarRun {
  readonly start: number;
  readonly count: number;
}

/** Who owns a doorbell slot on a page. */
export type SlotOwner = { readonly kind: 'qp'; readonly qp: Qp } | { readonly kind: 'cq'; readonly cq: Cq };

/** UAR pages: runs handed out by ALLOC_UAR, and per page the doorbell slots given to QPs and CQs. */
export class UarTable {
  private readonly runOf: Int32Array;
  private readonly runs = new Map<number, UarRun>();
  private readonly qpSlots: (Qp | null)[][];
  private readonly cqSlots: (Cq | null)[][];

  constructor(readonly numUars: number) {
    this.runOf = new Int32Array(numUars).fill(-1);
    this.qpSlots = Array.from({ length: numUars }, () => new Array<Qp | null>(SLOTS_PER_KIND).fill(null));
    this.cqSlots = Array.from({ length: numUars }, () => new Array<Cq | null>(SLOTS_PER_KIND).fill(null));
  }

  get allocatedPages(): number {
    let n = 0;
    for (const r of this.runs.values()) n += r.count;
    return n;
  }

  /** First fit of `count` consecutive free pages; the first index or null. */
  alloc(count: number): number | null {
    for (let start = 0; start + count <= this.numUars; start++) {
      let free = true;
      for (let i = start; i < start + count; i++) {
        if (this.runOf[i] !== -1) {
          free = false;
          start = i;
          break;
        }
      }
      if (!free) continue;
      for (let i = start; i < start + count; i++) this.runOf[i] = start;
      this.runs.set(start, { start, count });
      return start;
    }
    return null;
  }

  /** The run that starts at `start`, or undefined when `start` does not begin one. */
  run(start: number): UarRun | undefined {
    return Number.isInteger(start) ? this.runs.get(start) : undefined;
  }

  isAllocated(index: number): boolean {
    return Number.isInteger(index) && index >= 0 && index < this.numUars && this.runOf[index] !== -1;
  }

  /** True when any doorbell slot of the run's pages is taken. */
  runInUse(run: UarRun): boolean {
    for (let p = run.start; p < run.start + run.count; p++) {
      if (this.qpSlots[p].some((s) => s !== null) || this.cqSlots[p].some((s) => s !== null)) return true;
    }
    return false;
  }

  free(run: UarRun): void {
    for (let i = run.start; i < run.start + run.count; i++) this.runOf[i] = -1;
    this.runs.delete(run.start);
  }

  /** The lowest free slot of that kind on an allocated page (its byte offset), or null. */
  freeSlot(page: number, kind: 'qp' | 'cq'): number | null {
    const slots = kind === 'qp' ? this.qpSlots[page] : this.cqSlots[page];
    const k = slots.indexOf(null);
    if (k < 0) return null;
    return kind === 'qp' ? 16 * k : 16 * k + 8;
  }

  bindQp(qp: Qp): void {
    this.qpSlots[qp.uarIndex][qp.dbOffset / 16] = qp;
  }

  bindCq(cq: Cq): void {
    this.cqSlots[cq.uarIndex][(cq.dbOffset - 8) / 16] = cq;
  }

  unbindQp(qp: Qp): void {
    this.qpSlots[qp.uarIndex][qp.dbOffset / 16] = null;
  }

  unbindCq(cq: Cq): void {
    this.cqSlots[cq.uarIndex][(cq.dbOffset - 8) / 16] = null;
  }

  /** Owner of the 8-byte slot that contains byte `offset` of page `page`, if any. */
  slotOwner(page: number, offset: number): SlotOwner | null {
    if (page < 0 || page >= this.numUars || offset < 0 || offset >= UAR_DOORBELL_AREA) return null;
    const k = offset >> 4;
    if ((offset & 8) === 0) {
      const qp = this.qpSlots[page][k];
      return qp === null ? null : { kind: 'qp', qp };
    }
    const cq = this.cqSlots[page][k];
    return cq === null ? null : { kind: 'cq', cq };
  }

  clear(): void {
    this.runOf.fill(-1);
    this.runs.clear();
    for (const s of this.qpSlots) s.fill(null);
    for (const s of this.cqSlots) s.fill(null);
  }
}

/** Every object the device holds; reset() is the power-on state. */
export class NicObjects {
  readonly uars: UarTable;
  readonly pds: HandleTable<Pd>;
  readonly cqs: HandleTable<Cq>;
  readonly qps: HandleTable<Qp>;
  readonly mrs: HandleTable<Mr>;
  readonly ahs: HandleTable<Ah>;
  /** Per MR index, the 8-bit tag the next registration at that index gets. */
  private readonly mrTags: Uint8Array;

  constructor(cfg: NicConfig) {
    this.uars = new UarTable(cfg.numUars);
    this.pds = new HandleTable<Pd>(cfg.maxPd);
    this.cqs = new HandleTable<Cq>(cfg.maxCq);
    this.qps = new HandleTable<Qp>(cfg.maxQp);
    this.mrs = new HandleTable<Mr>(cfg.maxMr);
    this.ahs = new HandleTable<Ah>(cfg.maxQp * AH_PER_QP);
    this.mrTags = new Uint8Array(cfg.maxMr + 1);
  }

  /** The tag for a new registration at MR index `index` (bumped per registration). */
  nextMrTag(index: number): number {
    const tag = this.mrTags[index];
    this.mrTags[index] = (tag + 1) & 0xff;
    return tag;
  }

  /** The MR a key names, only if index and tag both match. */
  mrByKey(key: number): Mr | undefined {
    const mr = this.mrs.get(key >>> 8);
    return mr !== undefined && mr.key === key >>> 0 ? mr : undefined;
  }

  summary(): Record<string, number> {
    return {
      uarPages: this.uars.allocatedPages,
      pds: this.pds.size,
      cqs: this.cqs.size,
      qps: this.qps.size,
      mrs: this.mrs.size,
      ahs: this.ahs.size,
    };
  }

  reset(): void {
    this.uars.clear();
    this.pds.clear();
    this.cqs.clear();
    this.qps.clear();
    this.mrs.clear();
    this.ahs.clear();
    this.mrTags.fill(0);
  }
}
