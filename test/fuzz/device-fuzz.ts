// Guest-side fuzzer for the NIC: random queue registers, admin commands, indexes and doorbells from an untrusted guest.
//
// Usage: node dist/test/fuzz/device-fuzz.js [--count N] [--seed S] [--transport native|libvfio-user]
//
// Plays a hostile guest driver against a real `vrnic serve` child through VfioUserClient: guest
// memory is a memfd with two DMA windows (A read-write, B read-only) and an unmapped gap between
// them; queue bases, sizes, indexes and every field of the 64-byte admin commands are random, often
// pointing into B, the gap, across window ends, or nowhere. Checks (docs/device.md is the oracle):
// the daemon stays alive and logs nothing at error level (a caught exception in the model is
// logged there); STATUS is always one of the documented states (0, READY, FATAL with a FATAL_CODE
// from section 3.3); the read-only window B is never written; and after CTRL.RESET the device
// comes back (STATUS 0, FATAL_CODE 0) and a proper bring-up gets READY and a QUERY_DEVICE
// completion with status OK.
import { parseArgs } from 'node:util';
import { GuestMemory, VfioUserClient, type Mapping } from '../../src/vfio-user/client/index';
import { availableTransports } from '../../src/vfio-user/transports/index';
import { procStats, ServeProcess, sleep, type ProcStats } from './daemon-process';
import { Rng } from './rng';

/** BAR0 registers (docs/device.md section 3). */
const R = {
  ctrl: 0x040,
  status: 0x044,
  fatalCode: 0x048,
  asqBase: 0x080,
  asqSize: 0x088,
  asqTail: 0x08c,
  acqBase: 0x0a0,
  acqSize: 0x0a8,
  acqHead: 0x0ac,
  eqBase: 0x0c0,
  eqSize: 0x0c8,
  eqHead: 0x0cc,
  cntAdminCmds: 0x100,
  cntGuestErrors: 0x10c,
} as const;
const STATUS_READY = 1;
const STATUS_FATAL = 2;
const DOCUMENTED_FATAL_CODES = new Set([1, 2, 3, 4]);

const BASE = 0x1_0000_0000n;
/** Window A: read-write, 1 MiB. */
const A = { addr: BASE, size: 0x10_0000 };
/** Window B: read-only, 64 KiB, after a 1 MiB unmapped gap. */
const B = { addr: BASE + 0x20_0000n, size: 0x1_0000 };
const MEMORY_SIZE = 0x21_0000;

export interface DeviceFuzzOptions {
  readonly transport: string;
  readonly seed: number;
  /** Guest operations (register writes, commands, doorbells). */
  readonly count: number;
  /** Every this many operations: RESET, check, bring up properly, QUERY_DEVICE. */
  readonly recoverEvery?: number;
  readonly progress?: (done: number) => void;
}

export interface DeviceFuzzResult {
  readonly transport: string;
  readonly seed: number;
  readonly operations: number;
  readonly commands: number;
  readonly doorbells: number;
  readonly recoveries: number;
  /** STATUS values seen (as 'READY', 'FATAL n', 'off'), with counts. */
  readonly states: Record<string, number>;
  readonly guestErrors: number;
  /** CNT_ADMIN_CMDS at the end: admin commands the device completed. */
  readonly adminCompleted: number;
  readonly problems: string[];
  readonly before: ProcStats;
  readonly after: ProcStats;
  readonly elapsedMs: number;
}

class Guest {
  constructor(readonly client: VfioUserClient, readonly mem: GuestMemory, readonly uar: Mapping | null) {}
  read(off: number): Promise<number> {
    return this.client.barRead32(0, off);
  }
  write(off: number, v: number): Promise<void> {
    return this.client.barWrite32(0, off, v >>> 0);
  }
  async write64(off: number, v: bigint): Promise<void> {
    await this.write(off, Number(v & 0xffffffffn));
    await this.write(off + 4, Number((v >> 32n) & 0xffffffffn));
  }
}

/** A guest address, biased to the interesting places: inside A, in B, in the gap, across an edge, or anywhere. */
function address(rng: Rng, align = 64): bigint {
  const aligned = (a: bigint): bigint => (rng.chance(0.9) ? a - (a % BigInt(align)) : a);
  switch (rng.below(8)) {
    case 0:
    case 1:
    case 2:
      return aligned(A.addr + BigInt(rng.below(A.size)));
    case 3:
      return aligned(B.addr + BigInt(rng.below(B.size)));
    case 4:
      return aligned(A.addr + BigInt(A.size) + BigInt(rng.below(0x10_0000)));
    case 5:
      return A.addr + BigInt(A.size) - BigInt(rng.pick([16, 64, 4096]));
    case 6:
      return rng.pick([0n, 64n, (1n << 64n) - 64n, 1n << 63n, BASE - 64n]);
    default:
      return rng.u64();
  }
}

function queueSize(rng: Rng): number {
  return rng.chance(0.7) ? 2 ** rng.range(1, 12) : rng.pick([0, 1, 3, 4097, 8192, rng.u32()]);
}

/** A random 64-byte admin command: a real opcode mostly, fields biased to small handles and guest addresses. */
function adminCommand(rng: Rng, cmdId: number): Buffer {
  const b = Buffer.alloc(64);
  b[0] = rng.chance(0.9) ? rng.range(1, 13) : rng.below(256);
  b[1] = rng.chance(0.8) ? 0 : rng.below(256);
  b.writeUInt32LE(cmdId, 4);
  for (let off = 8; off < 64; off += 8) {
    switch (rng.below(4)) {
      case 0:
        b.writeBigUInt64LE(address(rng, rng.pick([1, 64, 4096])), off);
        break;
      case 1:
        b.writeUInt32LE(rng.below(8), off);
        b.writeUInt32LE(rng.chance(0.5) ? 2 ** rng.below(13) : rng.below(8), off + 4);
        break;
      case 2:
        b.writeUInt32LE(rng.interestingU32(), off);
        b.writeUInt32LE(rng.interestingU32(), off + 4);
        break;
      default:
        break; // zero
    }
  }
  return b;
}

/** Proper bring-up (docs/device.md section 9) with queues in A, then QUERY_DEVICE; a description of what went wrong, or null. */
async function bringUpAndQuery(g: Guest, cmdId: number): Promise<string | null> {
  const asq = A.addr;
  const acq = A.addr + 0x1000n;
  const eq = A.addr + 0x2000n;
  const out = A.addr + 0x3000n;
  g.mem.write(asq, Buffer.alloc(16 * 64));
  g.mem.write(acq, Buffer.alloc(16 * 16));
  g.mem.write(eq, Buffer.alloc(16 * 16));
  g.mem.write(out, Buffer.alloc(128));
  await g.write64(R.asqBase, asq);
  await g.write(R.asqSize, 16);
  await g.write64(R.acqBase, acq);
  await g.write(R.acqSize, 16);
  await g.write64(R.eqBase, eq);
  await g.write(R.eqSize, 16);
  await g.write(R.ctrl, 1);
  const status = await g.read(R.status);
  if (status !== STATUS_READY) return `bring-up after RESET: STATUS 0x${status.toString(16)} (FATAL_CODE ${await g.read(R.fatalCode)}), wanted READY`;
  const cmd = Buffer.alloc(64);
  cmd[0] = 0x01; // QUERY_DEVICE
  cmd.writeUInt32LE(cmdId, 4);
  cmd.writeBigUInt64LE(out, 8);
  cmd.writeUInt32LE(128, 16);
  g.mem.write(asq, cmd);
  await g.write(R.asqTail, 1);
  const deadline = Date.now() + 10_000;
  while ((g.mem.read(acq + 6n, 2).readUInt16LE(0) & 1) !== 1) {
    if (Date.now() > deadline) return 'QUERY_DEVICE after recovery: no completion within 10 s';
    await sleep(1);
  }
  const cqe = g.mem.read(acq, 16);
  if (cqe.readUInt32LE(0) !== cmdId || cqe.readUInt16LE(4) !== 0) return `QUERY_DEVICE after recovery completed with cmd_id ${cqe.readUInt32LE(0)} status ${cqe.readUInt16LE(4)}`;
  if (g.mem.read(out, 4).readUInt32LE(0) !== 0x00010000) return 'QUERY_DEVICE after recovery wrote no if_version';
  await g.write(R.acqHead, 1);
  return null;
}

function describe(status: number, fatalCode: number): string | { problem: string } {
  if ((status & ~(STATUS_READY | STATUS_FATAL)) !== 0) return { problem: `STATUS 0x${status.toString(16)} has undocumented bits` };
  if ((status & STATUS_READY) !== 0 && (status & STATUS_FATAL) !== 0) return { problem: 'STATUS says READY and FATAL at once' };
  if ((status & STATUS_FATAL) !== 0) {
    if (!DOCUMENTED_FATAL_CODES.has(fatalCode)) return { problem: `FATAL with undocumented FATAL_CODE ${fatalCode}` };
    return `FATAL ${fatalCode}`;
  }
  if (fatalCode !== 0) return { problem: `FATAL_CODE ${fatalCode} while STATUS is not FATAL` };
  return status === STATUS_READY ? 'READY' : 'off';
}

export async function fuzzDevice(opts: DeviceFuzzOptions): Promise<DeviceFuzzResult> {
  const started = Date.now();
  const rng = new Rng(opts.seed);
  const recoverEvery = opts.recoverEvery ?? 200;
  const serve = await ServeProcess.start({ transport: opts.transport });
  const problems: string[] = [];
  const states: Record<string, number> = {};
  const mem = new GuestMemory(MEMORY_SIZE, BASE, 'vrnic-device-fuzz');
  let client: VfioUserClient | null = null;
  let uar: Mapping | null = null;
  let commands = 0;
  let doorbells = 0;
  let recoveries = 0;
  let op = 0;
  let cmdId = 1;
  const canary = Buffer.alloc(B.size);
  for (let i = 0; i < canary.length; i++) canary[i] = (i * 7 + 3) & 0xff;
  try {
    client = await VfioUserClient.connect(serve.socket, { timeoutMs: 10_000 });
    await client.enableDevice();
    await client.dmaMap(mem, { addr: A.addr, size: A.size });
    mem.write(B.addr, canary);
    await client.dmaMap(mem, { addr: B.addr, size: B.size, writable: false });
    uar = await client.mmapSparseArea(2);
    const g = new Guest(client, mem, uar);
    await sleep(200);
    const before = procStats(serve.pid);
    let asqSize = 16;
    let asqBase = A.addr;
    let tail = 0;

    const check = async (): Promise<void> => {
      const d = describe(await g.read(R.status), await g.read(R.fatalCode));
      if (typeof d === 'string') states[d] = (states[d] ?? 0) + 1;
      else if (problems.length < 20) problems.push(`after operation ${op}: ${d.problem}`);
    };

    const recover = async (): Promise<void> => {
      recoveries++;
      await g.write(R.ctrl, 2);
      const status = await g.read(R.status);
      const code = await g.read(R.fatalCode);
      if (status !== 0 || code !== 0) problems.push(`after RESET at operation ${op}: STATUS 0x${status.toString(16)} FATAL_CODE ${code}, wanted 0 and 0`);
      const why = await bringUpAndQuery(g, cmdId++);
      if (why !== null && problems.length < 20) problems.push(`at operation ${op}: ${why}`);
      asqBase = A.addr;
      asqSize = 16;
      tail = 1;
    };

    await recover();
    while (op < opts.count) {
      if (serve.exit !== null) {
        problems.push(`daemon exited ${JSON.stringify(serve.exit)} at operation ${op}: ${serve.tail.slice(-6).join(' | ')}`);
        break;
      }
      op++;
      switch (rng.below(15)) {
        case 0: {
          // reprogram the queues with random bases and sizes (ignored while ENABLE is 1, as documented);
          // mostly sound queues in A, so the device gets READY and the commands behind them run
          for (const which of [R.asqBase, R.acqBase, R.eqBase]) {
            const sound = rng.chance(0.85);
            const base = sound ? A.addr + BigInt(rng.below(0x8_0000) & ~63) : address(rng);
            const size = sound ? 2 ** rng.range(1, 8) : queueSize(rng);
            await g.write64(which, base);
            await g.write(which + 8, size);
            if (which === R.asqBase) {
              asqBase = base;
              asqSize = size;
            }
          }
          break;
        }
        case 1:
          if (rng.chance(0.5)) await g.write(R.ctrl, 2); // leave FATAL (only RESET does)
          await g.write(R.ctrl, rng.pick([1, 1, 1, 1, 1, 0, 2, 3, rng.u32()]));
          tail = 0; // ENABLE and RESET restart every index at 0
          break;
        case 2:
        case 3:
        case 4:
        case 10:
        case 11:
        case 12:
        case 13:
        case 14: {
          // an admin command in the next ASQ slot (when the ASQ lies in A, where we can write it), then the doorbell
          const slot = asqSize > 0 && asqSize <= 4096 ? tail % asqSize : 0;
          const at = asqBase + BigInt(slot * 64);
          const cmd = adminCommand(rng, cmdId++);
          if (at >= A.addr && at + 64n <= A.addr + BigInt(A.size)) mem.write(at, cmd);
          tail = (tail + 1) >>> 0;
          await g.write(R.asqTail, rng.chance(0.95) ? tail : rng.u32());
          commands++;
          break;
        }
        case 5:
          await g.write(rng.pick([R.acqHead, R.eqHead]), rng.chance(0.7) ? rng.below(64) : rng.u32());
          break;
        case 6:
        case 7: {
          // a doorbell in a UAR page: a real slot layout (qpn/cqn << 16 | index) or junk
          if (uar === null) break;
          const page = rng.below(uar.length / 4096);
          const off = page * 4096 + (rng.chance(0.8) ? rng.below(256) * 8 + rng.pick([0, 4]) : rng.below(4096) & ~3);
          const v = rng.chance(0.7) ? ((rng.range(1, 8) << 16) | rng.below(0x10000)) >>> 0 : rng.u32();
          uar.buffer.writeUInt32LE(v, off);
          doorbells++;
          break;
        }
        case 8:
          // random junk into the rings and buffers the device reads
          mem.write(address(rng, 8) % BigInt(A.size - 64) + A.addr, rng.bytes(rng.range(1, 64)));
          break;
        default:
          await g.write(rng.below(0x120) & ~3, rng.u32());
      }
      if (op % 10 === 0) {
        // let the device's admin queue and doorbell poller run on what we wrote
        await sleep(rng.below(3));
        await check();
      }
      if (op % recoverEvery === 0) await recover();
      if (op % 1000 === 0) opts.progress?.(op);
    }
    await check();
    await recover();
    await sleep(100);
    if (!mem.read(B.addr, B.size).equals(canary)) problems.push('the read-only DMA window B was written');
    serve.readLog();
    for (const line of serve.badLines) if (problems.length < 30) problems.push(`daemon logged: ${line.slice(0, 300)}`);
    const guestErrors = await g.read(R.cntGuestErrors);
    const adminCompleted = await g.read(R.cntAdminCmds);
    uar.unmap();
    uar = null;
    await client.close();
    client = null;
    await sleep(300);
    const after = serve.exit === null ? procStats(serve.pid) : { fds: -1, rssKiB: -1 };
    if (serve.exit !== null) problems.push(`daemon exited ${JSON.stringify(serve.exit)}`);
    return { transport: opts.transport, seed: opts.seed, operations: op, commands, doorbells, recoveries, states, guestErrors, adminCompleted, problems, before, after, elapsedMs: Date.now() - started };
  } finally {
    uar?.unmap();
    await client?.close();
    mem.close();
    await serve.stop();
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '5000' },
      seed: { type: 'string', default: '1' },
      transport: { type: 'string', multiple: true },
    },
  });
  const count = Number(values.count);
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(count) || count < 1) throw new Error('--count must be a positive integer');
  let bad = false;
  for (const transport of values.transport ?? availableTransports()) {
    const r = await fuzzDevice({ transport, seed, count, progress: (n) => process.stderr.write(`${transport}: ${n} operations\n`) });
    process.stdout.write(
      `${transport}: ${r.operations} guest operations (seed ${seed}) in ${(r.elapsedMs / 1000).toFixed(1)} s: ${r.commands} admin commands, ${r.doorbells} doorbells, ` +
        `${r.adminCompleted} completed, ${r.recoveries} RESET recoveries, ${r.guestErrors} guest errors counted; states ${JSON.stringify(r.states)}; ` +
        `fds ${r.before.fds} -> ${r.after.fds}, RSS ${r.before.rssKiB} -> ${r.after.rssKiB} KiB\n`,
    );
    for (const p of r.problems) process.stdout.write(`  PROBLEM ${p}\n`);
    if (r.problems.length > 0) bad = true;
  }
  return bad ? 1 : 0;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`device-fuzz: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(2);
    },
  );
}
