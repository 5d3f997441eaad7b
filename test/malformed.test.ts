// Malformed vfio-user messages against the built-in server: each gets its errno or a clean
// disconnect, the server keeps serving, and no fd is left behind (counted in /proc/self/fd).
import test from 'ava';
import { closeQuietly, eventfd, memfdCreate } from '../ffi/libc';
import { Command, Errno, GuestMemory, VfioUserClient, type Reply } from '../src/vfio-user/client/index';
import { errnoName } from '../ffi/errors';
import { encodeMessage, encodeVersion } from '../src/vfio-user/protocol/messages';
import { HeaderFlag } from '../src/vfio-user/protocol/constants';
import { REG, TEST_DEVICE_ID } from './helpers/test-device';
import { openFdCount, serve, type Served } from './helpers/served';

let served: Served;
let mem: GuestMemory;

test.before(async () => {
  served = await serve('native');
  await served.client.enableDevice();
  mem = new GuestMemory(64 * 1024, 0x100000n);
  await served.client.dmaMap(mem, { addr: 0x100000n, size: 32 * 1024 });
});

test.after.always(async () => {
  mem?.close();
  await served?.close();
});

const u32 = (...v: number[]): Buffer => Buffer.concat(v.map((x) => { const b = Buffer.alloc(4); b.writeUInt32LE(x >>> 0); return b; }));
const u64 = (...v: bigint[]): Buffer => Buffer.concat(v.map((x) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt.asUintN(64, x)); return b; }));
const dmaMap = (flags: number, offset: bigint, addr: bigint, size: bigint): Buffer => Buffer.concat([u32(32, flags), u64(offset, addr, size)]);
const access = (offset: bigint, region: number, count: number, data = Buffer.alloc(0)): Buffer => Buffer.concat([u64(offset), u32(region, count), data]);

/** Sends one raw command and resolves with its reply. */
async function raw(c: VfioUserClient, command: number, payload: Buffer, fds: number[] = [], flags: number = HeaderFlag.TypeCommand): Promise<Reply> {
  const id = c.newMsgId();
  const p = c.awaitReply(id, command);
  c.sendRaw(encodeMessage(id, command, flags, payload), fds);
  return p;
}

interface ErrCase {
  readonly title: string;
  readonly command: number;
  readonly payload: () => Buffer;
  /** fds to send; created per run and closed by the test afterwards. */
  readonly fds?: () => number[];
  readonly flags?: number;
  readonly errno: number;
}

const cases: ErrCase[] = [
  { title: 'an unknown command gets ENOSYS', command: 99, payload: () => Buffer.alloc(0), errno: Errno.ENOSYS },
  { title: 'a DEVICE_GET_INFO shorter than its struct gets EINVAL', command: Command.DeviceGetInfo, payload: () => u32(16, 0), errno: Errno.EINVAL },
  { title: 'a DEVICE_GET_INFO whose argsz lies (4) gets EINVAL', command: Command.DeviceGetInfo, payload: () => u32(4, 0, 0, 0), errno: Errno.EINVAL },
  { title: 'a region info request with argsz below 32 gets EINVAL', command: Command.DeviceGetRegionInfo, payload: () => Buffer.concat([u32(16, 0, 0, 0), u64(0n, 0n)]), errno: Errno.EINVAL },
  { title: 'a region info request for region 9 gets EINVAL', command: Command.DeviceGetRegionInfo, payload: () => Buffer.concat([u32(32, 0, 9, 0), u64(0n, 0n)]), errno: Errno.EINVAL },
  { title: 'an IRQ info request for index 5 gets EINVAL', command: Command.DeviceGetIrqInfo, payload: () => u32(16, 0, 5, 0), errno: Errno.EINVAL },
  { title: 'a REGION_READ whose offset + count overflows 64 bits gets EINVAL', command: Command.RegionRead, payload: () => access(0xfffffffffffffffen, 0, 4), errno: Errno.EINVAL },
  { title: 'a REGION_READ past the end of BAR0 gets EINVAL', command: Command.RegionRead, payload: () => access(4094n, 0, 4), errno: Errno.EINVAL },
  { title: 'a REGION_READ larger than max_data_xfer_size gets EINVAL', command: Command.RegionRead, payload: () => access(0n, 7, 2 * 1024 * 1024), errno: Errno.EINVAL },
  { title: 'a REGION_READ of region 99 gets EINVAL', command: Command.RegionRead, payload: () => access(0n, 99, 4), errno: Errno.EINVAL },
  { title: 'a REGION_READ of an absent BAR gets EINVAL', command: Command.RegionRead, payload: () => access(0n, 1, 4), errno: Errno.EINVAL },
  { title: 'a REGION_WRITE whose count lies about its data gets EINVAL', command: Command.RegionWrite, payload: () => access(4n, 0, 8, Buffer.alloc(4)), errno: Errno.EINVAL },
  { title: 'a REGION_WRITE_MULTI whose wr_cnt lies gets EINVAL', command: Command.RegionWriteMulti, payload: () => Buffer.concat([u64(3n), u64(4n), u32(0, 4), u64(0n)]), errno: Errno.EINVAL },
  { title: 'fds sent with a message that takes none are closed and get EINVAL', command: Command.DeviceGetInfo, payload: () => u32(16, 0, 0, 0), fds: () => [eventfd()], errno: Errno.EINVAL },
  { title: 'more fds than max_msg_fds get EINVAL', command: Command.DeviceSetIrqs, payload: () => u32(20, 0x24, 2, 0, 4), fds: () => Array.from({ length: 12 }, () => eventfd()), errno: Errno.EINVAL },
  { title: 'a DMA_MAP at an unaligned address gets EINVAL', command: Command.DmaMap, payload: () => dmaMap(3, 0n, 0x300010n, 0x1000n), errno: Errno.EINVAL },
  { title: 'a DMA_MAP of an unaligned size gets EINVAL', command: Command.DmaMap, payload: () => dmaMap(3, 0n, 0x300000n, 0x1001n), errno: Errno.EINVAL },
  { title: 'a DMA_MAP of size 0 gets EINVAL', command: Command.DmaMap, payload: () => dmaMap(3, 0n, 0x300000n, 0n), errno: Errno.EINVAL },
  { title: 'a DMA_MAP overlapping a mapped region gets EEXIST', command: Command.DmaMap, payload: () => dmaMap(3, 0n, 0x104000n, 0x8000n), errno: Errno.EEXIST },
  { title: 'a DMA_MAP whose range wraps past 2^64 gets EINVAL', command: Command.DmaMap, payload: () => dmaMap(3, 0n, 0xfffffffffffff000n, 0x2000n), errno: Errno.EINVAL },
  { title: 'a DMA_MAP with unknown flag bits gets EINVAL', command: Command.DmaMap, payload: () => dmaMap(0x103, 0n, 0x300000n, 0x1000n), errno: Errno.EINVAL },
  { title: 'a DMA_MAP with two fds gets EINVAL', command: Command.DmaMap, payload: () => dmaMap(3, 0n, 0x300000n, 0x1000n), fds: () => [memfdCreate('a'), memfdCreate('b')], errno: Errno.EINVAL },
  { title: 'a DMA_MAP whose fd cannot be mmapped (an eventfd) fails and the fd is closed', command: Command.DmaMap, payload: () => dmaMap(3, 0n, 0x300000n, 0x1000n), fds: () => [eventfd()], errno: Errno.ENODEV },
  { title: 'a DMA_MAP truncated to 24 bytes gets EINVAL', command: Command.DmaMap, payload: () => dmaMap(3, 0n, 0x300000n, 0x1000n).subarray(0, 24), errno: Errno.EINVAL },
  { title: 'a DMA_UNMAP of a range that was never mapped gets ENOENT', command: Command.DmaUnmap, payload: () => Buffer.concat([u32(24, 0), u64(0x100000n, 0x1000n)]), errno: Errno.ENOENT },
  { title: 'a DMA_UNMAP asking for a dirty bitmap gets ENOTSUP', command: Command.DmaUnmap, payload: () => Buffer.concat([u32(24, 1), u64(0x100000n, 0x8000n)]), errno: Errno.ENOTSUP },
  { title: 'a DMA_UNMAP-all with an address gets EINVAL', command: Command.DmaUnmap, payload: () => Buffer.concat([u32(24, 2), u64(0x100000n, 0n)]), errno: Errno.EINVAL },
  { title: 'SET_IRQS past the last MSI-X vector gets EINVAL', command: Command.DeviceSetIrqs, payload: () => u32(20, 0x21, 2, 3, 2), errno: Errno.EINVAL },
  { title: 'SET_IRQS with fewer eventfds than count gets EINVAL', command: Command.DeviceSetIrqs, payload: () => u32(20, 0x24, 2, 0, 2), fds: () => [eventfd()], errno: Errno.EINVAL },
  { title: 'SET_IRQS with an fd that is not an eventfd gets EINVAL', command: Command.DeviceSetIrqs, payload: () => u32(20, 0x24, 2, 0, 1), fds: () => [memfdCreate('not-an-eventfd')], errno: Errno.EINVAL },
  { title: 'SET_IRQS with two actions gets EINVAL', command: Command.DeviceSetIrqs, payload: () => u32(20, 0x29, 2, 0, 1), errno: Errno.EINVAL },
  { title: 'SET_IRQS with DATA_BOOL of the wrong length gets EINVAL', command: Command.DeviceSetIrqs, payload: () => Buffer.concat([u32(23, 0x22, 2, 0, 2), Buffer.from([1, 1, 1])]), errno: Errno.EINVAL },
  { title: 'a second VERSION gets EINVAL', command: Command.Version, payload: () => encodeVersion({ major: 0, minor: 0, capabilities: {} }), errno: Errno.EINVAL },
  { title: 'a message with an unknown type gets EINVAL', command: Command.DeviceGetInfo, payload: () => u32(16, 0, 0, 0), flags: 0x2, errno: Errno.EINVAL },
];

for (const c of cases) {
  test.serial(`${c.title}, the connection goes on and no fd leaks`, async (t) => {
    const client = served.client;
    const before = openFdCount();
    const fds = c.fds?.() ?? [];
    try {
      const r = await raw(client, c.command, c.payload(), fds, c.flags ?? HeaderFlag.TypeCommand);
      t.is(r.flags & HeaderFlag.Error, HeaderFlag.Error, 'error bit set');
      t.is(errnoName(r.error), errnoName(c.errno));
    } finally {
      fds.forEach((fd) => closeQuietly(fd));
    }
    t.is(await client.barRead32(0, REG.id), TEST_DEVICE_ID, 'still serving');
    t.is(openFdCount(), before, 'fd count unchanged');
  });
}

test.serial('a reply to a request the server never sent is ignored and the connection goes on', async (t) => {
  const before = openFdCount();
  served.client.sendRaw(encodeMessage(0x7777, Command.DmaRead, HeaderFlag.TypeReply, u64(0n, 0n)));
  t.is(await served.client.barRead32(0, REG.id), TEST_DEVICE_ID);
  t.is(openFdCount(), before);
});

// ---- framing errors: the server drops the client and serves the next one ----

/** Runs a misbehaving client (after the suite's client left), then checks the next client is served. */
async function misbehave(t: import('ava').ExecutionContext, act: (c: VfioUserClient) => Promise<void> | void): Promise<string> {
  await served.client.close();
  await new Promise<void>((resolve) => {
    if (!served.transport.stats().clientConnected) return resolve();
    served.transport.once('client', () => resolve());
  });
  const before = openFdCount();
  const bad = await VfioUserClient.connectRaw(served.socketPath);
  await act(bad);
  const reason = await bad.disconnected;
  await bad.close();
  const next = await served.connect();
  try {
    await next.enableDevice();
    t.is(await next.barRead32(0, REG.id), TEST_DEVICE_ID, 'the next client is served');
  } finally {
    await next.close();
  }
  await new Promise<void>((resolve) => {
    if (!served.transport.stats().clientConnected) return resolve();
    served.transport.once('client', () => resolve());
  });
  t.is(openFdCount(), before, 'fd count unchanged');
  // Give the suite a connected client again for the tests after this one.
  (served as { client: VfioUserClient }).client = await served.connect();
  await served.client.enableDevice();
  await served.client.dmaMap(mem, { addr: 0x100000n, size: 32 * 1024 });
  return reason;
}

test.serial('a header whose size is below 16 bytes disconnects the client', async (t) => {
  const reason = await misbehave(t, (c) => c.sendRaw(Buffer.concat([u32(0x00010001, 8, 0, 0)])));
  t.regex(reason, /closed/);
});

test.serial('a message larger than the negotiated maximum disconnects the client', async (t) => {
  const reason = await misbehave(t, (c) => c.sendRaw(u32(0x00040001, 0x7fffffff, 0, 0)));
  t.regex(reason, /closed/);
});

test.serial('a first message that is not VERSION disconnects the client', async (t) => {
  const reason = await misbehave(t, (c) => c.sendRaw(encodeMessage(1, Command.DeviceGetInfo, 0, u32(16, 0, 0, 0))));
  t.regex(reason, /closed/);
});

test.serial('a VERSION with malformed JSON gets EINVAL and a disconnect', async (t) => {
  let reply: Reply | null = null;
  await misbehave(t, async (c) => {
    const p = c.awaitReply(1, Command.Version);
    c.sendRaw(encodeMessage(1, Command.Version, 0, Buffer.concat([Buffer.alloc(4), Buffer.from('{"capabilities":'), Buffer.alloc(1)])));
    reply = await p;
  });
  t.is(reply!.error, Errno.EINVAL);
});

test.serial('a VERSION of another major version is refused and disconnected', async (t) => {
  let reply: Reply | null = null;
  await misbehave(t, async (c) => {
    const p = c.awaitReply(1, Command.Version);
    c.sendRaw(encodeMessage(1, Command.Version, 0, encodeVersion({ major: 1, minor: 0, capabilities: {} })));
    reply = await p;
  });
  t.is(reply!.flags & HeaderFlag.Error, HeaderFlag.Error);
});

test.serial('fds sent in the middle of a message disconnect the client and are closed', async (t) => {
  const efd = eventfd();
  let reason = '';
  try {
    reason = await misbehave(t, async (c) => {
      const v = encodeMessage(1, Command.Version, 0, encodeVersion({ major: 0, minor: 0, capabilities: {} }));
      const p = c.awaitReply(1, Command.Version);
      c.sendRaw(v);
      await p;
      const m = encodeMessage(2, Command.DeviceGetInfo, 0, u32(16, 0, 0, 0));
      c.sendRaw(m.subarray(0, 20));
      await new Promise((r) => setTimeout(r, 20)); // let the server read the first part on its own
      c.sendRaw(m.subarray(20), [efd]);
    });
  } finally {
    closeQuietly(efd);
  }
  t.regex(reason, /closed/);
});

test.serial('a truncated header followed by a hang-up is dropped cleanly', async (t) => {
  const reason = await misbehave(t, async (c) => {
    c.sendRaw(Buffer.from([1, 0, 4, 0, 32]));
    await c.close();
  });
  t.regex(reason, /closed/);
});
