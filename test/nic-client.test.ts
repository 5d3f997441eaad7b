// The NIC driven through vfio-user by the TypeScript client, on every transport present: registers by REGION_READ/WRITE, guest memory a memfd, doorbells through the mmapped BAR2, MSI-X through eventfds.
import test from 'ava';
import { Reg } from '../emulator/nic/regs';
import { availableTransports, libvfioUserUnavailable, type TransportName } from '../src/vfio-user/transports/index';
import { GUEST_BASE, GUEST_SIZE, open } from './nic-client-env';
import { NIC_CASES } from './nic-suite';
import { command, OP, ST, until } from '../src/testing/nic-driver';
import { skipping } from './helpers/skip';

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

  // Only the native transport serves DMA_READ/DMA_WRITE: the libvfio-user one refuses fd-less regions by design (src/vfio-user/transports/libvfio-user/dma.ts).
  (name === 'native' ? reg : test.serial.skip)(`${name}: guest memory mapped without an fd is reached through DMA messages for commands and completions`, async (t) => {
    const env = await open(name, { withFd: false });
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
      t.deepEqual(nic.status().objects, { uarPages: 0, pds: 0, cqs: 0, qps: 0, mrs: 0, ahs: 0 });
      t.false(nic.status().ready);
    } finally {
      await env.close();
    }
  });
}
