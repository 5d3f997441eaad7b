// The PVRDMA device ABI as the upstream driver sees it: registers, shared-region and command layouts, from pvrdma_dev_api.h, pvrdma_verbs.h, pvrdma_ring.h and vmw_pvrdma-abi.h.
//
// Offsets were checked with offsetof() against the 6.1 headers compiled on x86-64 (docs/pvrdma.md).
// All fields are little-endian, as the driver writes them on x86.

export const PCI_VENDOR_ID_VMWARE = 0x15ad;
export const PCI_DEVICE_ID_VMWARE_PVRDMA = 0x0820;
/** Network controller, other (what VMware's device reports). */
export const PVRDMA_CLASS_CODE = 0x028000;

/** The device version: PVRDMA_QPHANDLE_VERSION, the driver's own; 64-bit UAR pfn and QP handles. */
export const PVRDMA_VERSION = 20;
export const PVRDMA_PPN64_VERSION = 19;

/** BARs (enum pvrdma_pci_resource). */
export const BAR_MSIX = 0;
export const BAR_REG = 1;
export const BAR_UAR = 2;

/** Registers in BAR1. */
export const Reg = {
  Version: 0x00,
  DsrLow: 0x04,
  DsrHigh: 0x08,
  Ctl: 0x0c,
  Request: 0x10,
  Err: 0x14,
  Icr: 0x18,
  Imr: 0x1c,
  MacLow: 0x20,
  MacHigh: 0x24,
} as const;

/** enum pvrdma_device_ctl */
export const Ctl = { Activate: 0, Unquiesce: 1, Reset: 2 } as const;

/** enum pvrdma_intr_vector, and the ICR bits (1 << vector). */
export const Vector = { Response: 0, Async: 1, Cq: 2 } as const;
export const PVRDMA_MAX_INTERRUPTS = 3;

/** UAR page doorbells (vmw_pvrdma-abi.h). */
export const UAR_QP_OFFSET = 0;
export const UAR_CQ_OFFSET = 4;
export const UAR_SRQ_OFFSET = 8;
export const UAR_HANDLE_MASK = 0x00ffffff;
export const UAR_QP_SEND = 1 << 30;
export const UAR_QP_RECV = 2 ** 31;
export const UAR_CQ_ARM_SOL = 1 << 29;
export const UAR_CQ_ARM = 1 << 30;
export const UAR_CQ_POLL = 2 ** 31;

/** struct pvrdma_device_shared_region (packed), 280 bytes. */
export const Dsr = {
  driverVersion: 0,
  gosInfo: 8,
  cmdSlotDma: 16,
  respSlotDma: 24,
  asyncRingPages: 32, // struct pvrdma_ring_page_info: num_pages u32, reserved u32, pdir_dma u64
  cqRingPages: 48,
  uarPfn: 64, // u32 uar_pfn, or u64 uar_pfn64 from PVRDMA_PPN64_VERSION
  caps: 72,
  size: 280,
} as const;

/** struct pvrdma_device_caps, offsets inside it (208 bytes). */
export const Caps = {
  fwVer: 0,
  nodeGuid: 8,
  sysImageGuid: 16,
  maxMrSize: 24,
  pageSizeCap: 32,
  vendorId: 64,
  vendorPartId: 68,
  hwVer: 72,
  maxQp: 76,
  maxQpWr: 80,
  deviceCapFlags: 84,
  maxSge: 88,
  maxSgeRd: 92,
  maxCq: 96,
  maxCqe: 100,
  maxMr: 104,
  maxPd: 108,
  maxQpRdAtom: 112,
  maxResRdAtom: 120,
  maxQpInitRdAtom: 124,
  maxMw: 140,
  maxAh: 164,
  maxSrq: 176,
  maxUar: 188,
  gidTblLen: 192,
  maxPkeys: 196,
  localCaAckDelay: 198,
  physPortCnt: 199,
  mode: 200,
  atomicOps: 201,
  bmmeFlags: 202,
  gidTypes: 203,
  maxFastRegPageListLen: 204,
  size: 208,
} as const;

export const DEVICE_MODE_ROCE = 0;
export const GID_TYPE_FLAG_ROCE_V1 = 1;
export const GID_TYPE_FLAG_ROCE_V2 = 2;

/** Page directories (pvrdma_dev_api.h): directory -> tables -> pages, 512 entries of u64 each. */
export const PDIR_SHIFT = 18;
export const PTABLE_SHIFT = 9;
export const PAGE_DIR_MAX_PAGES = 512 * 512;
export const PAGE_SIZE = 4096;

/** Commands (enum in pvrdma_dev_api.h); responses are 1 << 31 | command. */
export const Cmd = {
  QueryPort: 0,
  QueryPkey: 1,
  CreatePd: 2,
  DestroyPd: 3,
  CreateMr: 4,
  DestroyMr: 5,
  CreateCq: 6,
  ResizeCq: 7,
  DestroyCq: 8,
  CreateQp: 9,
  ModifyQp: 10,
  QueryQp: 11,
  DestroyQp: 12,
  CreateUc: 13,
  DestroyUc: 14,
  CreateBind: 15,
  DestroyBind: 16,
  CreateSrq: 17,
  ModifySrq: 18,
  QuerySrq: 19,
  DestroySrq: 20,
  Max: 21,
} as const;
export const CMD_RESP_BIT = 2 ** 31;
export const CMD_NAMES = Object.keys(Cmd).filter((k) => k !== 'Max');

/** sizeof(union pvrdma_cmd_req) = sizeof(struct pvrdma_cmd_modify_qp). */
export const CMD_REQ_SIZE = 184;
/** sizeof(union pvrdma_cmd_resp) (the largest: query_qp_resp, 16 + 160). */
export const CMD_RESP_SIZE = 176;
/** struct pvrdma_cmd_hdr / pvrdma_cmd_resp_hdr */
export const CMD_HDR_SIZE = 16;

/** struct pvrdma_qp_attr is 160 bytes; qp_state is its first field. */
export const QP_ATTR_SIZE = 160;

/** enum pvrdma_port_state, pvrdma_mtu, and the IB widths/speeds the driver converts. */
export const PORT_ACTIVE = 4;
export const MTU_1024 = 3;
export const MTU_4096 = 5;
export const PHYS_STATE_LINK_UP = 5;

/** Async event types (enum pvrdma_eqe_type) the device posts. */
export const EventType = { CqErr: 0, QpFatal: 1, DeviceFatal: 8, PortActive: 9, PortErr: 10, GidChange: 18 } as const;

/** Ring arithmetic exactly as pvrdma_ring.h does it (the driver's idea of valid, full and empty). */
export function idxValid(idx: number, maxElems: number): boolean {
  return (idx & ~((maxElems << 1) - 1)) === 0;
}
export function ringInc(idx: number, maxElems: number): number {
  return (idx + 1) & ((maxElems << 1) - 1);
}

/** struct pvrdma_qp_attr (pvrdma_verbs.h), offsets inside it; the IB_QP_* mask bits name its fields. */
export const QpAttr = {
  qpState: 0,
  pathMtu: 8,
  qkey: 16,
  rqPsn: 20,
  sqPsn: 24,
  destQpNum: 28,
  accessFlags: 32,
  minRnrTimer: 44,
  timeout: 46,
  retryCnt: 47,
  rnrRetry: 48,
  /** struct pvrdma_ah_attr: grh.dgid is its first 16 bytes. */
  ahAttr: 80,
} as const;

/** enum pvrdma_qp_attr_mask (= IB_QP_*): the bits MODIFY_QP's attr_mask may carry. */
export const QpMask = {
  State: 1 << 0,
  AccessFlags: 1 << 3,
  Qkey: 1 << 6,
  Av: 1 << 7,
  PathMtu: 1 << 8,
  Timeout: 1 << 9,
  RetryCnt: 1 << 10,
  RnrRetry: 1 << 11,
  RqPsn: 1 << 12,
  MinRnrTimer: 1 << 15,
  SqPsn: 1 << 16,
  DestQpn: 1 << 20,
} as const;

/** enum pvrdma_qp_state: the IB values; SQD and SQE are not modelled. */
export const QP_STATE_MAX = 6;

/** The QP's ring state is page 0 of its page directory: struct pvrdma_ring_state, tx = send queue, rx = receive queue. */
export const RING_TX_PROD = 0;
export const RING_TX_CONS = 4;
export const RING_RX_PROD = 8;
export const RING_RX_CONS = 12;

/** struct pvrdma_sq_wqe_hdr (vmw_pvrdma-abi.h), 80 bytes, followed by num_sge struct pvrdma_sge. */
export const SqWqe = {
  wrId: 0,
  numSge: 8,
  opcode: 16,
  sendFlags: 20,
  imm: 24,
  /** wr.rdma and wr.atomic */
  remoteAddr: 32,
  rdmaRkey: 40,
  compareAdd: 40,
  swap: 48,
  atomicRkey: 56,
  /** wr.ud: remote_qpn, remote_qkey, then struct pvrdma_av whose dgid is at +8. */
  udRemoteQpn: 32,
  udRemoteQkey: 36,
  udDgid: 48,
  size: 80,
} as const;
/** struct pvrdma_rq_wqe_hdr: wr_id, num_sge, total_len; the SGEs follow. */
export const RQ_WQE_HDR_SIZE = 16;
/** struct pvrdma_sge: addr u64, length u32, lkey u32. */
export const SGE_SIZE = 16;

/** enum pvrdma_wr_opcode (the values of ibv_wr_opcode). */
export const WrOp = { RdmaWrite: 0, RdmaWriteImm: 1, Send: 2, SendImm: 3, RdmaRead: 4, AtomicCmpSwp: 5, AtomicFetchAdd: 6 } as const;
/** enum pvrdma_wr_flags (IB_SEND_*). */
export const SEND_SIGNALED = 1 << 1;
export const SEND_SOLICITED = 1 << 2;

/** struct pvrdma_cqe (vmw_pvrdma-abi.h), 64 bytes. */
export const Cqe = {
  wrId: 0,
  qp: 8,
  opcode: 16,
  status: 20,
  byteLen: 24,
  imm: 28,
  srcQp: 32,
  wcFlags: 36,
  vendorErr: 40,
  pkeyIndex: 44,
  slid: 46,
  portNum: 50,
  networkHdrType: 57,
  size: 64,
} as const;
/** enum pvrdma_wc_opcode */
export const WcOp = { Send: 0, RdmaWrite: 1, RdmaRead: 2, CompSwap: 3, FetchAdd: 4, Recv: 1 << 7, RecvRdmaImm: (1 << 7) + 1 } as const;
/** enum pvrdma_wc_flags */
export const WC_GRH = 1 << 0;
export const WC_WITH_IMM = 1 << 1;

/** CREATE_MR flags: PVRDMA_MR_FLAG_DMA, a DMA MR addressing guest memory directly. */
export const MR_FLAG_DMA = 1;
