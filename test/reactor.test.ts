// The process-wide readiness reactor (src/vfio-user/transports/reactor.ts): many devices in one process with libuv's default thread pool.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { closeQuietly, eventfd, eventfdSignal, POLLIN, POLLNVAL } from '../ffi/libc';
import { VfioUserClient } from '../src/vfio-user/client/index';
import { reactor } from '../src/vfio-user/transports/reactor';
import { createTransport, type Transport } from '../src/vfio-user/transports/index';
import { TestDevice } from './helpers/test-device';
import { skipping } from './helpers/skip';

/** More than libuv's 4 default threads many times over: one parked poll each would starve the pool. */
const DEVICES = 16;

// The point is the default pool: with UV_THREADPOOL_SIZE raised, the many-devices test proves nothing.
const defaultPool = process.env.UV_THREADPOOL_SIZE === undefined;
if (!defaultPool) skipping('reactor: the many-devices test', `UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE} is set; it needs libuv's default pool`);

(defaultPool ? test.serial : test.serial.skip)(
  `${DEVICES} native devices in one process each answer a connected client at once, and fs calls still run while they idle`,
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'vrnic-reactor-'));
    const log = pino({ level: process.env.VRNIC_TEST_LOG ?? 'silent' });
    const served: { transport: Transport; device: TestDevice; socketPath: string }[] = [];
    try {
      for (let i = 0; i < DEVICES; i++) {
        const socketPath = join(dir, `dev${i}.sock`);
        const device = new TestDevice();
        const transport = createTransport('native', { socketPath, device, log });
        served.push({ transport, device, socketPath });
        await transport.start();
      }
      // Every device is idle now, each waiting on its listening socket. Then every one gets a
      // client, all connected at once: clients wait through the same reactor, not a pool thread each.
      const clients: VfioUserClient[] = [];
      try {
        for (const s of served) clients.push(await VfioUserClient.connect(s.socketPath, { timeoutMs: 20_000 }));
        for (const [i, s] of served.entries()) {
          const id = await clients[i]!.configRead(0x00, 4);
          t.is(id, (s.device.identity.deviceId << 16) | s.device.identity.vendorId, `device ${i} answered with its vendor and device ID`);
        }
      } finally {
        for (const c of clients) await c.close();
      }
      // All idle again (back on their listening sockets): the pool must still run fs work.
      const text = await readFile(__filename, 'utf8');
      t.true(text.includes('process-wide readiness reactor'));
      t.is(served.filter((s) => s.transport.stats().clients === 1).length, DEVICES, 'every device served exactly one client');
    } finally {
      for (const s of served) {
        await s.transport.stop();
        s.device.close();
      }
      rmSync(dir, { recursive: true, force: true });
    }
    t.is(reactor.stats().interests, 0, 'stopped transports leave nothing in the reactor');
  },
);

test.serial('cancelling a wait that is parked on the threadpool resolves it at once with nothing ready', async (t) => {
  const quiet = eventfd();
  try {
    const before = reactor.stats();
    const w = reactor.wait([{ fd: quiet, events: POLLIN }], -1);
    // let the reactor park its poll before cancelling
    await new Promise((resolve) => setTimeout(resolve, 20));
    const parked = reactor.stats();
    t.true(parked.arms > before.arms);
    w.cancel();
    t.deepEqual(await w.ready, [0]);
    t.is(reactor.stats().wakes, parked.wakes + 1, 'the parked poll was woken so it lets go of the fd');
    t.is(reactor.stats().interests, before.interests);
  } finally {
    closeQuietly(quiet);
  }
});

test.serial('one parked poll serves several waiters and tells each only about its own fds', async (t) => {
  const a = eventfd();
  const b = eventfd();
  try {
    const wa = reactor.wait([{ fd: a, events: POLLIN }], -1);
    const wb = reactor.wait([{ fd: b, events: POLLIN }], -1);
    eventfdSignal(b);
    t.deepEqual((await wb.ready).map((r) => r & POLLIN), [POLLIN]);
    let aDone = false;
    void wa.ready.then(() => (aDone = true));
    await new Promise((resolve) => setImmediate(resolve));
    t.false(aDone, 'the waiter on the quiet fd is still waiting');
    eventfdSignal(a);
    t.deepEqual((await wa.ready).map((r) => r & POLLIN), [POLLIN]);
  } finally {
    closeQuietly(a);
    closeQuietly(b);
  }
});

test.serial('an fd closed while still registered is reported once with POLLNVAL and dropped, and other waits go on', async (t) => {
  const doomed = eventfd();
  const other = eventfd();
  try {
    const seen: number[][] = [];
    const interest = reactor.watch([{ fd: doomed, events: POLLIN }], (rev) => seen.push(rev));
    const w = reactor.wait([{ fd: other, events: POLLIN }], -1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    closeQuietly(doomed); // the owner's mistake: closed without cancelling
    // waking the parked poll makes it look at every fd again, the closed one included
    eventfdSignal(other);
    t.deepEqual((await w.ready).map((r) => r & POLLIN), [POLLIN]);
    t.is(seen.length, 1);
    t.is(seen[0]![0]! & POLLNVAL, POLLNVAL);
    t.false(interest.active, 'dropped so the poll cannot spin on it');
    const later = reactor.wait([{ fd: other, events: POLLIN }], -1);
    eventfdSignal(other);
    t.deepEqual((await later.ready).map((r) => r & POLLIN), [POLLIN]);
    t.is(seen.length, 1, 'told only once');
  } finally {
    closeQuietly(other);
  }
});
