// Example: guest RAM the test owns (GuestMemory), DMA-mapped to the device, which reads its admin queue there and writes back a completion.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNic, Daemon, GuestMemory, VfioUserClient } from 'vrnic';

// BAR0 registers and the admin command used here, from docs/device.md sections 3 and 5.
const REG = { CTRL: 0x040, STATUS: 0x044, ASQ_BASE_LO: 0x080, ASQ_SIZE: 0x088, ASQ_TAIL: 0x08c, ACQ_BASE_LO: 0x0a0, ACQ_SIZE: 0x0a8, ACQ_HEAD: 0x0ac };
const QUERY_DEVICE = 0x01;

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-example-'));
  const daemon = await Daemon.start({ socketPath: path.join(dir, 'nic.sock'), transport: 'native', device: createNic() });
  const client = await VfioUserClient.connect(daemon.socketPath);
  // 1 MiB of "guest RAM" at guest physical address 0x100000: a memfd this process owns.
  const ram = new GuestMemory(1 << 20, 0x10_0000n);
  try {
    // DMA_MAP hands the memfd to the server, which maps it: the device now reaches this memory.
    await client.dmaMap(ram);
    await client.enableDevice(); // memory decoding and bus mastering, as pci_set_master
    const asq = 0x10_0000n; // 2 submission entries of 64 bytes
    const acq = 0x10_1000n; // 2 completion entries of 16 bytes
    const out = 0x10_2000n; // QUERY_DEVICE's output buffer
    await client.barWrite64(0, REG.ASQ_BASE_LO, asq);
    await client.barWrite32(0, REG.ASQ_SIZE, 2);
    await client.barWrite64(0, REG.ACQ_BASE_LO, acq);
    await client.barWrite32(0, REG.ACQ_SIZE, 2);
    await client.barWrite32(0, REG.CTRL, 1); // ENABLE: the device checks the queues lie in mapped memory
    console.log(`STATUS ${(await client.barRead32(0, REG.STATUS)) & 1 ? 'READY' : 'not ready'}`);

    // The test writes the command into guest memory and rings the admin doorbell...
    const cmd = Buffer.alloc(64);
    cmd[0] = QUERY_DEVICE;
    cmd.writeUInt32LE(7, 4); // cmd_id
    cmd.writeBigUInt64LE(out, 0x08);
    cmd.writeUInt32LE(128, 0x10);
    ram.write(asq, cmd);
    await client.barWrite32(0, REG.ASQ_TAIL, 1);
    // ...and the device DMA-writes the answer and a completion (phase bit 1) into it.
    const deadline = Date.now() + 5000;
    while ((ram.read(acq + 6n, 2).readUInt16LE(0) & 1) !== 1) {
      if (Date.now() > deadline) throw new Error('no completion');
      await new Promise((r) => setTimeout(r, 1));
    }
    const cqe = ram.read(acq, 16);
    console.log(`completion: cmd_id ${cqe.readUInt32LE(0)}, status ${cqe.readUInt16LE(4)}, ${cqe.readUInt32LE(8)} bytes written`);
    await client.barWrite32(0, REG.ACQ_HEAD, 1);
  } finally {
    await client.close();
    await daemon.stop();
    ram.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
