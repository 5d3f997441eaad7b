// One suite run on every transport present: the same device must look and behave the same through each.
import test from 'ava';
import { availableTransports, libvfioUserUnavailable } from '../src/vfio-user/transports/index';
import { GuestMemory, IrqIndex, RegionIndex, VfioUserError } from '../src/vfio-user/client/index';
import { DMA_STATUS, REG, TEST_DEVICE_ID } from './helpers/test-device';
import { serve, type Served } from './helpers/served';
import { skipping } from './helpers/skip';

const transports = availableTransports();
const why = libvfioUserUnavailable();
if (why !== null) skipping('conformance on libvfio-user', why);

/** What each transport showed, for the cross-transport comparison at the end. */
const seen = new Map<string, { config?: Buffer; regions?: unknown[]; irqs?: unknown[]; writes?: string[] }>();
const record = (name: string) => {
  if (!seen.has(name)) seen.set(name, {});
  return seen.get(name)!;
};

async function withServed(name: (typeof transports)[number], fn: (s: Served) => Promise<void>): Promise<void> {
  const s = await serve(name);
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

/** The config writes every transport gets, in order: [offset, value, size]. */
const STANDARD_CONFIG_WRITES: readonly (readonly [number, number, 1 | 2 | 4])[] = [
  [0x10, 0xffffffff, 4], // size BAR0
  [0x18, 0xffffffff, 4], // size BAR2
  [0x14, 0xffffffff, 4], // BAR1 is not implemented
  [0x10, 0xfe804000, 4],
  [0x18, 0xfe800000, 4],
  [0x20, 0xfe805000, 4],
  [0x3c, 0x0b, 1], // interrupt line
  [0x0c, 0x10, 1], // cache line size
  [0x04, 0x0406, 2], // memory, bus master, INTx disable
  [0x06, 0xffff, 2], // status: RW1C bits are clear, so nothing changes
  [0x00, 0x12345678, 4], // vendor/device are read-only
  [0x44, 0x0003, 2], // PMCSR: D3hot
  [0x44, 0x0000, 2], // back to D0
  [0x68, 0x2010, 2], // PCIe device control
  [0x52, 0xc000, 2], // MSI-X enable + function mask
  [0x52, 0x8000, 2], // function mask off
];

/** Applies STANDARD_CONFIG_WRITES; returns the outcome of each ('ok' or the errno name). */
async function standardConfigWrites(s: Served): Promise<string[]> {
  const outcomes: string[] = [];
  for (const [offset, value, size] of STANDARD_CONFIG_WRITES) {
    try {
      await s.client.configWrite(offset, value, size);
      outcomes.push('ok');
    } catch (err) {
      if (!(err instanceof VfioUserError)) throw err;
      outcomes.push(`0x${offset.toString(16)}/${size}: ${err.code}`);
    }
  }
  return outcomes;
}

for (const name of transports) {
  test.serial(`${name}: VERSION negotiates and the device reports PCI with reset, 9 regions and 5 IRQ types`, async (t) => {
    await withServed(name, async ({ client }) => {
      t.is(typeof client.serverCaps.max_data_xfer_size, 'number');
      const info = await client.deviceInfo();
      t.is(info.flags & 3, 3);
      t.is(info.numRegions, 9);
      t.is(info.numIrqs, 5);
    });
  });

  test.serial(`${name}: config space sizes BARs with all-ones writes and keeps read-only fields`, async (t) => {
    await withServed(name, async (s) => {
      const c = s.client;
      const before = await c.configSpace();
      t.is(before.readUInt16LE(0), 0x1b36);
      t.is(before.readUInt16LE(2), 0x00f0);
      t.is(before[0x34], 0x40, 'capability list starts at 0x40');
      await c.configWrite(0x10, 0xffffffff);
      t.is(await c.configRead(0x10), 0xfffff000, 'BAR0 is 4 KiB');
      await c.configWrite(0x18, 0xffffffff);
      t.is(await c.configRead(0x18), 0xffffc000, 'BAR2 is 16 KiB');
      const outcomes = await standardConfigWrites(s);
      t.log(`config write outcomes: ${outcomes.join(', ')}`);
      const after = await c.configSpace();
      record(name).writes = outcomes;
      record(name).config = after;
      t.is(after.readUInt16LE(0), 0x1b36, 'vendor id is read-only');
      t.is(after.readUInt32LE(0x10), 0xfe804000);
      t.is(after.readUInt32LE(0x14), 0, 'an unimplemented BAR reads 0');
      t.is(after.readUInt16LE(0x04) & 0x0406, 0x0406);
      t.is(after.readUInt16LE(0x52) & 0xc000, 0x8000, 'MSI-X enabled, not masked');
      t.deepEqual(outcomes, STANDARD_CONFIG_WRITES.map(() => 'ok'), 'every config write is accepted (read-only bits are ignored, not refused)');
    });
  });

  test.serial(`${name}: region info describes config space, trapped BAR0, mmappable BAR2 and the MSI-X BAR`, async (t) => {
    await withServed(name, async ({ client }) => {
      const regions = [];
      for (let i = 0; i < 9; i++) {
        const r = await client.regionInfo(i);
        regions.push({ index: r.index, flags: r.flags, size: r.size, offset: r.offset, capOffset: r.capOffset, argsz: r.argsz, sparse: r.sparseAreas, fd: r.fd !== null });
      }
      t.is(regions[RegionIndex.Config]!.size, 4096n);
      t.is(regions[RegionIndex.Config]!.flags & 3, 3);
      t.is(regions[0]!.size, 4096n);
      t.is(regions[0]!.flags & 4, 0, 'BAR0 is trapped, not mmappable');
      t.is(regions[2]!.size, 16384n);
      t.is(regions[2]!.flags & 4, 4, 'BAR2 is mmappable');
      t.true(regions[2]!.fd, 'BAR2 comes with an fd');
      t.deepEqual(regions[2]!.sparse, [{ offset: 0n, size: 16384n }]);
      t.true(regions[4]!.size >= 4096n, 'MSI-X BAR present');
      for (const i of [1, 3, 5, 6, 8]) t.is(regions[i]!.size, 0n, `region ${i} is absent`);
      record(name).regions = regions;
    });
  });

  test.serial(`${name}: IRQ info offers INTx 1, MSI 0, MSI-X 4, ERR 1 and REQ 1 with eventfds`, async (t) => {
    await withServed(name, async ({ client }) => {
      const irqs = [];
      for (let i = 0; i < 5; i++) irqs.push(await client.irqInfo(i));
      t.deepEqual(irqs.map((i) => i.count), [1, 0, 4, 1, 1]);
      for (const i of irqs) t.is(i.flags & 1, 1);
      record(name).irqs = irqs;
    });
  });

  test.serial(`${name}: BAR0 registers read and write through REGION_READ/REGION_WRITE`, async (t) => {
    await withServed(name, async ({ client }) => {
      await client.enableDevice();
      t.is(await client.barRead32(0, REG.id), TEST_DEVICE_ID);
      await client.barWrite32(0, REG.scratch + 8, 0xa5a5f00d);
      t.is(await client.barRead32(0, REG.scratch + 8), 0xa5a5f00d);
      await client.barWrite64(0, REG.dmaSrc, 0x1122334455667788n);
      t.is(await client.barRead64(0, REG.dmaSrc), 0x1122334455667788n);
    });
  });

  test.serial(`${name}: a REGION_READ past the end of BAR0 gets EINVAL and the connection goes on`, async (t) => {
    await withServed(name, async ({ client }) => {
      await client.enableDevice();
      const err = await t.throwsAsync(client.regionRead(0, 4094, 4), { instanceOf: VfioUserError });
      t.is(err?.code, 'EINVAL');
      t.is(await client.barRead32(0, REG.id), TEST_DEVICE_ID);
    });
  });

  test.serial(`${name}: BAR2 memory is the same through mmap and through messages`, async (t) => {
    await withServed(name, async ({ client, device }) => {
      await client.enableDevice();
      const m = await client.mmapSparseArea(2);
      try {
        m.buffer.writeUInt32LE(0x600dcafe, 0x100);
        t.is(await client.barRead32(2, 0x100), 0x600dcafe);
        await client.barWrite32(2, 0x3ffc, 0x0badf00d);
        t.is(m.buffer.readUInt32LE(0x3ffc), 0x0badf00d);
        t.is(device.memory.buffer.readUInt32LE(0x3ffc), 0x0badf00d);
      } finally {
        m.unmap();
      }
    });
  });

  test.serial(`${name}: the device copies guest memory mapped with an fd, and fails once it is unmapped`, async (t) => {
    await withServed(name, async ({ client, device }) => {
      await client.enableDevice();
      await client.configWrite(0x52, 0x8000, 2);
      await client.setIrqEventfds(IrqIndex.Msix, 0, 4);
      const mem = new GuestMemory(64 * 1024, 0x200000n);
      try {
        await client.dmaMap(mem);
        mem.write(0x200000n, Buffer.from('through the fd'));
        await client.barWrite64(0, REG.dmaSrc, 0x200000n);
        await client.barWrite64(0, REG.dmaDst, 0x208000n);
        await client.barWrite32(0, REG.dmaLen, 14);
        await client.barWrite32(0, REG.dmaGo, 1);
        await client.waitIrq(IrqIndex.Msix, 0);
        t.is(await client.barRead32(0, REG.dmaStatus), DMA_STATUS.done);
        t.is(mem.read(0x208000n, 14).toString(), 'through the fd');
        await client.dmaUnmap(0x200000n, 64 * 1024);
        await client.barWrite32(0, REG.dmaGo, 1);
        await client.waitIrq(IrqIndex.Msix, 0);
        await device.lastDma;
        t.is(await client.barRead32(0, REG.dmaStatus), DMA_STATUS.failed);
      } finally {
        mem.close();
      }
    });
  });

  (name === 'native' ? test.serial : test.serial.skip)(`${name}: a client that never answers the device's DMA_READ makes that DMA fail, and the device goes on`, async (t) => {
    const s = await serve(name, { answerDmaRequests: false });
    try {
      const { client, device } = s;
      await client.enableDevice();
      await client.configWrite(0x52, 0x8000, 2);
      await client.setIrqEventfds(IrqIndex.Msix, 0, 4);
      const mem = new GuestMemory(64 * 1024, 0x400000n);
      try {
        await client.dmaMap(mem, { withFd: false });
        await client.barWrite64(0, REG.dmaSrc, 0x400010n);
        await client.barWrite64(0, REG.dmaDst, 0x40a000n);
        await client.barWrite32(0, REG.dmaLen, 16);
        await client.barWrite32(0, REG.dmaGo, 1);
        await client.waitIrq(IrqIndex.Msix, 0, 20_000);
        await device.lastDma;
        t.is(await client.barRead32(0, REG.dmaStatus), DMA_STATUS.failed);
        t.true(client.serverRequests >= 1, 'the server did ask');
        t.is(await client.configRead(0x00, 2), device.identity.vendorId, 'the connection still serves');
      } finally {
        mem.close();
      }
    } finally {
      await s.close();
    }
  });

  test.serial(`${name}: with bus mastering turned off the device's DMA fails and guest memory is untouched`, async (t) => {
    await withServed(name, async ({ client, device }) => {
      await client.enableDevice();
      await client.configWrite(0x52, 0x8000, 2);
      await client.setIrqEventfds(IrqIndex.Msix, 0, 4);
      await client.configWrite(0x04, 0x0002, 2); // memory space on, bus master off
      const mem = new GuestMemory(64 * 1024, 0x200000n);
      try {
        await client.dmaMap(mem);
        mem.write(0x200000n, Buffer.from('not for you'));
        await client.barWrite64(0, REG.dmaSrc, 0x200000n);
        await client.barWrite64(0, REG.dmaDst, 0x208000n);
        await client.barWrite32(0, REG.dmaLen, 11);
        await client.barWrite32(0, REG.dmaGo, 1);
        await client.waitIrq(IrqIndex.Msix, 0);
        await device.lastDma;
        t.is(await client.barRead32(0, REG.dmaStatus), DMA_STATUS.failed);
        t.true(mem.read(0x208000n, 11).equals(Buffer.alloc(11)), 'the destination was not written');
      } finally {
        mem.close();
      }
    });
  });

  // libvfio-user answers such DMA by blocking its caller until the client replies, which would
  // hold the daemon's only thread hostage to the client; that transport refuses it (docs/architecture.md).
  if (name === 'libvfio-user') {
    test.serial(`${name}: DMA to guest memory mapped without an fd fails with an error status and the device goes on`, async (t) => {
      await withServed(name, async ({ client }) => {
        await client.enableDevice();
        await client.configWrite(0x52, 0x8000, 2);
        await client.setIrqEventfds(IrqIndex.Msix, 0, 4);
        const mem = new GuestMemory(64 * 1024, 0x400000n);
        try {
          await client.dmaMap(mem, { withFd: false });
          await client.barWrite64(0, REG.dmaSrc, 0x400010n);
          await client.barWrite64(0, REG.dmaDst, 0x40a000n);
          await client.barWrite32(0, REG.dmaLen, 16);
          await client.barWrite32(0, REG.dmaGo, 1);
          await client.waitIrq(IrqIndex.Msix, 0);
          t.is(await client.barRead32(0, REG.dmaStatus), DMA_STATUS.failed);
          t.is(client.serverRequests, 0, 'the server never asked the client');
        } finally {
          mem.close();
        }
      });
    });
  }

  (name === 'native' ? test.serial : test.serial.skip)(`${name}: the device reaches guest memory mapped without an fd through DMA_READ/DMA_WRITE`, async (t) => {
    await withServed(name, async ({ client }) => {
      await client.enableDevice();
      await client.configWrite(0x52, 0x8000, 2);
      await client.setIrqEventfds(IrqIndex.Msix, 0, 4);
      const mem = new GuestMemory(64 * 1024, 0x400000n);
      try {
        await client.dmaMap(mem, { withFd: false });
        mem.write(0x400010n, Buffer.from('through messages'));
        await client.barWrite64(0, REG.dmaSrc, 0x400010n);
        await client.barWrite64(0, REG.dmaDst, 0x40a000n);
        await client.barWrite32(0, REG.dmaLen, 16);
        await client.barWrite32(0, REG.dmaGo, 1);
        await client.waitIrq(IrqIndex.Msix, 0);
        t.is(await client.barRead32(0, REG.dmaStatus), DMA_STATUS.done);
        t.is(mem.read(0x40a000n, 16).toString(), 'through messages');
        t.true(client.serverRequests >= 2, 'the server asked the client');
      } finally {
        mem.close();
      }
    });
  });

  test.serial(`${name}: an MSI-X vector raised by the device fires its eventfd`, async (t) => {
    await withServed(name, async ({ client }) => {
      await client.enableDevice();
      await client.configWrite(0x52, 0x8000, 2);
      await client.setIrqEventfds(IrqIndex.Msix, 0, 4);
      await client.barWrite32(0, REG.irq, 3);
      t.is(await client.waitIrq(IrqIndex.Msix, 3), 1n);
      t.is(client.takeIrq(IrqIndex.Msix, 2), 0n, 'other vectors stay quiet');
    });
  });

  test.serial(`${name}: a vector masked with SET_IRQS is held pending and fires on unmask`, async (t) => {
    await withServed(name, async ({ client }) => {
      await client.enableDevice();
      await client.configWrite(0x52, 0x8000, 2);
      await client.setIrqEventfds(IrqIndex.Msix, 0, 4);
      await client.maskIrqs(IrqIndex.Msix, 1, 1, true);
      await client.barWrite32(0, REG.irq, 1);
      await client.barRead32(0, REG.id); // the trigger has been handled once this read is answered
      t.is(client.takeIrq(IrqIndex.Msix, 1), 0n, 'masked: nothing delivered');
      await client.maskIrqs(IrqIndex.Msix, 1, 1, false);
      t.is(await client.waitIrq(IrqIndex.Msix, 1), 1n);
    });
  });

  test.serial(`${name}: DEVICE_RESET runs the device's reset handler`, async (t) => {
    await withServed(name, async ({ client, device }) => {
      await client.enableDevice();
      await client.barWrite32(0, REG.scratch, 0x12345678);
      const before = device.resets;
      await client.reset();
      t.is(device.resets, before + 1);
      await client.enableDevice();
      t.is(await client.barRead32(0, REG.scratch), 0);
    });
  });

  test.serial(`${name}: a client that disconnects is forgotten and the next one is served`, async (t) => {
    await withServed(name, async (s) => {
      const mem = new GuestMemory(16 * 1024, 0x100000n);
      try {
        await s.client.dmaMap(mem);
        t.is(s.transport.stats().dmaRegions, 1);
        await s.client.close();
        const next = await s.connect();
        try {
          t.deepEqual(s.device.clientEvents.slice(0, 2), [true, false]);
          t.is(s.transport.stats().dmaRegions, 0);
          await next.enableDevice();
          t.is(await next.barRead32(0, REG.id), TEST_DEVICE_ID);
        } finally {
          await next.close();
        }
      } finally {
        mem.close();
      }
    });
  });
}

/** MSI capability registers of the test device (msi mode): control, mask bits, pending bits. */
const MSI = { cap: 0x48, control: 0x4a, mask: 0x58, pending: 0x5c } as const;

async function withServedIrq(name: (typeof transports)[number], irq: 'msi' | 'intx', fn: (s: Served) => Promise<void>): Promise<void> {
  const s = await serve(name, {}, { irq });
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

for (const name of transports) {
  test.serial(`${name}: a second client finds the command register and MSI-X control at power-on after the first enabled them`, async (t) => {
    await withServed(name, async (s) => {
      await s.client.configWrite(0x04, 0x0006, 2);
      await s.client.configWrite(0x52, 0x8000, 2);
      t.is(await s.client.configRead(0x04, 2), 0x0006);
      const powerOn = (await (async () => {
        await s.client.close();
        const next = await s.connect();
        try {
          return await next.configSpace();
        } finally {
          await next.close();
        }
      })());
      t.is(powerOn.readUInt16LE(0x04), 0x0000, 'command register reset');
      t.is(powerOn.readUInt16LE(0x52) & 0xc000, 0, 'MSI-X disabled again');
      t.is(powerOn.readUInt32LE(0x10), 0, 'BAR0 address forgotten');
    });
  });

  test.serial(`${name}: with MSI the capability list is PM, MSI at 0x48, PCIe; IRQ info offers 4 MSI vectors and no MSI-X`, async (t) => {
    await withServedIrq(name, 'msi', async ({ client }) => {
      const cfg = await client.configSpace();
      t.is(cfg[0x34], 0x40);
      t.deepEqual([cfg[0x40], cfg[0x41]], [0x01, 0x48], 'PM, next MSI');
      t.deepEqual([cfg[0x48], cfg[0x49]], [0x05, 0x60], 'MSI, next PCIe');
      t.is(cfg.readUInt16LE(MSI.control), 0x0184, '64-bit, per-vector masking, 4 vectors capable, disabled');
      const counts = [];
      for (let i = 0; i < 5; i++) counts.push((await client.irqInfo(i)).count);
      t.deepEqual(counts, [1, 4, 0, 1, 1]);
      t.is((await client.regionInfo(4)).size, 0n, 'no MSI-X BAR');
    });
  });

  test.serial(`${name}: an MSI vector fires its eventfd, and vectors fold onto the vectors the guest enabled`, async (t) => {
    await withServedIrq(name, 'msi', async ({ client }) => {
      await client.enableDevice();
      await client.configWrite(MSI.control, 0x0001, 2); // enabled, one vector
      await client.setIrqEventfds(IrqIndex.Msi, 0, 1);
      await client.barWrite32(0, REG.irq, 3);
      t.is(await client.waitIrq(IrqIndex.Msi, 0), 1n, 'vector 3 folds onto the only vector');
      await client.configWrite(MSI.control, 0x0021, 2); // four vectors
      await client.setIrqEventfds(IrqIndex.Msi, 0, 4);
      await client.barWrite32(0, REG.irq, 3);
      t.is(await client.waitIrq(IrqIndex.Msi, 3), 1n);
      await client.barWrite32(0, REG.irq, 5);
      t.is(await client.waitIrq(IrqIndex.Msi, 1), 1n, 'vector 5 goes to 5 mod 4');
      t.is(client.takeIrq(IrqIndex.Msi, 0), 0n);
    });
  });

  test.serial(`${name}: an MSI vector masked in the capability sets its pending bit and fires when unmasked`, async (t) => {
    await withServedIrq(name, 'msi', async ({ client }) => {
      await client.enableDevice();
      await client.configWrite(MSI.control, 0x0001, 2);
      await client.setIrqEventfds(IrqIndex.Msi, 0, 1);
      await client.configWrite(MSI.mask, 1, 4);
      await client.barWrite32(0, REG.irq, 0);
      t.is(await client.configRead(MSI.pending, 4), 1, 'pending');
      t.is(client.takeIrq(IrqIndex.Msi, 0), 0n, 'masked: nothing delivered');
      await client.configWrite(MSI.mask, 0, 4);
      t.is(await client.waitIrq(IrqIndex.Msi, 0), 1n);
      t.is(await client.configRead(MSI.pending, 4), 0, 'no longer pending');
    });
  });

  test.serial(`${name}: an MSI vector masked with SET_IRQS is held pending and fires on unmask`, async (t) => {
    await withServedIrq(name, 'msi', async ({ client }) => {
      await client.enableDevice();
      await client.configWrite(MSI.control, 0x0001, 2);
      await client.setIrqEventfds(IrqIndex.Msi, 0, 1);
      await client.maskIrqs(IrqIndex.Msi, 0, 1, true);
      await client.barWrite32(0, REG.irq, 0);
      await client.barRead32(0, REG.id);
      t.is(client.takeIrq(IrqIndex.Msi, 0), 0n, 'masked: nothing delivered');
      await client.maskIrqs(IrqIndex.Msi, 0, 1, false);
      t.is(await client.waitIrq(IrqIndex.Msi, 0), 1n);
    });
  });

  test.serial(`${name}: INTx is level-triggered: signalled once, masked until unmasked, signalled again while still asserted`, async (t) => {
    await withServedIrq(name, 'intx', async ({ client }) => {
      await client.enableDevice();
      await client.setIrqEventfds(IrqIndex.Intx, 0, 1);
      await client.barWrite32(0, REG.level, 1);
      t.is(await client.waitIrq(IrqIndex.Intx, 0), 1n);
      t.is((await client.configRead(0x06, 2)) & 0x0008, 0x0008, 'Interrupt Status set');
      await client.barWrite32(0, REG.level, 1); // still asserted: no second edge while masked
      await client.barRead32(0, REG.id);
      t.is(client.takeIrq(IrqIndex.Intx, 0), 0n, 'auto-masked after the signal');
      await client.maskIrqs(IrqIndex.Intx, 0, 1, false); // the end of interrupt, condition still there
      t.is(await client.waitIrq(IrqIndex.Intx, 0), 1n, 'signalled again on unmask');
      await client.barWrite32(0, REG.level, 0);
      await client.maskIrqs(IrqIndex.Intx, 0, 1, false);
      await client.barRead32(0, REG.id);
      t.is(client.takeIrq(IrqIndex.Intx, 0), 0n, 'deasserted: unmask signals nothing');
      t.is((await client.configRead(0x06, 2)) & 0x0008, 0, 'Interrupt Status clear');
    });
  });

  test.serial(`${name}: the Interrupt Disable bit holds INTx back while Interrupt Status still shows it`, async (t) => {
    await withServedIrq(name, 'intx', async ({ client }) => {
      await client.configWrite(0x04, 0x0406, 2);
      await client.setIrqEventfds(IrqIndex.Intx, 0, 1);
      await client.barWrite32(0, REG.level, 1);
      t.is((await client.configRead(0x06, 2)) & 0x0008, 0x0008);
      t.is(client.takeIrq(IrqIndex.Intx, 0), 0n, 'disabled: not signalled');
      await client.configWrite(0x04, 0x0006, 2);
      t.is(await client.waitIrq(IrqIndex.Intx, 0), 1n, 'signalled once enabled');
    });
  });

  test.serial(`${name}: while MSI is enabled the device's INTx condition is not signalled`, async (t) => {
    await withServedIrq(name, 'msi', async ({ client }) => {
      await client.enableDevice();
      await client.setIrqEventfds(IrqIndex.Intx, 0, 1);
      await client.configWrite(MSI.control, 0x0001, 2);
      await client.barWrite32(0, REG.level, 1);
      await client.barRead32(0, REG.id);
      t.is(client.takeIrq(IrqIndex.Intx, 0), 0n);
      t.is((await client.configRead(0x06, 2)) & 0x0008, 0, 'Interrupt Status clear while MSI is the interrupt');
      await client.configWrite(MSI.control, 0x0000, 2);
      t.is(await client.waitIrq(IrqIndex.Intx, 0), 1n, 'MSI off: the condition goes out as INTx');
    });
  });
}

const compare = transports.length > 1 ? test.serial : test.serial.skip;
if (transports.length < 2) skipping('conformance: the cross-transport comparison', 'it needs both transports, and only one is present');

compare('every transport shows identical config space (4096 bytes after the same writes), region info and IRQ info', (t) => {
  const [first, ...rest] = transports;
  const a = seen.get(first!)!;
  const show = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x));
  for (const other of rest) {
    const b = seen.get(other)!;
    if (a.config === undefined || b.config === undefined) return t.fail("a transport's config-space test did not get as far as recording");
    const differences: string[] = [];
    a.writes!.forEach((w, i) => {
      if (b.writes![i] !== w) differences.push(`config write #${i}: ${first} ${w}, ${other} ${b.writes![i]}`);
    });
    for (let i = 0; i < 4096; i++) {
      if (a.config[i] !== b.config[i]) differences.push(`config byte 0x${i.toString(16).padStart(3, '0')}: ${first} 0x${a.config[i]!.toString(16).padStart(2, '0')}, ${other} 0x${b.config[i]!.toString(16).padStart(2, '0')}`);
    }
    a.regions!.forEach((r, i) => {
      if (show(r) !== show(b.regions![i])) differences.push(`region ${i}: ${first} ${show(r)}, ${other} ${show(b.regions![i])}`);
    });
    a.irqs!.forEach((q, i) => {
      if (show(q) !== show(b.irqs![i])) differences.push(`irq ${i}: ${first} ${show(q)}, ${other} ${show(b.irqs![i])}`);
    });
    t.log(differences.length === 0 ? `${first} and ${other} are identical` : `${first} vs ${other}:\n${differences.join('\n')}`);
    t.deepEqual(differences, []);
  }
});
