// Child processes of an unplug run (the daemon, QEMU): spawned with their output kept in files, ended by pid.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { LineSplitter } from '../lines';

export interface Child {
  readonly proc: ChildProcess;
  readonly name: string;
  /** Resolves when the process has exited, with its code or the signal that ended it. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly hasExited: () => boolean;
  /** SIGTERM, then SIGKILL after graceMs; resolves once it is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnOptions {
  /** stderr (and stdout unless onStdoutLine is given) are appended here. */
  readonly logFile: string;
  /** Called for each line the process writes on stdout, with the host time it arrived. */
  readonly onStdoutLine?: (line: string, atMs: number) => void;
  readonly env?: NodeJS.ProcessEnv;
}

export function spawnChild(name: string, file: string, args: readonly string[], opts: SpawnOptions): Child {
  const log = fs.openSync(opts.logFile, 'a', 0o600);
  const proc = spawn(file, [...args], {
    stdio: ['ignore', opts.onStdoutLine ? 'pipe' : log, log],
    env: opts.env ?? process.env,
  });
  let exitedFlag = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', () => {
      exitedFlag = true;
    });
    // 'close', not 'exit': 'exit' can come while the last of the child's output is still in the
    // pipe, and a guest's final report lines (its kernel log dump, printed just before poweroff)
    // would then be judged missing although QEMU wrote them.
    proc.once('close', (code, signal) => {
      exitedFlag = true;
      resolve({ code, signal });
    });
    proc.once('error', () => {
      exitedFlag = true;
      resolve({ code: null, signal: null });
    });
  });
  void exited.then(() => fs.closeSync(log));
  if (opts.onStdoutLine && proc.stdout) {
    const onLine = opts.onStdoutLine;
    let at = 0;
    const lines = new LineSplitter((line) => onLine(line, at));
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk: string) => {
      at = Date.now();
      lines.push(chunk);
      if (lines.pending > 1 << 20) lines.dropPending(); // a console without newlines is noise
    });
  }
  const stop = async (graceMs = 3000): Promise<void> => {
    if (exitedFlag) return;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (!exitedFlag) proc.kill('SIGKILL');
    }, graceMs);
    await exited;
    clearTimeout(timer);
  };
  return { proc, name, exited, hasExited: () => exitedFlag, stop };
}

/** Resolves true when `cond` holds, polling every `everyMs`, or false after `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs: number, everyMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return true;
}

/** Where one unplug run keeps its sockets and logs, and which of them a report lists as artifacts. */
export function runFiles(workDir: string) {
  const files = {
    socket: path.join(workDir, 'vrnic.sock'),
    qmpRunner: path.join(workDir, 'qmp.sock'),
    qmpDaemon: path.join(workDir, 'qmp-daemon.sock'),
    console: path.join(workDir, 'console.log'),
    invalidMem: path.join(workDir, 'qemu-invalid-mem.log'),
    qemuLog: path.join(workDir, 'qemu.log'),
    daemonLog: path.join(workDir, 'daemon.log'),
  };
  const artifacts = { workDir, console: files.console, invalidMem: files.invalidMem, daemonLog: files.daemonLog };
  return { files, artifacts };
}
