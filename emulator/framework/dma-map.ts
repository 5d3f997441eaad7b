// The table of DMA regions a vfio-user client mapped: bounds, overlap and permission checks.
//
// Rules (vfio-user spec, DMA_MAP/DMA_UNMAP): address and size are multiples of the page size and
// non-zero, the range does not wrap, a map over an existing region fails with EEXIST, an unmap
// names exactly one mapped region. Regions passed with an fd are mmapped here; regions without
// one are reached through DMA_READ/DMA_WRITE messages by the transport.
import { fstatSync } from 'node:fs';
import { Mapping } from '../../ffi/libc';
import { Errno, SysError } from '../../ffi/errors';

const U64_END = 1n << 64n;

export interface DmaRegion {
  readonly addr: bigint;
  readonly size: bigint;
  readonly readable: boolean;
  readonly writable: boolean;
  /** The mmap of the client's fd; null when the region is reached by messages. */
  readonly mapping: Mapping | null;
}

export interface DmaMapRequest {
  readonly addr: bigint;
  readonly size: bigint;
  readonly readable: boolean;
  readonly writable: boolean;
  /** The fd that came with the message (the caller keeps ownership and closes it), or -1. */
  readonly fd: number;
  readonly offset: bigint;
}

/** The region and offset that hold a checked range, or an errno. */
export type DmaLookup = { readonly region: DmaRegion; readonly offset: number } | { readonly errno: number; readonly reason: string };

export class DmaMapTable {
  private regions: DmaRegion[] = [];

  constructor(private readonly pageSize = 4096, private readonly maxRegions = 65535) {}

  get count(): number {
    return this.regions.length;
  }

  list(): readonly DmaRegion[] {
    return this.regions;
  }

  /** Adds a region; returns 0 or an errno. Never keeps req.fd (the mapping holds the file). */
  add(req: DmaMapRequest): number {
    const page = BigInt(this.pageSize);
    if (req.size === 0n || req.addr % page !== 0n || req.size % page !== 0n) return Errno.EINVAL;
    if (req.addr + req.size > U64_END) return Errno.EINVAL;
    if (req.fd >= 0 && req.offset % page !== 0n) return Errno.EINVAL;
    for (const r of this.regions) {
      if (req.addr < r.addr + r.size && r.addr < req.addr + req.size) return Errno.EEXIST;
    }
    if (this.regions.length >= this.maxRegions) return Errno.ENOSPC;
    let mapping: Mapping | null = null;
    if (req.fd >= 0) {
      if (req.size > BigInt(Number.MAX_SAFE_INTEGER) || req.offset > BigInt(Number.MAX_SAFE_INTEGER)) return Errno.EINVAL;
      if (!req.readable && !req.writable) return Errno.EINVAL;
      // A range past the end of the client's file mmaps fine but raises SIGBUS (killing the
      // daemon) on the first device access there: refuse it now.
      try {
        const st = fstatSync(req.fd);
        if (st.isFile() && req.offset + req.size > BigInt(st.size)) return Errno.EINVAL;
      } catch {
        return Errno.EBADF;
      }
      try {
        mapping = Mapping.map(req.fd, Number(req.offset), Number(req.size), req.writable);
      } catch (err) {
        return err instanceof SysError ? err.errno : Errno.EINVAL;
      }
    }
    this.regions.push({ addr: req.addr, size: req.size, readable: req.readable, writable: req.writable, mapping });
    this.regions.sort((a, b) => (a.addr < b.addr ? -1 : 1));
    return 0;
  }

  /** Removes the region that is exactly [addr, addr + size); 0 or an errno. */
  remove(addr: bigint, size: bigint): number {
    const i = this.regions.findIndex((r) => r.addr === addr && r.size === size);
    if (i < 0) return Errno.ENOENT;
    const [r] = this.regions.splice(i, 1);
    r!.mapping?.unmap();
    return 0;
  }

  /** Drops every region (unmap-all, client gone). */
  clear(): void {
    for (const r of this.regions) r.mapping?.unmap();
    this.regions = [];
  }

  /** Finds the one region holding [addr, addr + length) with the needed permission. */
  lookup(addr: bigint, length: number, write: boolean): DmaLookup {
    if (length < 0 || !Number.isSafeInteger(length)) return { errno: Errno.EINVAL, reason: 'bad length' };
    const end = addr + BigInt(length);
    if (addr < 0n || end > U64_END) return { errno: Errno.EINVAL, reason: 'range wraps' };
    for (const r of this.regions) {
      if (addr >= r.addr && end <= r.addr + r.size) {
        if (write ? !r.writable : !r.readable) return { errno: Errno.EPERM, reason: write ? 'region is read-only' : 'region is write-only' };
        return { region: r, offset: Number(addr - r.addr) };
      }
    }
    return { errno: Errno.EFAULT, reason: 'not inside one mapped region' };
  }
}
