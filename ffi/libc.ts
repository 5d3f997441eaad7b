// libc bindings through koffi: the one place where vrnic calls libc, so every C signature lives here.
//
// Why koffi and not ffi-napi for libc: these calls sit on the hot path of the built-in transport
// (one recvmsg and one sendmsg per guest register access) and koffi's per-call cost is about
// 0.2 µs against ffi-napi's 3-30 µs on these machines (see docs/architecture.md and bench/).
// libvfio-user itself is bound with ffi-napi, as the design card asks (ffi/libvfio-user.ts).
// The two never exchange pointers, only file descriptors and numbers.
import koffi from 'koffi';
import { SysError } from './errors';

const libc = koffi.load('libc.so.6');

// ---- constants (x86_64 Linux, under their C names) ----
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MFD_CLOEXEC = 0x0001;
export const MFD_ALLOW_SEALING = 0x0002;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;
export const EINTR = 4;
export const EAGAIN = 11;

export const pollfd = koffi.struct('pollfd', { fd: 'int', events: 'short', revents: 'short' });

// ---- raw signatures ----
const c = {
  close: libc.func('int close(int fd)'),
  read: libc.func('long read(int fd, _Out_ uint8_t *buf, size_t count)'),
  write: libc.func('long write(int fd, const uint8_t *buf, size_t count)'),
  pread: libc.func('long pread(int fd, _Out_ uint8_t *buf, size_t count, int64_t offset)'),
  pwrite: libc.func('long pwrite(int fd, const uint8_t *buf, size_t count, int64_t offset)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  dup: libc.func('int dup(int fd)'),
  memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: libc.func('int ftruncate(int fd, int64_t length)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  mmap: libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: libc.func('int munmap(void *addr, size_t length)'),
  poll: libc.func('int poll(_Inout_ pollfd *fds, unsigned long nfds, int timeout)'),
};

export function errno(): number {
  return koffi.errno();
}

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

export function pread(fd: number, buf: Buffer, offset: number): number {
  return check(c.pread(fd, buf, buf.length, offset), 'pread');
}

export function pwrite(fd: number, buf: Buffer, offset: number): number {
  return check(c.pwrite(fd, buf, buf.length, offset), 'pwrite');
}

export function dup(fd: number): number {
  return check(c.dup(fd), 'dup');
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

/** Adds one to an eventfd's counter: how an interrupt or a wake-up is signalled. */
export function eventfdSignal(fd: number): void {
  const one = Buffer.alloc(8);
  one.writeBigUInt64LE(1n);
  check(c.write(fd, one, 8), 'write(eventfd)');
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
    if (!Number.isSafeInteger(length) || length <= 0) throw new SysError('mmap', 22);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % 4096 !== 0) throw new SysError('mmap', 22);
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
