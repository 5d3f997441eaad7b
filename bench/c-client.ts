// Builds and drives bench/c-client/client.c: the C vfio-user client that times BAR0 reads against each server.
//
// One client process per server, each connected for the whole run; the bench asks one at a time
// for a round of N reads over its stdin and gets the mean time per read back on its stdout, so no
// Node code runs on the measuring side while a round is timed.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './common';

/** Compiles the client into a temporary directory (a C compiler is all it needs); returns the binary or why not. */
export function buildCClient(): { binary: string } | { reason: string } {
  const source = path.resolve(__dirname, '..', '..', 'bench', 'c-client', 'client.c');
  if (!fs.existsSync(source)) return { reason: `${source} is missing` };
  const cc = process.env.CC ?? 'cc';
  const binary = path.join(tempDir('vrnic-bench-cclient-'), 'c-client');
  try {
    execFileSync(cc, ['-O2', '-Wall', '-o', binary, source], { stdio: 'pipe' });
  } catch (err) {
    const e = err as { stderr?: Buffer; code?: string };
    return { reason: e.code === 'ENOENT' ? `no C compiler (${cc}) found` : `cc failed: ${e.stderr?.toString().trim() ?? String(err)}` };
  }
  return { binary };
}

export class CClient {
  private buffered = '';
  private readonly lines: string[] = [];
  private waiter: ((line: string | null) => void) | null = null;
  private exited = false;

  private constructor(private readonly child: ChildProcess, private readonly name: string) {
    child.stdout!.on('data', (chunk: Buffer) => {
      this.buffered += chunk.toString();
      for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
        this.push(this.buffered.slice(0, nl));
        this.buffered = this.buffered.slice(nl + 1);
      }
    });
    child.on('exit', () => {
      this.exited = true;
      this.push(null);
    });
  }

  /** Connects a new client process to socketPath; resolves with it and the value read at BAR0 offset 0. */
  static async connect(binary: string, socketPath: string, name: string): Promise<{ client: CClient; value: string }> {
    const child = spawn(binary, [socketPath], { stdio: ['pipe', 'pipe', 'inherit'] });
    const client = new CClient(child, name);
    const first = await client.next(15000);
    const m = /^ready (0x[0-9a-f]{8})$/.exec(first);
    if (!m) {
      client.close();
      throw new Error(`C client on ${name}: ${first}`);
    }
    return { client, value: m[1]! };
  }

  /** Does n reads; resolves with µs per read. */
  async time(n: number): Promise<number> {
    this.child.stdin!.write(`${n}\n`);
    const line = await this.next(60000);
    const ns = Number(line);
    if (!Number.isFinite(ns)) throw new Error(`C client on ${this.name}: ${line}`);
    return ns / 1000;
  }

  close(): void {
    if (!this.exited) this.child.stdin!.end();
  }

  private push(line: string | null): void {
    if (this.waiter !== null) {
      const w = this.waiter;
      this.waiter = null;
      w(line);
    } else if (line !== null) this.lines.push(line);
  }

  private next(timeoutMs: number): Promise<string> {
    const have = this.lines.shift();
    if (have !== undefined) return Promise.resolve(have);
    if (this.exited) return Promise.reject(new Error(`C client on ${this.name} exited`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        this.child.kill('SIGKILL');
        reject(new Error(`C client on ${this.name}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (line) => {
        clearTimeout(timer);
        if (line === null) reject(new Error(`C client on ${this.name} exited`));
        else resolve(line);
      };
    });
  }
}
