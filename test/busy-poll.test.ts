// The run loops' readiness wait (src/vfio-user/transports/busy-poll.ts): how the busy window is configured, and that it answers like poll(2).
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
    const busy = new BusyPoll(0);
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
