// Runs `vrnic serve` as a child process for the guest tests and waits until every socket is served.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';

const CLI = path.resolve(__dirname, '..', '..', 'src', 'cli.js');

/** Starts `vrnic serve --socket S...` (plus `extra` flags) and resolves once it says it is serving each socket. */
export async function startServe(sockets: readonly string[], extra: readonly string[] = []): Promise<{ child: ChildProcess; log: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', ...sockets.flatMap((s) => ['--socket', s]), '--log-level', 'info', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const deadline = Date.now() + 30_000;
  while (!(sockets.every((s) => fs.existsSync(s)) && (log.match(/"msg":"serving/g) ?? []).length === sockets.length)) {
    if (child.exitCode !== null) throw new Error(`vrnic serve exited ${child.exitCode}: ${log}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`vrnic serve did not start serving on ${sockets.join(', ')}: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, log: () => log };
}
