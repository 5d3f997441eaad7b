// The pvrdma model in-process with guest RAM and a hand-driven "driver": shared region, commands, and the page directories vmw_pvrdma lays out.
import pino from 'pino';
import { SharedMemory } from '../ffi/libc';
import { DmaError, type DeviceContext, type DmaAccess, type TrappedBar } from '../emulator/framework/device';
import { Fabric } from '../emulator/datapath/fabric';
import { createPvrdma, pvrdmaAbi as abi } from '../emulator/pvrdma';

export const BASE = 0x10_0000n;
export const SIZE = 1 << 20;
export const PAGE = 4096n;
// guest pages the "driver" uses: DSR, command slot, response slot, two rings (dir, table, 4 pages each)
export const DSR = BASE;
export const CMD = BASE + PAGE;
export const RESP = BASE + 2n * PAGE;

export function setup(irq: 'msix' | 'msi' | 'intx' = 'msix', fabric: Fabric = new Fabric()) {
  const dev = createPvrdma({ irq }, { log: pino({ level: 'silent' }), fabric });
  const ram = new SharedMemory('pvrdma-test-ram', SIZE);
  const inside = (a: bigint, n: number) => n > 0 && a >= BASE && a + BigInt(n) <= BASE + BigInt(SIZE);
  const dma: DmaAccess = {
    isMapped: (a, n) => inside(a, n),
    read: async (a, n) => {
      if (!inside(a, n)) throw new DmaError(a, n, 'not mapped');
      const o = Number(a - BASE);
      return Buffer.from(ram.buffer.subarray(o, o + n));
    },
    write: async (a, d) => {
      if (!inside(a, d.length)) throw new DmaError(a, d.length, 'not mapped');
      d.copy(ram.buffer, Number(a - BASE));
    },
  };
  const vectors: number[] = [];
  let level = false;
  const ctx: DeviceContext = { dma, irq: { trigger: (v) => (vectors.push(v), true), setLevel: (l) => ((level = l), true) }, log: pino({ level: 'silent' }) };
  dev.attach(ctx);
  const bar1 = dev.bars.find((b) => b.index === abi.BAR_REG) as TrappedBar;
  const bar2 = dev.bars.find((b) => b.index === abi.BAR_UAR) as TrappedBar;
  const reg = {
    read: (off: number) => {
      const b = Buffer.alloc(4);
      bar1.read(off, b);
      return b.readUInt32LE(0);
    },
    write: (off: number, v: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(v >>> 0);
      bar1.write(off, b);
    },
  };
  /** A 32-bit doorbell write at `offset` of the UAR BAR. */
  const uar = (offset: number, v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    bar2.write(offset, b);
  };
  const mem = (a: bigint) => ram.buffer.subarray(Number(a - BASE));
  // a page directory as pvrdma_page_dir_init lays it out: dir page -> table page -> `pages`
  const pdir = (at: bigint, pages: readonly bigint[]): bigint => {
    const table = at + PAGE;
    mem(at).fill(0, 0, 4096);
    mem(at).writeBigUInt64LE(table, 0);
    for (const [i, p] of pages.entries()) mem(table).writeBigUInt64LE(p, i * 8);
    return at;
  };
  const ring = (at: bigint): bigint => pdir(at, [0n, 1n, 2n, 3n].map((i) => at + (2n + i) * PAGE));
  return { dev, ram, reg, uar, mem, pdir, ring, vectors, level: () => level };
}

export type Setup = ReturnType<typeof setup>;

export const tick = () => new Promise((r) => setImmediate(r));

export async function probe(s: Setup) {
  const d = s.mem(DSR);
  d.writeUInt32LE(abi.PVRDMA_VERSION, abi.Dsr.driverVersion);
  d.writeBigUInt64LE(CMD, abi.Dsr.cmdSlotDma);
  d.writeBigUInt64LE(RESP, abi.Dsr.respSlotDma);
  d.writeUInt32LE(4, abi.Dsr.asyncRingPages);
  d.writeBigUInt64LE(s.ring(BASE + 16n * PAGE), abi.Dsr.asyncRingPages + 8);
  d.writeUInt32LE(4, abi.Dsr.cqRingPages);
  d.writeBigUInt64LE(s.ring(BASE + 32n * PAGE), abi.Dsr.cqRingPages + 8);
  s.reg.write(abi.Reg.DsrLow, Number(DSR & 0xffffffffn));
  s.reg.write(abi.Reg.DsrHigh, Number(DSR >> 32n));
}

/** Probes and activates the device, as vmw_pvrdma's probe ends. */
export async function activate(s: Setup) {
  await probe(s);
  await tick();
  s.reg.write(abi.Reg.Imr, 0);
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  await tick();
}

/** Posts a command and waits for its response header (the response bit in the ack field). */
export async function command(s: Setup, cmd: number, fill: (b: Buffer) => void = () => undefined): Promise<Buffer> {
  const c = s.mem(CMD);
  c.fill(0, 0, abi.CMD_REQ_SIZE);
  c.writeBigUInt64LE(0x1234n, 0);
  c.writeUInt32LE(cmd, 8);
  fill(c);
  s.mem(RESP).fill(0, 0, abi.CMD_RESP_SIZE);
  s.reg.write(abi.Reg.Request, 0);
  for (let i = 0; i < 50 && s.mem(RESP).readUInt32LE(8) === 0; i++) await tick();
  return Buffer.from(s.mem(RESP).subarray(0, abi.CMD_RESP_SIZE));
}
