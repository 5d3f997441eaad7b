// A minimal, synchronous vfio-user client for bench/: VERSION, then 4-byte REGION_READs, on blocking syscalls through koffi.
//
// Why not the package's VfioUserClient: a round trip through Node's event loop (libuv epoll,
// promise resolution) costs the client several microseconds per read, which would be added to
// every server's column and shrink the ratio to C towards 1. Blocking read(2)/write(2) on the
// socket keeps the client's own share to two system calls and two koffi calls per read, and the
// same client is used for every server, so what differs between the columns is the server.
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
const c = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  connect: libc.func('int connect(int fd, const uint8_t *addr, uint32_t len)'),
  read: libc.func('long read(int fd, _Out_ uint8_t *buf, size_t count)'),
  write: libc.func('long write(int fd, const uint8_t *buf, size_t count)'),
  close: libc.func('int close(int fd)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t len)'),
};

const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
/** A server that stops answering must fail the benchmark, not hang it (the client blocks). */
const REPLY_TIMEOUT_S = 10;

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const EINTR = 4;
const EAGAIN = 11;

const enum Command {
  Version = 1,
  RegionRead = 9,
  RegionWrite = 10,
}
/** vfio-user's region index of PCI config space. */
const CONFIG_REGION = 7;
/** PCI command register: memory space decoding. */
const PCI_COMMAND = 0x04;
const PCI_COMMAND_MEMORY = 0x2;
const HEADER_SIZE = 16;
const FLAG_REPLY = 0x1;
const FLAG_ERROR = 0x20;

/** Builds a struct sockaddr_un for a path. */
function sockaddrUn(path: string): Buffer {
  const bytes = Buffer.from(path);
  if (bytes.length >= 108) throw new Error(`socket path too long for sockaddr_un: ${path}`);
  const addr = Buffer.alloc(110);
  addr.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(addr, 2);
  return addr;
}

export class MinimalClient {
  private readonly fd: number;
  private msgId = 0;
  private readonly request = Buffer.alloc(HEADER_SIZE + 16);
  private readonly reply = Buffer.alloc(4096);

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Connects to a vfio-user socket, negotiates and turns memory decoding on; throws when nobody accepts or answers. */
  static connect(path: string): MinimalClient {
    const fd = Number(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd < 0) throw new Error(`socket: errno ${koffi.errno()}`);
    const timeval = Buffer.alloc(16);
    timeval.writeBigInt64LE(BigInt(REPLY_TIMEOUT_S), 0);
    c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeval, 16);
    c.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, timeval, 16);
    const addr = sockaddrUn(path);
    if (Number(c.connect(fd, addr, addr.length)) < 0) {
      const e = koffi.errno();
      c.close(fd);
      throw Object.assign(new Error(`connect ${path}: errno ${e}`), { errno: e });
    }
    const client = new MinimalClient(fd);
    client.negotiate();
    // vrnic answers BAR accesses only while memory decoding is on, as a PCI device does.
    client.write16(CONFIG_REGION, PCI_COMMAND, PCI_COMMAND_MEMORY);
    return client;
  }

  /** True when something accepts connections on path (connect succeeds); the connection is closed at once. */
  static canConnect(path: string): boolean {
    const fd = Number(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd < 0) return false;
    const addr = sockaddrUn(path);
    const ok = Number(c.connect(fd, addr, addr.length)) === 0;
    c.close(fd);
    return ok;
  }

  private writeAll(buf: Buffer): void {
    let done = 0;
    while (done < buf.length) {
      const n = Number(c.write(this.fd, done === 0 ? buf : buf.subarray(done), buf.length - done));
      if (n < 0) {
        if (koffi.errno() === EINTR) continue;
        throw new Error(`write: errno ${koffi.errno()}`);
      }
      done += n;
    }
  }

  /** Reads one whole message into this.reply; returns its size. */
  private readMessage(): number {
    let have = 0;
    let want = HEADER_SIZE;
    while (have < want) {
      const n = Number(c.read(this.fd, have === 0 ? this.reply : this.reply.subarray(have), this.reply.length - have));
      if (n < 0) {
        const e = koffi.errno();
        if (e === EINTR) continue;
        if (e === EAGAIN) throw new Error(`no reply within ${REPLY_TIMEOUT_S} s`);
        throw new Error(`read: errno ${e}`);
      }
      if (n === 0) throw new Error('server closed the connection');
      have += n;
      if (have >= HEADER_SIZE) {
        want = this.reply.readUInt32LE(4);
        if (want < HEADER_SIZE || want > this.reply.length) throw new Error(`reply of ${want} bytes`);
      }
    }
    const flags = this.reply.readUInt32LE(8);
    if ((flags & FLAG_REPLY) === 0) throw new Error('expected a reply');
    if (flags & FLAG_ERROR) throw new Error(`server replied errno ${this.reply.readUInt32LE(12)}`);
    return want;
  }

  private negotiate(): void {
    const json = Buffer.from(JSON.stringify({ capabilities: { max_msg_fds: 8, max_data_xfer_size: 1048576 } }) + '\0');
    const msg = Buffer.alloc(HEADER_SIZE + 4 + json.length);
    msg.writeUInt16LE(this.msgId++, 0);
    msg.writeUInt16LE(Command.Version, 2);
    msg.writeUInt32LE(msg.length, 4);
    msg.writeUInt16LE(0, 16); // major
    msg.writeUInt16LE(2, 18); // minor
    json.copy(msg, 20);
    this.writeAll(msg);
    this.readMessage();
  }

  /** One 4-byte REGION_READ; returns the value read. */
  read32(region: number, offset: number): number {
    const req = this.request;
    req.writeUInt16LE(this.msgId++ & 0xffff, 0);
    req.writeUInt16LE(Command.RegionRead, 2);
    req.writeUInt32LE(HEADER_SIZE + 16, 4);
    req.writeUInt32LE(0, 8);
    req.writeUInt32LE(0, 12);
    req.writeBigUInt64LE(BigInt(offset), 16);
    req.writeUInt32LE(region, 24);
    req.writeUInt32LE(4, 28);
    this.writeAll(req);
    const size = this.readMessage();
    if (size !== HEADER_SIZE + 16 + 4) throw new Error(`REGION_READ reply of ${size} bytes`);
    return this.reply.readUInt32LE(HEADER_SIZE + 16);
  }

  /** One 2-byte REGION_WRITE. */
  write16(region: number, offset: number, value: number): void {
    const msg = Buffer.alloc(HEADER_SIZE + 16 + 2);
    msg.writeUInt16LE(this.msgId++ & 0xffff, 0);
    msg.writeUInt16LE(Command.RegionWrite, 2);
    msg.writeUInt32LE(msg.length, 4);
    msg.writeBigUInt64LE(BigInt(offset), 16);
    msg.writeUInt32LE(region, 24);
    msg.writeUInt32LE(2, 28);
    msg.writeUInt16LE(value, 32);
    this.writeAll(msg);
    this.readMessage();
  }

  close(): void {
    c.close(this.fd);
  }
}
