// The real `vrnic serve` as a child process, with what the hardening tools watch: exit, log levels, fds, RSS, sockets.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const CLI = path.resolve(__dirname, '../../src/cli.js');

export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly raw: string;
}

export interface ServeOptions {
  readonly transport: string;
  /** Directory for the socket (a fresh private one by default). */
  readonly dir?: string;
  readonly logLevel?: string;
  readonly extraArgs?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
}

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/**
 * A running `vrnic serve`: its pid, socket, exit and log as parsed lines. Its stderr goes to a file,
 * not a pipe: a pipe the parent cannot drain at once (while it blocks in a send to the daemon) would
 * stall the daemon's synchronous logger and turn a log burst into a fake hang.
 */
export class ServeProcess {
  readonly dir: string;
  readonly socket: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  /** pino lines at error level (50) or above, and every line that is not JSON (a Node crash prints a stack). */
  readonly badLines: string[] = [];
  readonly levelCounts = new Map<number, number>();
  private readonly lastLines: string[] = [];
  private readOffset = 0;
  private partial = '';
  private exitInfo: ExitInfo | null = null;
  readonly exited: Promise<ExitInfo>;
  private readonly ownDir: boolean;

  private constructor(opts: ServeOptions) {
    this.ownDir = opts.dir === undefined;
    this.dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-hard-'));
    this.socket = path.join(this.dir, 'vfio.sock');
    this.logFile = path.join(this.dir, `serve-${Date.now()}-${Math.floor(Math.random() * 1e6)}.log`);
    const args = [CLI, 'serve', '--socket', this.socket, '--transport', opts.transport, '--log-level', opts.logLevel ?? 'warn', ...(opts.extraArgs ?? [])];
    const logFd = fs.openSync(this.logFile, 'w');
    try {
      this.child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', logFd], env: { ...process.env, ...(opts.env ?? {}) } });
    } finally {
      fs.closeSync(logFd);
    }
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      }),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  get exit(): ExitInfo | null {
    return this.exitInfo;
  }

  /** The last lines the daemon wrote (reads what is new in its log first). */
  get tail(): string[] {
    this.readLog();
    return this.lastLines;
  }

  /** Parses what the daemon logged since the last call. */
  readLog(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.logFile, 'r');
    } catch {
      return;
    }
    try {
      const buf = Buffer.alloc(1 << 20);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, this.readOffset);
        if (n <= 0) break;
        this.readOffset += n;
        this.onData(buf.subarray(0, n).toString('utf8'));
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  private onData(d: string): void {
    const text = this.partial + d;
    const lines = text.split('\n');
    this.partial = lines.pop()!;
    for (const line of lines) {
      if (line.length === 0) continue;
      this.lastLines.push(line);
      if (this.lastLines.length > 40) this.lastLines.shift();
      let level = -1;
      try {
        const o = JSON.parse(line) as { level?: unknown };
        if (typeof o.level === 'number') level = o.level;
      } catch {
        // not a pino line
      }
      this.levelCounts.set(level, (this.levelCounts.get(level) ?? 0) + 1);
      if (level < 0 || level >= 50) {
        if (this.badLines.length < 50) this.badLines.push(line);
      }
    }
  }

  /** Spawns `vrnic serve` and resolves once its socket accepts a connection (which is closed at once). */
  static async start(opts: ServeOptions): Promise<ServeProcess> {
    const p = new ServeProcess(opts);
    await p.waitListening();
    return p;
  }

  private async waitListening(limitMs = 30_000): Promise<void> {
    const deadline = Date.now() + limitMs;
    for (;;) {
      if (this.exitInfo !== null) throw new Error(`vrnic serve exited (${JSON.stringify(this.exitInfo)}): ${this.tail.join('\n')}`);
      // serve opens the control socket just after the vfio-user one: started means both accept.
      const ctl = `${this.socket}.ctl`;
      if (fs.existsSync(this.socket) && fs.existsSync(ctl) && (await accepts(this.socket)) && (await accepts(ctl))) return;
      if (Date.now() > deadline) {
        this.child.kill('SIGKILL');
        throw new Error(`vrnic serve never listened on ${this.socket}: ${this.tail.join('\n')}`);
      }
      await sleep(25);
    }
  }

  /** SIGTERM, then the exit; SIGKILL if it does not go within limitMs. Removes the directory it made. */
  async stop(limitMs = 20_000): Promise<ExitInfo> {
    if (this.exitInfo === null) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), limitMs);
    const info = await this.exited;
    clearTimeout(timer);
    this.readLog();
    if (this.ownDir) fs.rmSync(this.dir, { recursive: true, force: true });
    return info;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function accepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socket, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

// ---- /proc views of a process ----

export interface ProcStats {
  readonly fds: number;
  readonly rssKiB: number;
}

/** Open fds (entries of /proc/PID/fd) and VmRSS of a live process. */
export function procStats(pid: number): ProcStats {
  const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return { fds, rssKiB: m ? Number(m[1]) : -1 };
}

/** What each open fd of a process points at (readlink of /proc/PID/fd/N), e.g. 'socket:[123]', 'anon_inode:[eventfd]'. */
export function fdTargets(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const name of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(Number(name), fs.readlinkSync(`/proc/${pid}/fd/${name}`));
    } catch {
      // closed between readdir and readlink
    }
  }
  return out;
}

/** Inodes of the sockets a process holds open. */
export function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const target of fdTargets(pid).values()) {
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) out.add(m[1]!);
  }
  return out;
}

/**
 * Inodes listed in the process's network namespace tables /proc/PID/net/{tcp,tcp6,udp,udp6,raw,raw6}
 * (every IP socket in the namespace, of any process): intersected with socketInodes(pid) it gives the
 * IP sockets that process holds.
 */
export function ipSocketInodes(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const table of ['tcp', 'tcp6', 'udp', 'udp6', 'raw', 'raw6']) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue; // the protocol is not built into this kernel
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9) out.set(cols[9]!, `${table} ${cols[1]} -> ${cols[2]}`);
    }
  }
  return out;
}
