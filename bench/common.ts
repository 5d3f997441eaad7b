// Shared helpers for bench/: statistics, spawning server processes and waiting for their sockets, /proc readings.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BAR0_SIZE, IF_VERSION } from '../emulator/nic';
import { MinimalClient } from './minimal-client';

/** The repository root (bench/ files run from dist/bench/). */
export const repoRoot = path.resolve(__dirname, '..', '..');
export const cliPath = path.join(repoRoot, 'dist', 'src', 'cli.js');
export const launcherPath = path.join(repoRoot, 'dist', 'bench', 'launch-server.js');

/** The NIC's BAR0 size and its VERSION register (offset 0); the C server and the Node floor answer the same. */
export const BENCH_BAR0_SIZE = BAR0_SIZE;
export const BENCH_VERSION_VALUE = IF_VERSION;

export function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

/** Linear-interpolated quantile q in [0, 1]; NaN for an empty list. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function nowNs(): bigint {
  return process.hrtime.bigint();
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A server process started for a benchmark, with what it printed (for error messages). */
export interface ServerProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly socketPath: string;
  output(): string;
  exited(): boolean;
}

export function spawnServer(name: string, argv: readonly string[], socketPath: string, opts: SpawnOptions = {}): ServerProcess {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  let out = '';
  let done = false;
  const keep = (chunk: Buffer) => {
    out += chunk.toString();
    if (out.length > 20000) out = out.slice(-10000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('exit', () => {
    done = true;
  });
  return { name, child, socketPath, output: () => out, exited: () => done || child.exitCode !== null || child.signalCode !== null };
}

/**
 * Waits until the server's socket accepts and answers VERSION; returns the connected client.
 * Throws when the process exits first or timeoutMs passes.
 */
export async function connectWhenReady(server: ServerProcess, timeoutMs = 15000): Promise<MinimalClient> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  while (Date.now() < deadline) {
    if (server.exited()) {
      throw new Error(`${server.name} exited before serving (code ${server.child.exitCode}, signal ${server.child.signalCode}): ${server.output().trim().slice(-2000)}`);
    }
    if (fs.existsSync(server.socketPath)) {
      try {
        return MinimalClient.connect(server.socketPath);
      } catch (err) {
        last = err;
      }
    }
    await sleep(5);
  }
  throw new Error(`${server.name} did not accept on ${server.socketPath} within ${timeoutMs} ms (${String(last)}): ${server.output().trim().slice(-2000)}`);
}

/** Sends SIGTERM and waits for the exit (SIGKILL after graceMs). */
export async function stopServer(server: ServerProcess, graceMs = 5000): Promise<void> {
  if (server.exited()) return;
  const exited = new Promise<void>((resolve) => server.child.once('exit', () => resolve()));
  server.child.kill('SIGTERM');
  const timer = setTimeout(() => server.child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** VmRSS of a process in KiB, from /proc/PID/status. */
export function vmRssKiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

export interface MachineInfo {
  readonly hostname: string;
  readonly cpuModel: string;
  readonly cpus: number;
  readonly memTotalMiB: number;
  readonly kernel: string;
  readonly node: string;
  readonly loadAvg: readonly number[];
  readonly date: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    cpuModel: cpus[0]?.model ?? 'unknown',
    cpus: cpus.length,
    memTotalMiB: Math.round(os.totalmem() / 1048576),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    loadAvg: os.loadavg().map((x) => round(x)),
    date: new Date().toISOString(),
  };
}

/**
 * Keeps one core busy with another process, as a guest's vCPU thread keeps a core busy beside
 * the device in real use; returns a function that stops it. The process is a plain JS spin loop
 * at normal priority, so the scheduler shares its core as it would a vCPU's.
 */
export function startBusyCore(): { pid: number; stop(): Promise<void> } {
  const child = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    pid: child.pid ?? -1,
    stop: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Runs a bench entry point when its file is the one Node started: its exit code becomes the
 * process's, and an error is one line on stderr (the stack for bench/run's own failures).
 */
export function runMain(mod: NodeJS.Module, name: string, main: () => Promise<number>, opts: { stack?: boolean; exitNow?: boolean } = {}): void {
  if (require.main !== mod) return;
  main().then(
    (code) => {
      if (opts.exitNow) process.exit(code);
      process.exitCode = code;
    },
    (err: unknown) => {
      const text = err instanceof Error ? (opts.stack ? err.stack ?? err.message : err.message) : String(err);
      process.stderr.write(`${name}: ${text}\n`);
      if (opts.exitNow) process.exit(1);
      process.exitCode = 1;
    },
  );
}
