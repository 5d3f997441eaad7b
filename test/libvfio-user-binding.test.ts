// The libvfio-user bindings and transport against the real library, driven by a real vfio-user client.
//
// The binding-level tests call vfu_attach_ctx synchronously, which reads the client's VERSION with
// a blocking recv on the main thread; their client therefore runs in a worker thread. The
// transport attaches on a libuv worker, so VfioUserClient can also share its thread.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import { ConfigSpace } from '../emulator/framework/config-space';
import {
  DmaError, type DeviceContext, type MemoryBar, type PciDevice, type TrappedBar,
} from '../emulator/framework/device';
import { VfioUserClient } from '../src/vfio-user/client/index';
import { GuestMemory } from '../src/vfio-user/client/guest-memory';
import { IrqIndex } from '../src/vfio-user/protocol/constants';
import { Errno, SysError } from '../ffi/errors';
import { pollAsync, POLLIN, SharedMemory } from '../ffi/libc';
import * as vfu from '../ffi/libvfio-user';
import { LibvfioUserTransport } from '../src/vfio-user/transports/libvfio-user/index';
import { skipping } from './helpers/skip';

const unavailable = vfu.libvfioUserUnavailable();
if (unavailable !== null) skipping('libvfio-user binding tests', unavailable);
const withLib = unavailable === null ? test.serial : test.serial.skip;

const VFIO_USER_VERSION = 1;
const VFIO_USER_DMA_MAP = 2;
const VFIO_USER_REGION_READ = 9;
const VFIO_USER_REGION_WRITE = 10;
const VFIO_USER_DEVICE_RESET = 13;
const VFIO_USER_F_ERROR = 0x20;

// ---- a minimal vfio-user client, in a worker thread ----

const clientSource = String.raw`
const { parentPort } = require('node:worker_threads');
const net = require('node:net');
let sock = null, rx = Buffer.alloc(0), nextId = 1, closed = true;
const pending = new Map();
let closeWaiters = [];
function onData(d) {
  rx = Buffer.concat([rx, d]);
  while (rx.length >= 16) {
    const size = rx.readUInt32LE(4);
    if (rx.length < size) break;
    const msg = rx.subarray(0, size);
    rx = rx.subarray(size);
    const id = msg.readUInt16LE(0), flags = msg.readUInt32LE(8);
    const res = pending.get(id);
    pending.delete(id);
    if (res) res({ errno: flags & ${VFIO_USER_F_ERROR} ? msg.readUInt32LE(12) : 0, payload: Buffer.from(msg.subarray(16)) });
  }
}
function request(cmd, payload) {
  if (closed) return Promise.resolve({ errno: -1, payload: Buffer.alloc(0) });
  const id = nextId++ & 0xffff;
  const h = Buffer.alloc(16);
  h.writeUInt16LE(id, 0); h.writeUInt16LE(cmd, 2); h.writeUInt32LE(16 + payload.length, 4);
  return new Promise((res) => { pending.set(id, res); sock.write(Buffer.concat([h, payload])); });
}
function access(region, offset, count, data) {
  const p = Buffer.alloc(16);
  p.writeBigUInt64LE(BigInt(offset), 0); p.writeUInt32LE(region, 8); p.writeUInt32LE(count, 12);
  return data ? request(${VFIO_USER_REGION_WRITE}, Buffer.concat([p, Buffer.from(data)])) : request(${VFIO_USER_REGION_READ}, p);
}
const ops = {
  async connect({ path }) {
    rx = Buffer.alloc(0);
    sock = net.connect(path);
    await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    closed = false;
    sock.on('data', onData);
    sock.on('error', () => {});
    sock.on('close', () => {
      closed = true;
      for (const res of pending.values()) res({ errno: -1, payload: Buffer.alloc(0) });
      pending.clear();
      for (const w of closeWaiters) w();
      closeWaiters = [];
    });
    const caps = Buffer.from(JSON.stringify({ capabilities: { max_msg_fds: 8, max_data_xfer_size: 1048576 } }) + '\0');
    const v = Buffer.alloc(4); v.writeUInt16LE(0, 0); v.writeUInt16LE(1, 2);
    const r = await request(${VFIO_USER_VERSION}, Buffer.concat([v, caps]));
    return { errno: r.errno };
  },
  async read({ region, offset, count }) {
    const r = await access(region, offset, count);
    return { errno: r.errno, data: r.errno ? null : r.payload.subarray(16) };
  },
  async write({ region, offset, data }) {
    const r = await access(region, offset, data.length, data);
    return { errno: r.errno };
  },
  async dmaMap({ addr, size }) {
    const p = Buffer.alloc(32);
    p.writeUInt32LE(32, 0); p.writeUInt32LE(3, 4); p.writeBigUInt64LE(0n, 8);
    p.writeBigUInt64LE(BigInt(addr), 16); p.writeBigUInt64LE(BigInt(size), 24);
    return { errno: (await request(${VFIO_USER_DMA_MAP}, p)).errno };
  },
  async reset() {
    return { errno: (await request(${VFIO_USER_DEVICE_RESET}, Buffer.alloc(0))).errno };
  },
  async waitClosed() {
    if (!closed) await new Promise((res) => closeWaiters.push(res));
    return {};
  },
  async close() {
    if (!closed) { const done = ops.waitClosed(); sock.destroy(); await done; }
    return {};
  },
};
parentPort.on('message', async ({ id, op, args }) => {
  try { parentPort.postMessage({ id, result: await ops[op](args) }); }
  catch (err) { parentPort.postMessage({ id, error: String(err && err.message || err) }); }
});
`;

interface Reply {
  errno: number;
  data?: Uint8Array | null;
}

class Client {
  private readonly worker = new Worker(clientSource, { eval: true });
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: Reply) => void; reject: (e: Error) => void }>();

  constructor() {
    this.worker.on('message', (m: { id: number; result?: Reply; error?: string }) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (!w) return;
      if (m.error !== undefined) w.reject(new Error(m.error));
      else w.resolve(m.result as Reply);
    });
  }

  call(op: string, args: Record<string, unknown> = {}): Promise<Reply> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, args });
    });
  }

  connect(path: string): Promise<Reply> {
    return this.call('connect', { path });
  }

  async read(region: number, offset: number, count: number): Promise<Buffer> {
    const r = await this.call('read', { region, offset, count });
    if (r.errno !== 0) throw new Error(`REGION_READ failed with errno ${r.errno}`);
    return Buffer.from(r.data as Uint8Array);
  }

  readErrno(region: number, offset: number, count: number): Promise<number> {
    return this.call('read', { region, offset, count }).then((r) => r.errno);
  }

  async write(region: number, offset: number, data: Buffer): Promise<void> {
    const r = await this.call('write', { region, offset, data });
    if (r.errno !== 0) throw new Error(`REGION_WRITE failed with errno ${r.errno}`);
  }

  /** Connects and turns on memory decoding and bus mastering, as a guest driver's probe does. */
  async connectEnabled(path: string): Promise<void> {
    const r = await this.connect(path);
    if (r.errno !== 0) throw new Error(`VERSION failed with errno ${r.errno}`);
    await this.write(7, 0x04, Buffer.from([0x06, 0x00]));
  }

  async dispose(): Promise<void> {
    await this.call('close');
    await this.worker.terminate();
  }
}

// ---- fixtures ----

function socketPath(): { dir: string; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'vrnic-vfu-'));
  return { dir, path: join(dir, 'vfio-user.sock') };
}

const silent = pino({ level: 'silent' });

/** A small device: BAR0 a 4 KiB register file, BAR2 4 KiB of shared memory, 4 MSI-X vectors in BAR4. */
class TinyDevice implements PciDevice {
  readonly name = 'tiny';
  readonly identity = { vendorId: 0x1de5, deviceId: 0x0a11, subsystemVendorId: 0x1de5, subsystemId: 0x0001, classCode: 0x020700, revision: 0x02 };
  readonly capabilities = { pm: true, pcie: true, msix: { vectors: 4, bar: 4 as const, tableOffset: 0, pbaOffset: 0x800 } };
  readonly registers = Buffer.alloc(4096);
  readonly memory = new SharedMemory('tiny-bar2', 4096);
  readonly bars: (TrappedBar | MemoryBar)[];
  ctx: DeviceContext | null = null;
  resets = 0;
  readonly clientEvents: boolean[] = [];

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
    this.resets++;
    this.registers.fill(0);
  }

  clientChanged(connected: boolean): void {
    this.clientEvents.push(connected);
  }

  close(): void {
    this.memory.close();
  }
}

async function withTransport(
  body: (t: LibvfioUserTransport, device: TinyDevice, client: Client, path: string) => Promise<void>,
): Promise<void> {
  const { dir, path } = socketPath();
  const device = new TinyDevice();
  const transport = new LibvfioUserTransport({ socketPath: path, device, log: silent });
  const client = new Client();
  try {
    await transport.start();
    await body(transport, device, client, path);
  } finally {
    await client.dispose();
    await transport.stop();
    device.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Waits until cond holds, polling on the event loop (no timing assertion: the test timeout bounds it). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

// ---- the bindings ----

test('without libvfio-user, libvfioUserUnavailable says in one line how to install it or to use the native transport', (t) => {
  const out = execFileSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(join(__dirname, '../ffi/libvfio-user.js'))}).libvfioUserUnavailable()))`], {
    env: { ...process.env, VRNIC_LIBVFIO_USER: '/nonexistent/libvfio-user.so.0' },
  }).toString();
  t.false(out.includes('\n'));
  t.regex(out, /meson/);
  t.regex(out, /VRNIC_LIBVFIO_USER/);
  t.regex(out, /--transport native/);
});

withLib('a context is created, realized and destroyed, and destroying it removes its socket', (t) => {
  const { dir, path } = socketPath();
  try {
    const ctx = vfu.VfuContext.create(path, vfu.LIBVFIO_USER_FLAG_ATTACH_NB);
    ctx.pciInit(vfu.VFU_PCI_TYPE_EXPRESS);
    ctx.pciSetId(0x1234, 0x5678, 0x9abc, 0xdef0);
    ctx.pciSetClass(0x02, 0x07, 0x00);
    ctx.realize();
    t.true(existsSync(path));
    const hdr = ctx.readConfigSpace(0, 0x30);
    t.is(hdr.readUInt16LE(0), 0x1234);
    t.is(hdr.readUInt16LE(2), 0x5678);
    t.is(hdr.readUIntLE(0x09, 3), 0x020700);
    t.is(hdr.readUInt16LE(0x2c), 0x9abc);
    t.false(ctx.attach(), 'no client is waiting, so a non-blocking attach reports would-block');
    ctx.destroy();
    t.true(ctx.destroyed);
    t.false(existsSync(path));
    t.notThrows(() => ctx.destroy(), 'destroy is idempotent');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

withLib('a failing libvfio-user call throws SysError carrying the C errno', (t) => {
  const err = t.throws(() => vfu.VfuContext.create('/nonexistent-dir/x.sock', 0), { instanceOf: SysError });
  t.is(err?.call, 'vfu_create_ctx');
  t.is(err?.code, 'ENOENT');

  const { dir, path } = socketPath();
  const ctx = vfu.VfuContext.create(path, vfu.LIBVFIO_USER_FLAG_ATTACH_NB);
  try {
    ctx.pciInit(vfu.VFU_PCI_TYPE_EXPRESS);
    const pm = Buffer.from([0x01, 0, 0x03, 0, 0, 0, 0, 0]);
    t.is(ctx.pciAddCapability(0x40, 0, pm), 0x40);
    const overlap = t.throws(() => ctx.pciAddCapability(0x44, 0, pm), { instanceOf: SysError });
    t.is(overlap?.code, 'EINVAL');
    const notPow2 = t.throws(() => ctx.setupRegion(0, 3000, () => 0, vfu.VFU_REGION_FLAG_RW | vfu.VFU_REGION_FLAG_MEM), { instanceOf: SysError });
    t.is(notPow2?.call, 'vfu_setup_region');
    t.is(notPow2?.code, 'EINVAL');
  } finally {
    ctx.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Builds a context whose only references to its callbacks are the ones the context keeps. */
function contextWithClosures(path: string, seen: { reads: number; logs: number }): vfu.VfuContext {
  const ctx = vfu.VfuContext.create(path, vfu.LIBVFIO_USER_FLAG_ATTACH_NB);
  ctx.setupLog(() => { seen.logs++; }, vfu.LOG_DEBUG);
  ctx.pciInit(vfu.VFU_PCI_TYPE_EXPRESS);
  ctx.setupRegion(0, 4096, (buf, offset, isWrite) => {
    seen.reads++;
    if (!isWrite) for (let i = 0; i < buf.length; i++) buf[i] = (offset + i) & 0xff;
    return buf.length;
  }, vfu.VFU_REGION_FLAG_RW | vfu.VFU_REGION_FLAG_MEM);
  ctx.setupRegion(1, 4096, () => { throw new SysError('test handler', Errno.EPERM); }, vfu.VFU_REGION_FLAG_RW | vfu.VFU_REGION_FLAG_MEM);
  ctx.setupDeviceDma(16, () => {}, () => {});
  ctx.setupDeviceResetCb(() => {});
  ctx.realize();
  return ctx;
}

/** Serves ctx on this thread (attach, then run) until done settles. */
async function serve(ctx: vfu.VfuContext, done: Promise<unknown>): Promise<void> {
  let settled = false;
  void done.then(() => { settled = true; }, () => { settled = true; });
  let attached = false;
  while (!settled) {
    const [ready] = await pollAsync([{ fd: ctx.pollFd(), events: POLLIN }], 20);
    if (!ready) continue;
    if (!attached) attached = ctx.attach();
    else {
      try {
        while (ctx.run() > 0);
      } catch (err) {
        if (err instanceof SysError && err.code === 'ENOTCONN') attached = false;
        else throw err;
      }
    }
  }
}

withLib('callbacks stay alive while C holds them, through repeated garbage collections', async (t) => {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) return t.fail('ava must run node with --expose-gc');
  const { dir, path } = socketPath();
  const seen = { reads: 0, logs: 0 };
  const ctx = contextWithClosures(path, seen);
  t.is(ctx.callbackCount, 6, 'log, two regions, DMA register and unregister, reset');
  const client = new Client();
  try {
    for (let i = 0; i < 10; i++) {
      // garbage for the collector to chew on between collections
      Array.from({ length: 10000 }, (_, k) => ({ k }));
      gc();
      await new Promise((r) => setImmediate(r));
    }
    const work = (async () => {
      t.is((await client.connect(path)).errno, 0);
      const data = await client.read(0, 0x10, 8);
      t.deepEqual([...data], [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17]);
    })();
    await serve(ctx, work);
    await work;
    t.is(seen.reads, 1);
    t.true(seen.logs > 0, 'the log callback ran too');
  } finally {
    await client.dispose();
    ctx.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
  t.is(ctx.callbackCount, 0, 'destroy releases the callbacks');
});

withLib('a region callback that throws reaches the client as its errno, and the connection goes on', async (t) => {
  const { dir, path } = socketPath();
  const seen = { reads: 0, logs: 0 };
  const ctx = contextWithClosures(path, seen);
  const client = new Client();
  try {
    const work = (async () => {
      await client.connect(path);
      t.is(await client.readErrno(1, 0, 4), Errno.EPERM);
      t.deepEqual([...(await client.read(0, 0, 2))], [0, 1]);
    })();
    await serve(ctx, work);
    await work;
  } finally {
    await client.dispose();
    ctx.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- the transport ----

withLib('config space over libvfio-user shows the device identity, class and revision', async (t) => {
  await withTransport(async (_t, device, client, path) => {
    await client.connect(path);
    const hdr = await client.read(vfu.VFU_PCI_DEV_CFG_REGION_IDX, 0, 64);
    t.is(hdr.readUInt16LE(0x00), device.identity.vendorId);
    t.is(hdr.readUInt16LE(0x02), device.identity.deviceId);
    t.is(hdr.readUInt8(0x08), device.identity.revision);
    t.is(hdr.readUIntLE(0x09, 3), device.identity.classCode);
    t.is(hdr.readUInt16LE(0x2c), device.identity.subsystemVendorId);
    t.is(hdr.readUInt16LE(0x2e), device.identity.subsystemId);
    t.is(hdr.readUInt8(0x0e), 0, 'header type 0');
    t.is(hdr.readUInt16LE(0x06) & 0x10, 0x10, 'capability list bit');
    t.is(hdr.readUInt8(0x34), 0x40);
    t.is(hdr.readUInt32LE(0x10 + 4 * 1), 0, 'an absent BAR reads 0');
  });
});

withLib('capabilities sit at 0x40 (PM), 0x50 (MSI-X), 0x60 (PCIe endpoint v2) and extended space is empty', async (t) => {
  await withTransport(async (_t, _device, client, path) => {
    await client.connect(path);
    const cfg = await client.read(vfu.VFU_PCI_DEV_CFG_REGION_IDX, 0, 0x104);
    t.deepEqual([cfg[0x40], cfg[0x41]], [0x01, 0x50]);
    t.deepEqual([cfg[0x50], cfg[0x51]], [0x11, 0x60]);
    t.is(cfg.readUInt16LE(0x52) & 0x7ff, 3, 'MSI-X table size is vectors - 1');
    t.is(cfg.readUInt32LE(0x54), 0x000 | 4, 'table at offset 0 of BAR4');
    t.is(cfg.readUInt32LE(0x58), 0x800 | 4, 'PBA at 0x800 of BAR4');
    t.deepEqual([cfg[0x60], cfg[0x61]], [0x10, 0x00]);
    t.is(cfg.readUInt16LE(0x62), 0x0002, 'PCIe capability version 2, endpoint');
    t.is(cfg.readUInt32LE(0x100), 0);
  });
});

withLib('power-on config space is the framework model\'s, all 4096 bytes', async (t) => {
  await withTransport(async (_t, device, client, path) => {
    await client.connect(path);
    const cfg = await client.read(vfu.VFU_PCI_DEV_CFG_REGION_IDX, 0, 4096);
    const shapes = device.bars.map((b) => ({ index: b.index, size: b.size }));
    shapes.push({ index: 4, size: 4096 });
    const model = new ConfigSpace(device.identity, device.capabilities, shapes).powerOnBytes();
    t.deepEqual(cfg, model);
  });
});

withLib('a BAR read while memory decoding is off reads all-ones and never reaches the device', async (t) => {
  await withTransport(async (_t, device, client, path) => {
    await client.connect(path);
    device.registers.writeUInt32LE(0x12345678, 0);
    t.is((await client.read(0, 0, 4)).readUInt32LE(0), 0xffffffff);
    await client.write(0, 0, Buffer.from([1, 2, 3, 4]));
    t.is(device.registers.readUInt32LE(0), 0x12345678);
  });
});

withLib('a BAR0 write reaches the device and a read returns what the device holds', async (t) => {
  await withTransport(async (_t, device, client, path) => {
    await client.connectEnabled(path);
    await client.write(0, 0x20, Buffer.from([0xde, 0xad, 0xbe, 0xef]));
    t.is(device.registers.readUInt32BE(0x20), 0xdeadbeef);
    device.registers.writeUInt32LE(0x12345678, 0x40);
    t.is((await client.read(0, 0x40, 4)).readUInt32LE(0), 0x12345678);
  });
});

withLib('a REGION_READ past the end of BAR0 gets EINVAL and the connection goes on', async (t) => {
  await withTransport(async (transport, _device, client, path) => {
    await client.connectEnabled(path);
    t.is(await client.readErrno(0, 4094, 4), Errno.EINVAL);
    t.is(await client.readErrno(0, 2 ** 40, 4), Errno.EINVAL);
    t.is((await client.read(0, 0, 4)).length, 4);
    t.true(transport.stats().clientConnected);
  });
});

withLib('a memory BAR read through REGION_READ shows its shared memory, and a write lands in it', async (t) => {
  await withTransport(async (_t, device, client, path) => {
    await client.connectEnabled(path);
    device.memory.buffer.write('doorbell', 0x100);
    t.is((await client.read(2, 0x100, 8)).toString(), 'doorbell');
    await client.write(2, 0x200, Buffer.from('uar'));
    t.is(device.memory.buffer.toString('utf8', 0x200, 0x203), 'uar');
  });
});

withLib('the MSI-X BAR reads back a table entry written to it, with every vector masked at power-on', async (t) => {
  await withTransport(async (_t, _device, client, path) => {
    await client.connectEnabled(path);
    t.is((await client.read(4, 16 + 12, 4)).readUInt32LE(0), 1, 'vector 1 masked');
    await client.write(4, 16, Buffer.from([0x00, 0x10, 0xe0, 0xfe]));
    t.is((await client.read(4, 16, 4)).readUInt32LE(0), 0xfee01000);
    t.is((await client.read(4, 0x800, 8)).readBigUInt64LE(0), 0n, 'PBA');
  });
});

withLib('a DEVICE_RESET from the client reaches the device reset handler', async (t) => {
  await withTransport(async (_t, device, client, path) => {
    await client.connect(path);
    device.registers.fill(7);
    t.is((await client.call('reset')).errno, 0);
    t.is(device.resets, 1);
    t.is(device.registers[0], 0);
  });
});

withLib('after a client disconnects the next one attaches and sees power-on config space', async (t) => {
  await withTransport(async (transport, device, client, path) => {
    await client.connect(path);
    await client.write(vfu.VFU_PCI_DEV_CFG_REGION_IDX, 0x04, Buffer.from([0x06, 0x00]));
    t.is((await client.read(vfu.VFU_PCI_DEV_CFG_REGION_IDX, 0x04, 2)).readUInt16LE(0), 0x06);
    await client.call('close');
    await until(() => !transport.stats().clientConnected);
    t.deepEqual(device.clientEvents, [true, false]);

    t.is((await client.connect(path)).errno, 0);
    t.is((await client.read(vfu.VFU_PCI_DEV_CFG_REGION_IDX, 0x04, 2)).readUInt16LE(0), 0);
    t.is(transport.stats().clients, 2);
  });
});

withLib('dropClient closes the connection at once and the transport keeps listening', async (t) => {
  await withTransport(async (transport, device, client, path) => {
    await client.connect(path);
    await client.read(0, 0, 4);
    transport.dropClient();
    t.false(transport.stats().clientConnected);
    await client.call('waitClosed');
    t.deepEqual(device.clientEvents, [true, false]);
    t.true(existsSync(path));
    t.is((await client.connect(path)).errno, 0);
    t.is((await client.read(0, 0, 4)).length, 4);
  });
});

withLib('dropClient from inside a BAR write handler ends the connection after that request', async (t) => {
  await withTransport(async (transport, device, client, path) => {
    await client.connectEnabled(path);
    const bar0 = device.bars[0] as TrappedBar;
    const write = bar0.write;
    (bar0 as { write: TrappedBar['write'] }).write = (off, data) => {
      write(off, data);
      if (off === 0x80) transport.dropClient();
    };
    await client.call('write', { region: 0, offset: 0x80, data: Buffer.from([1, 0, 0, 0]) });
    await client.call('waitClosed');
    await until(() => !transport.stats().clientConnected);
    t.is(device.registers[0x80], 1);
    t.deepEqual(device.clientEvents, [true, false]);
    t.is((await client.connect(path)).errno, 0, 'the next client attaches');
  });
});

withLib('a client that connects and never sends VERSION is let go, and the next client is served', async (t) => {
  await withTransport(async (transport, _device, client, path) => {
    const silentClient = await new Promise<import('node:net').Socket>((resolve, reject) => {
      const sock = connect(path, () => resolve(sock));
      sock.once('error', reject);
    });
    const closed = new Promise<void>((resolve) => silentClient.once('close', () => resolve()));
    silentClient.on('error', () => {});
    await closed; // libvfio-user gave up on negotiation after the receive timeout and closed it
    t.is(transport.stats().clients, 0);
    t.is((await client.connect(path)).errno, 0);
    t.is(transport.stats().clients, 1);
  });
});

withLib('DMA outside every mapped region, or to a region without an fd, rejects with DmaError', async (t) => {
  await withTransport(async (transport, device, client, path) => {
    await client.connect(path);
    const dma = device.ctx!.dma;
    await t.throwsAsync(dma.read(0x1000n, 16), { instanceOf: DmaError });
    t.is((await client.call('dmaMap', { addr: 0x100000, size: 0x10000 })).errno, 0);
    t.is(transport.stats().dmaRegions, 1);
    await t.throwsAsync(dma.write(0x100000n, Buffer.alloc(4)), { instanceOf: DmaError, message: /bus mastering is disabled/ });
    await client.write(7, 0x04, Buffer.from([0x06, 0x00])); // command register: memory space + bus master
    t.false(dma.isMapped(0x100000n, 16, false), 'libvfio-user would need a message round trip for it');
    await t.throwsAsync(dma.write(0x100000n, Buffer.alloc(4)), { instanceOf: DmaError, message: /no fd/ });
    await t.throwsAsync(dma.read(0x10f000n, 0x2000), { instanceOf: DmaError });
    await t.throwsAsync(dma.read(-1n, 4), { instanceOf: DmaError });
  });
});

/** A transport with an in-process VfioUserClient (fd passing, eventfds), on the test's own thread. */
async function withFdClient(body: (t: LibvfioUserTransport, device: TinyDevice, client: VfioUserClient) => Promise<void>): Promise<void> {
  const { dir, path } = socketPath();
  const device = new TinyDevice();
  const transport = new LibvfioUserTransport({ socketPath: path, device, log: silent });
  let client: VfioUserClient | null = null;
  try {
    await transport.start();
    client = await VfioUserClient.connect(path);
    await client.enableDevice();
    await body(transport, device, client);
  } finally {
    await client?.close();
    await transport.stop();
    device.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

withLib('the device DMA-reads and DMA-writes guest memory the client mapped with an fd', async (t) => {
  await withFdClient(async (transport, device, client) => {
    const ram = new GuestMemory(64 * 1024, 0x40000000n);
    try {
      await client.dmaMap(ram);
      await until(() => transport.stats().dmaRegions === 1);
      ram.write(0x40001000n, Buffer.from('completion queue'));
      const dma = device.ctx!.dma;
      t.true(dma.isMapped(0x40001000n, 16, true));
      t.is((await dma.read(0x40001000n, 16)).toString(), 'completion queue');
      await dma.write(0x4000fff0n, Buffer.from('last 16 bytes!!!'));
      t.is(ram.read(0x4000fff0n, 16).toString(), 'last 16 bytes!!!');
      await t.throwsAsync(dma.read(0x4000fff0n, 17), { instanceOf: DmaError }, 'one byte past the region');
    } finally {
      await client.dmaUnmap(0n, 0, true);
      ram.close();
    }
  });
});

withLib('an MSI-X vector reaches the client eventfd once MSI-X is on, and waits in the PBA until then', async (t) => {
  await withFdClient(async (_transport, device, client) => {
    await client.setIrqEventfds(IrqIndex.Msix, 0, 4);
    const irq = device.ctx!.irq;
    t.false(irq.trigger(2), 'MSI-X is still disabled');
    t.is((await client.barRead32(4, 0x800)) & 0x4, 0x4, 'vector 2 pending in the PBA');
    const control = await client.configRead(0x52, 2);
    await client.configWrite(0x52, control | 0x8000, 2);
    t.true((await client.waitIrq(IrqIndex.Msix, 2)) >= 1n, 'the pending vector is delivered once MSI-X is enabled');
    t.true(irq.trigger(3));
    t.is(await client.waitIrq(IrqIndex.Msix, 3), 1n);
    t.false(irq.trigger(4), 'no such vector');
  });
});

withLib('stop removes the socket and tells the device its client is gone', async (t) => {
  const { dir, path } = socketPath();
  const device = new TinyDevice();
  const transport = new LibvfioUserTransport({ socketPath: path, device, log: silent });
  const client = new Client();
  try {
    await transport.start();
    await client.connect(path);
    await client.read(0, 0, 4);
    await transport.stop();
    t.false(existsSync(path));
    t.deepEqual(device.clientEvents, [true, false]);
    await client.call('waitClosed');
    await t.notThrowsAsync(transport.stop(), 'stop is idempotent');
  } finally {
    await client.dispose();
    device.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
