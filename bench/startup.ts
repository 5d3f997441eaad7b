// Benchmark 4: time from spawning `vrnic serve` to a socket that accepts, and the resident memory of a serving daemon with 1 and 16 devices.
import fs from 'node:fs';
import path from 'node:path';
import { MinimalClient } from './minimal-client';
import {
  cliPath,
  connectWhenReady,
  launcherPath,
  median,
  nowNs,
  round,
  sleep,
  spawnServer,
  stopServer,
  tempDir,
  vmRssKiB,
  type ServerProcess,
} from './common';
import type { VrnicTransport } from './trapped-access';

export interface StartupOptions {
  readonly runs: number;
  readonly transports: readonly VrnicTransport[];
  /** Register reads a client makes before memory is read, so the daemon is in its serving steady state. */
  readonly readsBeforeRss: number;
  readonly manyDevices: number;
  readonly log: (line: string) => void;
}

export interface StartupRow {
  readonly transport: VrnicTransport;
  readonly via: string;
  readonly startMs: { readonly median: number; readonly min: number; readonly max: number; readonly runs: readonly number[] };
  /** VmRSS in MB (10^6 bytes) of one `vrnic serve` (1 device) after a client connected and read registers. */
  readonly rss1MB: number;
  /** N separate `vrnic serve` processes, one device each: the sum of their VmRSS. */
  readonly rssManyProcessesMB: { readonly devices: number; readonly total: number; readonly perDevice: number } | null;
  /**
   * One process serving N devices on N sockets (bench/launch-server.js, N Daemons): its VmRSS.
   * All devices share the process-wide reactor (src/vfio-user/transports/reactor.ts): libuv's default pool.
   */
  readonly rssOneProcessMB: { readonly devices: number; readonly total: number; readonly perDevice: number; readonly marginalPerDevice: number; readonly device: string } | null;
}

export interface StartupResult {
  readonly rows: readonly StartupRow[];
  /** The same measure for a Node process that only listens on a Unix socket: Node's own share of the start time. */
  readonly nodeBaselineMs: number | null;
  readonly skipped: readonly { transport: VrnicTransport; reason: string }[];
}

function serveArgv(transport: VrnicTransport, socket: string): string[] {
  return [process.execPath, cliPath, 'serve', '--transport', transport, '--socket', socket, '--log-level', 'warn', '--force'];
}

/** Spawns the server and polls connect(2) every millisecond; returns ms from spawn to the first accepted connect. */
async function timeToAccept(argv: string[], socket: string, name: string): Promise<{ ms: number; server: ServerProcess }> {
  fs.rmSync(socket, { force: true });
  const t0 = nowNs();
  const server = spawnServer(name, argv, socket);
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    if (MinimalClient.canConnect(socket)) return { ms: Number(nowNs() - t0) / 1e6, server };
    if (server.exited()) break;
    await sleep(1);
  }
  await stopServer(server);
  throw new Error(`${name} did not accept within 15 s (exit ${server.child.exitCode}): ${server.output().trim().slice(-1500)}`);
}

async function rssAfterReads(server: ServerProcess, reads: number): Promise<number> {
  const client = await connectWhenReady(server);
  try {
    for (let i = 0; i < reads; i++) client.read32(0, 0);
    await sleep(200); // let the daemon settle (GC, logging) before reading its memory
    return (vmRssKiB(server.child.pid!) * 1024) / 1e6;
  } finally {
    client.close();
  }
}

async function measureTransport(transport: VrnicTransport, dir: string, opts: StartupOptions): Promise<StartupRow> {
  const socket = path.join(dir, `${transport}.sock`);
  const argvFor = (s: string) => serveArgv(transport, s);
  const via = `vrnic serve --transport ${transport}`;

  const runs: number[] = [];
  let rss1 = 0;
  for (let r = 0; r < opts.runs; r++) {
    const { ms, server } = await timeToAccept(argvFor(socket), socket, transport);
    runs.push(round(ms, 1));
    if (r === opts.runs - 1) rss1 = await rssAfterReads(server, opts.readsBeforeRss);
    await stopServer(server);
  }

  // N processes, one device each.
  let many: StartupRow['rssManyProcessesMB'] = null;
  const servers: ServerProcess[] = [];
  try {
    let total = 0;
    for (let i = 0; i < opts.manyDevices; i++) {
      const s = path.join(dir, `${transport}-${i}.sock`);
      const server = spawnServer(`${transport}#${i}`, argvFor(s), s);
      servers.push(server);
    }
    for (const server of servers) total += await rssAfterReads(server, opts.readsBeforeRss);
    many = { devices: opts.manyDevices, total: round(total, 1), perDevice: round(total / opts.manyDevices, 1) };
  } catch (err) {
    opts.log(`  startup: ${opts.manyDevices} processes of ${transport}: ${(err as Error).message.split('\n')[0]}`);
  } finally {
    await Promise.all(servers.map((s) => stopServer(s)));
  }

  // One process, N devices (N Daemons on N sockets).
  let one: StartupRow['rssOneProcessMB'] = null;
  const sockets = Array.from({ length: opts.manyDevices }, (_, i) => path.join(dir, `${transport}-one-${i}.sock`));
  const launcher = spawnServer(`${transport} x${opts.manyDevices}`, [process.execPath, launcherPath, '--transport', transport, ...sockets.flatMap((s) => ['--socket', s])], sockets[sockets.length - 1], {
    env: process.env,
  });
  try {
    await connectWhenReady(launcher).then((c) => c.close());
    const clients: MinimalClient[] = [];
    for (const s of sockets) clients.push(MinimalClient.connect(s));
    for (const c of clients) for (let i = 0; i < opts.readsBeforeRss; i++) c.read32(0, 0);
    await sleep(200);
    const total = (vmRssKiB(launcher.child.pid!) * 1024) / 1e6;
    for (const c of clients) c.close();
    const device = /device=([^\s]+)/.exec(launcher.output())?.[1] ?? 'unknown';
    // What each device beyond the first adds, against one `vrnic serve` with one device.
    const marginalPerDevice = round((total - rss1) / Math.max(opts.manyDevices - 1, 1), 2);
    one = { devices: opts.manyDevices, total: round(total, 1), perDevice: round(total / opts.manyDevices, 1), marginalPerDevice, device };
  } catch (err) {
    opts.log(`  startup: one process with ${opts.manyDevices} devices of ${transport}: ${(err as Error).message.split('\n')[0]}`);
  } finally {
    await stopServer(launcher);
  }

  return {
    transport,
    via,
    startMs: { median: round(median(runs), 1), min: Math.min(...runs), max: Math.max(...runs), runs },
    rss1MB: round(rss1, 1),
    rssManyProcessesMB: many,
    rssOneProcessMB: one,
  };
}

export async function runStartup(opts: StartupOptions): Promise<StartupResult> {
  const dir = tempDir('vrnic-bench-start-');
  const rows: StartupRow[] = [];
  const skipped: { transport: VrnicTransport; reason: string }[] = [];
  let nodeBaselineMs: number | null = null;
  try {
    const socket = path.join(dir, 'baseline.sock');
    const script = `require('net').createServer().listen(${JSON.stringify(socket)}); process.on('SIGTERM', () => process.exit(0));`;
    const runs: number[] = [];
    for (let r = 0; r < opts.runs; r++) {
      const { ms, server } = await timeToAccept([process.execPath, '-e', script], socket, 'node baseline');
      runs.push(ms);
      await stopServer(server);
    }
    nodeBaselineMs = round(median(runs), 1);
  } catch (err) {
    opts.log(`  startup: node baseline failed: ${(err as Error).message.split('\n')[0]}`);
  }
  try {
    for (const t of opts.transports) {
      try {
        rows.push(await measureTransport(t, dir, opts));
      } catch (err) {
        const reason = (err as Error).message.split('\n')[0].slice(0, 300);
        skipped.push({ transport: t, reason });
        opts.log(`  startup: ${t} skipped: ${reason}`);
      }
    }
    return { rows, skipped, nodeBaselineMs };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
