// A vfio-user client run as a child process by test/faults.test.ts, so the test can SIGKILL it mid-operation.
//
// Usage: node dist/test/fuzz/fault-client.js SOCKET MODE [--no-fd]
//   MODE admin:  brings the NIC up and submits CREATE_PD/DESTROY_PD pairs forever
//   MODE dma:    brings the NIC up and submits QUERY_DEVICE forever (the device DMAs into guest
//                memory for each); with --no-fd the memory is mapped without its fd, so every
//                device DMA is a DMA_READ/DMA_WRITE message this process answers
//   MODE hammer: BAR0 register reads and UAR doorbell writes as fast as they go
// Prints "ready" once the device is up and "n N" every 50 operations; exits 0 when the server
// goes away (what the vanish and SIGTERM tests expect), 1 on any other failure.
import { DisconnectedError, GuestMemory, VfioUserClient } from '../../src/vfio-user/client/index';

const BASE = 0x2_0000_0000n;
const ASQ = BASE;
const ACQ = BASE + 0x1000n;
const OUT = BASE + 0x2000n;
const ENTRIES = 64;

async function main(): Promise<number> {
  const [socket, mode, flag] = process.argv.slice(2);
  if (socket === undefined || mode === undefined) throw new Error('usage: fault-client SOCKET admin|dma|hammer [--no-fd]');
  const mem = new GuestMemory(0x10000, BASE);
  const c = await VfioUserClient.connect(socket, { timeoutMs: 30_000 });
  try {
    await c.enableDevice();
    await c.dmaMap(mem, { withFd: flag !== '--no-fd' });
    const w = (off: number, v: number): Promise<void> => c.barWrite32(0, off, v);
    await w(0x40, 2);
    await w(0x80, Number(ASQ & 0xffffffffn));
    await w(0x84, Number(ASQ >> 32n));
    await w(0x88, ENTRIES);
    await w(0xa0, Number(ACQ & 0xffffffffn));
    await w(0xa4, Number(ACQ >> 32n));
    await w(0xa8, ENTRIES);
    await w(0x40, 1);
    if ((await c.barRead32(0, 0x44)) !== 1) throw new Error('device did not get READY');
    process.stdout.write('ready\n');
    if (mode === 'hammer') {
      const uar = await c.mmapSparseArea(2);
      for (let n = 1; ; n++) {
        await c.barRead32(0, 0x44);
        uar.buffer.writeUInt32LE(((1 << 16) | (n & 0xffff)) >>> 0, (n % 16) * 8);
        if (n % 50 === 0) process.stdout.write(`n ${n}\n`);
      }
    }
    let tail = 0;
    const submit = async (cmd: Buffer): Promise<number> => {
      const slot = tail % ENTRIES;
      const phase = 1 - (Math.floor(tail / ENTRIES) & 1);
      mem.write(ASQ + BigInt(slot * 64), cmd);
      tail = (tail + 1) >>> 0;
      await w(0x8c, tail);
      const at = ACQ + BigInt(slot * 16);
      while ((mem.read(at + 6n, 2).readUInt16LE(0) & 1) !== phase) {
        if (c.isClosed) throw new DisconnectedError('server gone while waiting for a completion');
        await new Promise((r) => setImmediate(r));
      }
      await w(0xac, tail);
      return mem.read(at + 8n, 4).readUInt32LE(0);
    };
    for (let n = 1; ; n++) {
      const cmd = Buffer.alloc(64);
      if (mode === 'dma') {
        cmd[0] = 0x01; // QUERY_DEVICE: the device writes 128 bytes into guest memory
        cmd.writeBigUInt64LE(OUT, 8);
        cmd.writeUInt32LE(128, 16);
        await submit(cmd);
      } else {
        cmd[0] = 0x05; // CREATE_PD
        const pdn = await submit(cmd);
        const d = Buffer.alloc(64);
        d[0] = 0x06; // DESTROY_PD
        d.writeUInt32LE(pdn, 8);
        await submit(d);
      }
      if (n % 50 === 0) process.stdout.write(`n ${n}\n`);
    }
  } catch (err) {
    // the server going away shows as a DisconnectedError, or as EPIPE/ECONNRESET from a send that raced it
    const code = (err as { code?: unknown }).code;
    if (err instanceof DisconnectedError || c.isClosed || code === 'EPIPE' || code === 'ECONNRESET') {
      process.stdout.write('disconnected\n');
      return 0;
    }
    throw err;
  } finally {
    await c.close();
    mem.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`fault-client: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
