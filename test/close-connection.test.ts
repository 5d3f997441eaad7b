// How the server ends a vfio-user connection: the client reads end of stream, never a reset, whatever it had in flight.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { accept4, bindUnix, closeConnection, closeQuietly, connectUnix, listen, unixSocket } from '../ffi/libc';

/** A connected pair of Unix stream sockets: [client, server]. */
function pair(t: { teardown(fn: () => void): void }): [number, number] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-close-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const listener = unixSocket();
  bindUnix(listener, path.join(dir, 's'));
  listen(listener, 1);
  const client = unixSocket();
  connectUnix(client, path.join(dir, 's'));
  const server = accept4(listener);
  closeQuietly(listener);
  t.teardown(() => closeQuietly(client));
  return [client, server];
}

/** What the client's next read gives: a byte count, or the error code. */
function readOutcome(fd: number): number | string {
  try {
    return fs.readSync(fd, Buffer.alloc(64));
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'error';
  }
}

test('a client whose requests were still unread when the server dropped it reads end of stream', (t) => {
  const [client, server] = pair(t);
  fs.writeSync(client, Buffer.from('a request the server never read'));
  closeConnection(server);
  t.is(readOutcome(client), 0);
});

test('a plain close with unread requests is what resets the client (the case closeConnection exists for)', (t) => {
  const [client, server] = pair(t);
  fs.writeSync(client, Buffer.from('a request the server never read'));
  closeQuietly(server);
  t.is(readOutcome(client), 'ECONNRESET');
});
