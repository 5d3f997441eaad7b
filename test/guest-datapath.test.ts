// The data path seen from a guest: two processes in one guest connect RC QPs through `vrnic serve`'s device and exchange verified bytes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { bootGuest, type BootResult } from '../qemu-config/boot';
import { guestEvents, kernelProblems, type GuestEvent } from '../qemu-config/guest-log';
import { buildGuestImage, guestAppend } from '../qemu-config/image';
import { requireVfioUserQemu } from '../qemu-config/qemu';
import { e2eTest } from './helpers/e2e';

const CLI = path.resolve(__dirname, '..', 'src', 'cli.js');
const maybe = e2eTest('guest-datapath');
/** Round trips of the in-guest ping-pong: enough for a mean under TCG, few enough for a 2-core host. */
const ITERS = 200;
const SIZE = 1024;

interface Run {
  readonly boot: BootResult;
  readonly events: GuestEvent[];
}

/** Starts `vrnic serve` and resolves once it says it is serving. */
async function startServe(socket: string): Promise<{ child: ChildProcess; log: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--log-level', 'info'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const deadline = Date.now() + 30_000;
  while (!(fs.existsSync(socket) && /"msg":"serving/.test(log))) {
    if (child.exitCode !== null) throw new Error(`vrnic serve exited ${child.exitCode}: ${log}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`vrnic serve did not start serving on ${socket}: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, log: () => log };
}

let shared: Promise<Run> | undefined;
function run(): Promise<Run> {
  shared ??= (async () => {
    const qemu = await requireVfioUserQemu();
    const image = await buildGuestImage({ progress: (l) => console.log(l) });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-datapath-'));
    const socket = path.join(dir, 'vrnic.sock');
    const serve = await startServe(socket);
    try {
      const boot = await bootGuest({
        qemu: qemu.binary,
        kernel: image.kernel,
        initrd: image.initrd,
        append: guestAppend({ scenario: 'pingpong', testArgs: ['--iters', String(ITERS), '--size', String(SIZE)] }),
        socket,
        qmp: path.join(dir, 'qmp.sock'),
        consoleFile: path.join(dir, 'console.log'),
        timeoutMs: 300_000,
      });
      console.log(`guest-datapath artifacts in ${dir} (QEMU ran ${(boot.elapsedMs / 1000).toFixed(1)} s)`);
      return { boot, events: guestEvents(boot.console) };
    } finally {
      serve.child.kill('SIGTERM');
      await new Promise((r) => (serve.child.exitCode !== null ? r(null) : serve.child.once('exit', r)));
    }
  })();
  return shared;
}

function report(r: Run, event: string, label: string): GuestEvent | undefined {
  return r.events.find((e) => e.source === 'test' && e.event === event && e.fields.label === label);
}

maybe('two processes in one guest connect their RC QPs to each other through the device', async (t) => {
  t.timeout(600_000);
  const r = await run();
  const req = report(r, 'connected', 'requester');
  const rsp = report(r, 'connected', 'responder');
  t.is(req?.fields.errno, 0, JSON.stringify(req?.fields));
  t.is(rsp?.fields.errno, 0, JSON.stringify(rsp?.fields));
  // One device: both ends have its LID, and each names the other's QP.
  t.is(req?.fields.lid, 1);
  t.is(req?.fields.peer_qpn, rsp?.fields.qpn);
  t.is(rsp?.fields.peer_qpn, req?.fields.qpn);
});

maybe('a SEND ping-pong between two guest processes returns every byte it sent', async (t) => {
  t.timeout(600_000);
  const r = await run();
  const pp = report(r, 'pingpong', 'requester');
  t.truthy(pp, 'no pingpong report');
  t.is(pp?.fields.round_trips, ITERS);
  t.is(pp?.fields.bytes_verified, ITERS * SIZE);
  t.is(pp?.fields.bad_bytes, 0);
  t.log(`${ITERS} round trips of ${SIZE} bytes under TCG: first ${String(pp?.fields.first_rtt_ms)} ms, mean ${String(pp?.fields.mean_rtt_ms)} ms`);
});

maybe("RDMA WRITE lands in the peer process's MR and RDMA READ brings back the peer's bytes, verified", async (t) => {
  t.timeout(600_000);
  const r = await run();
  t.deepEqual(report(r, 'rdma-write-landed', 'responder')?.fields.bad_bytes, 0);
  t.is(report(r, 'rdma-write-landed', 'responder')?.fields.bytes, SIZE);
  t.is(report(r, 'rdma-read', 'requester')?.fields.bytes, SIZE);
  t.is(report(r, 'rdma-read', 'requester')?.fields.bad_bytes, 0);
  for (const label of ['requester', 'responder']) {
    const v = report(r, 'verified', label);
    t.is(v?.fields.ok, true, `${label}: ${JSON.stringify(v?.fields)}`);
    t.is(v?.fields.error_cqes, 0);
  }
  t.is(r.events.find((e) => e.source === 'init' && e.event === 'test-exit')?.fields.code, 0);
  t.deepEqual(kernelProblems(r.boot.console), []);
});
