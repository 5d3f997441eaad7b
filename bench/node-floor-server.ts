// Bench-only references: the least a Node process can do to answer vfio-user REGION_READs, on the event loop or with blocking system calls.
//
// Neither is a vfio-user server (they answer VERSION, REGION_READ and REGION_WRITE with fixed
// replies and nothing else). They split a vrnic transport's round trip into what any server in
// Node pays and what vrnic's design adds on top:
// - default: Node's net module (libuv epoll on the main thread, a JS callback, a socket write);
// - --blocking: accept/read/write through koffi, blocking, in a plain loop on the main thread,
//   the way the C server runs libvfio-user (one thread, one wake-up per message);
// - --worker: the same loop in a worker thread, answering from a register shared with the main
//   thread (a SharedArrayBuffer the main thread updates on a timer), while the main thread keeps
//   its event loop: the floor of a transport with a worker per device that blocks in recvmsg.
//
// Usage: node dist/bench/node-floor-server.js SOCKET [--blocking | --worker]
import fs from 'node:fs';
import net from 'node:net';
import { isMainThread, Worker, workerData } from 'node:worker_threads';
import koffi from 'koffi';
import { BENCH_VERSION_VALUE } from './common';

const HEADER_SIZE = 16;
const VERSION = 1;
const REGION_READ = 9;
const REGION_WRITE = 10;
const FLAG_REPLY = 0x1;

function reply(msgId: number, command: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(HEADER_SIZE + payload.length);
  out.writeUInt16LE(msgId, 0);
  out.writeUInt16LE(command, 2);
  out.writeUInt32LE(out.length, 4);
  out.writeUInt32LE(FLAG_REPLY, 8);
  payload.copy(out, HEADER_SIZE);
  return out;
}

/** The register file answered from: a plain constant, or in --worker mode a word the main thread keeps current. */
let registerValue: () => number = () => BENCH_VERSION_VALUE;

function answer(msg: Buffer): Buffer {
  const msgId = msg.readUInt16LE(0);
  const command = msg.readUInt16LE(2);
  if (command === VERSION) {
    const json = Buffer.from(JSON.stringify({ capabilities: { max_msg_fds: 8, max_data_xfer_size: 1048576 } }) + '\0');
    const payload = Buffer.alloc(4 + json.length);
    payload.writeUInt16LE(0, 0);
    payload.writeUInt16LE(2, 2);
    json.copy(payload, 4);
    return reply(msgId, command, payload);
  }
  if (command === REGION_READ) {
    const payload = Buffer.alloc(16 + 4);
    msg.copy(payload, 0, HEADER_SIZE, HEADER_SIZE + 16);
    payload.writeUInt32LE(msg.readBigUInt64LE(HEADER_SIZE) === 0n ? registerValue() : 0, 16);
    return reply(msgId, command, payload);
  }
  if (command === REGION_WRITE) return reply(msgId, command, msg.subarray(HEADER_SIZE, HEADER_SIZE + 16));
  throw new Error(`node-floor-server answers only VERSION, REGION_READ and REGION_WRITE, not command ${command}`);
}

/** Serves one client after another with blocking system calls; never returns (SIGTERM ends the process). */
function serveBlocking(socketPath: string): void {
  const libc = koffi.load('libc.so.6');
  const socket = libc.func('int socket(int, int, int)') as (d: number, t: number, p: number) => number;
  const bind = libc.func('int bind(int, const uint8_t *, uint32_t)') as (fd: number, a: Buffer, l: number) => number;
  const listen = libc.func('int listen(int, int)') as (fd: number, n: number) => number;
  const accept = libc.func('int accept(int, void *, void *)') as (fd: number, a: null, l: null) => number;
  const read = libc.func('long read(int, _Out_ uint8_t *, size_t)') as (fd: number, b: Buffer, n: number) => number;
  const write = libc.func('long write(int, const uint8_t *, size_t)') as (fd: number, b: Buffer, n: number) => number;
  const close = libc.func('int close(int)') as (fd: number) => number;
  const addr = Buffer.alloc(110);
  addr.writeUInt16LE(1, 0); // AF_UNIX
  Buffer.from(socketPath).copy(addr, 2);
  const lfd = socket(1, 1, 0);
  if (lfd < 0 || bind(lfd, addr, addr.length) < 0 || listen(lfd, 16) < 0) throw new Error(`cannot listen on ${socketPath}: errno ${koffi.errno()}`);
  process.stdout.write('listening\n');
  const buf = Buffer.alloc(65536);
  for (;;) {
    const fd = accept(lfd, null, null);
    if (fd < 0) continue;
    let have = 0;
    for (;;) {
      const n = Number(read(fd, have === 0 ? buf : buf.subarray(have), buf.length - have));
      if (n <= 0) break;
      have += n;
      let off = 0;
      while (have - off >= HEADER_SIZE) {
        const size = buf.readUInt32LE(off + 4);
        if (size < HEADER_SIZE || size > buf.length) {
          have = off = 0;
          break;
        }
        if (have - off < size) break;
        const out = answer(buf.subarray(off, off + size));
        write(fd, out, out.length);
        off += size;
      }
      buf.copy(buf, 0, off, have);
      have -= off;
    }
    close(fd);
  }
}

function main(): void {
  if (!isMainThread) {
    const shared = new Int32Array((workerData as { registers: SharedArrayBuffer }).registers);
    registerValue = () => Atomics.load(shared, 0) >>> 0;
    serveBlocking((workerData as { socketPath: string }).socketPath);
    return;
  }
  const socketPath = process.argv[2];
  if (!socketPath) throw new Error('usage: node-floor-server SOCKET [--blocking]');
  fs.rmSync(socketPath, { force: true });
  if (process.argv[3] === '--worker') {
    const registers = new SharedArrayBuffer(4);
    const shared = new Int32Array(registers);
    // the main thread owns the device state and keeps it current, as a device model would
    setInterval(() => Atomics.store(shared, 0, BENCH_VERSION_VALUE), 10);
    Atomics.store(shared, 0, BENCH_VERSION_VALUE);
    const worker = new Worker(__filename, { workerData: { socketPath, registers } });
    worker.stdout?.pipe(process.stdout);
    const stop = () => {
      fs.rmSync(socketPath, { force: true });
      process.exit(0);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    return;
  }
  if (process.argv[3] === '--blocking') {
    // Blocking in a system call keeps the event loop from running a JS signal handler; the default action (exit) is wanted.
    serveBlocking(socketPath);
    return;
  }
  const server = net.createServer((conn) => {
    let pending: Buffer = Buffer.alloc(0);
    conn.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= HEADER_SIZE) {
        const size = pending.readUInt32LE(4);
        if (size < HEADER_SIZE) return conn.destroy();
        if (pending.length < size) break;
        conn.write(answer(pending.subarray(0, size)));
        pending = pending.subarray(size);
      }
    });
    conn.on('error', () => conn.destroy());
  });
  server.listen(socketPath, () => process.stdout.write('listening\n'));
  const stop = () => {
    fs.rmSync(socketPath, { force: true });
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main();
