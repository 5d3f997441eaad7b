// The native transport's one-recvmsg request reader (src/vfio-user/protocol/framing.ts): framing and which message gets which fds.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  accept4, bindUnix, closeQuietly, connectUnix, eventfd, eventfdConsume, eventfdSignal, FdSocket, listen, shutdownSocket, unixSocket,
} from '../ffi/libc';
import { FramingError } from '../src/vfio-user/protocol/stream';
import { RequestReader } from '../src/vfio-user/protocol/framing';
import { openFdCount } from './helpers/served';

/** A vfio-user message built by hand: msg id, command, size, flags 0, error 0, then the payload. */
function message(msgId: number, command: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt16LE(msgId, 0);
  h.writeUInt16LE(command, 2);
  h.writeUInt32LE(16 + payload.length, 4);
  return Buffer.concat([h, payload]);
}

interface Pair {
  readonly tx: FdSocket;
  readonly rx: FdSocket;
  readonly reader: RequestReader;
  close(): void;
}

function pair(maxFds = 8): Pair {
  const dir = mkdtempSync(join(tmpdir(), 'vrnic-reader-'));
  const path = join(dir, 's.sock');
  const l = unixSocket();
  bindUnix(l, path);
  listen(l, 1);
  const c = unixSocket();
  connectUnix(c, path);
  const s = accept4(l);
  closeQuietly(l);
  const tx = new FdSocket(c);
  const rx = new FdSocket(s);
  return {
    tx,
    rx,
    reader: new RequestReader(rx, { maxMessageSize: 1 << 20, maxFds }),
    close: () => {
      tx.free();
      rx.free();
      closeQuietly(c);
      closeQuietly(s);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An eventfd whose counter says which one it is, so the fd that arrives can be recognised. */
function taggedEventfd(tag: number): number {
  const fd = eventfd();
  for (let i = 0; i < tag; i++) eventfdSignal(fd);
  return fd;
}

test('a request sent without fds right before one sent with fds does not take them', (t) => {
  const p = pair();
  const e = taggedEventfd(7);
  try {
    p.tx.send(message(1, 8, Buffer.alloc(24, 0xaa)));
    p.tx.send(message(2, 2, Buffer.alloc(32, 0xbb)), [e]);
    const got = p.reader.readAvailable();
    t.deepEqual(got.messages.map((m) => m.header.msgId), [1, 2]);
    t.deepEqual(got.messages[0]!.fds, []);
    t.is(got.messages[1]!.fds.length, 1);
    t.is(eventfdConsume(got.messages[1]!.fds[0]!), 7n, 'the fd sent with message 2');
    t.deepEqual(got.messages[1]!.payload, Buffer.alloc(32, 0xbb));
    got.messages.forEach((m) => m.fds.forEach((fd) => closeQuietly(fd)));
  } finally {
    closeQuietly(e);
    p.close();
  }
});

test('fds sent with a request stay with it, and the requests after it get none', (t) => {
  const p = pair();
  const a = taggedEventfd(3);
  const b = taggedEventfd(5);
  try {
    p.tx.send(message(1, 2, Buffer.alloc(32)), [a]);
    p.tx.send(message(2, 8, Buffer.alloc(8)));
    p.tx.send(message(3, 2, Buffer.alloc(32)), [b]);
    p.tx.send(message(4, 8, Buffer.alloc(8)));
    const got = p.reader.readAvailable();
    t.deepEqual(got.messages.map((m) => m.header.msgId), [1, 2, 3, 4]);
    t.deepEqual(got.messages.map((m) => m.fds.map((fd) => Number(eventfdConsume(fd)))), [[3], [], [5], []]);
    got.messages.forEach((m) => m.fds.forEach((fd) => closeQuietly(fd)));
  } finally {
    closeQuietly(a);
    closeQuietly(b);
    p.close();
  }
});

test('a request whose body arrives in a later read keeps the fds that came with its header', (t) => {
  const p = pair();
  const e = taggedEventfd(9);
  try {
    const m = message(1, 2, Buffer.alloc(100, 0x5a));
    p.tx.send(m.subarray(0, 20), [e]);
    t.deepEqual(p.reader.readAvailable().messages, [], 'nothing complete yet');
    p.tx.send(m.subarray(20));
    const got = p.reader.readAvailable();
    t.is(got.messages.length, 1);
    t.deepEqual(got.messages[0]!.payload, Buffer.alloc(100, 0x5a));
    t.is(eventfdConsume(got.messages[0]!.fds[0]!), 9n);
    closeQuietly(got.messages[0]!.fds[0]!);
  } finally {
    closeQuietly(e);
    p.close();
  }
});

test('fds that arrive with the rest of a request already begun break framing and are closed', (t) => {
  const p = pair();
  const e = eventfd();
  try {
    const m = message(1, 2, Buffer.alloc(100));
    p.tx.send(m.subarray(0, 20));
    p.reader.readAvailable();
    const before = openFdCount();
    p.tx.send(m.subarray(20), [e]);
    t.throws(() => p.reader.readAvailable(), { instanceOf: FramingError, message: /middle of a message body/ });
    t.is(openFdCount(), before, 'the received fd was closed');
  } finally {
    closeQuietly(e);
    p.close();
  }
});

test('more fds than the limit are closed and the request is marked as having too many', (t) => {
  const p = pair(2);
  const fds = [eventfd(), eventfd(), eventfd()];
  try {
    const before = openFdCount();
    p.tx.send(message(1, 2, Buffer.alloc(8)), fds);
    const got = p.reader.readAvailable();
    t.is(got.messages.length, 1);
    t.true(got.messages[0]!.tooManyFds);
    t.deepEqual(got.messages[0]!.fds, []);
    t.is(openFdCount(), before);
  } finally {
    fds.forEach((fd) => closeQuietly(fd));
    p.close();
  }
});

test('hundreds of small requests in one read all come out whole and in order', (t) => {
  const p = pair();
  try {
    const burst = Buffer.concat(Array.from({ length: 500 }, (_, i) => message(i, 8, Buffer.alloc(24, i & 0xff))));
    p.tx.send(burst);
    const got = p.reader.readAvailable(10_000);
    t.is(got.messages.length, 500);
    t.true(got.messages.every((m, i) => m.header.msgId === i && m.payload.equals(Buffer.alloc(24, i & 0xff))));
  } finally {
    p.close();
  }
});

test('a request larger than one read, its header split over two sends, comes out whole with its fds', (t) => {
  const p = pair();
  const e = taggedEventfd(4);
  try {
    const body = Buffer.alloc(600 * 1024);
    for (let i = 0; i < body.length; i += 4) body.writeUInt32LE(i, i);
    const m = message(1, 2, body);
    p.tx.send(m.subarray(0, 10), [e]);
    t.deepEqual(p.reader.readAvailable().messages, []);
    const out: import('../src/vfio-user/protocol/stream').RawMessage[] = [];
    // as much as the socket takes at a time, the rest as the reader drains it
    let sent = 10 + Math.max(0, p.tx.sendSome(m, 10));
    for (let round = 0; round < 1000 && out.length === 0; round++) {
      out.push(...p.reader.readAvailable().messages);
      if (sent < m.length) {
        const n = p.tx.sendSome(m, sent);
        if (n > 0) sent += n;
      }
    }
    t.is(out.length, 1);
    t.true(out[0]!.payload.equals(body));
    t.is(eventfdConsume(out[0]!.fds[0]!), 4n);
    closeQuietly(out[0]!.fds[0]!);
  } finally {
    closeQuietly(e);
    p.close();
  }
});

test('a header announcing fewer than 16 bytes breaks framing', (t) => {
  const p = pair();
  try {
    const bad = Buffer.alloc(16);
    bad.writeUInt32LE(8, 4);
    p.tx.send(bad);
    t.throws(() => p.reader.readAvailable(), { instanceOf: FramingError });
  } finally {
    p.close();
  }
});

test('the end of the stream is reported after the requests before it', (t) => {
  const p = pair();
  try {
    p.tx.send(message(1, 8));
    t.is(p.reader.readAvailable().messages.length, 1);
    shutdownSocket(p.tx.fd);
    t.true(p.reader.readAvailable().closed);
  } finally {
    p.close();
  }
});
