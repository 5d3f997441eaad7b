// Guest RAM played by a test: a memfd the client owns, addressed by guest physical address.
import { SharedMemory } from '../../../ffi/libc';

/**
 * One contiguous block of "guest RAM" at guest addresses [base, base + size).
 * Map it (or slices of it) to the server with `VfioUserClient.dmaMap`.
 */
export class GuestMemory {
  readonly base: bigint;
  readonly size: number;
  private readonly memory: SharedMemory;

  /** size: a multiple of 4096; base: the guest address of its first byte (page aligned). */
  constructor(size: number, base = 0n, name = 'vrnic-guest-ram') {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 4096 !== 0) throw new RangeError('guest memory size must be a positive multiple of 4096');
    if (base % 4096n !== 0n) throw new RangeError('guest memory base must be page aligned');
    this.base = base;
    this.size = size;
    this.memory = new SharedMemory(name, size);
  }

  /** The memfd: what DMA_MAP hands the server. */
  get fd(): number {
    return this.memory.fd;
  }

  /** True when [addr, addr + length) lies inside this memory. */
  contains(addr: bigint, length: number): boolean {
    return addr >= this.base && addr + BigInt(length) <= this.base + BigInt(this.size);
  }

  private at(addr: bigint, length: number): number {
    if (!this.contains(addr, length)) throw new RangeError(`guest range [0x${addr.toString(16)}, +${length}) is outside guest memory`);
    return Number(addr - this.base);
  }

  /** A copy of guest bytes [addr, addr + length). */
  read(addr: bigint, length: number): Buffer {
    const off = this.at(addr, length);
    return Buffer.from(this.memory.buffer.subarray(off, off + length));
  }

  write(addr: bigint, data: Uint8Array): void {
    const off = this.at(addr, data.length);
    this.memory.buffer.set(data, off);
  }

  readU32(addr: bigint): number {
    return this.read(addr, 4).readUInt32LE(0);
  }

  writeU32(addr: bigint, value: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value >>> 0);
    this.write(addr, b);
  }

  readU64(addr: bigint): bigint {
    return this.read(addr, 8).readBigUInt64LE(0);
  }

  writeU64(addr: bigint, value: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(value);
    this.write(addr, b);
  }

  /** Unmaps and closes the memfd; the server keeps its own mapping until it unmaps. */
  close(): void {
    this.memory.close();
  }
}
