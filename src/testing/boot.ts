// Boots a guest under QEMU with the console on stdio, collects the console log and waits for power-off.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { LineSplitter } from '../lines';
import { qemuArgs, type QemuOptions } from '../../qemu-config/args';

export interface BootOptions extends Omit<QemuOptions, 'serial'> {
  /** QEMU binary. */
  readonly qemu: string;
  /** Also append the console to this file as it arrives. */
  readonly consoleFile?: string;
  /** Kill QEMU after this long (a hung guest must not hang the caller). Default 300 s. */
  readonly timeoutMs?: number;
  /** Called with each complete console line as it arrives. */
  readonly onLine?: (line: string) => void;
}

export interface BootResult {
  readonly console: string;
  /** QEMU's stderr (its own errors, and warnings such as unsupported options). */
  readonly stderr: string;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly elapsedMs: number;
  readonly args: readonly string[];
}

/** A booted guest that can still be waited for; `kill()` ends QEMU (only this child). */
export interface RunningGuest {
  readonly pid: number | undefined;
  readonly done: Promise<BootResult>;
  kill(): void;
}

export function startGuest(opts: BootOptions): RunningGuest {
  const args = qemuArgs({ ...opts, serial: { kind: 'stdio' } });
  const started = Date.now();
  const child = spawn(opts.qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = opts.consoleFile ? fs.createWriteStream(opts.consoleFile, { flags: 'a' }) : undefined;
  let consoleText = '';
  let stderr = '';
  const onLine = opts.onLine;
  const lines = onLine ? new LineSplitter((l) => onLine(l)) : null;
  let timedOut = false;
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    consoleText += chunk;
    out?.write(chunk);
    lines?.push(chunk);
  });
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, opts.timeoutMs ?? 300_000);
  const done = new Promise<BootResult>((resolve, reject) => {
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (exitCode, signal) => {
      clearTimeout(timer);
      lines?.end();
      out?.end();
      resolve({ console: consoleText, stderr, exitCode, signal, timedOut, elapsedMs: Date.now() - started, args });
    });
  });
  return {
    pid: child.pid,
    done,
    kill: () => {
      child.kill('SIGKILL');
    },
  };
}

/** Boots and waits until QEMU exits (the guest's /init powers off at the end). */
export function bootGuest(opts: BootOptions): Promise<BootResult> {
  return startGuest(opts).done;
}
