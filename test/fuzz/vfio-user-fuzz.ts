// vfio-user message fuzzer: mutates valid messages against a real `vrnic serve` per transport and checks it survives.
//
// Usage: node dist/test/fuzz/vfio-user-fuzz.js [--count N] [--seed S] [--transport native|libvfio-user] [--json]
//
// Each transport present (availableTransports()) gets a fresh `vrnic serve` child. The fuzzer
// sends one message at a time (valid ones, mutated ones, junk), and models how the server frames
// the byte stream (16-byte header, then the size it declares) so it knows which commands the
// server has received whole: each of those must be answered, or the connection closed, within a
// bounded wait. A message whose declared size runs past the bytes sent is completed with zero
// padding, so the server never waits on us. Checks: the daemon never exits, never logs at error
// level or prints anything that is not a log line; afterwards a fresh client negotiates and reads
// config space; fd count and RSS (from /proc) are compared before and after.
import { parseArgs } from 'node:util';
import { closeQuietly, eventfd, memfdCreate, ftruncate } from '../../ffi/libc';
import { Command, HEADER_SIZE, HeaderFlag } from '../../src/vfio-user/protocol/constants';
import {
  encodeDeviceInfo,
  encodeDmaAccess,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeIrqInfo,
  encodeIrqSet,
  encodeMessage,
  encodeRegionAccess,
  encodeRegionInfo,
  encodeRegionIoFds,
  encodeRegionWriteMulti,
  encodeVersion,
} from '../../src/vfio-user/protocol/messages';
import { VfioUserClient } from '../../src/vfio-user/client/index';
import { availableTransports } from '../../src/vfio-user/transports/index';
import { ControlClient } from '../../src/control/client';
import { fdTargets, procStats, ServeProcess, sleep, type ProcStats } from './daemon-process';
import { RawClient } from './raw-client';
import { Rng } from './rng';

/** Largest message either server accepts (1 MiB transfer + access header + message header). */
const SERVER_MAX_MESSAGE = 1024 * 1024 + 32;
const GUEST_MEMORY = 1024 * 1024;

export interface FuzzOptions {
  readonly transport: string;
  readonly seed: number;
  readonly count: number;
  /** How long one message may go unanswered (default 2000 ms). */
  readonly replyWaitMs?: number;
  /** Called every 1000 messages. */
  readonly progress?: (done: number) => void;
}

export interface Finding {
  readonly kind: 'crash' | 'unanswered' | 'error-log' | 'fresh-client' | 'stall';
  readonly index: number;
  readonly detail: string;
  /** The message that was sent last, as hex (header and payload), and the number of fds with it. */
  readonly message?: string;
  readonly fds?: number;
}

export interface FuzzResult {
  readonly transport: string;
  readonly seed: number;
  readonly messages: number;
  readonly answered: number;
  readonly errorReplies: number;
  readonly connections: number;
  readonly closedByServer: number;
  /** Connections the fuzzer ended because the server answered a message without reading all of it. */
  readonly desyncCloses: number;
  readonly crashes: number;
  readonly findings: Finding[];
  readonly before: ProcStats;
  readonly after: ProcStats;
  readonly peakRssKiB: number;
  readonly freshClientOk: boolean;
  /** fds open after the run that were not before (fd -> what it points at). */
  readonly newFds: string[];
  /** Lines the daemon logged at each pino level (-1: not a log line). */
  readonly logLevels: Record<string, number>;
  readonly elapsedMs: number;
}

// ---- the server's framing, as the fuzzer predicts it ----

/** Replays the bytes sent through the server's framing rules: which headers it has complete, and whether framing broke. */
export class FramingModel {
  private pending = Buffer.alloc(0);
  broken = false;

  /** Feeds sent bytes; returns the headers of messages now complete. */
  feed(bytes: Buffer): { msgId: number; command: number; flags: number }[] {
    const out: { msgId: number; command: number; flags: number }[] = [];
    if (this.broken) return out;
    this.pending = Buffer.concat([this.pending, bytes]);
    while (this.pending.length >= HEADER_SIZE) {
      const size = this.pending.readUInt32LE(4);
      if (size < HEADER_SIZE || size > SERVER_MAX_MESSAGE) {
        this.broken = true;
        return out;
      }
      if (this.pending.length < size) break;
      out.push({ msgId: this.pending.readUInt16LE(0), command: this.pending.readUInt16LE(2), flags: this.pending.readUInt32LE(8) });
      this.pending = this.pending.subarray(size);
    }
    return out;
  }

  /** Zero bytes that complete the message in progress (header first, then its declared body); 0 when none is in progress. */
  missing(): number {
    if (this.broken || this.pending.length === 0) return 0;
    if (this.pending.length < HEADER_SIZE) return HEADER_SIZE - this.pending.length;
    const size = this.pending.readUInt32LE(4);
    return size - this.pending.length;
  }
}

// ---- message generation ----

interface Fds {
  readonly memfd: number;
  readonly eventfds: readonly number[];
  readonly others: readonly number[];
}

interface Generated {
  readonly bytes: Buffer;
  readonly fds: number[];
  /** Send the bytes in two writes split here (0: one write). */
  readonly splitAt: number;
  readonly what: string;
}

const REGIONS = [0, 1, 2, 3, 4, 5, 6, 7, 8];
const COMMON_REGIONS = [0, 0, 0, 2, 4, 7, 7];

export class MessageGenerator {
  private nextId = 1;
  constructor(private readonly rng: Rng, private readonly fds: Fds) {}

  msgId(): number {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) & 0xffff;
    return id;
  }

  version(): Buffer {
    const r = this.rng;
    const caps: Record<string, unknown> = { max_msg_fds: 8, max_data_xfer_size: 1 << 20, pgsizes: 4096, write_multiple: true };
    if (r.chance(0.3)) caps.max_msg_fds = r.pick([0, 1, 8, 1024, 1025, -1, 'x', 1.5]);
    if (r.chance(0.2)) caps.max_data_xfer_size = r.pick([0, 1, 4096, 1 << 20, 1 << 26, (1 << 26) + 1, null]);
    if (r.chance(0.2)) caps.pgsizes = r.pick([0, 4096, 8192, 0x1000 | 0x200000, -4096]);
    if (r.chance(0.1)) caps.migration = { pgsize: 4096, max_bitmap_size: r.interestingU32() };
    return encodeVersion({ major: r.chance(0.05) ? r.below(3) : 0, minor: r.chance(0.1) ? r.interestingU32() & 0xffff : 0, capabilities: caps });
  }

  /** A valid (or nearly) message of a random command, with the fds it would carry. */
  private valid(): { command: number; payload: Buffer; fds: number[]; what: string } {
    const r = this.rng;
    const region = (): number => (r.chance(0.9) ? r.pick(COMMON_REGIONS) : r.pick(REGIONS));
    const page = (n: number): bigint => BigInt(r.below(n)) * 4096n;
    switch (r.below(16)) {
      case 0:
        return { command: Command.Version, payload: this.version(), fds: [], what: 'VERSION' };
      case 1: {
        const withFd = r.chance(0.8);
        const pages = r.range(1, GUEST_MEMORY / 4096);
        const offset = withFd ? page(GUEST_MEMORY / 4096 - pages + 1) : 0n;
        const payload = encodeDmaMap({ argsz: 32, flags: r.pick([1, 2, 3, 3, 3]), offset, addr: 0x10_0000_0000n + page(1024), size: BigInt(pages) * 4096n });
        return { command: Command.DmaMap, payload, fds: withFd ? [this.fds.memfd] : [], what: 'DMA_MAP' };
      }
      case 2: {
        const all = r.chance(0.2);
        const payload = encodeDmaUnmap({ argsz: 24, flags: all ? 2 : 0, addr: all ? 0n : 0x10_0000_0000n + page(1024), size: all ? 0n : BigInt(r.range(1, 256)) * 4096n });
        return { command: Command.DmaUnmap, payload, fds: [], what: 'DMA_UNMAP' };
      }
      case 3:
        return { command: Command.DeviceGetInfo, payload: encodeDeviceInfo({ argsz: 16, flags: 0, numRegions: 0, numIrqs: 0 }), fds: [], what: 'DEVICE_GET_INFO' };
      case 4:
        return {
          command: Command.DeviceGetRegionInfo,
          payload: encodeRegionInfo({ argsz: r.pick([32, 64, 256]), flags: 0, index: r.pick(REGIONS), capOffset: 0, size: 0n, offset: 0n }),
          fds: [],
          what: 'DEVICE_GET_REGION_INFO',
        };
      case 5:
        return {
          command: Command.DeviceGetRegionIoFds,
          payload: encodeRegionIoFds({ argsz: r.pick([16, 64, 4096]), flags: 0, index: r.pick(REGIONS), count: 0 }),
          fds: [],
          what: 'DEVICE_GET_REGION_IO_FDS',
        };
      case 6:
        return { command: Command.DeviceGetIrqInfo, payload: encodeIrqInfo({ argsz: 16, flags: 0, index: r.below(6), count: 0 }), fds: [], what: 'DEVICE_GET_IRQ_INFO' };
      case 7: {
        // SET_IRQS: eventfds for MSI-X vectors, a mask/unmask, a trigger, or a disable
        const kind = r.below(4);
        const index = r.chance(0.8) ? 2 : r.below(6);
        const start = r.below(4);
        const count = r.range(kind === 3 ? 0 : 1, 4);
        if (kind === 0) {
          const fds = this.fds.eventfds.slice(0, count);
          return { command: Command.DeviceSetIrqs, payload: encodeIrqSet({ argsz: 20, flags: 0x4 | 0x20, index, start, count, data: Buffer.alloc(0) }), fds, what: 'SET_IRQS eventfds' };
        }
        if (kind === 1) {
          const action = r.pick([0x8, 0x10]);
          return { command: Command.DeviceSetIrqs, payload: encodeIrqSet({ argsz: 20, flags: 0x1 | action, index, start, count, data: Buffer.alloc(0) }), fds: [], what: 'SET_IRQS mask' };
        }
        if (kind === 2) {
          const data = Buffer.from(Array.from({ length: count }, () => r.below(2)));
          return { command: Command.DeviceSetIrqs, payload: encodeIrqSet({ argsz: 20 + count, flags: 0x2 | 0x20, index, start, count, data }), fds: [], what: 'SET_IRQS bool' };
        }
        return { command: Command.DeviceSetIrqs, payload: encodeIrqSet({ argsz: 20, flags: 0x1 | 0x20, index, start: 0, count: 0, data: Buffer.alloc(0) }), fds: [], what: 'SET_IRQS disable' };
      }
      case 8:
      case 9: {
        const reg = region();
        const count = r.pick([1, 2, 4, 4, 4, 8, 16, 64, 4096]);
        const offset = BigInt(r.chance(0.8) ? r.below(0x200) & ~3 : r.below(0x11000));
        return { command: Command.RegionRead, payload: encodeRegionAccess({ offset, region: reg, count, data: Buffer.alloc(0) }), fds: [], what: `REGION_READ ${reg}` };
      }
      case 10:
      case 11: {
        const reg = region();
        const count = r.pick([1, 2, 4, 4, 4, 8, 16]);
        const offset = BigInt(r.chance(0.8) ? r.below(0x200) & ~3 : r.below(0x11000));
        const data = r.bytes(count);
        // BAR0 CTRL: ENABLE and RESET now and then (a device bring-up with whatever queue registers hold)
        if (reg === 0 && r.chance(0.2)) {
          return { command: Command.RegionWrite, payload: encodeRegionAccess({ offset: 0x40n, region: 0, count: 4, data: Buffer.from([r.pick([1, 2, 3]), 0, 0, 0]) }), fds: [], what: 'REGION_WRITE CTRL' };
        }
        // config space: the command register (memory decoding, bus master) and MSI-X control
        if (reg === 7 && r.chance(0.3)) {
          return { command: Command.RegionWrite, payload: encodeRegionAccess({ offset: 4n, region: 7, count: 2, data: Buffer.from([r.pick([0, 2, 6, 0xff]), 0]) }), fds: [], what: 'REGION_WRITE COMMAND' };
        }
        return { command: Command.RegionWrite, payload: encodeRegionAccess({ offset, region: reg, count, data }), fds: [], what: `REGION_WRITE ${reg}` };
      }
      case 12:
        return { command: Command.DeviceReset, payload: Buffer.alloc(0), fds: [], what: 'DEVICE_RESET' };
      case 13: {
        const n = r.range(1, 8);
        const writes = Array.from({ length: n }, () => ({ offset: BigInt(r.below(0x200) & ~3), region: region(), count: r.pick([1, 2, 4, 8]), data: r.bytes(8) }));
        return { command: Command.RegionWriteMulti, payload: encodeRegionWriteMulti(writes), fds: [], what: 'REGION_WRITE_MULTI' };
      }
      case 14:
        // commands the servers do not implement, and server-to-client ones sent the wrong way
        return {
          command: r.pick([Command.DirtyPages, Command.DeviceFeature, Command.MigDataRead, Command.MigDataWrite, Command.DmaRead, Command.DmaWrite]),
          payload: r.chance(0.5) ? encodeDmaAccess({ addr: r.interestingU64(), count: BigInt(r.below(64)), data: Buffer.alloc(0) }) : r.bytes(r.below(64)),
          fds: [],
          what: 'unimplemented command',
        };
      default:
        return { command: r.below(24), payload: r.bytes(r.below(48)), fds: [], what: 'random command number' };
    }
  }

  /** The next message to send: a valid one, usually mutated a little, sometimes junk. */
  next(): Generated {
    const r = this.rng;
    if (r.chance(0.02)) {
      // pure junk: random bytes, no header discipline at all
      const bytes = r.bytes(r.range(1, 64));
      return { bytes, fds: r.chance(0.3) ? this.someFds() : [], splitAt: 0, what: 'random bytes' };
    }
    const base = this.valid();
    let payload = base.payload;
    let fds = base.fds;
    let msgId = this.msgId();
    let command = base.command;
    let flags: number = HeaderFlag.TypeCommand;
    let error = 0;
    let size: number | null = null;
    let splitAt = 0;
    const notes: string[] = [base.what];
    const mutations = r.chance(0.25) ? 0 : r.range(1, 3);
    for (let i = 0; i < mutations; i++) {
      switch (r.below(12)) {
        case 0:
          if (payload.length >= 4) {
            // argsz, counts, indexes, flags: most layouts have u32 fields at 4-aligned offsets
            const at = r.below(Math.floor(payload.length / 4)) * 4;
            payload = Buffer.from(payload);
            payload.writeUInt32LE(r.interestingU32(), at);
            notes.push(`u32@${at}`);
          }
          break;
        case 1:
          if (payload.length >= 8) {
            const at = r.below(Math.floor(payload.length / 8)) * 8;
            payload = Buffer.from(payload);
            payload.writeBigUInt64LE(r.interestingU64(), at);
            notes.push(`u64@${at}`);
          }
          break;
        case 2:
          payload = payload.subarray(0, r.below(payload.length + 1));
          notes.push(`truncated to ${payload.length}`);
          break;
        case 3:
          payload = Buffer.concat([payload, r.bytes(r.range(1, r.chance(0.05) ? 70000 : 64))]);
          notes.push(`extended to ${payload.length}`);
          break;
        case 4: {
          payload = Buffer.from(payload);
          for (let k = r.range(1, 4); k > 0 && payload.length > 0; k--) payload[r.below(payload.length)] ^= 1 << r.below(8);
          notes.push('bit flips');
          break;
        }
        case 5:
          fds = this.someFds();
          notes.push(`${fds.length} fds`);
          break;
        case 6:
          flags = r.pick([HeaderFlag.TypeReply, HeaderFlag.NoReply, HeaderFlag.Error, 2, 0xf, r.u32(), HeaderFlag.TypeReply | HeaderFlag.Error]);
          notes.push(`flags ${flags}`);
          break;
        case 7:
          command = r.chance(0.5) ? r.below(20) : r.u32() & 0xffff;
          notes.push(`command ${command}`);
          break;
        case 8:
          msgId = r.pick([0, 0xffff, r.u32() & 0xffff]);
          error = r.chance(0.5) ? r.interestingU32() : 0;
          notes.push(`msgId ${msgId}`);
          break;
        case 9:
          // the size field disagrees with the bytes: the framing model and padding take care of it
          size = r.pick([0, 1, 15, 16, HEADER_SIZE + payload.length - 1, HEADER_SIZE + payload.length + r.range(1, 64), SERVER_MAX_MESSAGE, SERVER_MAX_MESSAGE + 1, 0xffffffff, r.u32()]);
          notes.push(`size ${size}`);
          break;
        case 10:
          splitAt = r.range(1, HEADER_SIZE + payload.length);
          notes.push(`split at ${splitAt}`);
          break;
        default:
          payload = r.bytes(r.below(80));
          notes.push('random payload');
      }
    }
    const bytes = encodeMessage(msgId, command, flags, payload, error);
    if (size !== null) bytes.writeUInt32LE(size >>> 0, 4);
    return { bytes, fds, splitAt: splitAt < bytes.length ? splitAt : 0, what: notes.join(', ') };
  }

  private someFds(): number[] {
    const r = this.rng;
    const pool = [this.fds.memfd, ...this.fds.eventfds, ...this.fds.others];
    const n = r.chance(0.2) ? r.range(9, 12) : r.range(0, 3);
    return Array.from({ length: n }, () => r.pick(pool));
  }
}

/**
 * libvfio-user's is_valid_header() rejects these with an error reply before reading the body
 * (lib/libvfio-user.c, get_request): not a command, size < 16, size > max, or no payload for a
 * command other than DEVICE_RESET. A body that arrives in two writes is also only partly read
 * (tran_sock_recv_body fails on a short read and the rest becomes the next header).
 */
function libvfioUserLeavesBody(bytes: Buffer): boolean {
  if (bytes.length < HEADER_SIZE) return true;
  const size = bytes.readUInt32LE(4);
  const flags = bytes.readUInt32LE(8);
  const command = bytes.readUInt16LE(2);
  return (flags & HeaderFlag.TypeMask) !== HeaderFlag.TypeCommand || size < HEADER_SIZE || size > SERVER_MAX_MESSAGE || (size === HEADER_SIZE && command !== Command.DeviceReset);
}

// ---- the run ----

function validVersion(gen: MessageGenerator): Buffer {
  return encodeMessage(gen.msgId(), Command.Version, HeaderFlag.TypeCommand, encodeVersion({ major: 0, minor: 0, capabilities: { max_msg_fds: 8, max_data_xfer_size: 1 << 20, pgsizes: 4096, write_multiple: true } }));
}

/** Connects; null when the daemon has exited meanwhile (the caller records the crash). */
async function connectWithRetry(socket: string, serve: ServeProcess): Promise<RawClient | null> {
  for (let i = 0; ; i++) {
    try {
      return RawClient.connect(socket);
    } catch (err) {
      if (serve.exit !== null) return null;
      if (i > 200) throw err;
      await sleep(10);
    }
  }
}

/** A fresh, well-behaved client negotiates and reads all of config space. */
async function freshClientWorks(socket: string): Promise<string | null> {
  for (let attempt = 0; attempt < 50; attempt++) {
    let c: VfioUserClient | null = null;
    try {
      c = await VfioUserClient.connect(socket, { timeoutMs: 10_000 });
      const config = await c.configSpace();
      const vendor = config.readUInt16LE(0);
      if (vendor === 0xffff || vendor === 0) return `config space reads vendor 0x${vendor.toString(16)}`;
      return null;
    } catch (err) {
      // the previous client may still be being dropped: the server serves one at a time
      if (attempt === 49) return `fresh client failed: ${(err as Error).message}`;
      await sleep(50);
    } finally {
      await c?.close();
    }
  }
  return 'unreachable';
}

/** A client that connects and sends a header but withholds the body must not stop the daemon answering others (its control socket). */
async function stallProbe(serve: ServeProcess, waitMs: number): Promise<string | null> {
  const ctl = await ControlClient.connect(`${serve.socket}.ctl`, { timeoutMs: 5000 });
  const problems: string[] = [];
  try {
    for (const how of ['silent after connect', 'header without its body'] as const) {
      const c = RawClient.connect(serve.socket);
      if (how === 'header without its body') {
        c.send(encodeMessage(1, Command.Version, HeaderFlag.TypeCommand, encodeVersion({ major: 0, minor: 0, capabilities: {} })));
        await c.reply(1, waitMs);
        const h = encodeMessage(2, Command.RegionRead, HeaderFlag.TypeCommand, Buffer.alloc(16));
        c.send(h.subarray(0, HEADER_SIZE));
      }
      await sleep(200);
      const answered = await Promise.race([ctl.status().then(() => true, () => true), sleep(waitMs).then(() => false)]);
      c.close();
      if (!answered) problems.push(`control socket did not answer within ${waitMs} ms while a vfio-user client was ${how}`);
      // let the server notice the close before the next probe
      await sleep(200);
      if (!answered) await Promise.race([ctl.status().catch(() => undefined), sleep(waitMs)]);
    }
  } finally {
    ctl.close();
  }
  return problems.length === 0 ? null : problems.join('; ');
}

export async function fuzzTransport(opts: FuzzOptions): Promise<FuzzResult> {
  const started = Date.now();
  const rng = new Rng(opts.seed);
  const waitMs = opts.replyWaitMs ?? 2000;
  const memfd = memfdCreate('vrnic-fuzz-guest');
  ftruncate(memfd, GUEST_MEMORY);
  const eventfds = Array.from({ length: 8 }, () => eventfd());
  const fdsHeld = [memfd, ...eventfds];
  const gen = new MessageGenerator(rng, { memfd, eventfds, others: [eventfds[0]!, memfd] });
  const findings: Finding[] = [];
  const find = (f: Finding): void => {
    findings.push(f);
    if (process.env.VRNIC_FUZZ_TRACE) process.stderr.write(`FINDING ${JSON.stringify(f)}\n${serve.tail.slice(-14).join('\n')}\n`);
  };
  let desyncCloses = 0;
  let serve = await ServeProcess.start({ transport: opts.transport, logLevel: process.env.VRNIC_FUZZ_LOG_LEVEL });
  const logLevels: Record<string, number> = {};
  const collectLevels = (s: ServeProcess): void => {
    for (const [k, v] of s.levelCounts) logLevels[String(k)] = (logLevels[String(k)] ?? 0) + v;
  };
  let crashes = 0;
  let answered = 0;
  let errorReplies = 0;
  let connections = 0;
  let closedByServer = 0;
  let peakRss = 0;

  // warm up: one whole client, so lazily opened fds (libuv threads, the control socket) are counted in "before"
  const warm = await freshClientWorks(serve.socket);
  if (warm !== null) find({ kind: 'fresh-client', index: -1, detail: `before fuzzing: ${warm}` });
  await sleep(300);
  const before = procStats(serve.pid);
  const fdsBefore = fdTargets(serve.pid);
  peakRss = before.rssKiB;

  let client: RawClient | null = null;
  let model = new FramingModel();
  let sent = 0;
  let last: Generated | null = null;
  let idleFds = before.fds;
  const connLog: string[] = [];
  try {
    while (sent < opts.count) {
      if (serve.exit !== null) {
        crashes++;
        find({
          kind: 'crash',
          index: sent,
          detail: `daemon exited ${JSON.stringify(serve.exit)} after ${last?.what ?? '?'}; last lines: ${serve.tail.slice(-12).join(' | ')}`,
          message: last?.bytes.subarray(0, 256).toString('hex'),
          fds: last?.fds.length,
        });
        collectLevels(serve);
        await serve.stop();
        client?.close();
        client = null;
        if (crashes >= 5) break;
        serve = await ServeProcess.start({ transport: opts.transport });
      }
      if (client === null || client.closed) {
        if (client !== null) {
          if (client.closeReason !== 'closed by the fuzzer') closedByServer++;
          client.close();
        }
        if (process.env.VRNIC_FUZZ_FDTRACE && serve.exit === null) {
          // leak hunting: the fd count with no client, after each connection, and what that connection carried
          await sleep(100);
          const n = procStats(serve.pid).fds;
          if (n > idleFds) process.stderr.write(`FDLEAK ${idleFds} -> ${n} after a connection that carried:\n  ${connLog.join('\n  ')}\n`);
          idleFds = Math.max(idleFds, n);
        }
        connLog.length = 0;
        client = await connectWithRetry(serve.socket, serve);
        if (client === null) {
          await serve.exited;
          continue;
        }
        connections++;
        model = new FramingModel();
        // mostly negotiate first; sometimes go straight to other commands (out of order)
        if (rng.chance(0.9)) {
          const v = validVersion(gen);
          model.feed(v);
          client.send(v);
          sent++;
          const r = await client.reply(v.readUInt16LE(0), waitMs);
          if (r !== undefined) {
            answered++;
            if (r.header.flags & HeaderFlag.Error) errorReplies++;
          } else if (!client.closed) {
            find({ kind: 'unanswered', index: sent, detail: 'a valid VERSION got no reply', message: v.toString('hex') });
            client.close();
          }
          continue;
        }
      }
      const m = gen.next();
      last = m;
      sent++;
      if (process.env.VRNIC_FUZZ_FDTRACE) connLog.push(`${sent} ${m.what} ${m.bytes.subarray(0, 64).toString('hex')} +${m.fds.length} fds`);
      if (process.env.VRNIC_FUZZ_TRACE) process.stderr.write(`${sent} ${m.what} ${m.bytes.subarray(0, 48).toString('hex')} +${m.fds.length}fds\n`);
      const expect: number[] = [];
      const note = (headers: { msgId: number; flags: number }[]): void => {
        for (const h of headers) if ((h.flags & HeaderFlag.TypeMask) === HeaderFlag.TypeCommand && (h.flags & HeaderFlag.NoReply) === 0) expect.push(h.msgId);
      };
      if (m.splitAt > 0) {
        note(model.feed(m.bytes.subarray(0, m.splitAt)));
        client.send(m.bytes.subarray(0, m.splitAt), m.fds);
        await sleep(1);
        note(model.feed(m.bytes.subarray(m.splitAt)));
        client.send(m.bytes.subarray(m.splitAt));
      } else {
        note(model.feed(m.bytes));
        client.send(m.bytes, m.fds);
      }
      // complete whatever the server is still waiting for, so no wait below is the fuzzer's fault
      for (let k = 0; k < 3 && model.missing() > 0 && !client.closed; k++) {
        const pad = Buffer.alloc(model.missing());
        note(model.feed(pad));
        client.send(pad);
      }
      const { missing, answered: got, errors } = await client.waitFor(expect, waitMs);
      answered += got;
      errorReplies += errors;
      if (missing.length > 0) {
        find({
          kind: 'unanswered',
          index: sent,
          detail: `no reply to msgId ${missing.join(',')} within ${waitMs} ms and the connection stayed open (${m.what})`,
          message: m.bytes.subarray(0, 256).toString('hex'),
          fds: m.fds.length,
        });
        client.close();
      }
      const headerRejected = opts.transport === 'libvfio-user' && (libvfioUserLeavesBody(m.bytes) || m.splitAt > HEADER_SIZE);
      const ownId = m.bytes.length >= 2 ? m.bytes.readUInt16LE(0) : -1;
      if (headerRejected && !client.closed && expect.includes(ownId) && !missing.includes(ownId)) {
        // answered above already; the rest of its bytes are still in the server's stream
        desyncCloses++;
        client.close();
      }
      if ((model.broken || headerRejected) && !client.closed) {
        // The server saw an impossible size or a header it rejects: it must close, or answer with
        // an error (libvfio-user answers, to this message or to the junk its unread body became,
        // and reads on from the wrong place). Either way the stream is out of step: start a new
        // connection. A NO_REPLY message may get neither; it only must not stop the server.
        // junk shorter than a header was completed with zeros: its flags word is what the server read
        const head = Buffer.concat([m.bytes.subarray(0, HEADER_SIZE), Buffer.alloc(HEADER_SIZE)]);
        const noReply = (head.readUInt32LE(8) & HeaderFlag.NoReply) !== 0;
        const settled = await client.waitAny(noReply ? 50 : waitMs);
        if (!client.closed) {
          if (settled || noReply) {
            answered++;
            desyncCloses++;
            client.close();
          } else {
            find({ kind: 'unanswered', index: sent, detail: `framing broken (${m.what}): no reply and the connection stayed open`, message: m.bytes.subarray(0, 64).toString('hex'), fds: m.fds.length });
            client.close();
          }
        }
      }
      if (sent % 500 === 0 && serve.exit === null) {
        try {
          peakRss = Math.max(peakRss, procStats(serve.pid).rssKiB);
        } catch {
          // exited between checks: caught above on the next turn
        }
      }
      if (sent % 1000 === 0) opts.progress?.(sent);
    }
    client?.close();
    client = null;
    await sleep(100);
    if (serve.exit !== null) {
      crashes++;
      find({ kind: 'crash', index: sent, detail: `daemon exited ${JSON.stringify(serve.exit)}; last lines: ${serve.tail.slice(-5).join(' | ')}` });
      serve = await ServeProcess.start({ transport: opts.transport });
    }
    const fresh = await freshClientWorks(serve.socket);
    if (fresh !== null) find({ kind: 'fresh-client', index: sent, detail: fresh });
    const stall = await stallProbe(serve, waitMs);
    if (stall !== null) find({ kind: 'stall', index: sent, detail: stall });
    // measure in the same state as "before": no client connected, the last one fully dropped
    await freshClientWorks(serve.socket);
    await sleep(300);
    const after = serve.exit === null ? procStats(serve.pid) : { fds: -1, rssKiB: -1 };
    const newFds: string[] = [];
    if (serve.exit === null) for (const [fd, target] of fdTargets(serve.pid)) if (fdsBefore.get(fd) !== target) newFds.push(`${fd} -> ${target}`);
    peakRss = Math.max(peakRss, after.rssKiB);
    serve.readLog();
    for (const line of serve.badLines) find({ kind: 'error-log', index: -1, detail: line.slice(0, 400) });
    await serve.stop();
    collectLevels(serve);
    return {
      transport: opts.transport,
      seed: opts.seed,
      messages: sent,
      answered,
      errorReplies,
      connections,
      closedByServer,
      desyncCloses,
      crashes,
      findings,
      before,
      after,
      peakRssKiB: peakRss,
      freshClientOk: fresh === null,
      newFds,
      logLevels,
      elapsedMs: Date.now() - started,
    };
  } finally {
    client?.close();
    if (serve.exit === null) await serve.stop();
    fdsHeld.forEach((fd) => closeQuietly(fd));
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '20000' },
      seed: { type: 'string', default: '1' },
      transport: { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
    },
  });
  const count = Number(values.count);
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(count) || count < 1) throw new Error('--count must be a positive integer');
  if (!Number.isSafeInteger(seed)) throw new Error('--seed must be an integer');
  const transports = values.transport ?? availableTransports();
  const results: FuzzResult[] = [];
  let bad = false;
  for (const transport of transports) {
    const res = await fuzzTransport({ transport, seed, count, progress: (n) => process.stderr.write(`${transport}: ${n} messages\n`) });
    results.push(res);
    const ok = res.crashes === 0 && res.findings.length === 0 && res.after.fds <= res.before.fds;
    if (!ok) bad = true;
    if (!values.json) {
      process.stdout.write(
        `${transport}: ${res.messages} messages (seed ${seed}) in ${(res.elapsedMs / 1000).toFixed(1)} s: ${res.answered} answered (${res.errorReplies} errors), ` +
          `${res.connections} connections, ${res.closedByServer} closed by the server, ${res.desyncCloses} ended after a partly read message, ${res.crashes} crashes; ` +
          `fds ${res.before.fds} -> ${res.after.fds}, RSS ${res.before.rssKiB} -> ${res.after.rssKiB} KiB (peak ${res.peakRssKiB}); fresh client ${res.freshClientOk ? 'ok' : 'FAILED'}\n`,
      );
      if (res.newFds.length > 0) process.stdout.write(`  fds open after but not before: ${res.newFds.join(', ')}\n`);
      for (const f of res.findings) process.stdout.write(`  ${f.kind} at message ${f.index}: ${f.detail}${f.message ? `\n    message: ${f.message}${f.fds ? ` (+${f.fds} fds)` : ''}` : ''}\n`);
    }
  }
  if (values.json) process.stdout.write(JSON.stringify(results, null, 2) + '\n');
  return bad ? 1 : 0;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`vfio-user-fuzz: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(2);
    },
  );
}
