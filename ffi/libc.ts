// libc bindings through koffi: the one place where vrnic calls libc, so every C signature lives here.
//
// Why koffi and not ffi-napi for libc: these calls sit on the hot path of the built-in transport
// (one recvmsg and one sendmsg per guest register access) and koffi's per-call cost is
// a fraction of ffi-napi's (figures in docs/performance.md). libvfio-user itself is bound with
// ffi-napi (ffi/libvfio-user.ts; docs/architecture.md, "Two FFI libraries"). The two never
// exchange pointers, only file descriptors and numbers.
import koffi from 'koffi';
import { constants as bufferConstants } from 'node:buffer';
import { Errno, SysError } from './errors';

const libc = koffi.load('libc.so.6');

// ---- constants (x86_64 Linux, under their C names; errno values come from ./errors) ----
const O_NONBLOCK = 0o4000;
const F_GETFL = 3;
const F_SETFL = 4;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_FIXED = 0x10;
const MAP_ANONYMOUS = 0x20;
const MAP_NORESERVE = 0x4000;
export const MFD_CLOEXEC = 0x0001;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLNVAL = 0x020;
const { EAGAIN, EBADF, EINTR, EINVAL, ENAMETOOLONG, ENOMEM } = Errno;

const pollfd = koffi.struct('pollfd', { fd: 'int', events: 'short', revents: 'short' });

// ---- raw signatures ----
const c = {
  close: libc.func('int close(int fd)'),
  read: libc.func('long read(int fd, _Out_ uint8_t *buf, size_t count)'),
  write: libc.func('long write(int fd, const uint8_t *buf, size_t count)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: libc.func('int ftruncate(int fd, int64_t length)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  mmap: libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: libc.func('int munmap(void *addr, size_t length)'),
  poll: libc.func('int poll(_Inout_ pollfd *fds, unsigned long nfds, int timeout)'),
};

function check(ret: number | bigint, call: string): number {
  const n = Number(ret);
  if (n < 0) throw new SysError(call, koffi.errno());
  return n;
}

// ---- thin wrappers: -1 plus errno becomes a SysError ----
export function close(fd: number): void {
  check(c.close(fd), 'close');
}

/** Closes fd, ignoring errors: for cleanup paths where the fd may already be gone. */
export function closeQuietly(fd: number | undefined | null): void {
  if (fd !== undefined && fd !== null && fd >= 0) c.close(fd);
}

export function read(fd: number, buf: Buffer): number {
  return check(c.read(fd, buf, buf.length), 'read');
}

export function write(fd: number, buf: Buffer): number {
  return check(c.write(fd, buf, buf.length), 'write');
}

export function setNonBlocking(fd: number, on: boolean): void {
  const flags = check(c.fcntl(fd, F_GETFL, 0), 'fcntl(F_GETFL)');
  check(c.fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK), 'fcntl(F_SETFL)');
}

export function memfdCreate(name: string, flags = MFD_CLOEXEC): number {
  return check(c.memfd_create(name, flags), 'memfd_create');
}

export function ftruncate(fd: number, length: number): void {
  check(c.ftruncate(fd, length), 'ftruncate');
}

export function eventfd(initval = 0, flags = EFD_CLOEXEC | EFD_NONBLOCK): number {
  return check(c.eventfd(initval, flags), 'eventfd');
}

/** The 8-byte counter increment an eventfd takes: one, allocated once. */
const ONE = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);

/** Adds one to an eventfd's counter: how an interrupt or a wake-up is signalled. */
export function eventfdSignal(fd: number): void {
  check(c.write(fd, ONE, 8), 'write(eventfd)');
}

/**
 * Adds one to a non-blocking eventfd without throwing: true when signalled, also when the counter
 * is saturated (EAGAIN, which already means "signalled"); false on any other failure.
 */
export function eventfdTrySignal(fd: number): boolean {
  return Number(c.write(fd, ONE, 8)) === 8 || koffi.errno() === EAGAIN;
}

/** Reads and clears an eventfd's counter; 0n when it was not signalled (non-blocking fd). */
export function eventfdConsume(fd: number): bigint {
  const buf = Buffer.alloc(8);
  const n = Number(c.read(fd, buf, 8));
  if (n < 0) {
    const e = koffi.errno();
    if (e === EAGAIN) return 0n;
    throw new SysError('read(eventfd)', e);
  }
  return buf.readBigUInt64LE(0);
}

export interface PollRequest {
  fd: number;
  events: number;
}

/** poll(2), synchronous. Returns the revents of each request, in order. */
export function poll(reqs: readonly PollRequest[], timeoutMs: number): number[] {
  const fds = reqs.map((r) => ({ fd: r.fd, events: r.events, revents: 0 }));
  for (;;) {
    const n = Number(c.poll(fds, fds.length, timeoutMs));
    if (n >= 0) return fds.map((f) => f.revents);
    const e = koffi.errno();
    if (e !== EINTR) throw new SysError('poll', e);
  }
}

/**
 * poll(2) on a libuv worker thread, so the event loop stays free while nothing is ready.
 * Callers include a wake-up eventfd in reqs to cut a wait short.
 */
export function pollAsync(reqs: readonly PollRequest[], timeoutMs: number): Promise<number[]> {
  const fds = reqs.map((r) => ({ fd: r.fd, events: r.events, revents: 0 }));
  return new Promise((resolve, reject) => {
    c.poll.async(fds, fds.length, timeoutMs, (err: unknown, n: number) => {
      if (err) return reject(err);
      if (n < 0) return resolve(reqs.map(() => 0)); // EINTR and friends: the caller polls again
      resolve(fds.map((f) => f.revents));
    });
  });
}

// ---- memory mappings ----

// Mapped memory is handed to JS as a Buffer over the mapping. A Buffer cannot be revoked in
// Node 20 (no ArrayBuffer.prototype.transfer for external memory), so a stale view could outlive
// the mapping. Unmapping therefore never leaves a hole: it replaces the pages with anonymous
// memory in place (dropping the reference to the file, which is what matters to the peer), and
// the address range itself is released only when the last view of it is garbage collected.
// A stale view then reads zeros instead of crashing the process.
const reaper = new FinalizationRegistry<{ addr: unknown; length: number }>((m) => {
  c.munmap(m.addr, m.length);
});

/** The largest mapping a Buffer can view (buffer.constants.MAX_LENGTH, 4 GiB on 64-bit Node 20). */
const MAX_VIEW_LENGTH = bufferConstants.MAX_LENGTH;

export class Mapping {
  private addr: unknown;
  private view: Buffer | null;
  readonly length: number;

  private constructor(addr: unknown, length: number) {
    this.addr = addr;
    this.length = length;
    const ab = koffi.view(addr, length) as ArrayBuffer;
    this.view = Buffer.from(ab);
    reaper.register(ab, { addr, length }, this);
  }

  /** mmap(2) of fd at offset. Throws SysError on failure (bad fd, offset past the file, ...). */
  static map(fd: number, offset: number, length: number, writable = true): Mapping {
    if (!Number.isSafeInteger(length) || length <= 0) throw new SysError('mmap', EINVAL);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % 4096 !== 0) throw new SysError('mmap', EINVAL);
    // A Buffer cannot view more than this; V8 aborts the process when asked to, so refuse before mmap.
    if (length > MAX_VIEW_LENGTH) throw new SysError('mmap', ENOMEM);
    const prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    const addr = c.mmap(null, length, prot, MAP_SHARED, fd, offset);
    if (koffi.address(addr) === 0xffffffffffffffffn) throw new SysError('mmap', koffi.errno());
    return new Mapping(addr, length);
  }

  get mapped(): boolean {
    return this.view !== null;
  }

  /** The live view. Throws once unmapped; callers keep no copy of it past their own call. */
  get buffer(): Buffer {
    if (this.view === null) throw new Error('mapping is unmapped');
    return this.view;
  }

  /** Drops the file's pages from our address space; idempotent. */
  unmap(): void {
    if (this.view === null) return;
    this.view = null;
    c.mmap(this.addr, this.length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  }
}

/** A shared-memory file (memfd) with a mapping of it: backs a BAR that the client can mmap. */
export class SharedMemory {
  readonly fd: number;
  readonly size: number;
  private readonly mapping: Mapping;

  constructor(name: string, size: number) {
    this.size = size;
    this.fd = memfdCreate(name);
    try {
      ftruncate(this.fd, size);
      this.mapping = Mapping.map(this.fd, 0, size);
    } catch (err) {
      closeQuietly(this.fd);
      throw err;
    }
  }

  get buffer(): Buffer {
    return this.mapping.buffer;
  }

  get open(): boolean {
    return this.mapping.mapped;
  }

  close(): void {
    if (!this.mapping.mapped) return;
    this.mapping.unmap();
    closeQuietly(this.fd);
  }
}

// ==== Unix sockets with fd passing ====
//
// vfio-user passes file descriptors (DMA memory, eventfds, BAR memory) as SCM_RIGHTS ancillary
// data, which Node's net module cannot send or receive. The msghdr, iovec and cmsghdr live in
// native memory allocated once per socket so no JS object is marshalled per message.

const AF_UNIX = 1;
const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
export const SO_RCVTIMEO = 20;
export const SO_SNDTIMEO = 21;
const SHUT_RDWR = 2;
const MSG_CTRUNC = 0x8;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;

/** struct iovec, struct msghdr and struct cmsghdr (<sys/socket.h>, x86_64). */
const iovec = koffi.struct('iovec', { iov_base: 'void *', iov_len: 'size_t' });
const msghdr = koffi.struct('msghdr', {
  msg_name: 'void *',
  msg_namelen: 'uint32_t',
  msg_iov: 'void *',
  msg_iovlen: 'size_t',
  msg_control: 'void *',
  msg_controllen: 'size_t',
  msg_flags: 'int',
});
const cmsghdr = koffi.struct('cmsghdr', { cmsg_len: 'size_t', cmsg_level: 'int', cmsg_type: 'int' });

// The send and receive paths write these structs in place through Buffer views, at the offsets
// koffi computed from the declarations above, instead of marshalling an object per call.
const IOVEC_SIZE = koffi.sizeof(iovec);
const IOV_LEN = koffi.offsetof(iovec, 'iov_len');
const MSGHDR_SIZE = koffi.sizeof(msghdr);
const MSG_IOV = koffi.offsetof(msghdr, 'msg_iov');
const MSG_IOVLEN = koffi.offsetof(msghdr, 'msg_iovlen');
const MSG_CONTROL = koffi.offsetof(msghdr, 'msg_control');
const MSG_CONTROLLEN = koffi.offsetof(msghdr, 'msg_controllen');
const MSG_FLAGS = koffi.offsetof(msghdr, 'msg_flags');
/** CMSG_LEN(0): where a control message's data starts (CMSG_DATA). */
const CMSG_HDR = koffi.sizeof(cmsghdr);
const CMSG_LEVEL = koffi.offsetof(cmsghdr, 'cmsg_level');
const CMSG_TYPE = koffi.offsetof(cmsghdr, 'cmsg_type');

/** CMSG_ALIGN: control messages are padded to the size of a size_t. */
function cmsgAlign(n: number): number {
  return Math.ceil(n / 8) * 8;
}

const s = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, const uint8_t *addr, uint32_t addrlen)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *addrlen, int flags)'),
  connect: libc.func('int connect(int fd, const uint8_t *addr, uint32_t addrlen)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const uint8_t *val, uint32_t len)'),
  sendmsg: libc.func('long sendmsg(int fd, void *msg, int flags)'),
  recvmsg: libc.func('long recvmsg(int fd, void *msg, int flags)'),
  shutdown: libc.func('int shutdown(int fd, int how)'),
};

function sockaddrUn(path: string): Buffer {
  const p = Buffer.from(path, 'utf8');
  if (p.length >= 108) throw new SysError('sockaddr_un', ENAMETOOLONG);
  const sa = Buffer.alloc(110);
  sa.writeUInt16LE(AF_UNIX, 0);
  p.copy(sa, 2);
  return sa;
}

/** socket(AF_UNIX, SOCK_STREAM | flags). */
export function unixSocket(flags = SOCK_CLOEXEC): number {
  return check(s.socket(AF_UNIX, SOCK_STREAM | flags, 0), 'socket');
}

export function bindUnix(fd: number, path: string): void {
  const sa = sockaddrUn(path);
  check(s.bind(fd, sa, sa.length), 'bind');
}

export function listen(fd: number, backlog: number): void {
  check(s.listen(fd, backlog), 'listen');
}

/** accept4(2); returns -1 instead of throwing when nothing is pending (EAGAIN). */
export function accept4(fd: number, flags = SOCK_CLOEXEC): number {
  const n = Number(s.accept4(fd, null, null, flags));
  if (n >= 0) return n;
  const e = koffi.errno();
  if (e === EAGAIN || e === EINTR) return -1;
  throw new SysError('accept4', e);
}

export function connectUnix(fd: number, path: string): void {
  const sa = sockaddrUn(path);
  check(s.connect(fd, sa, sa.length), 'connect');
}

export function shutdownSocket(fd: number): void {
  s.shutdown(fd, SHUT_RDWR);
}

/**
 * Ends a stream connection as a peer that had read everything would, then closes the fd.
 * A Unix stream socket closed with data still unread makes the other side's next read fail with
 * ECONNRESET instead of reading end of stream. So: shut down both directions (the peer's reads
 * now end, its sends fail with EPIPE, and ours can no longer block), discard what it had already
 * sent, and close. The discard is bounded; a socket buffer holds far less.
 */
export function closeConnection(fd: number): void {
  if (fd < 0) return;
  s.shutdown(fd, SHUT_RDWR);
  const scratch = Buffer.allocUnsafe(65536);
  for (let i = 0; i < 1024; i++) {
    if (Number(c.read(fd, scratch, scratch.length)) <= 0) break;
  }
  closeQuietly(fd);
}

/** Sets SO_SNDTIMEO or SO_RCVTIMEO (struct timeval) in milliseconds. */
export function setSocketTimeout(fd: number, which: typeof SO_SNDTIMEO | typeof SO_RCVTIMEO, ms: number): void {
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
  tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
  check(s.setsockopt(fd, SOL_SOCKET, which, tv, 16), 'setsockopt');
}

/** What one recvmsg returned: bytes (a copy), the fds that came with them, and whether some were cut off. */
export interface Received {
  readonly data: Buffer;
  readonly fds: number[];
  /** MSG_CTRUNC: more fds were sent than fit; the kernel closed the rest. */
  readonly fdsTruncated: boolean;
}

/**
 * sendmsg/recvmsg with SCM_RIGHTS on one connected socket, through native buffers allocated once.
 * recv never blocks (MSG_DONTWAIT); send blocks up to the socket's SO_SNDTIMEO.
 * Every fd received is either returned to the caller or closed here.
 */
export class FdSocket {
  readonly fd: number;
  private readonly recvPtr: unknown;
  private readonly recvView: Buffer;
  private sendPtr: unknown;
  private sendView: Buffer;
  private readonly ctlPtr: unknown;
  private readonly ctlView: Buffer;
  private readonly ctlCap: number;
  private readonly hdrPtr: unknown;
  private readonly hdrView: Buffer;
  private readonly iovPtr: unknown;
  private readonly iovView: Buffer;
  /**
   * recv's own msghdr and iovec, pointing at recvPtr and ctlPtr since the constructor (send
   * rewrites hdrPtr/iovPtr for each call): a recv writes only iov_len, msg_controllen and
   * msg_flags, as 32-bit numbers rather than through BigInt, which cost a third of the call.
   */
  private readonly recvHdrPtr: unknown;
  private readonly recvHdr: Buffer;
  private readonly recvIovPtr: unknown;
  private readonly recvIov: Buffer;
  /** The same for sendSome (the run loop's reply path); its iov_base follows sendPtr when that grows. */
  private readonly someHdrPtr: unknown;
  private readonly someHdr: Buffer;
  private readonly someIovPtr: unknown;
  private readonly someIov: Buffer;
  private freed = false;

  /** maxRecvFds: how many fds one recvmsg can take before the rest are cut off (MSG_CTRUNC). */
  constructor(fd: number, recvChunk = 256 * 1024, maxRecvFds = 32) {
    this.fd = fd;
    this.recvPtr = koffi.alloc('uint8_t', recvChunk);
    this.recvView = Buffer.from(koffi.view(this.recvPtr, recvChunk) as ArrayBuffer);
    this.sendPtr = koffi.alloc('uint8_t', 4096);
    this.sendView = Buffer.from(koffi.view(this.sendPtr, 4096) as ArrayBuffer);
    this.ctlCap = CMSG_HDR + cmsgAlign(maxRecvFds * 4);
    this.ctlPtr = koffi.alloc('uint8_t', this.ctlCap);
    this.ctlView = Buffer.from(koffi.view(this.ctlPtr, this.ctlCap) as ArrayBuffer);
    this.hdrPtr = koffi.alloc('uint8_t', MSGHDR_SIZE);
    this.hdrView = Buffer.from(koffi.view(this.hdrPtr, MSGHDR_SIZE) as ArrayBuffer);
    this.iovPtr = koffi.alloc('uint8_t', IOVEC_SIZE);
    this.iovView = Buffer.from(koffi.view(this.iovPtr, IOVEC_SIZE) as ArrayBuffer);
    this.recvIovPtr = koffi.alloc('uint8_t', IOVEC_SIZE);
    this.recvIov = Buffer.from(koffi.view(this.recvIovPtr, IOVEC_SIZE) as ArrayBuffer);
    this.recvIov.writeBigUInt64LE(koffi.address(this.recvPtr), 0);
    this.recvIov.writeBigUInt64LE(BigInt(recvChunk), IOV_LEN);
    this.recvHdrPtr = koffi.alloc('uint8_t', MSGHDR_SIZE);
    this.recvHdr = Buffer.from(koffi.view(this.recvHdrPtr, MSGHDR_SIZE) as ArrayBuffer);
    this.recvHdr.fill(0);
    this.recvHdr.writeBigUInt64LE(koffi.address(this.recvIovPtr), MSG_IOV);
    this.recvHdr.writeBigUInt64LE(1n, MSG_IOVLEN);
    this.recvHdr.writeBigUInt64LE(koffi.address(this.ctlPtr), MSG_CONTROL);
    this.someIovPtr = koffi.alloc('uint8_t', IOVEC_SIZE);
    this.someIov = Buffer.from(koffi.view(this.someIovPtr, IOVEC_SIZE) as ArrayBuffer);
    this.someIov.writeBigUInt64LE(koffi.address(this.sendPtr), 0);
    this.someHdrPtr = koffi.alloc('uint8_t', MSGHDR_SIZE);
    this.someHdr = Buffer.from(koffi.view(this.someHdrPtr, MSGHDR_SIZE) as ArrayBuffer);
    this.someHdr.fill(0);
    this.someHdr.writeBigUInt64LE(koffi.address(this.someIovPtr), MSG_IOV);
    this.someHdr.writeBigUInt64LE(1n, MSG_IOVLEN);
    this.someHdr.writeBigUInt64LE(koffi.address(this.ctlPtr), MSG_CONTROL);
  }

  /** Makes the send buffer hold at least len bytes. */
  private growSend(len: number): void {
    if (len <= this.sendView.length) return;
    koffi.free(this.sendPtr);
    const cap = Math.max(len, this.sendView.length * 2);
    this.sendPtr = koffi.alloc('uint8_t', cap);
    this.sendView = Buffer.from(koffi.view(this.sendPtr, cap) as ArrayBuffer);
    this.someIov.writeBigUInt64LE(koffi.address(this.sendPtr), 0);
  }

  /**
   * Builds the one SCM_RIGHTS control message carrying fds in the control buffer; returns its
   * padded length (msg_controllen). Throws EINVAL when more fds are given than the buffer holds.
   */
  private writeRights(fds: readonly number[]): number {
    const len = CMSG_HDR + fds.length * 4;
    if (len > this.ctlCap) throw new SysError('sendmsg', EINVAL);
    const ctlLen = cmsgAlign(len);
    this.ctlView.fill(0, 0, ctlLen);
    this.ctlView.writeBigUInt64LE(BigInt(len), 0);
    this.ctlView.writeInt32LE(SOL_SOCKET, CMSG_LEVEL);
    this.ctlView.writeInt32LE(SCM_RIGHTS, CMSG_TYPE);
    fds.forEach((f, i) => this.ctlView.writeInt32LE(f, CMSG_HDR + i * 4));
    return ctlLen;
  }

  /** The most one recv can return. */
  get recvCapacity(): number {
    return this.recvView.length;
  }

  /**
   * One non-blocking recvmsg of at most maxLen bytes. Returns null when nothing is available (EAGAIN), a zero-length
   * data buffer on end of stream. Throws SysError on other failures (ECONNRESET, ...).
   */
  recv(maxLen = this.recvView.length): Received | null {
    if (this.freed) throw new SysError('recvmsg', EBADF);
    // the kernel rewrites msg_controllen and msg_flags; lengths here fit in 32 bits
    const hdr = this.recvHdr;
    this.recvIov.writeUInt32LE(Math.min(maxLen, this.recvView.length), IOV_LEN);
    hdr.writeUInt32LE(this.ctlCap, MSG_CONTROLLEN);
    hdr.writeUInt32LE(0, MSG_CONTROLLEN + 4);
    hdr.writeInt32LE(0, MSG_FLAGS);
    const n = Number(s.recvmsg(this.fd, this.recvHdrPtr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
    if (n < 0) {
      const e = koffi.errno();
      if (e === EAGAIN || e === EINTR) return null;
      throw new SysError('recvmsg', e);
    }
    const fds: number[] = [];
    const ctlLen = hdr.readUInt32LE(MSG_CONTROLLEN);
    const flags = hdr.readInt32LE(MSG_FLAGS);
    let off = 0;
    while (off + CMSG_HDR <= ctlLen) {
      const len = this.ctlView.readUInt32LE(off);
      if (len < CMSG_HDR || off + len > ctlLen) break;
      const level = this.ctlView.readInt32LE(off + CMSG_LEVEL);
      const type = this.ctlView.readInt32LE(off + CMSG_TYPE);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        for (let p = off + CMSG_HDR; p + 4 <= off + len; p += 4) fds.push(this.ctlView.readInt32LE(p));
      }
      off += cmsgAlign(len);
    }
    return { data: Buffer.from(this.recvView.subarray(0, n)), fds, fdsTruncated: (flags & MSG_CTRUNC) !== 0 };
  }

  /** sendmsg of the whole buffer with fds attached to its first byte; loops over short writes. */
  send(data: Buffer, fds: readonly number[] = []): void {
    if (this.freed) throw new SysError('sendmsg', EBADF);
    this.growSend(data.length);
    data.copy(this.sendView, 0);
    let sent = 0;
    let withFds = fds.length > 0;
    while (sent < data.length || withFds) {
      const remaining = data.length - sent;
      const ctlLen = withFds ? this.writeRights(fds) : 0;
      const base = koffi.address(this.sendPtr) + BigInt(sent);
      this.iovView.writeBigUInt64LE(base, 0);
      this.iovView.writeBigUInt64LE(BigInt(remaining), IOV_LEN);
      this.hdrView.fill(0);
      this.hdrView.writeBigUInt64LE(koffi.address(this.iovPtr), MSG_IOV);
      this.hdrView.writeBigUInt64LE(1n, MSG_IOVLEN);
      if (ctlLen > 0) {
        this.hdrView.writeBigUInt64LE(koffi.address(this.ctlPtr), MSG_CONTROL);
        this.hdrView.writeBigUInt64LE(BigInt(ctlLen), MSG_CONTROLLEN);
      }
      const n = Number(s.sendmsg(this.fd, this.hdrPtr, MSG_NOSIGNAL));
      if (n < 0) {
        const e = koffi.errno();
        if (e === EINTR) continue;
        throw new SysError('sendmsg', e);
      }
      sent += n;
      withFds = false;
    }
  }

  /**
   * One non-blocking sendmsg of data[offset..] (fds attached when given). Returns the bytes sent,
   * or -1 when the socket buffer is full (EAGAIN). Throws SysError on other failures (EPIPE, ...).
   */
  sendSome(data: Buffer, offset: number, fds: readonly number[] = []): number {
    if (this.freed) throw new SysError('sendmsg', EBADF);
    const len = data.length - offset;
    this.growSend(len);
    data.copy(this.sendView, 0, offset);
    const ctlLen = fds.length > 0 ? this.writeRights(fds) : 0;
    // only the lengths change per call (a msg_controllen of 0 sends no ancillary data)
    this.someIov.writeUInt32LE(len, IOV_LEN);
    this.someIov.writeUInt32LE(0, IOV_LEN + 4);
    this.someHdr.writeUInt32LE(ctlLen, MSG_CONTROLLEN);
    this.someHdr.writeUInt32LE(0, MSG_CONTROLLEN + 4);
    for (;;) {
      const n = Number(s.sendmsg(this.fd, this.someHdrPtr, MSG_NOSIGNAL | MSG_DONTWAIT));
      if (n >= 0) return n;
      const e = koffi.errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return -1;
      throw new SysError('sendmsg', e);
    }
  }

  /** Frees the native buffers (not the fd, which the owner closes). Idempotent. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    for (const p of [this.recvPtr, this.sendPtr, this.ctlPtr, this.hdrPtr, this.iovPtr, this.recvHdrPtr, this.recvIovPtr, this.someHdrPtr, this.someIovPtr]) koffi.free(p);
  }
}
