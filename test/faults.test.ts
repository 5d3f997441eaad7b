// Faults a real deployment meets: clients killed mid-operation, many connect cycles, vanish and SIGTERM under load.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { GuestMemory, VfioUserClient, IrqIndex } from '../src/vfio-user/client/index';
import { ControlClient } from '../src/control/client';
import { availableTransports, libvfioUserUnavailable } from '../src/vfio-user/transports/index';
import { fdTargets, procStats, ServeProcess, sleep } from './fuzz/daemon-process';
import { skipping } from './helpers/skip';

const FAULT_CLIENT = path.resolve(__dirname, 'fuzz/fault-client.js');
const transports = availableTransports();
const why = libvfioUserUnavailable();
if (why !== null) skipping('faults on libvfio-user', why);

interface ClientChild {
  readonly child: ChildProcess;
  /** Resolves once the child printed a line matching `re`. */
  waitFor(re: RegExp, limitMs?: number): Promise<void>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

function startClient(socket: string, mode: string, noFd = false): ClientChild {
  const child = spawn(process.execPath, [FAULT_CLIENT, socket, mode, ...(noFd ? ['--no-fd'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => (out += d));
  child.stderr!.on('data', (d: string) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    exited,
    output: () => out,
    async waitFor(re, limitMs = 30_000) {
      const deadline = Date.now() + limitMs;
      while (!re.test(out)) {
        if (child.exitCode !== null) throw new Error(`fault client exited ${child.exitCode}: ${out}`);
        if (Date.now() > deadline) throw new Error(`fault client never printed ${re}: ${out}`);
        await sleep(10);
      }
    },
  };
}

/** A fresh client negotiates and reads config space (retrying while the server drops the previous one). */
async function freshClientReadsConfig(socket: string): Promise<number> {
  let last: unknown;
  for (let i = 0; i < 100; i++) {
    let c: VfioUserClient | null = null;
    try {
      c = await VfioUserClient.connect(socket, { timeoutMs: 10_000 });
      return (await c.configSpace()).readUInt16LE(0);
    } catch (err) {
      last = err;
      await sleep(50);
    } finally {
      await c?.close();
    }
  }
  throw last;
}

/** Waits until the daemon's fd table is back to `want` entries (the server drops a client asynchronously). */
async function settledFds(pid: number, want: number): Promise<number> {
  let n = procStats(pid).fds;
  for (let i = 0; i < 100 && n !== want; i++) {
    await sleep(50);
    n = procStats(pid).fds;
  }
  return n;
}

for (const transport of ['native', 'libvfio-user'] as const) {
  const t1 = transports.includes(transport) ? test.serial : test.serial.skip;

  for (const [what, mode, noFd] of [
    ['a DMA access (device DMA through DMA_READ/DMA_WRITE messages to the client)', 'dma', true],
    ['a DMA access (device DMA into fd-mapped guest memory)', 'dma', false],
    ['an admin command', 'admin', false],
  ] as const) {
    // libvfio-user does not serve DMA to regions mapped without an fd (our transport refuses it), so that case is native-only
    if (transport === 'libvfio-user' && noFd) continue;
    t1(`${transport}: a client killed with SIGKILL during ${what} leaves the daemon serving the next client with no fd left behind`, async (t) => {
      const serve = await ServeProcess.start({ transport });
      try {
        t.not(await freshClientReadsConfig(serve.socket), 0xffff);
        await sleep(200);
        const baseline = procStats(serve.pid).fds;
        for (let round = 0; round < 3; round++) {
          const c = startClient(serve.socket, mode, noFd);
          await c.waitFor(/n \d+/);
          c.child.kill('SIGKILL');
          t.is((await c.exited).signal, 'SIGKILL');
          t.is(serve.exit, null, 'the daemon is still running');
          t.is(await freshClientReadsConfig(serve.socket), 0x1234);
        }
        t.is(await settledFds(serve.pid, baseline), baseline, 'the daemon holds the same fds as before');
        serve.readLog();
        t.deepEqual(serve.badLines, []);
      } finally {
        await serve.stop();
      }
    });
  }

  t1(`${transport}: 200 connect / DMA map / IRQ setup / disconnect cycles leave the daemon's fds exactly as they were and its memory bounded`, async (t) => {
    const serve = await ServeProcess.start({ transport });
    const mem = new GuestMemory(0x40000, 0x3_0000_0000n);
    try {
      const cycle = async (): Promise<void> => {
        const c = await VfioUserClient.connect(serve.socket, { timeoutMs: 10_000 });
        try {
          await c.enableDevice();
          await c.dmaMap(mem, { addr: mem.base, size: 0x20000 });
          await c.dmaMap(mem, { addr: mem.base + 0x20000n, size: 0x20000, writable: false });
          await c.setIrqEventfds(IrqIndex.Msix, 0, 4);
          await c.regionInfo(2);
          await c.barRead32(0, 0x44);
        } finally {
          await c.close();
        }
      };
      // warm-up cycles: lazily created fds (libuv threads, the control socket) exist before the baseline
      for (let i = 0; i < 5; i++) await cycle();
      await sleep(300);
      const before = procStats(serve.pid);
      const targetsBefore = fdTargets(serve.pid);
      for (let i = 0; i < 200; i++) await cycle();
      const fds = await settledFds(serve.pid, before.fds);
      const after = procStats(serve.pid);
      const extra = [...fdTargets(serve.pid)].filter(([fd, target]) => targetsBefore.get(fd) !== target).map(([fd, target]) => `${fd} -> ${target}`);
      t.log(`${transport}: fds ${before.fds} -> ${fds}, RSS ${before.rssKiB} -> ${after.rssKiB} KiB over 200 cycles`);
      t.is(fds, before.fds);
      t.deepEqual(extra, []);
      t.true(after.rssKiB - before.rssKiB < 32 * 1024, `RSS grew from ${before.rssKiB} to ${after.rssKiB} KiB`);
      t.is(serve.exit, null);
    } finally {
      mem.close();
      await serve.stop();
    }
  });

  for (const how of ['the control socket (vanish surprise)', 'SIGTERM'] as const) {
    const mode = how === 'SIGTERM' ? 'admin' : 'hammer';
    const during = how === 'SIGTERM' ? 'admin commands' : 'BAR0 reads and doorbell writes';
    t1(`${transport}: stopping through ${how} while a client runs ${during} exits 0, removes the socket and disconnects the client`, async (t) => {
      const serve = await ServeProcess.start({ transport, logLevel: 'info' });
      const c = startClient(serve.socket, mode);
      try {
        await c.waitFor(/n \d+/);
        if (how === 'SIGTERM') {
          serve.child.kill('SIGTERM');
        } else {
          const ctl = await ControlClient.connect(`${serve.socket}.ctl`, { timeoutMs: 5000 });
          try {
            const r = await ctl.vanish('surprise');
            t.truthy(r?.servingStoppedAtMs, 'the daemon reports it stopped serving');
          } finally {
            ctl.close();
          }
        }
        const exit = await serve.exited;
        t.deepEqual(exit, { code: 0, signal: null });
        t.false(fs.existsSync(serve.socket), 'the vfio-user socket is removed');
        const client = await c.exited;
        t.is(client.code, 0, `the client saw a disconnect: ${c.output()}`);
        t.regex(c.output(), /disconnected/);
        serve.readLog();
        t.deepEqual(serve.badLines, []);
      } finally {
        c.child.kill('SIGKILL');
        await serve.stop();
      }
    });
  }
}
