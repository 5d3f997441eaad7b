// The device-independent data path model: QPs, MRs, work requests and completions as the engine sees them; a device model translates its own WQE/CQE formats into these.
//
// Enum values are Linux's (include/rdma/ib_verbs.h) so that any RDMA device model, whose
// formats are usually built on the same values, translates with a table or not at all.

/** Linux ib_qp_type values the engine carries. */
export const enum QpType {
  Rc = 2,
  Uc = 3,
  Ud = 4,
}

/** Linux ib_qp_state values. */
export const enum QpState {
  Reset = 0,
  Init = 1,
  Rtr = 2,
  Rts = 3,
  Err = 6,
}

/** Linux ib_wc_status values. */
export const enum WcStatus {
  Success = 0,
  LocLenErr = 1,
  LocQpOpErr = 2,
  LocProtErr = 4,
  WrFlushErr = 5,
  LocAccessErr = 8,
  RemInvReqErr = 9,
  RemAccessErr = 10,
  RemOpErr = 11,
  RetryExcErr = 12,
  RnrRetryExcErr = 13,
}

/** Linux IB_ACCESS_* bits, for MRs and (the remote ones) for QPs. */
export const enum Access {
  LocalWrite = 1,
  RemoteWrite = 2,
  RemoteRead = 4,
  RemoteAtomic = 8,
}

export const enum WrOpcode {
  Send,
  SendImm,
  RdmaWrite,
  RdmaWriteImm,
  RdmaRead,
  AtomicCmpSwp,
  AtomicFetchAdd,
}

/** Where an MR's bytes are in guest memory. */
export type MrPages =
  | { readonly kind: 'contiguous'; readonly dmaAddr: bigint }
  | { readonly kind: 'page-list'; readonly pageShift: number; readonly pages: readonly bigint[] };

export interface DpMr {
  readonly pdn: number;
  readonly access: number;
  readonly iova: bigint;
  readonly length: bigint;
  readonly pages: MrPages;
}

export interface Sge {
  readonly addr: bigint;
  readonly length: number;
  readonly lkey: number;
}

/** A UD destination, resolved from the device's address handle. */
export interface UdDest {
  /** 0 = the sender's own port. */
  readonly dlid: number;
  readonly remoteQpn: number;
  readonly qkey: number;
}

export interface SendWr {
  readonly opcode: WrOpcode;
  readonly sges: readonly Sge[];
  /** Inline payload instead of a gather list. */
  readonly inline: Buffer | null;
  readonly imm: number | null;
  readonly solicited: boolean;
  readonly remoteAddr: bigint;
  readonly rkey: number;
  /** Compare (CMP_AND_SWP) or add (FETCH_AND_ADD). */
  readonly compareAdd: bigint;
  readonly swap: bigint;
  readonly ud: UdDest | null;
}

export interface RecvWr {
  readonly wrId: bigint;
  readonly sges: readonly Sge[];
  /** False when the device found the WQE malformed (it then completes with LOC_QP_OP). */
  readonly valid: boolean;
}

export interface SendResult {
  readonly status: WcStatus;
  readonly byteLen: number;
}

export interface RecvCompletion {
  readonly status: WcStatus;
  readonly byteLen: number;
  /** True for RDMA_WRITE_WITH_IMM, false for SEND / SEND_WITH_IMM. */
  readonly rdmaWithImm: boolean;
  readonly imm: number | null;
  readonly srcQpn: number;
  readonly slid: number;
  readonly solicited: boolean;
}

/** IB's path attributes as MODIFY_QP gives them; the engine reads them at every message. */
export interface QpAttrs {
  accessFlags: number;
  qkey: number;
  destQpn: number;
  /** 0 = this device's own port. */
  dlid: number;
  rqPsn: number;
  sqPsn: number;
  pathMtu: number;
  timeout: number;
  retryCnt: number;
  rnrRetry: number;
  minRnrTimer: number;
}

export function defaultQpAttrs(): QpAttrs {
  return { accessFlags: 0, qkey: 0, destQpn: 0, dlid: 0, rqPsn: 0, sqPsn: 0, pathMtu: 5, timeout: 14, retryCnt: 7, rnrRetry: 7, minRnrTimer: 0 };
}

/** The engine's own per-QP protocol state (PSNs in flight, the responder's replay memory). */
export interface QpProto {
  /** Next PSN the requester sends. */
  sendPsn: number;
  /** PSN the responder expects next. */
  expectPsn: number;
  /** The last atomic the responder executed, to answer a retransmission with the same value. */
  lastAtomic: { psn: number; value: bigint } | null;
  /** Serializes incoming messages of one QP (several UD senders may hit it at once). */
  respTail: Promise<void>;
}

export function newQpProto(attrs: QpAttrs): QpProto {
  return { sendPsn: attrs.sqPsn, expectPsn: attrs.rqPsn, lastAtomic: null, respTail: Promise.resolve() };
}

/** What the engine needs of a device's QP object. */
export interface DpQp {
  readonly qpn: number;
  readonly type: QpType;
  readonly pdn: number;
  readonly hasRecvQueue: boolean;
  state: QpState;
  attrs: QpAttrs;
  proto: QpProto;
}

export const PSN_MASK = 0xffffff;
/** A message on this wire is at most 2^31 bytes (IB's limit). */
export const MAX_MESSAGE = 0x80000000;
/** Bytes a UD receive reserves for the GRH in front of the payload. */
export const UD_GRH_BYTES = 40;

/** IB's RNR timer encoding (min_rnr_timer 0..31) in milliseconds. */
const RNR_TIMER_MS = [
  655.36, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.32, 0.48, 0.64, 0.96, 1.28, 1.92, 2.56, 3.84, 5.12, 7.68, 10.24, 15.36, 20.48, 30.72,
  40.96, 61.44, 81.92, 122.88, 163.84, 245.76, 327.68, 491.52,
];

/** The wait before resending after an RNR NAK; timers here have millisecond granularity. */
export function rnrDelayMs(minRnrTimer: number): number {
  return Math.max(1, RNR_TIMER_MS[minRnrTimer & 31]);
}

/** The local ACK timeout, 4.096 us * 2^timeout (at least 1 ms); null = wait forever (timeout 0). */
export function ackTimeoutMs(timeout: number): number | null {
  if (timeout === 0) return null;
  return Math.max(1, 0.004096 * 2 ** Math.min(timeout, 31));
}
