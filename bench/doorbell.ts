// Doorbell-to-completion latency through the mmapped UAR page, and the doorbell poller's CPU use when idle.
//
// The device runs in a child process (the same NIC and transport `vrnic serve` uses), as it does
// beside QEMU; this process plays the guest with the vfio-user client: it writes a NOP WQE into
// guest memory, rings the SQ doorbell in the mmapped BAR2 page, then spins until the CQE's phase
// flips in guest memory and the CQ's MSI-X eventfd has fired. Spinning is fine here: the device
// is in the other process. Idle CPU is the child's own process.cpuUsage() over a quiet window
// with the device enabled, a QP and CQ created and nothing rung.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import pino from 'pino';
import { createNic, type Nic } from '../emulator/nic';
import { closeQuietly, eventfd, eventfdConsume, poll, POLLIN } from '../ffi/libc';
import { GuestMemory, IrqIndex, VfioUserClient, type Mapping } from '../src/vfio-user/client/index';
import { Command, IrqSetFlag } from '../src/vfio-user/protocol/constants';
import { encodeIrqSet } from '../src/vfio-user/protocol/messages';
import { Daemon } from '../src/daemon';
import { resolveTransport, type TransportName } from '../src/vfio-user/transports/index';
import { GuestHeap, TestDriver, type CqHandle, type QpHandle } from '../src/testing/nic-driver';
import { clientAccess, enableMsix } from '../src/testing/client-access';
import { runMain } from './common';

export interface DoorbellBenchOptions {
  readonly transport?: TransportName;
  /** Measured round trips (default 2000; 500 when quick). */
  readonly iterations?: number;
  /** Unmeasured round trips first (default 200). */
  readonly warmup?: number;
  /** Length of the idle CPU window in seconds (default 5; 2 when quick). */
  readonly idleSeconds?: number;
  readonly quick?: boolean;
  readonly log?: (line: string) => void;
}

export interface DoorbellBenchResult {
  readonly transport: TransportName;
  readonly iterations: number;
  /**
   * Doorbell store to "eventfd fired and CQE visible", in µs, with this process asleep in poll(2)
   * on the CQ vector's eventfd (as a guest waits for its interrupt): on a busy 2-core machine a
   * spinning waiter would steal the CPU the device needs.
   */
  readonly p50Us: number;
  readonly p99Us: number;
  readonly minUs: number;
  readonly maxUs: number;
  readonly meanUs: number;
  /** The same with this process spinning on the CQE and the eventfd instead of sleeping. */
  readonly spinP50Us: number;
  readonly spinP99Us: number;
  /** Spinning: doorbell store to CQE visible (without the eventfd), p50 in µs. */
  readonly cqeP50Us: number;
  /** The device process's CPU while idle, as % of one core. */
  readonly idleCpuPercent: number;
  /** Same figure under the name bench/run.ts reads. */
  readonly idleCpuPct: number;
  readonly idleSeconds: number;
  /** Poller wake-ups per second while idle (about 1000 / poll.maxSleepMs). */
  readonly idleWakeupsPerSec: number;
  readonly busyWindowUs: number;
  readonly maxSleepMs: number;
}

const GUEST_BASE = 0x10_0000n;
const GUEST_SIZE = 8 << 20;
// Powers of two within the defaults (maxCqe 4096, maxQpWr 1024); both rings wrap many times.
const CQ_ENTRIES = 1024;
const SQ_ENTRIES = 1024;

function quantile(sorted: readonly number[], q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

const r2 = (x: number): number => Math.round(x * 100) / 100;

/** The child: serve the NIC, answer "cpu-start"/"cpu-stop" on stdin with the process's CPU use. */
async function serveChild(transport: TransportName, socketPath: string): Promise<void> {
  const log = pino({ level: 'warn' }, pino.destination(2));
  const nic: Nic = createNic({}, { log });
  const daemon = await Daemon.start({ socketPath, transport, device: nic, force: true, log });
  process.stdout.write(`listening ${JSON.stringify({ busyWindowUs: nic.config.poll.busyWindowUs, maxSleepMs: nic.config.poll.maxSleepMs })}\n`);
  let start = process.cpuUsage();
  let startWall = performance.now();
  let startWakeups = 0;
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line === 'cpu-start') {
      start = process.cpuUsage();
      startWall = performance.now();
      startWakeups = nic.counters().pollerWakeups;
      process.stdout.write('ok\n');
    } else if (line === 'status') {
      process.stdout.write(`${JSON.stringify(nic.status())}\n`);
    } else if (line === 'cpu-stop') {
      const d = process.cpuUsage(start);
      const wallMs = performance.now() - startWall;
      process.stdout.write(`${JSON.stringify({ userUs: d.user, systemUs: d.system, wallMs, wakeups: nic.counters().pollerWakeups - startWakeups, ready: nic.status().ready })}\n`);
    }
  });
  await new Promise<void>((resolve) => rl.on('close', resolve));
  await daemon.stop();
}

/** The device process (this file run with --serve), spoken to by lines on stdin/stdout. */
export class Child {
  private readonly lines: string[] = [];
  private waiter: ((line: string) => void) | null = null;
  private readonly rl: Interface;

  constructor(readonly proc: ChildProcessByStdio<Writable, Readable, null>) {
    this.rl = createInterface({ input: proc.stdout });
    this.rl.on('line', (l) => {
      if (this.waiter !== null) {
        const w = this.waiter;
        this.waiter = null;
        w(l);
      } else this.lines.push(l);
    });
  }

  next(timeoutMs = 20_000): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the device process did not answer')), timeoutMs);
      const onExit = (code: number | null) => reject(new Error(`the device process exited (${code})`));
      this.proc.once('exit', onExit);
      this.waiter = (line) => {
        clearTimeout(timer);
        this.proc.off('exit', onExit);
        resolve(line);
      };
    });
  }

  send(line: string): void {
    this.proc.stdin.write(line + '\n');
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    this.proc.stdin.end();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

export async function runDoorbellBench(opts: DoorbellBenchOptions = {}): Promise<DoorbellBenchResult> {
  const transport = resolveTransport(opts.transport ?? 'native');
  const quick = opts.quick === true;
  const iterations = opts.iterations ?? (quick ? 500 : 2000);
  const warmup = opts.warmup ?? 200;
  const idleSeconds = opts.idleSeconds ?? (quick ? 2 : 5);
  const say = opts.log ?? (() => undefined);
  const dir = mkdtempSync(join(tmpdir(), 'vrnic-doorbell-'));
  const socketPath = join(dir, 'nic.sock');
  const child = new Child(spawn(process.execPath, [__filename, '--serve', '--transport', transport, '--socket', socketPath], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const mem = new GuestMemory(GUEST_SIZE, GUEST_BASE);
  let client: VfioUserClient | null = null;
  let uarMap: Mapping | null = null;
  try {
    const hello = await child.next();
    if (!hello.startsWith('listening ')) throw new Error(`unexpected output from the device process: ${hello}`);
    const poll = JSON.parse(hello.slice('listening '.length)) as { busyWindowUs: number; maxSleepMs: number };
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
    const uar = await drv.allocUar();
    const pd = await drv.createPd();
    const cq = await drv.createCq(uar, CQ_ENTRIES, 0);
    const qp = await drv.createQp(pd, cq, SQ_ENTRIES);
    for (const s of [1, 2, 3]) await drv.modifyQp(qp.qpn, s);
    const vector = 2; // comp_vector 0

    // Our own eventfd for the CQ's vector, so this process can sleep on it in poll(2).
    const cqIrqFd = eventfd();
    let blocking: Samples;
    let spinning: Samples;
    try {
      await c.request(
        Command.DeviceSetIrqs,
        encodeIrqSet({ argsz: 20, flags: IrqSetFlag.DataEventfd | IrqSetFlag.ActionTrigger, index: IrqIndex.Msix, start: vector, count: 1, data: Buffer.alloc(0) }),
        [cqIrqFd],
      );
      const round = { drv, qp, cq, mem, uar: uarMap.buffer, irqFd: cqIrqFd, child };
      let next = 0;
      blocking = await measure(round, next, warmup, iterations, 'poll');
      next += warmup + iterations;
      spinning = await measure(round, next, warmup, iterations, 'spin');
    } finally {
      closeQuietly(cqIrqFd);
    }
    say(`  doorbell ${transport}: p50 ${blocking.p50} µs, p99 ${blocking.p99} µs over ${iterations} (sleeping on the eventfd); spinning p50 ${spinning.p50} µs, p99 ${spinning.p99} µs`);

    // Idle: let the busy window pass and the back-off reach its bound before measuring.
    await new Promise((r) => setTimeout(r, Math.max(200, poll.busyWindowUs / 1000 + 8 * poll.maxSleepMs)));
    child.send('cpu-start');
    if ((await child.next()) !== 'ok') throw new Error('the device process did not start the CPU window');
    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    child.send('cpu-stop');
    const cpu = JSON.parse(await child.next()) as { userUs: number; systemUs: number; wallMs: number; wakeups: number; ready: boolean };
    if (!cpu.ready) throw new Error('the device was not READY during the idle window');
    const idleCpuPercent = r2(((cpu.userUs + cpu.systemUs) / 1000 / cpu.wallMs) * 100);
    say(`  doorbell ${transport}: idle CPU ${idleCpuPercent}% of a core, ${Math.round((cpu.wakeups / cpu.wallMs) * 1000)} poller wake-ups/s`);
    return {
      transport,
      iterations,
      p50Us: blocking.p50,
      p99Us: blocking.p99,
      minUs: blocking.min,
      maxUs: blocking.max,
      meanUs: blocking.mean,
      spinP50Us: spinning.p50,
      spinP99Us: spinning.p99,
      cqeP50Us: spinning.cqeP50,
      idleCpuPercent,
      idleCpuPct: idleCpuPercent,
      idleSeconds,
      idleWakeupsPerSec: Math.round((cpu.wakeups / cpu.wallMs) * 1000),
      busyWindowUs: poll.busyWindowUs,
      maxSleepMs: poll.maxSleepMs,
    };
  } finally {
    uarMap?.unmap();
    await client?.close();
    await child.stop();
    mem.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Samples {
  readonly p50: number;
  readonly p99: number;
  readonly min: number;
  readonly max: number;
  readonly mean: number;
  readonly cqeP50: number;
}

interface Round {
  readonly drv: TestDriver;
  readonly qp: QpHandle;
  readonly cq: CqHandle;
  readonly mem: GuestMemory;
  readonly uar: Buffer;
  readonly irqFd: number;
  readonly child: Child;
}

/**
 * `warmup + iterations` NOP round trips starting at WQE/CQE index `first`: post, arm, ring, then
 * wait for both the CQE's phase and the eventfd ('poll': asleep in poll(2); 'spin': busy).
 */
async function measure(r: Round, first: number, warmup: number, iterations: number, wait: 'poll' | 'spin'): Promise<Samples> {
  const { drv, qp, cq, mem, uar } = r;
  const samples: number[] = [];
  const cqeSamples: number[] = [];
  eventfdConsume(r.irqFd);
  for (let n = 0; n < warmup + iterations; n++) {
    const i = first + n;
    drv.postNop(qp, i, BigInt(i));
    drv.armCq(cq, i);
    const flagsAddr = cq.buf + BigInt(32 * (i % cq.entries) + 0x1c);
    const phase = 1 - (Math.floor(i / cq.entries) & 1);
    const t0 = process.hrtime.bigint();
    drv.ringSq(qp, i + 1);
    let tCqe = 0n;
    let fired = false;
    // Bounded: a lost doorbell fails the bench instead of hanging it.
    const deadline = t0 + 2_000_000_000n;
    for (;;) {
      if (!fired && wait === 'poll') poll([{ fd: r.irqFd, events: POLLIN }], 100);
      if (!fired && eventfdConsume(r.irqFd) > 0n) fired = true;
      if (tCqe === 0n && (mem.readU32(flagsAddr) & 1) === phase) tCqe = process.hrtime.bigint();
      if (tCqe !== 0n && fired) break;
      if (process.hrtime.bigint() > deadline) {
        r.child.send('status');
        throw new Error(`round trip ${i}: ${tCqe === 0n ? 'no CQE' : 'no interrupt'} within 2 s; device status: ${await r.child.next()}`);
      }
    }
    const t1 = process.hrtime.bigint();
    // Consume the CQE so the CQ never fills.
    uar.writeUInt32LE(((cq.cqn << 16) | ((i + 1) & 0xffff)) >>> 0, cq.uar * 4096 + cq.dbOffset);
    if (n >= warmup) {
      samples.push(Number(t1 - t0) / 1000);
      cqeSamples.push(Number(tCqe - t0) / 1000);
    }
    // Let the client's loop breathe now and then (it shares this thread).
    if (n % 100 === 99) await new Promise((res) => setImmediate(res));
  }
  samples.sort((a, b) => a - b);
  cqeSamples.sort((a, b) => a - b);
  return {
    p50: r2(quantile(samples, 0.5)),
    p99: r2(quantile(samples, 0.99)),
    min: r2(samples[0]),
    max: r2(samples[samples.length - 1]),
    mean: r2(samples.reduce((a, b) => a + b, 0) / samples.length),
    cqeP50: r2(quantile(cqeSamples, 0.5)),
  };
}

async function main(argv: string[]): Promise<number> {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  if (argv.includes('--serve')) {
    await serveChild(resolveTransport((arg('--transport') ?? 'native') as TransportName), arg('--socket') ?? '');
    return 0;
  }
  const transports = (arg('--transport') ?? 'native').split(',') as TransportName[];
  for (const transport of transports) {
    const r = await runDoorbellBench({ transport, quick: argv.includes('--quick'), log: (l) => process.stderr.write(l + '\n') });
    process.stdout.write(JSON.stringify(r) + '\n');
  }
  return 0;
}

runMain(module, 'doorbell bench', () => main(process.argv.slice(2)), { exitNow: true });
