// Benchmark 1: a 4-byte REGION_READ of BAR0, round trip, against vrnic's transports and a C server on libvfio-user, interleaved; plus the server-side CPU profile.
//
// Every server runs as its own process and is driven by the same client: the C client
// (bench/c-client/client.c, one write and one read per access, as a vCPU thread's), or, without a
// C compiler, the synchronous Node client (bench/minimal-client.ts). The columns differ only by
// the server. Rounds of N reads go to each server in turn, the order rotating each round, so drift
// on this shared machine (other processes, frequency changes) lands on every column alike; the
// per-read median over rounds is reported, and each column's ratio to the C server's. The rounds
// run twice: quiet, and with one core kept busy by another process (bench/common.ts
// startBusyCore), as a guest's vCPU thread keeps a core busy beside the device in real use.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { buildCClient, CClient } from './c-client';
import type { MinimalClient } from './minimal-client';
import {
  BENCH_BAR0_SIZE,
  BENCH_VERSION_VALUE,
  cliPath,
  connectWhenReady,
  median,
  nowNs,
  quantile,
  round,
  spawnServer,
  startBusyCore,
  stopServer,
  tempDir,
  type ServerProcess,
} from './common';
import { summarizeProfileDir, type ProfileSummary } from './profile';

export type VrnicTransport = 'native' | 'libvfio-user';
/**
 * How a vrnic server waits for the next message, besides its default (blocking in ppoll beside
 * the event loop, src/vfio-user/transports/busy-poll.ts): 'spin' is the design it replaced (poll(…, 0) and a
 * loop turn per check, VRNIC_WAIT=spin), 'no-busy-window' waits through the reactor only.
 */
export type WaitVariant = 'spin' | 'no-busy-window';
export type ServerName = 'c' | 'node-blocking' | 'node-worker' | 'node-floor' | VrnicTransport | `${VrnicTransport}/${WaitVariant}`;

const VARIANT_ENV: Record<WaitVariant, Record<string, string>> = {
  spin: { VRNIC_WAIT: 'spin' },
  'no-busy-window': { VRNIC_BUSY_WINDOW_US: '0' },
};

export interface TrappedAccessOptions {
  readonly rounds: number;
  readonly readsPerRound: number;
  readonly warmupReads: number;
  /** Also run each transport in these older or reduced wait designs. */
  readonly variants: readonly WaitVariant[];
  /** Run the rounds a second time with one core kept busy by another process. */
  readonly busyCore: boolean;
  /** Reads done while strace counts each server's system calls (0: no count). */
  readonly straceReads: number;
  /** Reads done while the server runs under --cpu-prof (0: no profile). */
  readonly profileReads: number;
  readonly log: (line: string) => void;
}

export interface ServerResult {
  readonly name: ServerName;
  /** How the server was started: the command line, minus paths. */
  readonly via: string;
  readonly valueAtOffset0: string;
  readonly medianUs: number;
  readonly p10Us: number;
  readonly p90Us: number;
  readonly roundsUs: readonly number[];
  /** medianUs / the C server's medianUs; null without the C server. */
  readonly ratioToC: number | null;
  /** The same figures with one core kept busy by another process; null when not run. */
  readonly busy: RoundFigures | null;
}

export interface RoundFigures {
  readonly medianUs: number;
  readonly p10Us: number;
  readonly p90Us: number;
  readonly roundsUs: readonly number[];
  readonly ratioToC: number | null;
}

/** System calls a server made per read, counted with `strace -c -f` (every thread) over a separate read loop. */
export interface SyscallCount {
  readonly name: ServerName;
  readonly reads: number;
  readonly perRead: number;
  /** The most frequent calls: name, calls per read, failed calls per read (EAGAIN and the like). */
  readonly top: readonly { syscall: string; perRead: number; errorsPerRead: number }[];
}

export interface TrappedAccessResult {
  readonly client: string;
  /** Why the C client was not used, when it was not. */
  readonly cClientSkipped: string | null;
  /** Load averages (1, 5, 15 min) when the quiet and the busy rounds started: other work on the machine. */
  readonly loadQuiet: readonly number[];
  readonly loadBusy: readonly number[] | null;
  readonly rounds: number;
  readonly readsPerRound: number;
  readonly servers: readonly ServerResult[];
  readonly skipped: readonly { name: ServerName; reason: string }[];
  readonly profiles: readonly ProfileSummary[];
  readonly profileSkipped: readonly { name: ServerName; reason: string }[];
  readonly syscalls: readonly SyscallCount[];
  readonly syscallsSkipped: string | null;
}

/** Where libvfio-user's shared library and header are, or why they are not usable. */
export function findLibvfioUser(): { lib: string; include: string } | { reason: string } {
  const lib = process.env.VRNIC_LIBVFIO_USER;
  if (!lib) return { reason: 'VRNIC_LIBVFIO_USER is not set (path of libvfio-user.so.0)' };
  if (!fs.existsSync(lib)) return { reason: `VRNIC_LIBVFIO_USER=${lib} does not exist` };
  const candidates = [
    process.env.VRNIC_LIBVFIO_USER_INCLUDE,
    path.resolve(path.dirname(lib), '..', '..', 'include', 'vfio-user'),
    path.resolve(path.dirname(lib), '..', 'include', 'vfio-user'),
    // a meson build directory inside the source tree: the header is in the tree's include/
    path.resolve(path.dirname(lib), '..', '..', 'include'),
  ].filter((d): d is string => d !== undefined && d !== '');
  const include = candidates.find((d) => fs.existsSync(path.join(d, 'libvfio-user.h')));
  if (!include) return { reason: `libvfio-user.h not found in ${candidates.join(', ')} (set VRNIC_LIBVFIO_USER_INCLUDE)` };
  return { lib, include };
}

/** Compiles bench/c-server/server.c into a temporary directory; returns the binary or why not. */
export function buildCServer(): { binary: string } | { reason: string } {
  const found = findLibvfioUser();
  if ('reason' in found) return found;
  const source = path.resolve(__dirname, '..', '..', 'bench', 'c-server', 'server.c');
  if (!fs.existsSync(source)) return { reason: `${source} is missing` };
  const cc = process.env.CC ?? 'cc';
  try {
    execFileSync(cc, ['--version'], { stdio: 'ignore' });
  } catch {
    return { reason: `no C compiler (${cc}) found` };
  }
  const binary = path.join(tempDir('vrnic-bench-c-'), 'c-server');
  const libDir = path.dirname(found.lib);
  try {
    execFileSync(cc, ['-O2', '-Wall', '-I', found.include, '-o', binary, source, found.lib, `-Wl,-rpath,${libDir}`], { stdio: 'pipe' });
  } catch (err) {
    const e = err as { stderr?: Buffer };
    return { reason: `cc failed: ${e.stderr?.toString().trim() ?? String(err)}` };
  }
  return { binary };
}

export interface RunningServer {
  readonly name: ServerName;
  readonly via: string;
  readonly server: ServerProcess;
  client: MinimalClient | null;
  cclient?: CClient;
  value?: string;
}

/**
 * Starts `vrnic serve --transport T` in its own process; nodeArgs go before the script (--cpu-prof).
 * A variant sets the environment that selects an older wait design (VARIANT_ENV), to show what
 * the default saves.
 */
export async function startVrnicServer(transport: VrnicTransport, dir: string, nodeArgs: readonly string[] = [], variant: WaitVariant | null = null): Promise<RunningServer> {
  const name: ServerName = variant !== null ? `${transport}/${variant}` : transport;
  const socket = path.join(dir, `${name.replace('/', '-')}.sock`);
  fs.rmSync(socket, { force: true });
  const argv = [process.execPath, ...nodeArgs, cliPath, 'serve', '--transport', transport, '--socket', socket, '--log-level', 'warn', '--force'];
  const extra = variant !== null ? VARIANT_ENV[variant] : {};
  const server = spawnServer(name, argv, socket, { env: { ...process.env, ...extra } });
  try {
    const client = await connectWhenReady(server);
    const how = Object.entries(extra).map(([k, v]) => ` with ${k}=${v}`).join('');
    return { name, via: `vrnic serve --transport ${transport}${how}`, server, client };
  } catch (err) {
    await stopServer(server);
    throw err;
  }
}

export async function startCServer(binary: string, dir: string): Promise<RunningServer> {
  const socket = path.join(dir, 'c.sock');
  const server = spawnServer('c', [binary, socket, String(BENCH_BAR0_SIZE), String(BENCH_VERSION_VALUE)], socket);
  try {
    const client = await connectWhenReady(server);
    return { name: 'c', via: 'bench/c-server/server.c on libvfio-user (blocking vfu_run_ctx)', server, client };
  } catch (err) {
    await stopServer(server);
    throw err;
  }
}

const FLOOR_VIA: Record<'node-blocking' | 'node-worker' | 'node-floor', string> = {
  'node-blocking': 'bench/node-floor-server.js --blocking (JS, blocking read/write via koffi; fixed replies, not a device)',
  'node-worker': 'bench/node-floor-server.js --worker (the same in a worker thread, register shared with the main thread; not a device)',
  'node-floor': 'bench/node-floor-server.js (Node net module on the event loop; fixed replies, not a device)',
};

/** The Node floors: servers that only answer REGION_READ with a fixed value (bench/node-floor-server.ts). */
export async function startNodeFloorServer(dir: string, name: 'node-blocking' | 'node-worker' | 'node-floor'): Promise<RunningServer> {
  const socket = path.join(dir, `${name}.sock`);
  const flag = name === 'node-blocking' ? ['--blocking'] : name === 'node-worker' ? ['--worker'] : [];
  const server = spawnServer(name, [process.execPath, path.join(__dirname, 'node-floor-server.js'), socket, ...flag], socket);
  try {
    const client = await connectWhenReady(server);
    const via = FLOOR_VIA[name];
    return { name, via, server, client };
  } catch (err) {
    await stopServer(server);
    throw err;
  }
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  // The most useful line of a child's stack is usually the Error line.
  const errLine = lines.find((l) => /Error[:\s]/.test(l));
  return (errLine ?? lines[0] ?? '').slice(0, 300);
}

/** The transports worth trying here, and why the others are skipped. */
export function vrnicTransportsToTry(): { try: VrnicTransport[]; skipped: { name: ServerName; reason: string }[] } {
  const found = findLibvfioUser();
  if ('reason' in found) return { try: ['native'], skipped: [{ name: 'libvfio-user', reason: found.reason }] };
  return { try: ['native', 'libvfio-user'], skipped: [] };
}

function timeReads(client: MinimalClient, n: number): number {
  const t0 = nowNs();
  for (let i = 0; i < n; i++) client.read32(0, 0);
  return Number(nowNs() - t0) / n / 1000;
}

/** n reads through whichever client the server has; µs per read. */
async function timeServer(s: RunningServer, n: number): Promise<number> {
  if (s.cclient) return s.cclient.time(n);
  return timeReads(s.client!, n);
}

/** Rounds of reads, the servers taking turns in rotating order; µs per read per round and server. */
async function interleavedRounds(running: readonly RunningServer[], rounds: number, reads: number): Promise<Map<ServerName, number[]>> {
  const perRound = new Map<ServerName, number[]>(running.map((s) => [s.name, []]));
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < running.length; k++) {
      const s = running[(r + k) % running.length]!;
      perRound.get(s.name)!.push(await timeServer(s, reads));
    }
  }
  return perRound;
}

function figures(xs: readonly number[], cMedian: number | null): RoundFigures {
  const m = median(xs);
  return { medianUs: round(m), p10Us: round(quantile(xs, 0.1)), p90Us: round(quantile(xs, 0.9)), roundsUs: xs.map((x) => round(x)), ratioToC: cMedian ? round(m / cMedian) : null };
}

export async function runTrappedAccess(opts: TrappedAccessOptions): Promise<TrappedAccessResult> {
  const dir = tempDir('vrnic-bench-trap-');
  const skipped: { name: ServerName; reason: string }[] = [];
  const running: RunningServer[] = [];
  try {
    const built = buildCServer();
    if ('reason' in built) {
      skipped.push({ name: 'c', reason: built.reason });
    } else {
      try {
        running.push(await startCServer(built.binary, dir));
      } catch (err) {
        skipped.push({ name: 'c', reason: firstLine(err) });
      }
    }
    for (const floor of ['node-blocking', 'node-worker', 'node-floor'] as const) {
      try {
        running.push(await startNodeFloorServer(dir, floor));
      } catch (err) {
        skipped.push({ name: floor, reason: firstLine(err) });
      }
    }
    const plan = vrnicTransportsToTry();
    skipped.push(...plan.skipped);
    for (const t of plan.try) {
      try {
        running.push(await startVrnicServer(t, dir));
      } catch (err) {
        skipped.push({ name: t, reason: firstLine(err) });
      }
    }
    for (const variant of opts.variants) {
      for (const t of plan.try) {
        try {
          running.push(await startVrnicServer(t, dir, [], variant));
        } catch (err) {
          skipped.push({ name: `${t}/${variant}`, reason: firstLine(err) });
        }
      }
    }
    for (const s of skipped) opts.log(`  trapped access: ${s.name} skipped: ${s.reason}`);

    // The C client takes over each server's connection (the servers serve one client at a time).
    const cbuilt = buildCClient();
    const cClientSkipped = 'reason' in cbuilt ? cbuilt.reason : null;
    if (cClientSkipped !== null) opts.log(`  trapped access: C client not used (${cClientSkipped}); timing with bench/minimal-client.ts`);
    for (const s of running) {
      if ('binary' in cbuilt) {
        s.client!.close();
        s.client = null;
        const got = await CClient.connect(cbuilt.binary, s.server.socketPath, s.name);
        s.cclient = got.client;
        s.value = got.value;
      } else {
        s.value = '0x' + s.client!.read32(0, 0).toString(16).padStart(8, '0');
      }
      await timeServer(s, opts.warmupReads);
    }
    const loadQuiet = os.loadavg().map((x) => round(x));
    const quiet = await interleavedRounds(running, opts.rounds, opts.readsPerRound);
    let busy: Map<ServerName, number[]> | null = null;
    let loadBusy: number[] | null = null;
    if (opts.busyCore) {
      const burner = startBusyCore();
      try {
        await new Promise((r) => setTimeout(r, 200)); // let the scheduler see it as a running task
        loadBusy = os.loadavg().map((x) => round(x));
        busy = await interleavedRounds(running, opts.rounds, opts.readsPerRound);
      } finally {
        await burner.stop();
      }
    }
    const cMedian = quiet.has('c') ? median(quiet.get('c')!) : null;
    const cBusyMedian = busy?.has('c') ? median(busy.get('c')!) : null;
    const servers: ServerResult[] = running.map((s) => ({
      name: s.name,
      via: s.via,
      valueAtOffset0: s.value ?? '',
      ...figures(quiet.get(s.name)!, cMedian),
      busy: busy ? figures(busy.get(s.name)!, cBusyMedian) : null,
    }));
    const syscalls: SyscallCount[] = [];
    let syscallsSkipped: string | null = null;
    if (opts.straceReads > 0) {
      if (!hasStrace()) syscallsSkipped = 'strace is not installed';
      for (const s of hasStrace() ? running : []) {
        try {
          syscalls.push(await countSyscalls(s, dir, opts.straceReads));
        } catch (err) {
          syscallsSkipped = `${s.name}: ${firstLine(err)}`;
          opts.log(`  syscall count of ${s.name} failed: ${firstLine(err)}`);
        }
      }
    } else syscallsSkipped = 'not asked for';
    for (const s of running) {
      closeClients(s);
      await stopServer(s.server);
    }
    running.length = 0;

    const profiles: ProfileSummary[] = [];
    const profileSkipped: { name: ServerName; reason: string }[] = [];
    if (opts.profileReads > 0) {
      for (const s of servers) {
        if (s.name !== 'native' && s.name !== 'libvfio-user') continue;
        try {
          profiles.push(await profileServer(s.name, dir, opts.profileReads));
        } catch (err) {
          profileSkipped.push({ name: s.name, reason: firstLine(err) });
          opts.log(`  profile of ${s.name} failed: ${firstLine(err)}`);
        }
      }
    }
    const client = cClientSkipped === null ? 'bench/c-client/client.c (blocking write/read, one process per server)' : 'bench/minimal-client.ts (blocking read/write through koffi)';
    return { client, cClientSkipped, loadQuiet, loadBusy, rounds: opts.rounds, readsPerRound: opts.readsPerRound, servers, skipped, profiles, profileSkipped, syscalls, syscallsSkipped };
  } finally {
    for (const s of running) {
      closeClients(s);
      await stopServer(s.server);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function closeClients(s: RunningServer): void {
  s.client?.close();
  s.client = null;
  s.cclient?.close();
}

function hasStrace(): boolean {
  try {
    execFileSync('strace', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Attaches `strace -c -f` to a running server, does `reads` reads, detaches, and parses the
 * summary. strace slows every call down, which lengthens the busy-window spinning of vrnic's
 * transports; the counts of recvmsg/sendmsg/read/write per read are what to compare.
 */
async function countSyscalls(s: RunningServer, dir: string, reads: number): Promise<SyscallCount> {
  const out = path.join(dir, `strace-${s.name.replace('/', '-')}.txt`);
  const strace = spawn('strace', ['-c', '-f', '-p', String(s.server.child.pid), '-o', out], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const attached = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`strace did not attach: ${err.trim()}`)), 10000);
    strace.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
      if (/attached/.test(err)) {
        clearTimeout(timer);
        resolve();
      }
    });
    strace.on('exit', () => reject(new Error(`strace exited: ${err.trim()}`)));
  });
  await attached;
  await new Promise((r) => setTimeout(r, 200));
  await timeServer(s, reads);
  const exited = new Promise<void>((resolve) => strace.once('exit', () => resolve()));
  strace.kill('SIGINT');
  await exited;
  const rows: { syscall: string; calls: number; errors: number }[] = [];
  for (const line of fs.readFileSync(out, 'utf8').split('\n')) {
    // % time  seconds  usecs/call  calls  [errors]  syscall
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+\s+)?([a-z_0-9]+)\s*$/.exec(line);
    if (m && m[3] !== 'total') rows.push({ syscall: m[3], calls: Number(m[1]), errors: m[2] ? Number(m[2]) : 0 });
  }
  if (rows.length === 0) throw new Error(`no strace summary in ${out}`);
  const total = rows.reduce((a, r) => a + r.calls, 0);
  const top = rows
    .sort((a, b) => b.calls - a.calls)
    .slice(0, 6)
    .map((r) => ({ syscall: r.syscall, perRead: round(r.calls / reads), errorsPerRead: round(r.errors / reads) }));
  return { name: s.name, reads, perRead: round(total / reads), top };
}

/** Runs the transport under `node --cpu-prof` during a read loop and summarizes the profile. */
async function profileServer(transport: VrnicTransport, dir: string, reads: number): Promise<ProfileSummary> {
  const profDir = path.join(dir, `prof-${transport}`);
  fs.mkdirSync(profDir);
  const s = await startVrnicServer(transport, dir, ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-interval', '50']);
  let window;
  try {
    timeReads(s.client!, Math.min(1000, reads)); // past the first calls' compilation
    const fromUs = Number(nowNs() / 1000n);
    timeReads(s.client!, reads);
    window = { fromUs, toUs: Number(nowNs() / 1000n) };
  } finally {
    closeClients(s);
    await stopServer(s.server, 10000);
  }
  return summarizeProfileDir(profDir, `${transport} server during ${reads} reads (${s.via})`, reads, window);
}
