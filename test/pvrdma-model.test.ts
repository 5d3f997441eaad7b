// The pvrdma model driven in-process as vmw_pvrdma's probe drives it: shared region, commands, interrupts, bad input.
import test from 'ava';
import pino from 'pino';
import { SharedMemory } from '../ffi/libc';
import { DmaError, type DeviceContext, type DmaAccess, type TrappedBar } from '../emulator/framework/device';
import { createPvrdma, pvrdmaAbi as abi } from '../emulator/pvrdma';

const BASE = 0x10_0000n;
const SIZE = 1 << 20;
const PAGE = 4096n;
// guest pages the "driver" uses: DSR, command slot, response slot, two rings (dir, table, 4 pages each)
const DSR = BASE;
const CMD = BASE + PAGE;
const RESP = BASE + 2n * PAGE;

function setup(irq: 'msix' | 'msi' | 'intx' = 'msix') {
  const dev = createPvrdma({ irq }, { log: pino({ level: 'silent' }) });
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
  const mem = (a: bigint) => ram.buffer.subarray(Number(a - BASE));
  // a ring page directory as pvrdma_page_dir_init lays it out: dir page -> table page -> pages
  const ring = (at: bigint): bigint => {
    const dir = at;
    const table = at + PAGE;
    mem(dir).writeBigUInt64LE(table, 0);
    for (let i = 0; i < 4; i++) mem(table).writeBigUInt64LE(at + (2n + BigInt(i)) * PAGE, i * 8);
    return dir;
  };
  return { dev, ram, reg, mem, ring, vectors, level: () => level };
}

const tick = () => new Promise((r) => setImmediate(r));

async function probe(s: ReturnType<typeof setup>) {
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

async function command(s: ReturnType<typeof setup>, cmd: number, fill: (b: Buffer) => void = () => undefined): Promise<Buffer> {
  const c = s.mem(CMD);
  c.fill(0, 0, abi.CMD_REQ_SIZE);
  c.writeBigUInt64LE(0x1234n, 0);
  c.writeUInt32LE(cmd, 8);
  fill(c);
  s.mem(RESP).fill(0, 0, abi.CMD_RESP_SIZE);
  s.reg.write(abi.Reg.Request, 0);
  for (let i = 0; i < 5; i++) await tick();
  return Buffer.from(s.mem(RESP).subarray(0, abi.CMD_RESP_SIZE));
}

test('the capabilities are in the shared region when the DSRHIGH write returns, as vmw_pvrdma reads them right after', (t) => {
  const s = setup();
  void probe(s);
  const caps = s.mem(DSR + BigInt(abi.Dsr.caps));
  t.is(caps.readUInt8(abi.Caps.mode), abi.DEVICE_MODE_ROCE);
  t.is(caps.readUInt8(abi.Caps.gidTypes), abi.GID_TYPE_FLAG_ROCE_V1);
  t.is(caps.readUInt8(abi.Caps.physPortCnt), 1);
  t.is(caps.readUInt32LE(abi.Caps.maxUar), 16);
  t.is(s.reg.read(abi.Reg.Version), abi.PVRDMA_VERSION);
});

test('QUERY_PORT is answered in the response slot with the port ACTIVE, and the response interrupt follows', async (t) => {
  const s = setup();
  await probe(s);
  await tick();
  s.reg.write(abi.Reg.Imr, 0);
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  t.is(s.reg.read(abi.Reg.Err), 0);
  await tick();
  s.vectors.length = 0;
  const r = await command(s, abi.Cmd.QueryPort, (b) => b.writeUInt8(1, 16));
  t.is(r.readBigUInt64LE(0), 0x1234n);
  t.is(r.readUInt32LE(8), (abi.CMD_RESP_BIT + abi.Cmd.QueryPort) >>> 0);
  t.is(r.readUInt8(12), 0);
  t.is(r.readUInt32LE(16), abi.PORT_ACTIVE);
  t.deepEqual(s.vectors, [abi.Vector.Response]);
});

test('a command the driver does not wait for (DESTROY_PD) is acknowledged without an interrupt', async (t) => {
  const s = setup();
  await probe(s);
  await tick();
  s.reg.write(abi.Reg.Imr, 0);
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  const pd = (await command(s, abi.Cmd.CreatePd)).readUInt32LE(16);
  t.true(pd > 0);
  s.vectors.length = 0;
  const r = await command(s, abi.Cmd.DestroyPd, (b) => b.writeUInt32LE(pd, 16));
  t.is(r.readUInt8(12), 0);
  t.deepEqual(s.vectors, []);
  t.is(s.dev.objects.pds.size, 0);
});

test('a CREATE_QP naming a CQ that does not exist gets err set and creates nothing; the device goes on', async (t) => {
  const s = setup();
  await probe(s);
  await tick();
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  const pd = (await command(s, abi.Cmd.CreatePd)).readUInt32LE(16);
  const r = await command(s, abi.Cmd.CreateQp, (b) => {
    b.writeUInt32LE(pd, 24);
    b.writeUInt32LE(77, 28);
    b.writeUInt32LE(77, 32);
  });
  t.not(r.readUInt8(12), 0);
  t.is(s.dev.objects.qps.size, 0);
  t.is((await command(s, abi.Cmd.QueryPort, (b) => b.writeUInt8(1, 16))).readUInt8(12), 0);
});

test('without MSI-X the response sets ICR and the INTx level, and reading ICR clears both', async (t) => {
  const s = setup('intx');
  await probe(s);
  await tick();
  s.reg.write(abi.Reg.Imr, 0);
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  await command(s, abi.Cmd.QueryPort, (b) => b.writeUInt8(1, 16));
  t.true(s.level());
  t.is(s.reg.read(abi.Reg.Icr), 1 << abi.Vector.Response);
  t.false(s.level());
  t.is(s.reg.read(abi.Reg.Icr), 0);
});

test('a shared region outside guest memory fails the probe through ERR instead of crashing the device', (t) => {
  const s = setup();
  s.reg.write(abi.Reg.DsrLow, 0x1000);
  s.reg.write(abi.Reg.DsrHigh, 0x7);
  t.is(s.reg.read(abi.Reg.Err), 1);
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  t.is(s.reg.read(abi.Reg.Err), 1);
  t.true(s.dev.guestErrors.count() >= 2);
});
