// The NIC driven through vfio-user by the TypeScript client, on every transport present: registers by REGION_READ/WRITE, guest memory a memfd, doorbells through the mmapped BAR2, MSI-X through eventfds.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import pino from 'pino';
import { createNic } from '../emulator/nic';
import type { Nic } from '../emulator/nic/device';
import { Reg } from '../emulator/nic/regs';
import { GuestMemory, IrqIndex, VfioUserClient, type Mapping } from '../src/client/index';
import { availableTransports, createTransport, libvfioUserUnavailable, type Transport, type TransportName } from '../src/transports/index';
import { NIC_CASES, type NicEnv } from './nic-suite';
import { command, type DeviceAccess, GuestHeap, OP, ST, TestDriver, until } from './nic-support';
import { skipping } from './helpers/skip';

const GUEST_BASE = 0x10_0000n;
const GUEST_SIZE = 4 << 20;

interface ClientEnv extends NicEnv {
  readonly client: VfioUserClient;
  readonly mem: GuestMemory;
  close(): Promise<void>;
}

/** Offset of the MSI-X capability in config space, found by walking the capability list. */
async function msixCapability(client: VfioUserClient): Promise<number> {
  let ptr = (await client.configRead(0x34, 1)) & 0xfc;
  for (let hops = 0; ptr !== 0 && hops < 48; hops++) {
    const id = await client.configRead(ptr, 1);
    if (id === 0x11) return ptr;
    ptr = (await client.configRead(ptr + 1, 1)) & 0xfc;
  }
  throw new Error('no MSI-X capability');
}

async function open(name: TransportName, withFd = true): Promise<ClientEnv> {
  const dir = mkdtempSync(join(tmpdir(), 'vrnic-nic-'));
  const socketPath = join(dir, 'nic.sock');
  const log = pino({ level: process.env.VRNIC_TEST_LOG ?? 'silent' });
  const nic: Nic = createNic({ numUars: 8 }, { log });
  let transport: Transport | null = null;
  let client: VfioUserClient | null = null;
  let uarMap: Mapping | null = null;
  const mem = new GuestMemory(GUEST_SIZE, GUEST_BASE);
  const close = async (): Promise<void> => {
    uarMap?.unmap();
    await client?.close();
    await transport?.stop();
    nic.close();
    mem.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    transport = createTransport(name, { socketPath, device: nic, log });
    await transport.start();
    client = await VfioUserClient.connect(socketPath);
    await client.enableDevice();
    const msix = await msixCapability(client);
    await client.configWrite(msix + 2, 0x8000, 2);
    await client.setIrqEventfds(IrqIndex.Msix, 0, nic.config.msixVectors);
    await client.dmaMap(mem, { withFd });
    uarMap = await client.mmapSparseArea(2);
    const c = client;
    const tally = new Map<number, number>();
    const add = (v: number, n: bigint): void => void tally.set(v, (tally.get(v) ?? 0) + Number(n));
    const access: DeviceAccess = {
      readReg: (off) => c.barRead32(0, off),
      writeReg: (off, v) => c.barWrite32(0, off, v),
      memRead: (addr, length) => mem.read(addr, length),
      memWrite: (addr, data) => mem.write(addr, data),
      uar: uarMap.buffer,
      waitIrq: (v) => c.waitIrq(IrqIndex.Msix, v).then((n) => add(v, n)),
      irqCount: (v) => {
        add(v, c.takeIrq(IrqIndex.Msix, v));
        return tally.get(v) ?? 0;
      },
    };
    const heap = new GuestHeap(GUEST_BASE, BigInt(GUEST_SIZE));
    return {
      nic,
      access,
      heap,
      drv: new TestDriver(access, heap),
      unmappedAddr: GUEST_BASE + BigInt(GUEST_SIZE) + 0x10_0000n,
      // A DEVICE_RESET also resets the PCI command register: turn memory decoding back on, as a driver's resume would.
      transportReset: async () => {
        await c.reset();
        await c.enableDevice();
      },
      client: c,
      mem,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

const present = availableTransports();
const all: TransportName[] = ['native', 'libvfio-user'];
for (const name of all) {
  const run = present.includes(name);
  if (!run) skipping(`nic-client on ${name}`, (name === 'libvfio-user' ? libvfioUserUnavailable() : null) ?? 'not available');
  const reg = run ? test.serial : test.serial.skip;

  for (const [title, body] of NIC_CASES) {
    reg(`${name}: ${title}`, async (t) => {
      const env = await open(name);
      try {
        await body(t, env);
      } finally {
        await env.close();
      }
    });
  }

  // Only the native transport serves DMA_READ/DMA_WRITE: the libvfio-user one refuses fd-less regions by design (src/transports/libvfio-user/dma.ts).
  (name === 'native' ? reg : test.serial.skip)(`${name}: guest memory mapped without an fd is reached through DMA messages for commands and completions`, async (t) => {
    const env = await open(name, false);
    try {
      t.is(await env.drv.bringUp(), 1);
      const out = env.heap.alloc(128);
      const c = await env.drv.submit(command(OP.QUERY_DEVICE, 9, [[8, 'u64', out], [0x10, 'u32', 128]]));
      t.is(c.status, ST.OK);
      t.is(env.mem.read(out, 4).readUInt32LE(0), 0x00010000);
      t.true(env.client.serverRequests > 0);
    } finally {
      await env.close();
    }
  });

  reg(`${name}: an admin queue the client unmapped puts the device in FATAL code 1 and the connection goes on`, async (t) => {
    const env = await open(name);
    try {
      const { drv, client, access } = env;
      t.is(await drv.bringUp(), 1);
      await client.dmaUnmap(GUEST_BASE, GUEST_SIZE);
      drv.dev.memWrite(drv.asq, command(OP.CREATE_PD, 1));
      await access.writeReg(Reg.AsqTail, 1);
      await until(() => env.nic.status().fatal, 'the FATAL state');
      t.is(await access.readReg(Reg.Status), 2);
      t.is(await access.readReg(Reg.FatalCode), 1);
      await access.writeReg(Reg.Ctrl, 2);
      t.is(await access.readReg(Reg.Status), 0);
    } finally {
      await env.close();
    }
  });

  reg(`${name}: a client disconnect frees every object`, async (t) => {
    const env = await open(name);
    try {
      const { drv, nic } = env;
      await drv.bringUp();
      await drv.allocUar();
      await drv.createPd();
      await env.client.close();
      await until(() => nic.status().objects.pds === 0, 'the reset on disconnect');
      t.deepEqual(nic.status().objects, { uarPages: 0, pds: 0, cqs: 0, qps: 0, mrs: 0 });
      t.false(nic.status().ready);
    } finally {
      await env.close();
    }
  });
}
