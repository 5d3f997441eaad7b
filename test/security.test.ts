// Socket security of a running daemon: no IP listener of any kind, and private socket modes.
import test from 'ava';
import fs from 'node:fs';
import { VfioUserClient } from '../src/vfio-user/client/index';
import { availableTransports, libvfioUserUnavailable } from '../src/vfio-user/transports/index';
import { ipSocketInodes, ServeProcess, socketInodes } from './fuzz/daemon-process';
import { skipping } from './helpers/skip';

const transports = availableTransports();
const why = libvfioUserUnavailable();
if (why !== null) skipping('security on libvfio-user', why);

for (const transport of ['native', 'libvfio-user'] as const) {
  const t1 = transports.includes(transport) ? test.serial : test.serial.skip;

  t1(`${transport}: the daemon holds no TCP, UDP or raw IP socket, with or without a client`, async (t) => {
    const serve = await ServeProcess.start({ transport });
    try {
      const check = (when: string): void => {
        const mine = socketInodes(serve.pid);
        const ip = ipSocketInodes(serve.pid);
        t.true(mine.size >= 2, `${when}: the daemon's own sockets are visible (vfio-user and control): ${[...mine].join(',')}`);
        const leaks = [...mine].filter((inode) => ip.has(inode)).map((inode) => ip.get(inode));
        t.deepEqual(leaks, [], `${when}: IP sockets held by the daemon`);
      };
      check('idle');
      const c = await VfioUserClient.connect(serve.socket);
      try {
        await c.configSpace();
        check('with a client');
      } finally {
        await c.close();
      }
    } finally {
      await serve.stop();
    }
  });

  t1(`${transport}: the vfio-user and control sockets are created 0600 by default`, async (t) => {
    const serve = await ServeProcess.start({ transport });
    try {
      t.is(fs.statSync(serve.socket).mode & 0o777, 0o600);
      t.is(fs.statSync(`${serve.socket}.ctl`).mode & 0o777, 0o600);
    } finally {
      await serve.stop();
    }
  });
}
