// The run loops' readiness wait (src/vfio-user/transports/busy-poll.ts): how the busy window is configured, and that it answers like poll(2).
import net from 'node:net';
import test from 'ava';
import { closeQuietly, eventfd, eventfdSignal, POLLIN } from '../ffi/libc';
import { BusyPoll, busyWindowUsFromEnv, DEFAULT_BUSY_WINDOW_US } from '../src/vfio-user/transports/busy-poll';

test('VRNIC_BUSY_WINDOW_US sets the busy window, 0 turns it off, and nonsense falls back to the default', (t) => {
  t.is(busyWindowUsFromEnv({}), DEFAULT_BUSY_WINDOW_US);
  t.is(busyWindowUsFromEnv({ VRNIC_BUSY_WINDOW_US: '50' }), 50);
  t.is(busyWindowUsFromEnv({ VRNIC_BUSY_WINDOW_US: '0' }), 0);
  t.is(busyWindowUsFromEnv({ VRNIC_BUSY_WINDOW_US: '-5' }), DEFAULT_BUSY_WINDOW_US);
  t.is(busyWindowUsFromEnv({ VRNIC_BUSY_WINDOW_US: 'fast' }), DEFAULT_BUSY_WINDOW_US);
  t.is(busyWindowUsFromEnv({ VRNIC_BUSY_WINDOW_US: '1e9' }), 10_000, 'capped so a typo cannot turn into a spinning daemon');
});

test('with the window off, a wait goes to poll on a worker thread and reports which fd is ready', async (t) => {
  const idle = eventfd();
  const ready = eventfd();
  try {
    eventfdSignal(ready);
    const busy = new BusyPoll(0, 'block');
    busy.activity();
    t.false(busy.active);
    const rev = await busy.wait([{ fd: idle, events: POLLIN }, { fd: ready, events: POLLIN }], -1, () => true);
    t.is(rev[0], 0);
    t.is(rev[1]! & POLLIN, POLLIN);
    t.deepEqual(busy.stats(), { busyHits: 0, asyncWaits: 1 });
  } finally {
    closeQuietly(idle);
    closeQuietly(ready);
  }
});

test('a wait blocked in the busy window still lets timers run, and a timer that makes the fd ready is answered from the window', async (t) => {
  const fd = eventfd();
  try {
    // A window far longer than the timer: if the blocked wait ignored the loop, the timer could
    // only run after the window, and the answer would come through the reactor instead.
    const busy = new BusyPoll(2_000_000, 'block');
    busy.activity();
    setTimeout(() => eventfdSignal(fd), 1);
    const rev = await busy.wait([{ fd, events: POLLIN }], -1, () => true);
    t.is(rev[0]! & POLLIN, POLLIN);
    t.deepEqual(busy.stats(), { busyHits: 1, asyncWaits: 0 });
  } finally {
    closeQuietly(fd);
  }
});

test('a wait blocked in the busy window lets the event loop serve other sockets meanwhile', async (t) => {
  const fd = eventfd();
  const server = net.createServer((c) => c.end('hello'));
  try {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const busy = new BusyPoll(2_000_000, 'block');
    busy.activity();
    // the socket's events reach only the event loop; the eventfd is signalled once they were served
    const client = net.connect(port, '127.0.0.1');
    client.on('data', () => eventfdSignal(fd));
    const rev = await busy.wait([{ fd, events: POLLIN }], -1, () => true);
    client.destroy();
    t.is(rev[0]! & POLLIN, POLLIN);
    t.deepEqual(busy.stats(), { busyHits: 1, asyncWaits: 0 });
  } finally {
    server.close();
    closeQuietly(fd);
  }
});
