// Bench-only reference: the least a Node process can do to answer vfio-user REGION_READs, on Node's own net module (libuv epoll on the main thread).
//
// It is not a vfio-user server (it answers VERSION, REGION_READ and REGION_WRITE with fixed
// replies and nothing else). It exists to split a vrnic transport's round trip into what any
// server in Node pays (waking the event loop, a JS callback, a socket write) and what vrnic's
// design adds on top (poll(2) on a libuv worker thread, FFI calls, the device model).
//
// Usage: node dist/bench/node-floor-server.js SOCKET
import fs from 'node:fs';
import net from 'node:net';
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
    payload.writeUInt32LE(msg.readBigUInt64LE(HEADER_SIZE) === 0n ? BENCH_VERSION_VALUE : 0, 16);
    return reply(msgId, command, payload);
  }
  if (command === REGION_WRITE) return reply(msgId, command, msg.subarray(HEADER_SIZE, HEADER_SIZE + 16));
  throw new Error(`node-floor-server answers only VERSION, REGION_READ and REGION_WRITE, not command ${command}`);
}

function main(): void {
  const socketPath = process.argv[2];
  if (!socketPath) throw new Error('usage: node-floor-server SOCKET');
  fs.rmSync(socketPath, { force: true });
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
