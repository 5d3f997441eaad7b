// DMA on the libvfio-user transport through its views of the client's memory: what a device may and may not reach, against the real library and a real client.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { DmaError, type DeviceContext, type MemoryBar, type PciDevice, type TrappedBar } from '../emulator/framework/device';
import { VfioUserClient } from '../src/vfio-user/client/index';
import { GuestMemory } from '../src/vfio-user/client/guest-memory';
import { SharedMemory } from '../ffi/libc';
import { libvfioUserUnavailable } from '../ffi/libvfio-user';
import { LibvfioUserTransport } from '../src/vfio-user/transports/libvfio-user/index';
import { skipping } from './helpers/skip';

const unavailable = libvfioUserUnavailable();
if (unavailable !== null) skipping('libvfio-user DMA view tests', unavailable);
const withLib = unavailable === null ? test.serial : test.serial.skip;

const RAM_BASE = 0x40000000n;
const REGION = 0x10000;

/** BAR0: 4 KiB of registers; BAR2: 4 KiB shared memory; 4 MSI-X vectors in BAR4. */
class SmallDevice implements PciDevice {
  readonly name = 'small';
  readonly identity = { vendorId: 0x1de5, deviceId: 0x0a11, subsystemVendorId: 0x1de5, subsystemId: 0x0001, classCode: 0x020700, revision: 0x02 };
  readonly capabilities = { pm: true, pcie: true, msix: { vectors: 4, bar: 4 as const, tableOffset: 0, pbaOffset: 0x800 } };
  readonly registers = Buffer.alloc(4096);
  readonly memory = new SharedMemory('small-bar2', 4096);
  readonly bars: (TrappedBar | MemoryBar)[];
  ctx: DeviceContext | null = null;

  constructor() {
    const regs = this.registers;
    this.bars = [
      { kind: 'trapped', index: 0, size: 4096, read: (off, data) => { regs.copy(data, 0, off, off + data.length); }, write: (off, data) => { data.copy(regs, off); } },
      { kind: 'memory', index: 2, size: 4096, memory: this.memory },
    ];
  }

  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
  }

  reset(): void {
    this.registers.fill(0);
  }

  close(): void {
    this.memory.close();
  }
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

/** A transport, a client with three 64 KiB regions of one guest memory mapped, and the device's DmaAccess. */
async function withRegions(
  maps: readonly { readable: boolean; writable: boolean }[],
  body: (ctx: DeviceContext, client: VfioUserClient, ram: GuestMemory, transport: LibvfioUserTransport) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vrnic-dmaview-'));
  const device = new SmallDevice();
  const transport = new LibvfioUserTransport({ socketPath: join(dir, 'vfio-user.sock'), device, log: pino({ level: 'silent' }) });
  const ram = new GuestMemory(REGION * maps.length, RAM_BASE);
  let client: VfioUserClient | null = null;
  try {
    await transport.start();
    client = await VfioUserClient.connect(join(dir, 'vfio-user.sock'));
    await client.enableDevice();
    for (const [i, m] of maps.entries()) await client.dmaMap(ram, { addr: RAM_BASE + BigInt(i * REGION), size: REGION, ...m });
    await until(() => transport.stats().dmaRegions === maps.length);
    await body(device.ctx!, client, ram, transport);
  } finally {
    await client?.close();
    await transport.stop();
    ram.close();
    device.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const RW = { readable: true, writable: true };

withLib('after a DMA_UNMAP the device can no longer reach that memory, and bytes it read before stay readable', async (t) => {
  await withRegions([RW], async (ctx, client, ram, transport) => {
    ram.write(RAM_BASE + 0x100n, Buffer.from('work queue entry'));
    const before = await ctx.dma.read(RAM_BASE + 0x100n, 16);
    await client.dmaUnmap(RAM_BASE, REGION);
    await until(() => transport.stats().dmaRegions === 0);
    t.false(ctx.dma.isMapped(RAM_BASE + 0x100n, 16, false));
    await t.throwsAsync(ctx.dma.read(RAM_BASE + 0x100n, 16), { instanceOf: DmaError });
    await t.throwsAsync(ctx.dma.write(RAM_BASE + 0x100n, Buffer.alloc(4)), { instanceOf: DmaError });
    t.is(before.toString(), 'work queue entry');
  });
});

withLib('a DMA write to a region the client mapped read-only is refused and guest memory keeps its bytes', async (t) => {
  await withRegions([{ readable: true, writable: false }], async (ctx, _client, ram) => {
    ram.write(RAM_BASE, Buffer.from('read-only bytes!'));
    t.is((await ctx.dma.read(RAM_BASE, 16)).toString(), 'read-only bytes!');
    await t.throwsAsync(ctx.dma.write(RAM_BASE, Buffer.from('overwritten')), { instanceOf: DmaError, message: /read-only/ });
    t.is(ram.read(RAM_BASE, 16).toString(), 'read-only bytes!');
  });
});

withLib('a DMA read of a region mapped with neither read nor write access is refused instead of faulting', async (t) => {
  await withRegions([{ readable: false, writable: false }], async (ctx) => {
    t.false(ctx.dma.isMapped(RAM_BASE, 4, false));
    await t.throwsAsync(ctx.dma.read(RAM_BASE, 4), { instanceOf: DmaError, message: /readable/ });
  });
});

withLib('a DMA access running from one region into the next is refused even when both are mapped', async (t) => {
  await withRegions([RW, RW], async (ctx) => {
    t.is((await ctx.dma.read(RAM_BASE + BigInt(REGION) - 16n, 16)).length, 16);
    await t.throwsAsync(ctx.dma.read(RAM_BASE + BigInt(REGION) - 16n, 32), { instanceOf: DmaError, message: /more than one region/ });
  });
});

withLib('DMA writes land in the guest memory of the right region at the right offset', async (t) => {
  await withRegions([RW, RW], async (ctx, _client, ram) => {
    await ctx.dma.write(RAM_BASE + BigInt(REGION) + 0x20n, Buffer.from('completion'));
    t.is(ram.read(RAM_BASE + BigInt(REGION) + 0x20n, 10).toString(), 'completion');
    t.is(ram.read(RAM_BASE + 0x20n, 10).toString('hex'), '00'.repeat(10));
  });
});

withLib('once the client leaves, DMA to the memory it had mapped is refused', async (t) => {
  await withRegions([RW], async (ctx, client, _ram, transport) => {
    await client.close();
    await until(() => !transport.stats().clientConnected);
    await t.throwsAsync(ctx.dma.read(RAM_BASE, 4), { instanceOf: DmaError });
    t.is(transport.stats().dmaRegions, 0);
  });
});
