// Test support for the NIC: a driver written from docs/device.md (its own byte layouts), over any way of reaching the device.
import pino from 'pino';
import { SharedMemory } from '../../ffi/libc';
import { DmaError, type DeviceContext, type DmaAccess, type InterruptSink } from '../../emulator/framework/device';
import type { Nic } from '../../emulator/nic/device';
import { Reg } from '../../emulator/nic/regs';

/** How a test reaches a device: BAR0 registers, guest memory by guest address, the UAR BAR, interrupts. */
export interface DeviceAccess {
  readReg(offset: number): Promise<number>;
  writeReg(offset: number, value: number): Promise<void>;
  /** Guest memory as the guest sees it (the test plays the guest). */
  memRead(addr: bigint, length: number): Buffer;
  memWrite(addr: bigint, data: Buffer): void;
  /** The UAR BAR (BAR2) as the guest's user space would see it mmapped. */
  readonly uar: Buffer;
  /** Resolves once vector `vector` has fired since the last call for that vector (or fires later). */
  waitIrq(vector: number): Promise<void>;
  /** How many times each vector fired. */
  irqCount(vector: number): number;
}

export interface Completion {
  readonly cmdId: number;
  readonly status: number;
  readonly phase: number;
  readonly result0: number;
  readonly result1: number;
}

/** A guest-memory bump allocator over [base, base + size). */
export class GuestHeap {
  private next: bigint;
  constructor(readonly base: bigint, readonly size: bigint) {
    this.next = base;
  }
  alloc(bytes: number, align = 4096): bigint {
    const a = BigInt(align);
    const addr = ((this.next + a - 1n) / a) * a;
    if (addr + BigInt(bytes) > this.base + this.size) throw new Error('guest heap exhausted');
    this.next = addr + BigInt(bytes);
    return addr;
  }
}

/** Waits (without timing anything) until `cond` holds; gives up after `limitMs` so a broken device fails the test instead of hanging it. */
export async function until(cond: () => boolean, what: string, limitMs = 10_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** A 64-byte admin command built field by field, independently of the device's decoder. */
export function command(opcode: number, cmdId: number, fields: ReadonlyArray<readonly [number, 'u32' | 'u64', number | bigint]> = [], flags = 0): Buffer {
  const b = Buffer.alloc(64);
  b[0] = opcode;
  b[1] = flags;
  b.writeUInt32LE(cmdId, 4);
  for (const [off, kind, v] of fields) {
    if (kind === 'u32') b.writeUInt32LE(Number(v) >>> 0, off);
    else b.writeBigUInt64LE(BigInt(v), off);
  }
  return b;
}

export const OP = {
  QUERY_DEVICE: 0x01,
  QUERY_PORT: 0x02,
  ALLOC_UAR: 0x03,
  FREE_UAR: 0x04,
  CREATE_PD: 0x05,
  DESTROY_PD: 0x06,
  CREATE_CQ: 0x07,
  DESTROY_CQ: 0x08,
  CREATE_QP: 0x09,
  MODIFY_QP: 0x0a,
  DESTROY_QP: 0x0b,
  REG_MR: 0x0c,
  DEREG_MR: 0x0d,
} as const;

export const ST = { OK: 0, BAD_OPCODE: 1, BAD_PARAM: 2, BAD_ADDRESS: 3, NO_RESOURCES: 4, BAD_HANDLE: 5, IN_USE: 6, BAD_STATE: 7 } as const;

export interface CqHandle {
  readonly cqn: number;
  readonly buf: bigint;
  readonly entries: number;
  readonly uar: number;
  readonly dbOffset: number;
}

export interface QpHandle {
  readonly qpn: number;
  readonly sq: bigint;
  readonly sqEntries: number;
  readonly uar: number;
  readonly dbOffset: number;
}

/** The guest driver's side of the admin queue, event queue and a minimal data path, as docs/device.md says. */
export class TestDriver {
  readonly asq: bigint;
  readonly acq: bigint;
  readonly eq: bigint;
  private asqTail = 0;
  private acqHead = 0;
  eqHead = 0;
  private cmdId = 1;
  private armSeq = 0;

  constructor(
    readonly dev: DeviceAccess,
    readonly heap: GuestHeap,
    readonly asqSize = 16,
    readonly acqSize = 16,
    readonly eqSize = 16,
  ) {
    this.asq = heap.alloc(asqSize * 64);
    this.acq = heap.alloc(acqSize * 16);
    this.eq = heap.alloc(eqSize * 16);
  }

  async writeBase(loReg: number, addr: bigint): Promise<void> {
    await this.dev.writeReg(loReg, Number(addr & 0xffffffffn));
    await this.dev.writeReg(loReg + 4, Number(addr >> 32n));
  }

  /** Reset, program the queues, enable; returns STATUS. */
  async bringUp(): Promise<number> {
    await this.dev.writeReg(Reg.Ctrl, 2);
    this.dev.memWrite(this.asq, Buffer.alloc(this.asqSize * 64));
    this.dev.memWrite(this.acq, Buffer.alloc(this.acqSize * 16));
    this.dev.memWrite(this.eq, Buffer.alloc(this.eqSize * 16));
    this.asqTail = this.acqHead = this.eqHead = 0;
    await this.writeBase(Reg.AsqBaseLo, this.asq);
    await this.dev.writeReg(Reg.AsqSize, this.asqSize);
    await this.writeBase(Reg.AcqBaseLo, this.acq);
    await this.dev.writeReg(Reg.AcqSize, this.acqSize);
    await this.writeBase(Reg.EqBaseLo, this.eq);
    await this.dev.writeReg(Reg.EqSize, this.eqSize);
    await this.dev.writeReg(Reg.Ctrl, 1);
    return this.dev.readReg(Reg.Status);
  }

  nextCmdId(): number {
    return this.cmdId++;
  }

  /** Posts one command, rings ASQ_TAIL, waits for its completion by phase, consumes it. */
  async submit(cmd: Buffer): Promise<Completion> {
    const slot = this.asqTail % this.asqSize;
    this.dev.memWrite(this.asq + BigInt(slot * 64), cmd);
    this.asqTail = (this.asqTail + 1) >>> 0;
    await this.dev.writeReg(Reg.AsqTail, this.asqTail);
    const c = await this.nextCompletion();
    return c;
  }

  async nextCompletion(): Promise<Completion> {
    const slot = this.acqHead % this.acqSize;
    const phase = 1 - (Math.floor(this.acqHead / this.acqSize) & 1);
    const addr = this.acq + BigInt(slot * 16);
    await until(() => (this.dev.memRead(addr + 6n, 2).readUInt16LE(0) & 1) === phase, 'an admin completion');
    const e = this.dev.memRead(addr, 16);
    this.acqHead = (this.acqHead + 1) >>> 0;
    await this.dev.writeReg(Reg.AcqHead, this.acqHead);
    return { cmdId: e.readUInt32LE(0), status: e.readUInt16LE(4), phase: e.readUInt16LE(6) & 1, result0: e.readUInt32LE(8), result1: e.readUInt32LE(12) };
  }

  /** The next event if one is posted (by phase), consuming it. */
  async nextEvent(): Promise<{ type: number; data0: number; data1: number }> {
    const slot = this.eqHead % this.eqSize;
    const phase = 1 - (Math.floor(this.eqHead / this.eqSize) & 1);
    const addr = this.eq + BigInt(slot * 16);
    await until(() => (this.dev.memRead(addr + 2n, 2).readUInt16LE(0) & 1) === phase, 'an event');
    const e = this.dev.memRead(addr, 16);
    this.eqHead = (this.eqHead + 1) >>> 0;
    await this.dev.writeReg(Reg.EqHead, this.eqHead);
    return { type: e.readUInt16LE(0), data0: e.readUInt32LE(4), data1: e.readUInt32LE(8) };
  }

  async ok(cmd: Buffer): Promise<Completion> {
    const c = await this.submit(cmd);
    if (c.status !== 0) throw new Error(`command 0x${cmd[0].toString(16)} failed with status ${c.status}`);
    return c;
  }

  async allocUar(count = 1): Promise<number> {
    return (await this.ok(command(OP.ALLOC_UAR, this.nextCmdId(), [[8, 'u32', count]]))).result0;
  }

  async createPd(): Promise<number> {
    return (await this.ok(command(OP.CREATE_PD, this.nextCmdId()))).result0;
  }

  async createCq(uar: number, entries = 16, vector = 0): Promise<CqHandle> {
    const buf = this.heap.alloc(entries * 32);
    this.dev.memWrite(buf, Buffer.alloc(entries * 32));
    const c = await this.ok(command(OP.CREATE_CQ, this.nextCmdId(), [[8, 'u64', buf], [0x10, 'u32', entries], [0x14, 'u32', vector], [0x18, 'u32', uar]]));
    return { cqn: c.result0, buf, entries, uar, dbOffset: c.result1 };
  }

  async createQp(pd: number, cq: CqHandle, sqEntries = 16): Promise<QpHandle> {
    const sq = this.heap.alloc(sqEntries * 64);
    this.dev.memWrite(sq, Buffer.alloc(sqEntries * 64));
    const c = await this.ok(
      command(OP.CREATE_QP, this.nextCmdId(), [
        [0x08, 'u32', pd],
        [0x0c, 'u32', cq.cqn],
        [0x10, 'u32', cq.cqn],
        [0x14, 'u32', cq.uar],
        [0x18, 'u64', sq],
        [0x20, 'u64', 0n],
        [0x28, 'u32', sqEntries],
        [0x2c, 'u32', 0],
        [0x30, 'u32', 2],
      ]),
    );
    return { qpn: c.result0, sq, sqEntries, uar: cq.uar, dbOffset: c.result1 };
  }

  async modifyQp(qpn: number, state: number): Promise<Completion> {
    return this.submit(command(OP.MODIFY_QP, this.nextCmdId(), [[8, 'u32', qpn], [0x0c, 'u32', state]]));
  }

  /** Writes a NOP WQE at SQ index `index` with `wrId`. */
  postNop(qp: QpHandle, index: number, wrId: bigint): void {
    const w = Buffer.alloc(64);
    w[0] = 0;
    w.writeBigUInt64LE(wrId, 8);
    this.dev.memWrite(qp.sq + BigInt(64 * (index % qp.sqEntries)), w);
  }

  ringSq(qp: QpHandle, pi: number): void {
    this.dev.uar.writeUInt32LE(((qp.qpn << 16) | (pi & 0xffff)) >>> 0, qp.uar * 4096 + qp.dbOffset);
  }

  armCq(cq: CqHandle, ci: number): void {
    this.armSeq = (this.armSeq + 1) & 0x7fff;
    this.dev.uar.writeUInt32LE((0x80000000 | (this.armSeq << 16) | (ci & 0xffff)) >>> 0, cq.uar * 4096 + cq.dbOffset + 4);
  }

  /** CQE `index`, or null while its phase says it is not there yet. */
  cqe(cq: CqHandle, index: number): { wrId: bigint; qpn: number; opcode: number; status: number; wqeIndex: number; flags: number } | null {
    const addr = cq.buf + BigInt(32 * (index % cq.entries));
    const e = this.dev.memRead(addr, 32);
    const phase = 1 - (Math.floor(index / cq.entries) & 1);
    const flags = e.readUInt32LE(0x1c);
    if ((flags & 1) !== phase) return null;
    return { wrId: e.readBigUInt64LE(0), qpn: e.readUInt32LE(8), opcode: e[0x10], status: e[0x11], wqeIndex: e.readUInt16LE(0x12), flags };
  }
}

/**
 * The device in this process, without a transport: guest memory is a memfd at `base` that a
 * DmaAccess checks every range against, BAR0 is called directly, BAR2 is the device's own memory.
 * For model tests; the client-driven tests (nic-client.test.ts) go through vfio-user.
 */
export function localAccess(nic: Nic, base = 0x10_0000n, size = 4 << 20): { access: DeviceAccess; ctx: DeviceContext; heap: GuestHeap; ram: SharedMemory; unmap(): void } {
  const ram = new SharedMemory('nic-test-ram', size);
  let mapped = true;
  const inside = (addr: bigint, length: number): boolean => mapped && length > 0 && addr >= base && addr + BigInt(length) <= base + BigInt(size);
  const dma: DmaAccess = {
    isMapped: (addr, length) => inside(addr, length),
    read: async (addr, length) => {
      if (!inside(addr, length)) throw new DmaError(addr, length, 'not mapped');
      const o = Number(addr - base);
      return Buffer.from(ram.buffer.subarray(o, o + length));
    },
    write: async (addr, data) => {
      if (!inside(addr, data.length)) throw new DmaError(addr, data.length, 'not mapped');
      data.copy(ram.buffer, Number(addr - base));
    },
  };
  const counts = new Map<number, number>();
  const waiters = new Map<number, Array<() => void>>();
  const seen = new Map<number, number>();
  const irq: InterruptSink = {
    trigger: (v) => {
      counts.set(v, (counts.get(v) ?? 0) + 1);
      for (const w of waiters.get(v) ?? []) w();
      waiters.delete(v);
      return true;
    },
    setLevel: () => false,
  };
  const ctx: DeviceContext = { dma, irq, log: pino({ level: 'silent' }) };
  const bar0 = nic.bars.find((b) => b.index === 0);
  if (bar0 === undefined || bar0.kind !== 'trapped') throw new Error('no trapped BAR0');
  const access: DeviceAccess = {
    readReg: async (off) => {
      const b = Buffer.alloc(4);
      bar0.read(off, b);
      return b.readUInt32LE(0);
    },
    writeReg: async (off, v) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(v >>> 0);
      bar0.write(off, b);
    },
    memRead: (addr, length) => Buffer.from(ram.buffer.subarray(Number(addr - base), Number(addr - base) + length)),
    memWrite: (addr, data) => {
      data.copy(ram.buffer, Number(addr - base));
    },
    uar: nic.uarMemory.buffer,
    waitIrq: (v) => {
      const n = counts.get(v) ?? 0;
      if (n > (seen.get(v) ?? 0)) {
        seen.set(v, n);
        return Promise.resolve();
      }
      return new Promise((resolve) => {
        const list = waiters.get(v) ?? [];
        list.push(() => {
          seen.set(v, counts.get(v) ?? 0);
          resolve();
        });
        waiters.set(v, list);
      });
    },
    irqCount: (v) => counts.get(v) ?? 0,
  };
  nic.attach(ctx);
  return { access, ctx, heap: new GuestHeap(base, BigInt(size)), ram, unmap: () => void (mapped = false) };
}
