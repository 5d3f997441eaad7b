// Typed bindings to libvfio-user.so.0 through ffi-napi: every C signature, struct layout and constant vrnic uses from it.
//
// Pointers never leave this file. What it exports is TypeScript over Buffers, numbers and bigints:
// a VfuContext owns one vfu_ctx_t and every ffi.Callback handed to C for that context, so the
// callbacks stay reachable exactly as long as C may call them (until vfu_destroy_ctx returns).
// Every callback catches whatever the JavaScript side throws, sets errno and returns -1 (or
// returns nothing for void callbacks): no JS exception ever unwinds into C.
import ffi from '@2060.io/ffi-napi';
import ref from '@2060.io/ref-napi';
import { constants as bufferConstants } from 'node:buffer';
import { Errno, LibraryMissingError, SysError } from './errors';

// ---- constants, under their C names (include/libvfio-user.h, include/pci_defs.h, linux/pci_regs.h) ----

// vfu_trans_t
export const VFU_TRANS_SOCK = 0;
export const VFU_TRANS_PIPE = 1;
// vfu_dev_type_t
export const VFU_DEV_TYPE_PCI = 0;
// vfu_create_ctx flags
export const LIBVFIO_USER_FLAG_ATTACH_NB = 1 << 0;

// region flags
export const VFU_REGION_FLAG_READ = 1 << 0;
export const VFU_REGION_FLAG_WRITE = 1 << 1;
export const VFU_REGION_FLAG_RW = VFU_REGION_FLAG_READ | VFU_REGION_FLAG_WRITE;
export const VFU_REGION_FLAG_MEM = 1 << 2;
export const VFU_REGION_FLAG_ALWAYS_CB = 1 << 3;
export const VFU_REGION_FLAG_64_BITS = 1 << 4;
export const VFU_REGION_FLAG_PREFETCH = 1 << 5;

// enum vfu_reset_type
export const VFU_RESET_DEVICE = 0;
export const VFU_RESET_LOST_CONN = 1;
export const VFU_RESET_PCI_FLR = 2;

// enum vfu_dev_irq_type
export const VFU_DEV_INTX_IRQ = 0;
export const VFU_DEV_MSI_IRQ = 1;
export const VFU_DEV_MSIX_IRQ = 2;
export const VFU_DEV_ERR_IRQ = 3;
export const VFU_DEV_REQ_IRQ = 4;
export const VFU_DEV_NUM_IRQS = 5;

// PCI region indexes
export const VFU_PCI_DEV_BAR0_REGION_IDX = 0;
export const VFU_PCI_DEV_BAR5_REGION_IDX = 5;
export const VFU_PCI_DEV_ROM_REGION_IDX = 6;
export const VFU_PCI_DEV_CFG_REGION_IDX = 7;
export const VFU_PCI_DEV_VGA_REGION_IDX = 8;
export const VFU_PCI_DEV_NUM_REGIONS = 9;

// vfu_pci_type_t
export const VFU_PCI_TYPE_CONVENTIONAL = 0;
export const VFU_PCI_TYPE_PCI_X_1 = 1;
export const VFU_PCI_TYPE_PCI_X_2 = 2;
export const VFU_PCI_TYPE_EXPRESS = 3;
export const PCI_HEADER_TYPE_NORMAL = 0;

// vfu_pci_add_capability flags
export const VFU_CAP_FLAG_EXTENDED = 1 << 0;
export const VFU_CAP_FLAG_CALLBACK = 1 << 1;
export const VFU_CAP_FLAG_READONLY = 1 << 2;

export const VFU_SGL_DIRECT_ACCESS = 1;
export const LIBVFIO_USER_MAX_DMA_REGIONS = 1000 * 1000;

// config space sizes
export const PCI_CFG_SPACE_SIZE = 256;
export const PCI_CFG_SPACE_EXP_SIZE = 4096;

// syslog levels, as vfu_setup_log and the log callback use them
export const LOG_ERR = 3;
export const LOG_WARNING = 4;
export const LOG_NOTICE = 5;
export const LOG_INFO = 6;
export const LOG_DEBUG = 7;

// mmap protections as vfu_dma_info_t.prot and vfu_addr_to_sgl use them
export const PROT_READ = 1;
export const PROT_WRITE = 2;

const { EAGAIN, EINTR, EINVAL, EIO } = Errno;

// ---- struct layouts (x86_64) ----

/** struct iovec { void *iov_base; size_t iov_len; } */
const SIZEOF_IOVEC = 16;

/**
 * vfu_dma_info_t { struct iovec iova; void *vaddr; struct iovec mapping; size_t page_size; uint32_t prot; }
 * Offsets as the compiler lays it out on x86_64 (no packing attribute; 56 bytes with tail padding).
 */
const SIZEOF_VFU_DMA_INFO = 56;
const VFU_DMA_INFO_IOVA_BASE = 0;
const VFU_DMA_INFO_IOVA_LEN = 8;
const VFU_DMA_INFO_VADDR = 16;
// mapping.iov_base (offset 24) is the start of libvfio-user's own mmap: nothing outside C needs it
const VFU_DMA_INFO_MAPPING_LEN = 32;
const VFU_DMA_INFO_PAGE_SIZE = 40;
const VFU_DMA_INFO_PROT = 48;

// ---- the library ----

type Ptr = Buffer;
/** A foreign function that can also run on libuv's threadpool (ffi-napi's .async). */
type AsyncCapable<F extends (...args: never[]) => unknown> = F & {
  async(...args: [...Parameters<F>, (err: unknown, value: ReturnType<F>) => void]): void;
};
/** uint64 arguments accept a number or a decimal string (for values past 2^53). */
type U64 = number | string;

interface VfuLib {
  vfu_create_ctx(trans: number, path: string, flags: number, pvt: Ptr | null, devType: number): Ptr;
  vfu_setup_log(ctx: Ptr, log: Ptr, level: number): number;
  vfu_pci_init(ctx: Ptr, pciType: number, hdrType: number, revision: number): number;
  vfu_pci_set_id(ctx: Ptr, vid: number, did: number, ssvid: number, ssid: number): void;
  vfu_pci_set_class(ctx: Ptr, base: number, sub: number, pi: number): void;
  vfu_pci_get_config_space(ctx: Ptr): Ptr;
  vfu_pci_add_capability(ctx: Ptr, pos: number, flags: number, data: Buffer): number | string;
  vfu_pci_find_capability(ctx: Ptr, extended: boolean, capId: number): number | string;
  vfu_setup_region(
    ctx: Ptr, idx: number, size: U64, cb: Ptr | null, flags: number,
    mmapAreas: Buffer | null, nrMmapAreas: number, fd: number, offset: U64,
  ): number;
  vfu_setup_device_nr_irqs(ctx: Ptr, type: number, count: number): number;
  vfu_setup_irq_state_callback(ctx: Ptr, type: number, cb: Ptr): number;
  vfu_setup_device_dma(ctx: Ptr, maxRegions: U64, reg: Ptr | null, unreg: Ptr | null): number;
  vfu_setup_device_reset_cb(ctx: Ptr, cb: Ptr): number;
  vfu_realize_ctx(ctx: Ptr): number;
  vfu_attach_ctx: AsyncCapable<(ctx: Ptr) => number>;
  vfu_get_poll_fd(ctx: Ptr): number;
  vfu_run_ctx(ctx: Ptr): number;
  vfu_irq_trigger(ctx: Ptr, subindex: number): number;
  dma_sg_size(): number | string;
  // dma_addr is a vfu_dma_addr_t (void *) carrying a guest address: passed as uint64 (same ABI).
  vfu_addr_to_sgl(ctx: Ptr, dmaAddr: U64, len: U64, sgl: Buffer, maxNrSgs: number, prot: number): number;
  vfu_sg_is_mappable(ctx: Ptr, sg: Buffer): boolean;
  vfu_sgl_read(ctx: Ptr, sgl: Buffer, cnt: number, data: Buffer, flags: number): number;
  vfu_sgl_write(ctx: Ptr, sgl: Buffer, cnt: number, data: Buffer, flags: number): number;
  vfu_destroy_ctx(ctx: Ptr): void;
}

interface LibcErrno {
  __errno_location(): Ptr;
}

const definitions = {
  vfu_create_ctx: ['pointer', ['int', 'string', 'int', 'pointer', 'int']],
  vfu_setup_log: ['int', ['pointer', 'pointer', 'int']],
  vfu_pci_init: ['int', ['pointer', 'int', 'int', 'int']],
  vfu_pci_set_id: ['void', ['pointer', 'uint16', 'uint16', 'uint16', 'uint16']],
  vfu_pci_set_class: ['void', ['pointer', 'uint8', 'uint8', 'uint8']],
  vfu_pci_get_config_space: ['pointer', ['pointer']],
  vfu_pci_add_capability: ['int64', ['pointer', 'size_t', 'int', 'pointer']],
  vfu_pci_find_capability: ['size_t', ['pointer', 'bool', 'int']],
  vfu_setup_region: ['int', ['pointer', 'int', 'size_t', 'pointer', 'int', 'pointer', 'uint32', 'int', 'uint64']],
  vfu_setup_device_nr_irqs: ['int', ['pointer', 'int', 'uint32']],
  vfu_setup_irq_state_callback: ['int', ['pointer', 'int', 'pointer']],
  vfu_setup_device_dma: ['int', ['pointer', 'size_t', 'pointer', 'pointer']],
  vfu_setup_device_reset_cb: ['int', ['pointer', 'pointer']],
  vfu_realize_ctx: ['int', ['pointer']],
  vfu_attach_ctx: ['int', ['pointer']],
  vfu_get_poll_fd: ['int', ['pointer']],
  vfu_run_ctx: ['int', ['pointer']],
  vfu_irq_trigger: ['int', ['pointer', 'uint32']],
  dma_sg_size: ['size_t', []],
  vfu_addr_to_sgl: ['int', ['pointer', 'uint64', 'size_t', 'pointer', 'size_t', 'int']],
  vfu_sg_is_mappable: ['bool', ['pointer', 'pointer']],
  vfu_sgl_read: ['int', ['pointer', 'pointer', 'size_t', 'pointer', 'int']],
  vfu_sgl_write: ['int', ['pointer', 'pointer', 'size_t', 'pointer', 'int']],
  vfu_destroy_ctx: ['void', ['pointer']],
} as const;

// Callback signatures (typedefs in libvfio-user.h). ssize_t is int64; pointers arrive as
// zero-length Buffers; loff_t is int64.
const VFU_LOG_FN_T = ['void', ['pointer', 'int', 'string']] as const;
const VFU_REGION_ACCESS_CB_T = ['int64', ['pointer', 'pointer', 'size_t', 'int64', 'bool']] as const;
const VFU_RESET_CB_T = ['int', ['pointer', 'int']] as const;
const VFU_DMA_REGISTER_CB_T = ['void', ['pointer', 'pointer']] as const;
const VFU_DMA_UNREGISTER_CB_T = ['void', ['pointer', 'pointer']] as const;
const VFU_DEV_IRQ_STATE_CB_T = ['void', ['pointer', 'uint32', 'uint32', 'bool']] as const;

export const LIBVFIO_USER_SONAME = 'libvfio-user.so.0';

let lib: VfuLib | null = null;
let libc: LibcErrno | null = null;
let loadError: string | null = null;
let loaded = false;
let sgSize = 0;
let hot: HotFunctions | null = null;

// ---- the per-request calls, without ffi-napi's per-call marshalling ----
//
// ffi-napi's ForeignFunction proxy allocates a result buffer, an argument array and one buffer per
// argument, then derefs the result, on every call (its cost: docs/performance.md, section 2).
// vfu_run_ctx runs once per client request and vfu_irq_trigger once per
// interrupt, always with the same context pointer, so for those two the argument storage is
// prepared once per context and each call is ffi-napi's own ffi_call binding alone (the call
// the proxy makes itself, with the same libffi cif).

/** ffi-napi's native binding (lib/bindings.js); only ffi_call is used. */
interface FfiNativeBindings {
  ffi_call(cif: Buffer, fn: Buffer, result: Buffer, args: Buffer): void;
}
const ffiNative: FfiNativeBindings = require('@2060.io/ffi-napi/lib/bindings');

interface HotFunctions {
  readonly runCtx: Buffer;
  readonly irqTrigger: Buffer;
  /** int f(void *) */
  readonly cifCtx: Buffer;
  /** int f(void *, uint32_t) */
  readonly cifCtxU32: Buffer;
}

function loadHotFunctions(path: string): HotFunctions {
  const dl = ffi.DynamicLibrary(path, ffi.DynamicLibrary.FLAGS.RTLD_NOW);
  return {
    runCtx: dl.get('vfu_run_ctx'),
    irqTrigger: dl.get('vfu_irq_trigger'),
    cifCtx: ffi.CIF(ref.coerceType('int'), [ref.coerceType('pointer')]),
    cifCtxU32: ffi.CIF(ref.coerceType('int'), [ref.coerceType('pointer'), ref.coerceType('uint32')]),
  };
}

/**
 * One C function bound to fixed argument storage: set the arguments that change in `slots`, then
 * call(). The storage lives as long as this object; the context pointer slot is written once.
 */
class BoundCall {
  private readonly result = Buffer.alloc(8);
  private readonly argv: Buffer;
  readonly slots: readonly Buffer[];

  constructor(private readonly cif: Buffer, private readonly fn: Buffer, nargs: number) {
    this.slots = Array.from({ length: nargs }, () => Buffer.alloc(8));
    this.argv = Buffer.alloc(8 * nargs);
    this.slots.forEach((slot, i) => ref.writePointer(this.argv, i * 8, slot));
  }

  /** Calls the function; the int it returned (libffi widens it to a full ffi_arg). */
  call(): number {
    ffiNative.ffi_call(this.cif, this.fn, this.result, this.argv);
    return this.result.readInt32LE(0);
  }
}

function load(): void {
  if (loaded) return;
  loaded = true;
  const path = process.env.VRNIC_LIBVFIO_USER || LIBVFIO_USER_SONAME;
  try {
    lib = ffi.Library(path, definitions as unknown as Record<string, [string, string[]]>) as unknown as VfuLib;
    libc = ffi.Library('libc.so.6', { __errno_location: ['pointer', []] }) as unknown as LibcErrno;
    sgSize = Number(lib.dma_sg_size());
    hot = loadHotFunctions(path);
  } catch (err) {
    lib = null;
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
    loadError =
      `libvfio-user is not available (${why}): build nutanix/libvfio-user with meson ` +
      `(meson setup build && ninja -C build install) and set VRNIC_LIBVFIO_USER to the path of ` +
      `${LIBVFIO_USER_SONAME}, or use --transport native`;
  }
}

/** Why libvfio-user cannot be loaded here (one line, with how to fix it), or null when it loads. */
export function libvfioUserUnavailable(): string | null {
  load();
  return loadError;
}

function vfu(): VfuLib {
  load();
  if (lib === null) throw new LibraryMissingError(loadError ?? 'libvfio-user is not available');
  return lib;
}

function setErrno(value: number): void {
  if (libc === null) return;
  ref.reinterpret(libc.__errno_location(), 4, 0).writeInt32LE(value, 0);
}

function lastErrno(): number {
  return ffi.errno();
}

function check(ret: number, call: string): number {
  if (ret < 0) throw new SysError(call, lastErrno());
  return ret;
}

function u64(v: bigint | number): U64 {
  const b = BigInt(v);
  if (b < 0n || b >= 1n << 64n) throw new RangeError(`not a uint64: ${v}`);
  return b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b.toString();
}

/** The errno a callback reports for an exception: a SysError's own, else EIO. */
function errnoOf(err: unknown): number {
  if (err instanceof SysError) return err.errno;
  return EIO;
}

// ---- exported callback shapes (no pointers) ----

/** What the region access callback handler receives; returns bytes handled or throws (SysError for a chosen errno). */
export type RegionAccessHandler = (buf: Buffer, offset: number, isWrite: boolean) => number;

/** vfu_dma_info_t, with the pointers turned into bigints the caller cannot dereference. */
export interface DmaRegionInfo {
  readonly iova: bigint;
  readonly length: bigint;
  /** True when libvfio-user mapped the region into this process (the client passed an fd). */
  readonly mapped: boolean;
  readonly mappingLength: bigint;
  readonly pageSize: bigint;
  readonly prot: number;
  /**
   * The region's bytes as libvfio-user mapped them, viewed from JS: null when the region is not
   * mapped (no fd) or longer than a Buffer can view. Revoked in dma_unregister (see DmaMemory).
   */
  readonly memory: DmaMemory | null;
}

/** The largest region a Buffer can view (buffer.constants.MAX_LENGTH, 4 GiB on 64-bit Node 20). */
const MAX_VIEW_LENGTH = BigInt(bufferConstants.MAX_LENGTH);

/**
 * A DMA region's memory, at the address libvfio-user mapped it (vfu_dma_info_t.vaddr), so a
 * DmaAccess copies guest memory with one memcpy in JS instead of vfu_addr_to_sgl plus
 * vfu_sgl_read/write (2-3 ffi-napi calls per access).
 *
 * Lifetime (lib/dma.c): libvfio-user mmaps the client's fd before calling dma_register and
 * munmaps it right after dma_unregister returns (DMA_UNMAP, UNMAP_ALL, a lost connection,
 * vfu_destroy_ctx: every path goes through dma_controller_destroy_region). Unlike a libc.ts
 * Mapping we cannot swap the pages for anonymous memory first (libvfio-user owns the mapping and
 * unmaps it itself), so a stale Buffer over it would fault. What keeps that from happening:
 * - VfuContext revokes the view inside the dma_unregister callback, before the transport's
 *   handler runs and before C returns to munmap; `buffer` throws from then on;
 * - the view never leaves the holder's synchronous call: readers copy out of it (Buffer.from of a
 *   subarray), writers copy into it; nobody keeps `buffer` or a subarray of it across an await;
 * - callbacks run on Node's main thread (vfu_run_ctx and vfu_destroy_ctx are called there; an
 *   ffi-napi callback from another thread is queued to it), so no copy is half done when the
 *   unregister callback runs.
 */
export class DmaMemory {
  private view: Buffer | null;

  constructor(view: Buffer, readonly readable: boolean, readonly writable: boolean) {
    this.view = view;
  }

  get live(): boolean {
    return this.view !== null;
  }

  get length(): number {
    return this.view?.length ?? 0;
  }

  /** The live view. Throws once revoked; callers copy in or out within their own synchronous call. */
  get buffer(): Buffer {
    if (this.view === null) throw new Error('DMA region already unregistered');
    return this.view;
  }

  /** From dma_unregister (or destroy): the mapping is about to go. */
  revoke(): void {
    this.view = null;
  }
}

export interface VfuCallbackErrorReporter {
  (callback: string, err: unknown): void;
}

export interface MmapArea {
  readonly offset: number;
  readonly size: number;
}

/** Reads a vfu_dma_info_t; withView: also view the mapped bytes (dma_register only). */
function readDmaInfo(ptr: Buffer, withView: boolean): DmaRegionInfo {
  const info = ref.reinterpret(ptr, SIZEOF_VFU_DMA_INFO, 0);
  const length = info.readBigUInt64LE(VFU_DMA_INFO_IOVA_LEN);
  const mapped = info.readBigUInt64LE(VFU_DMA_INFO_VADDR) !== 0n;
  const prot = info.readUInt32LE(VFU_DMA_INFO_PROT);
  let memory: DmaMemory | null = null;
  if (withView && mapped && length > 0n && length <= MAX_VIEW_LENGTH) {
    // vaddr .. vaddr + iova.iov_len lies inside the mapping (lib/dma.c dma_map_region)
    memory = new DmaMemory(ref.readPointer(info, VFU_DMA_INFO_VADDR, Number(length)), (prot & PROT_READ) !== 0, (prot & PROT_WRITE) !== 0);
  }
  return {
    iova: info.readBigUInt64LE(VFU_DMA_INFO_IOVA_BASE),
    length,
    mapped,
    mappingLength: info.readBigUInt64LE(VFU_DMA_INFO_MAPPING_LEN),
    pageSize: info.readBigUInt64LE(VFU_DMA_INFO_PAGE_SIZE),
    prot,
    memory,
  };
}

/**
 * One vfu_ctx_t. Owns the context pointer and every callback given to C for it.
 * Methods throw SysError when the C call fails with -1 and errno, and Error once destroyed.
 * Not re-entrant: destroy() is refused while vfu_run_ctx or vfu_attach_ctx is on the stack.
 */
export class VfuContext {
  private ctx: Ptr | null;
  /** Every ffi.Callback given to C for this context, keyed by what it is for; kept until destroy returns. */
  private readonly callbacks = new Map<string, Buffer>();
  private configSize = 0;
  /** View of libvfio-user's config space; never handed out, only copied from or into. */
  private config: Buffer | null = null;
  private readonly sg: Buffer;
  private readonly runCall: BoundCall;
  private readonly irqCall: BoundCall;
  /** Views of the mapped DMA regions by iova, revoked in dma_unregister (see DmaMemory). */
  private readonly dmaMemory = new Map<bigint, DmaMemory>();
  private busy = 0;
  private readonly onCallbackError: VfuCallbackErrorReporter;

  private constructor(ctx: Ptr, onCallbackError: VfuCallbackErrorReporter) {
    this.ctx = ctx;
    this.onCallbackError = onCallbackError;
    this.sg = Buffer.alloc(sgSize);
    const h = hot!;
    this.runCall = new BoundCall(h.cifCtx, h.runCtx, 1);
    ref.writePointer(this.runCall.slots[0]!, 0, ctx);
    this.irqCall = new BoundCall(h.cifCtxU32, h.irqTrigger, 2);
    ref.writePointer(this.irqCall.slots[0]!, 0, ctx);
  }

  /**
   * vfu_create_ctx: creates the listening socket at path (VFU_TRANS_SOCK).
   * onCallbackError hears about every exception a callback caught (it must not throw itself).
   */
  static create(path: string, flags: number, onCallbackError: VfuCallbackErrorReporter = () => {}): VfuContext {
    const l = vfu();
    const ctx = l.vfu_create_ctx(VFU_TRANS_SOCK, path, flags, null, VFU_DEV_TYPE_PCI);
    if (ref.isNull(ctx)) throw new SysError('vfu_create_ctx', lastErrno());
    return new VfuContext(ctx, onCallbackError);
  }

  get destroyed(): boolean {
    return this.ctx === null;
  }

  /** True while vfu_run_ctx or vfu_attach_ctx is executing (callbacks run inside them). */
  get inLibrary(): boolean {
    return this.busy > 0;
  }

  private p(): Ptr {
    if (this.ctx === null) throw new Error('vfu context already destroyed');
    return this.ctx;
  }

  private keep(name: string, cb: Buffer): Buffer {
    this.callbacks.set(name, cb);
    return cb;
  }

  /** Runs a callback body; an exception becomes errno + the failure value, never a C unwind. */
  private guard<T>(name: string, failure: T, body: () => T): T {
    try {
      return body();
    } catch (err) {
      try {
        this.onCallbackError(name, err);
      } catch {
        // the reporter must not throw; if it does, C still gets its -1
      }
      setErrno(errnoOf(err));
      return failure;
    }
  }

  /** vfu_setup_log: libvfio-user's messages go to fn (level is a syslog level). */
  setupLog(fn: (level: number, msg: string) => void, level: number): void {
    const cb = this.keep(
      'log',
      ffi.Callback(VFU_LOG_FN_T[0], [...VFU_LOG_FN_T[1]], (_ctx: Ptr, lvl: number, msg: string) => {
        this.guard('log', undefined, () => fn(lvl, msg));
      }),
    );
    check(vfu().vfu_setup_log(this.p(), cb, level), 'vfu_setup_log');
  }

  /** vfu_pci_init. The revision argument is unused by libvfio-user: write it with writeConfigSpace. */
  pciInit(pciType: number, hdrType = PCI_HEADER_TYPE_NORMAL): void {
    check(vfu().vfu_pci_init(this.p(), pciType, hdrType, 0), 'vfu_pci_init');
    this.configSize =
      pciType === VFU_PCI_TYPE_EXPRESS || pciType === VFU_PCI_TYPE_PCI_X_2 ? PCI_CFG_SPACE_EXP_SIZE : PCI_CFG_SPACE_SIZE;
  }

  pciSetId(vid: number, did: number, ssvid: number, ssid: number): void {
    vfu().vfu_pci_set_id(this.p(), vid, did, ssvid, ssid);
  }

  pciSetClass(base: number, sub: number, pi: number): void {
    vfu().vfu_pci_set_class(this.p(), base, sub, pi);
  }

  /** The config space as libvfio-user holds it (vfu_pci_get_config_space), copied. */
  readConfigSpace(offset = 0, length = this.configSize - offset): Buffer {
    return Buffer.from(this.configView(offset, length));
  }

  /** Writes straight into libvfio-user's config space (for what vfu_pci_* offers no call for, e.g. revision). */
  writeConfigSpace(offset: number, data: Buffer): void {
    data.copy(this.configView(offset, data.length));
  }

  /** A 16-bit config space register, little-endian (cheap: no FFI call once the view exists). */
  readConfigWord(offset: number): number {
    return this.configView(offset, 2).readUInt16LE(0);
  }

  private configView(offset: number, length: number): Buffer {
    if (this.configSize === 0) throw new Error('vfu_pci_init has not been called');
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.configSize) {
      throw new RangeError(`config space access [${offset}, +${length}) outside ${this.configSize} bytes`);
    }
    if (this.config === null) {
      // allocated by vfu_pci_init and freed only by vfu_destroy_ctx, which drops this view first
      const base = vfu().vfu_pci_get_config_space(this.p());
      if (ref.isNull(base)) throw new Error('vfu_pci_get_config_space returned NULL');
      this.config = ref.reinterpret(base, this.configSize, 0);
    }
    this.p();
    return this.config.subarray(offset, offset + length);
  }

  /** vfu_pci_add_capability: returns the offset the capability was placed at. */
  pciAddCapability(pos: number, flags: number, data: Buffer): number {
    return check(Number(vfu().vfu_pci_add_capability(this.p(), pos, flags, data)), 'vfu_pci_add_capability');
  }

  /** vfu_pci_find_capability: offset of the first capability with that id, 0 when none. */
  pciFindCapability(extended: boolean, capId: number): number {
    return Number(vfu().vfu_pci_find_capability(this.p(), extended, capId));
  }

  /**
   * vfu_setup_region. handler (may be null for a config region libvfio-user owns) serves
   * REGION_READ/REGION_WRITE; mmapAreas with fd make parts of the region mappable by the client.
   * Pass fd = -1 when nothing is mappable.
   */
  setupRegion(
    index: number, size: number, handler: RegionAccessHandler | null, flags: number,
    mmapAreas: readonly MmapArea[] = [], fd = -1, fdOffset = 0,
  ): void {
    let cb: Buffer | null = null;
    if (handler !== null) {
      const name = `region${index}`;
      cb = this.keep(
        name,
        ffi.Callback(
          VFU_REGION_ACCESS_CB_T[0], [...VFU_REGION_ACCESS_CB_T[1]],
          (_ctx: Ptr, buf: Ptr, count: number | string, offset: number | string, isWrite: boolean): number =>
            this.guard(name, -1, () => {
              const n = Number(count);
              const off = Number(offset);
              if (!Number.isSafeInteger(n) || !Number.isSafeInteger(off) || n < 0 || off < 0) {
                throw new SysError(name, EINVAL);
              }
              return handler(n === 0 ? Buffer.alloc(0) : ref.reinterpret(buf, n, 0), off, isWrite);
            }),
        ),
      );
    }
    let areas: Buffer | null = null;
    if (mmapAreas.length > 0) {
      areas = Buffer.alloc(SIZEOF_IOVEC * mmapAreas.length);
      mmapAreas.forEach((a, i) => {
        // libvfio-user reads iov_base as the area's offset inside the region
        areas!.writeBigUInt64LE(BigInt(a.offset), i * SIZEOF_IOVEC);
        areas!.writeBigUInt64LE(BigInt(a.size), i * SIZEOF_IOVEC + 8);
      });
    }
    check(
      vfu().vfu_setup_region(this.p(), index, u64(size), cb, flags, areas, mmapAreas.length, fd, u64(fdOffset)),
      'vfu_setup_region',
    );
  }

  setupDeviceNrIrqs(type: number, count: number): void {
    check(vfu().vfu_setup_device_nr_irqs(this.p(), type, count), 'vfu_setup_device_nr_irqs');
  }

  /** vfu_setup_irq_state_callback: fn hears SET_IRQS mask/unmask of [start, start + count). */
  setupIrqStateCallback(type: number, fn: (start: number, count: number, mask: boolean) => void): void {
    const name = `irq_state${type}`;
    const cb = this.keep(
      name,
      ffi.Callback(VFU_DEV_IRQ_STATE_CB_T[0], [...VFU_DEV_IRQ_STATE_CB_T[1]], (_ctx: Ptr, start: number, count: number, mask: boolean) => {
        this.guard(name, undefined, () => fn(start, count, mask));
      }),
    );
    check(vfu().vfu_setup_irq_state_callback(this.p(), type, cb), 'vfu_setup_irq_state_callback');
  }

  /** vfu_setup_device_dma with register/unregister callbacks. */
  setupDeviceDma(
    maxRegions: number,
    onRegister: (info: DmaRegionInfo) => void,
    onUnregister: (info: DmaRegionInfo) => void,
  ): void {
    const reg = this.keep(
      'dma_register',
      ffi.Callback(VFU_DMA_REGISTER_CB_T[0], [...VFU_DMA_REGISTER_CB_T[1]], (_ctx: Ptr, info: Ptr) => {
        this.guard('dma_register', undefined, () => {
          const region = readDmaInfo(info, true);
          if (region.memory !== null) {
            // libvfio-user refuses overlapping regions; an old view at this iova is stale anyway
            this.dmaMemory.get(region.iova)?.revoke();
            this.dmaMemory.set(region.iova, region.memory);
          }
          onRegister(region);
        });
      }),
    );
    const unreg = this.keep(
      'dma_unregister',
      ffi.Callback(VFU_DMA_UNREGISTER_CB_T[0], [...VFU_DMA_UNREGISTER_CB_T[1]], (_ctx: Ptr, info: Ptr) => {
        this.guard('dma_unregister', undefined, () => {
          const region = readDmaInfo(info, false);
          // first, whatever the handler does: libvfio-user munmaps as soon as we return
          const memory = this.dmaMemory.get(region.iova) ?? null;
          memory?.revoke();
          this.dmaMemory.delete(region.iova);
          onUnregister({ ...region, memory });
        });
      }),
    );
    check(vfu().vfu_setup_device_dma(this.p(), u64(maxRegions), reg, unreg), 'vfu_setup_device_dma');
  }

  /** vfu_setup_device_reset_cb: fn gets VFU_RESET_DEVICE, VFU_RESET_LOST_CONN or VFU_RESET_PCI_FLR. */
  setupDeviceResetCb(fn: (type: number) => void): void {
    const cb = this.keep(
      'reset',
      ffi.Callback(VFU_RESET_CB_T[0], [...VFU_RESET_CB_T[1]], (_ctx: Ptr, type: number): number =>
        this.guard('reset', -1, () => {
          fn(type);
          return 0;
        }),
      ),
    );
    check(vfu().vfu_setup_device_reset_cb(this.p(), cb), 'vfu_setup_device_reset_cb');
  }

  realize(): void {
    check(vfu().vfu_realize_ctx(this.p()), 'vfu_realize_ctx');
  }

  /**
   * vfu_attach_ctx. With LIBVFIO_USER_FLAG_ATTACH_NB: false when no client is waiting (EAGAIN),
   * true once a client connected and negotiated. Throws SysError for anything else.
   */
  attach(): boolean {
    const l = vfu();
    const ctx = this.p();
    this.busy++;
    let ret: number;
    try {
      ret = l.vfu_attach_ctx(ctx);
    } finally {
      this.busy--;
    }
    if (ret >= 0) return true;
    const e = lastErrno();
    if (e === EAGAIN || e === EINTR) return false;
    throw new SysError('vfu_attach_ctx', e);
  }

  /**
   * vfu_attach_ctx on a libuv worker thread: accept plus VERSION negotiation, whose recv blocks
   * until the client speaks, never hold the main thread. Resolves true once a client is attached,
   * false otherwise (no client waiting, or negotiation failed: libvfio-user logs why; errno is
   * not carried back from the worker). libvfio-user's log callback may run meanwhile; ffi-napi
   * hands it to the main thread. No other call on this context may be made until it settles.
   */
  attachAsync(): Promise<boolean> {
    const l = vfu();
    const ctx = this.p();
    this.busy++;
    return new Promise((resolve, reject) => {
      l.vfu_attach_ctx.async(ctx, (err: unknown, ret: number) => {
        this.busy--;
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else resolve(ret === 0);
      });
    });
  }

  /** vfu_get_poll_fd: the listening socket before attach, the client connection after. */
  pollFd(): number {
    return check(vfu().vfu_get_poll_fd(this.p()), 'vfu_get_poll_fd');
  }

  /**
   * vfu_run_ctx: handles the requests that are ready (non-blocking with ATTACH_NB) and returns how
   * many it handled. Throws SysError: ENOTCONN / ESHUTDOWN mean the client is gone.
   */
  run(): number {
    this.p();
    this.busy++;
    let ret: number;
    try {
      ret = this.runCall.call();
    } finally {
      this.busy--;
    }
    return check(ret, 'vfu_run_ctx');
  }

  /** vfu_irq_trigger: signals the eventfd the client gave for that vector. */
  irqTrigger(subindex: number): void {
    this.p();
    if (!Number.isInteger(subindex) || subindex < 0 || subindex > 0xffffffff) throw new RangeError(`not a vector: ${subindex}`);
    this.irqCall.slots[1]!.writeUInt32LE(subindex, 0);
    check(this.irqCall.call(), 'vfu_irq_trigger');
  }

  /**
   * Translates [addr, addr + length) through vfu_addr_to_sgl into this context's one scatter-gather
   * entry. Returns the number of entries the range needs (1 when it lies inside one region),
   * or throws SysError (ENOENT: not mapped, EACCES: not writable).
   */
  addrToSgl(addr: bigint, length: number, prot: number): number {
    const n = vfu().vfu_addr_to_sgl(this.p(), u64(addr), u64(length), this.sg, 1, prot);
    if (n === -1) throw new SysError('vfu_addr_to_sgl', lastErrno());
    // -(x) - 1: the range needs x entries, more than the one we offered
    return n < -1 ? -n - 1 : n;
  }

  /** After addrToSgl returned 1: whether libvfio-user can reach that memory directly (no message round trip). */
  sgIsMappable(): boolean {
    return vfu().vfu_sg_is_mappable(this.p(), this.sg);
  }

  /** vfu_sgl_read of the entry addrToSgl prepared, into data (data.length must equal the entry's length). */
  sglRead(data: Buffer, flags = VFU_SGL_DIRECT_ACCESS): void {
    check(vfu().vfu_sgl_read(this.p(), this.sg, 1, data, flags), 'vfu_sgl_read');
  }

  /** vfu_sgl_write of data to the entry addrToSgl prepared (with PROT_WRITE). */
  sglWrite(data: Buffer, flags = VFU_SGL_DIRECT_ACCESS): void {
    check(vfu().vfu_sgl_write(this.p(), this.sg, 1, data, flags), 'vfu_sgl_write');
  }

  /**
   * vfu_destroy_ctx: drops the client (running the reset and DMA-unregister callbacks), closes and
   * unlinks the socket, frees the context. Idempotent. Refused from inside a callback.
   */
  destroy(): void {
    if (this.ctx === null) return;
    if (this.busy > 0) throw new Error('vfu_destroy_ctx from inside a libvfio-user callback');
    const ctx = this.ctx;
    this.busy++;
    try {
      vfu().vfu_destroy_ctx(ctx);
    } finally {
      this.busy--;
      this.ctx = null;
      this.config = null;
      // vfu_destroy_ctx unregistered every region; any view still here would be stale
      for (const m of this.dmaMemory.values()) m.revoke();
      this.dmaMemory.clear();
      // C holds none of them any more
      this.callbacks.clear();
    }
  }

  /** How many callbacks this context keeps alive for C (for tests). */
  get callbackCount(): number {
    return this.callbacks.size;
  }
}
