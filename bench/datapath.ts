// Data-path throughput and message rate: RDMA WRITE of 4 KiB..1 MiB between two MRs through the device's DMA, against memcpy of the same sizes, and 64-byte SENDs per second.
//
// The device runs in a child process (bench/doorbell.ts --serve: the NIC and transport `vrnic serve`
// uses), as beside QEMU; this process plays the guest with the vfio-user client and a memfd as
// guest RAM: it writes WQEs, rings the SQ doorbell in the mmapped BAR2 page, arms the CQ and sleeps
// on the CQ's MSI-X eventfd. Two RC QPs of the device are connected in loopback, so every byte
// goes guest RAM -> device (DMA read) -> wire -> device (DMA write) -> guest RAM.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SharedMemory } from '../ffi/libc';
import { GuestMemory, IrqIndex, VfioUserClient, type Mapping } from '../src/vfio-user/client/index';
import { resolveTransport, type TransportName } from '../src/vfio-user/transports/index';
import { ACC, connect, CS, type DpQp, pattern, QPT, Side, WF, WOP } from '../src/testing/nic-data';
import { GuestHeap, TestDriver } from '../src/testing/nic-driver';
import { clientAccess, enableMsix } from '../src/testing/client-access';
import { Child } from './doorbell';
import { runMain } from './common';

export interface DatapathBenchOptions {
  readonly transport?: TransportName;
  readonly quick?: boolean;
  /** WRITE sizes in bytes (default 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB; at most 1 MiB). */
  readonly sizes?: readonly number[];
  readonly log?: (line: string) => void;
}

export interface ThroughputRow {
  readonly bytes: number;
  readonly writes: number;
  readonly deviceMBps: number;
  readonly memcpyMBps: number;
  /** deviceMBps / memcpyMBps. */
  readonly ratio: number;
}

export interface DatapathBenchResult {
  readonly transport: TransportName;
  readonly rows: readonly ThroughputRow[];
  /** 64-byte SENDs (with a receive each) completed per second. */
  readonly sendRate: number;
  readonly sends: number;
  /** Every destination byte matched its source after the WRITE runs. */
  readonly verified: boolean;
}

const GUEST_BASE = 0x10_0000n;
const GUEST_SIZE = 16 << 20;
const SIZES = [4096, 16384, 65536, 262144, 1 << 20];
const MAX = 1 << 20;
/** WQEs in flight at most (the SQ holds 1024), as a bandwidth test keeps its queue deep (perftest's tx-depth). */
const DEPTH = 512;
/** Every SIGNAL-th WQE asks for a CQE; the others are unsignaled. */
const SIGNAL = 64;
const COMP_VECTOR = 2;
const r1 = (x: number): number => Math.round(x * 10) / 10;

/**
 * Buffer.copy (memmove) of `bytes` between two ranges of one shared-memory mapping, as many times
 * as the device moved them: the same kind of memory (a memfd mapping) the device copies between.
 */
function memcpyMBps(bytes: number, iterations: number): number {
  const shm = new SharedMemory('vrnic-bench-memcpy', 2 * Math.max(bytes, 4096));
  try {
    const b = shm.buffer;
    b.fill(1, 0, bytes);
    for (let i = 0; i < 4; i++) b.copy(b, bytes, 0, bytes);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) b.copy(b, bytes, 0, bytes);
    const ns = Number(process.hrtime.bigint() - t0);
    return (bytes * iterations) / (ns / 1e9) / 1e6;
  } finally {
    shm.close();
  }
}

export async function runDatapathBench(opts: DatapathBenchOptions = {}): Promise<DatapathBenchResult> {
  const transport = resolveTransport(opts.transport ?? 'native');
  const quick = opts.quick === true;
  const say = opts.log ?? (() => undefined);
  const dir = mkdtempSync(join(tmpdir(), 'vrnic-datapath-'));
  const socketPath = join(dir, 'nic.sock');
  const child = new Child(spawn(process.execPath, [join(__dirname, 'doorbell.js'), '--serve', '--transport', transport, '--socket', socketPath], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const mem = new GuestMemory(GUEST_SIZE, GUEST_BASE);
  let client: VfioUserClient | null = null;
  let uarMap: Mapping | null = null;
  try {
    const hello = await child.next();
    if (!hello.startsWith('listening ')) throw new Error(`unexpected output from the device process: ${hello}`);
    client = await VfioUserClient.connect(socketPath);
    const c = client;
    await c.enableDevice();
    await enableMsix(c);
    await c.setIrqEventfds(IrqIndex.Msix, 0, 4);
    await c.dmaMap(mem);
    uarMap = await c.mmapSparseArea(2);
    const access = clientAccess(c, mem, uarMap.buffer);
    const drv = new TestDriver(access, new GuestHeap(GUEST_BASE, BigInt(GUEST_SIZE)));
    if ((await drv.bringUp()) !== 1) throw new Error('the device did not become READY');
    // The child serves one device: the first (and only) port on its fabric, LID 1.
    const a = await Side.create(drv, 1, 1024);
    const b = await Side.create(drv, 1, 1024);
    const qa = await a.qp(QPT.RC, 1024);
    const qb = await b.qp(QPT.RC, 1024);
    await connect(a, qa, 1, qb.qpn);
    await connect(b, qb, 1, qa.qpn);

    /** Sleeps on the CQ's eventfd until `side` has a CQE, and takes it. */
    const waitCqe = async (side: Side): Promise<ReturnType<Side['tryPoll']>> => {
      for (;;) {
        const e = side.tryPoll();
        if (e !== null) return e;
        c.takeIrq(IrqIndex.Msix, COMP_VECTOR);
        side.arm();
        const again = side.tryPoll();
        if (again !== null) return again;
        await c.waitIrq(IrqIndex.Msix, COMP_VECTOR, 20_000);
      }
    };

    const src = a.buffer(MAX, pattern(MAX, 7));
    const lkey = await a.mr(src, MAX, 0);
    const dst = b.buffer(MAX);
    const rkey = await b.mr(dst, MAX, ACC.LOCAL_WRITE | ACC.REMOTE_WRITE);
    const rows: ThroughputRow[] = [];
    /** `n` WRITEs of `bytes` with up to DEPTH in flight; wr_id is the WRITE's number, so a CQE says how many are done. */
    const stream = async (bytes: number, n: number): Promise<void> => {
      let posted = 0;
      let completed = 0;
      while (completed < n) {
        const before = posted;
        while (posted < n && posted - completed < DEPTH) {
          const signaled = (posted + 1) % SIGNAL === 0 || posted + 1 === n;
          a.post(qa, { opcode: WOP.WRITE, wrId: BigInt(posted), flags: signaled ? 0 : WF.UNSIGNALED, sges: [{ addr: src, length: bytes, lkey }], remoteAddr: dst, rkey }, false);
          posted++;
        }
        if (posted !== before) a.ringSq(qa);
        const e = await waitCqe(a);
        if (e?.status !== CS.OK) throw new Error(`WRITE of ${bytes} bytes failed with status ${e?.status}`);
        completed = Number(e.wrId) + 1;
      }
    };
    // Unmeasured first: the device process's JIT compiles the whole path (the first thousands of
    // WRITEs ran several times slower than the rest), and the poller goes busy.
    await stream(4096, quick ? 8192 : 32768);
    await stream(65536, quick ? 1024 : 4096);
    let verified = true;
    const rounds = quick ? 1 : 3;
    for (const bytes of opts.sizes ?? SIZES) {
      if (!Number.isInteger(bytes) || bytes < 1 || bytes > MAX) throw new Error(`WRITE size ${bytes} not in 1..${MAX}`);
      // About 64 MiB per size and round (16 when quick), at least two signaled WQEs' worth.
      const writes = Math.max(2 * SIGNAL, Math.round(((quick ? 16 : 64) << 20) / bytes));
      b.dev.memWrite(dst, Buffer.alloc(bytes));
      await stream(bytes, Math.min(writes, 256));
      // The best of a few rounds for both, each device round followed by its memcpy round: on a shared
      // machine another process's burst spoils a round, not the figure.
      let deviceMBps = 0;
      let copy = 0;
      for (let round = 0; round < rounds; round++) {
        const t0 = process.hrtime.bigint();
        await stream(bytes, writes);
        const ns = Number(process.hrtime.bigint() - t0);
        deviceMBps = Math.max(deviceMBps, (bytes * writes) / (ns / 1e9) / 1e6);
        copy = Math.max(copy, memcpyMBps(bytes, writes));
      }
      if (!b.dev.memRead(dst, bytes).equals(a.dev.memRead(src, bytes))) verified = false;
      rows.push({ bytes, writes, deviceMBps: r1(deviceMBps), memcpyMBps: r1(copy), ratio: Math.round((deviceMBps / copy) * 1000) / 1000 });
      say(`  datapath ${transport}: WRITE ${bytes} B x ${writes}: ${r1(deviceMBps)} MB/s, memcpy ${r1(copy)} MB/s`);
    }

    // Message rate: 64-byte SENDs, each into a receive posted ahead; up to DEPTH in flight, receives topped up as they complete.
    const sends = quick ? 8192 : 32768;
    const msg = a.buffer(64, pattern(64, 9));
    const mk = await a.mr(msg, 64, 0);
    const rbuf = b.buffer(64 * DEPTH);
    const rk = await b.mr(rbuf, 64 * DEPTH, ACC.LOCAL_WRITE);
    let sent = 0;
    let sendDone = 0;
    let recvPosted = 0;
    let received = 0;
    const t0 = process.hrtime.bigint();
    while (sendDone < sends || received < sends) {
      while (recvPosted < sends && recvPosted - received < DEPTH) {
        b.recv(qb, BigInt(recvPosted), [{ addr: rbuf + BigInt(64 * (recvPosted % DEPTH)), length: 64, lkey: rk }]);
        recvPosted++;
      }
      const before = sent;
      while (sent < recvPosted && sent - sendDone < DEPTH) {
        const signaled = (sent + 1) % SIGNAL === 0 || sent + 1 === sends;
        a.post(qa, { opcode: WOP.SEND, wrId: BigInt(sent), flags: signaled ? 0 : WF.UNSIGNALED, sges: [{ addr: msg, length: 64, lkey: mk }] }, false);
        sent++;
      }
      if (sent !== before) a.ringSq(qa);
      if (sendDone < sends) {
        const e = await waitCqe(a);
        if (e?.status !== CS.OK) throw new Error(`SEND failed with status ${e?.status}`);
        sendDone = Number(e.wrId) + 1;
      }
      // Every receive completes in b's CQ; take what is there (all of them at the end).
      for (let r = b.tryPoll(); r !== null || (sendDone >= sends && received < sends); r = b.tryPoll()) {
        const got = r ?? (await waitCqe(b));
        if (got?.status !== CS.OK || got.byteLen !== 64) throw new Error(`receive ${received} completed with status ${got?.status}, ${got?.byteLen} bytes`);
        received++;
        if (received >= sends) break;
      }
    }
    const sendRate = Math.round(sends / (Number(process.hrtime.bigint() - t0) / 1e9));
    if (!b.dev.memRead(rbuf, 64).equals(pattern(64, 9))) verified = false;
    say(`  datapath ${transport}: ${sends} SENDs of 64 B: ${sendRate}/s`);
    return { transport, rows, sendRate, sends, verified };
  } finally {
    uarMap?.unmap();
    await client?.close().catch(() => undefined);
    await child.stop();
    mem.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export type { DpQp };

async function main(argv: readonly string[]): Promise<number> {
  const i = argv.indexOf('--transport');
  const transports = (i >= 0 ? argv[i + 1] : 'native').split(',') as TransportName[];
  for (const transport of transports) {
    const j = argv.indexOf('--sizes');
    const sizes = j >= 0 ? argv[j + 1].split(',').map(Number) : undefined;
    const r = await runDatapathBench({ transport, quick: argv.includes('--quick'), sizes, log: (l) => process.stderr.write(l + '\n') });
    process.stdout.write(JSON.stringify(r) + '\n');
  }
  return 0;
}

runMain(module, 'datapath bench', () => main(process.argv.slice(2)), { exitNow: true });
