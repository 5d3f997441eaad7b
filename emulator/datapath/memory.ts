// Memory protection and movement for the data path: every SGE and every remote access checked against its MR (key, PD, bounds, access), then moved through the transport's bounds-checked DMA.
import type { DmaAccess } from '../framework/device';
import { Access, MAX_MESSAGE, WcStatus, type DpMr, type Sge } from './model';

/** A contiguous run of guest memory the MR checks allowed. */
export interface Segment {
  readonly addr: bigint;
  readonly length: number;
}

export type Checked = { readonly ok: true; readonly segs: Segment[]; readonly length: number } | { readonly ok: false; readonly status: WcStatus; readonly why: string };

const fail = (status: WcStatus, why: string): Checked => ({ ok: false, status, why });

/** The guest runs of `[iova, +length)` inside `mr` (the caller has checked the bounds). */
export function translate(mr: DpMr, iova: bigint, length: number, out: Segment[]): void {
  if (length === 0) return;
  const offset = iova - mr.iova;
  const p = mr.pages;
  if (p.kind === 'contiguous') {
    out.push({ addr: p.dmaAddr + offset, length });
    return;
  }
  const pageSize = 1n << BigInt(p.pageShift);
  // The MR's first byte sits at `iova mod page size` in the first page (docs/device.md, REG_MR).
  let pos = (mr.iova & (pageSize - 1n)) + offset;
  let left = length;
  while (left > 0) {
    const page = Number(pos >> BigInt(p.pageShift));
    const inPage = pos & (pageSize - 1n);
    const n = Math.min(left, Number(pageSize - inPage));
    const addr = p.pages[page] + inPage;
    const last = out[out.length - 1];
    // Physically adjacent pages become one DMA access.
    if (last !== undefined && last.addr + BigInt(last.length) === addr) out[out.length - 1] = { addr: last.addr, length: last.length + n };
    else out.push({ addr, length: n });
    pos += BigInt(n);
    left -= n;
  }
}

function inBounds(mr: DpMr, addr: bigint, length: number): boolean {
  return addr >= mr.iova && addr + BigInt(length) <= mr.iova + mr.length;
}

/**
 * Checks a local gather/scatter list: each non-empty SGE's lkey names an MR of the QP's PD, lies
 * wholly inside it, and (when the device writes it) the MR allows LOCAL_WRITE.
 */
export function checkLocal(lookup: (lkey: number) => DpMr | undefined, pdn: number, sges: readonly Sge[], write: boolean): Checked {
  const segs: Segment[] = [];
  let total = 0;
  for (const [i, sge] of sges.entries()) {
    if (sge.length === 0) continue;
    total += sge.length;
    if (total > MAX_MESSAGE) return fail(WcStatus.LocLenErr, `gather list longer than ${MAX_MESSAGE} bytes`);
    const mr = lookup(sge.lkey);
    if (mr === undefined) return fail(WcStatus.LocProtErr, `SGE ${i}: lkey 0x${sge.lkey.toString(16)} names no MR`);
    if (mr.pdn !== pdn) return fail(WcStatus.LocProtErr, `SGE ${i}: MR in PD ${mr.pdn}, QP in PD ${pdn}`);
    if (!inBounds(mr, sge.addr, sge.length)) return fail(WcStatus.LocProtErr, `SGE ${i}: [0x${sge.addr.toString(16)}, +${sge.length}) outside the MR`);
    if (write && (mr.access & Access.LocalWrite) === 0) return fail(WcStatus.LocProtErr, `SGE ${i}: MR without LOCAL_WRITE`);
    translate(mr, sge.addr, sge.length, segs);
  }
  return { ok: true, segs, length: total };
}

/** Checks a remote access at the responder: rkey, PD, bounds, and the access bit on both the MR and the QP. */
export function checkRemote(mr: DpMr | undefined, pdn: number, qpAccess: number, addr: bigint, length: number, need: Access): Checked {
  if (mr === undefined) return fail(WcStatus.RemAccessErr, 'rkey names no MR');
  if (mr.pdn !== pdn) return fail(WcStatus.RemAccessErr, `MR in PD ${mr.pdn}, responder QP in PD ${pdn}`);
  if (length > 0 && !inBounds(mr, addr, length)) return fail(WcStatus.RemAccessErr, `[0x${addr.toString(16)}, +${length}) outside the MR`);
  if ((mr.access & need) === 0) return fail(WcStatus.RemAccessErr, `MR lacks access 0x${need.toString(16)}`);
  if ((qpAccess & need) === 0) return fail(WcStatus.RemAccessErr, `responder QP lacks access 0x${need.toString(16)}`);
  const segs: Segment[] = [];
  translate(mr, addr, length, segs);
  return { ok: true, segs, length };
}

/** Reads the segments into one buffer. Rejects with DmaError when the client no longer maps them. */
export async function gather(dma: DmaAccess, segs: readonly Segment[], length: number): Promise<Buffer> {
  if (segs.length === 1) return dma.read(segs[0].addr, segs[0].length);
  const parts = await Promise.all(segs.map((s) => dma.read(s.addr, s.length)));
  return Buffer.concat(parts, length);
}

/** Writes `data` across the segments, in order; the segments hold at least data.length bytes. */
export async function scatter(dma: DmaAccess, segs: readonly Segment[], data: Buffer): Promise<void> {
  let pos = 0;
  for (const s of segs) {
    if (pos >= data.length) break;
    const n = Math.min(s.length, data.length - pos);
    await dma.write(s.addr, data.subarray(pos, pos + n));
    pos += n;
  }
}

/**
 * Copies `length` bytes from the `src` runs of one device's guest memory to the `dst` runs of
 * (possibly) another's through live views, synchronously, so nothing can unmap them in between.
 * False when either side has no view of some run (the caller then gathers and scatters).
 */
export function copyDirect(from: DmaAccess, src: readonly Segment[], to: DmaAccess, dst: readonly Segment[], length: number): boolean {
  const fromView = from.withView;
  const toView = to.withView;
  if (fromView === undefined || toView === undefined) return false;
  let si = 0;
  let so = 0;
  let di = 0;
  let dOff = 0;
  let left = length;
  while (left > 0) {
    const s = src[si];
    const d = dst[di];
    if (s === undefined || d === undefined) return false;
    const n = Math.min(left, s.length - so, d.length - dOff);
    const done = fromView.call(from, s.addr + BigInt(so), n, false, (sv) => toView.call(to, d.addr + BigInt(dOff), n, true, (dv) => sv.copy(dv) === n));
    if (done !== true) return false;
    left -= n;
    so += n;
    dOff += n;
    if (so === s.length) {
      si++;
      so = 0;
    }
    if (dOff === d.length) {
      di++;
      dOff = 0;
    }
  }
  return true;
}
