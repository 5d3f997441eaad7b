// The guest kit against the real emulator: QEMU >= 10.1 (as `vrnic qemu find` names it) attaches `vrnic serve`'s device to the guest.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { bootGuest, startGuest, type BootResult } from '../src/testing/boot';
import { guestEvents, kernelProblems, type GuestEvent } from '../guest/kit/guest-log';
import { buildGuestImage, guestAppend } from '../guest/kit/image';
import { requireVfioUserQemu } from '../qemu-config/qemu';
import { QmpClient } from '../src/qmp/client';
import { e2eTest } from './helpers/e2e';

const CLI = path.resolve(__dirname, '..', 'src', 'cli.js');
const maybe = e2eTest('guest-e2e');

interface Run {
  readonly dir: string;
  readonly boot: BootResult;
  readonly events: GuestEvent[];
  readonly trace: Record<string, unknown>[];
  readonly serveLog: string;
}

/** Starts `vrnic serve` and resolves once it says it is serving (no probe connection: that would be a client). */
async function startServe(socket: string, trace: string, extra: readonly string[] = []): Promise<{ child: ChildProcess; log: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--trace', trace, '--log-level', 'info', ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
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

/** Guests run one at a time on this machine's two cores: each waits for the one before. */
let guestSlot: Promise<unknown> = Promise.resolve();
function oneGuestAtATime<T>(fn: () => Promise<T>): Promise<T> {
  const mine = guestSlot.catch(() => undefined).then(fn);
  guestSlot = mine.catch(() => undefined);
  return mine;
}

let shared: Promise<Run> | undefined;
function run(): Promise<Run> {
  shared ??= oneGuestAtATime(async () => {
    const qemu = await requireVfioUserQemu();
    const image = await buildGuestImage({ progress: (l) => console.log(l) });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-e2e-'));
    const socket = path.join(dir, 'vrnic.sock');
    const tracePath = path.join(dir, 'trace.ndjson');
    const serve = await startServe(socket, tracePath);
    let boot: BootResult;
    try {
      boot = await bootGuest({
        qemu: qemu.binary,
        kernel: image.kernel,
        initrd: image.initrd,
        // loglevel 7: the driver's probe lines reach the console as they happen, not only in the final dump.
        // --comp-event: after the NOPs the CQ is armed and one more NOP must come back as a
        // completion event on the CQ's completion channel.
        append: guestAppend({ loglevel: 7, watchSeconds: 1, testArgs: ['--comp-event'] }),
        socket,
        qmp: path.join(dir, 'qmp.sock'),
        logItems: ['invalid_mem'],
        logFile: path.join(dir, 'qemu.log'),
        consoleFile: path.join(dir, 'console.log'),
        timeoutMs: 240_000,
      });
    } finally {
      serve.child.kill('SIGTERM');
      await new Promise((r) => (serve.child.exitCode !== null ? r(null) : serve.child.once('exit', r)));
    }
    const trace = fs
      .readFileSync(tracePath, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    console.log(`guest-e2e artifacts in ${dir} (QEMU ran ${(boot.elapsedMs / 1000).toFixed(1)} s)`);
    return { dir, boot, events: guestEvents(boot.console), trace, serveLog: serve.log() };
  });
  return shared;
}

function testEvent(r: Run, event: string, label?: string): GuestEvent | undefined {
  return r.events.find((e) => e.source === 'test' && e.event === event && (label === undefined || e.fields.label === label));
}

maybe('the driver probes the vrnic device and uverbs0 appears for vrnic0', async (t) => {
  t.timeout(600_000);
  const r = await run();
  t.false(r.boot.timedOut);
  t.regex(r.boot.console, /vrnic 0000:01:00\.0: vrnic0: version 0x00010000, 16 UAR pages at 0x[0-9a-f]+, 4 vectors, MSI-X, bug=none/);
  const loaded = r.events.find((e) => e.source === 'init' && e.event === 'modules-loaded');
  t.regex(String(loaded?.fields.uverbs), /\buverbs0\b/);
  t.regex(String(loaded?.fields.ib), /\bvrnic0\b/);
});

maybe('the test program gets a context and its UAR mapping points into BAR2', async (t) => {
  t.timeout(600_000);
  const r = await run();
  const ctx = testEvent(r, 'context');
  t.truthy(ctx, 'no context report');
  t.is(ctx?.fields.num_uars, 1);
  t.is(ctx?.fields.uar_page_size, 4096);
  const bar2 = (ctx?.fields.bar2 as string[]).map((s) => BigInt(s));
  const frame = testEvent(r, 'frame', 'uar0');
  t.is(frame?.fields.frame, 'bar');
  const phys = BigInt(String(frame?.fields.pfn)) * 4096n;
  t.is(phys, bar2[0] + BigInt(Number(ctx?.fields.uar_index)) * 4096n);
  t.is(testEvent(r, 'doorbells', 'uar0')?.fields.scratch_read_back_ok, true);
  t.is(r.events.find((e) => e.source === 'init' && e.event === 'test-exit')?.fields.code, 0);
});

maybe("the emulator sees the guest's doorbell writes on the context's UAR page", async (t) => {
  t.timeout(600_000);
  const r = await run();
  const ctx = testEvent(r, 'context');
  const count = Number(testEvent(r, 'doorbells', 'uar0')?.fields.count);
  // vrnic-test writes qpn 1 << 16 | i for i = 1..count at 0x000 (and the same at 0x008).
  const written = new Set(Array.from({ length: count }, (_, i) => (0x10000 | (i + 1)) >>> 0));
  const seen = r.trace.filter((rec) => rec.kind === 'doorbell' && rec.uar === ctx?.fields.uar_index && rec.offset === '0x0');
  t.true(seen.length > 0, 'no doorbell in the trace');
  t.true(seen.every((rec) => written.has(Number(rec.value))), JSON.stringify(seen));
});

maybe('a PD and a user MR registered through uverbs reach the device as CREATE_PD and REG_MR', async (t) => {
  t.timeout(600_000);
  const r = await run();
  const verbs = testEvent(r, 'verbs');
  t.is(verbs?.fields.alloc_pd_errno, 0);
  t.is(verbs?.fields.reg_mr_errno, 0);
  const admin = r.trace.filter((rec) => rec.kind === 'admin');
  const regMr = admin.find((rec) => rec.op === 'REG_MR');
  t.is(regMr?.status, 0);
  t.is(Number(regMr?.result0), Number(verbs?.fields.lkey));
  t.true(admin.some((rec) => rec.op === 'CREATE_PD' && rec.status === 0 && rec.result0 === verbs?.fields.pdn));
  t.true(admin.some((rec) => rec.op === 'DEREG_MR' && rec.status === 0));
});

maybe('NOP work requests posted from user space complete through the device into the user CQ', async (t) => {
  t.timeout(600_000);
  const r = await run();
  const nop = testEvent(r, 'nop');
  t.is(nop?.fields.step, 'done', JSON.stringify(nop?.fields));
  t.is(nop?.fields.completed, nop?.fields.posted);
  t.is(nop?.fields.status_ok, nop?.fields.posted);
  t.is(nop?.fields.wr_id_ok, nop?.fields.posted);
  const admin = r.trace.filter((rec) => rec.kind === 'admin').map((rec) => rec.op);
  for (const op of ['CREATE_CQ', 'CREATE_QP', 'MODIFY_QP', 'DESTROY_QP', 'DESTROY_CQ']) t.true(admin.includes(op), op);
});

maybe("an armed CQ's completion reaches user space as an event on its completion channel", async (t) => {
  t.timeout(600_000);
  const r = await run();
  const ev = testEvent(r, 'comp-event');
  t.truthy(ev, 'no comp-event report');
  t.log(JSON.stringify(ev?.fields));
  t.is(ev?.fields.errno, 0);
  // read() on the channel returned one event, and it names the CQ that was armed
  t.is(ev?.fields.got_event, true);
  t.is(ev?.fields.cq_handle_ok, true);
  // the device raised the CQ's vector for that completion: the driver's comp_handler had a cause
  const cqn = testEvent(r, 'nop')?.fields.cqn;
  t.true(
    r.trace.some((rec) => rec.kind === 'irq' && (rec.reason === 'completion' || rec.reason === 'cq-armed-with-completions') && rec.cqn === cqn),
    'a completion interrupt for the CQ',
  );
});

maybe('the guest kernel log stays clean through probe, context and teardown', async (t) => {
  t.timeout(600_000);
  const r = await run();
  t.deepEqual(kernelProblems(r.boot.console), []);
  t.notRegex(r.boot.console, /vrnic [0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]: .*(timed out|failed)|Couldn't/);
  t.true(r.boot.console.includes('VRNIC-INIT {"event":"poweroff"}'));
});

maybe('line commands on a second serial port start, query and stop the watch loop', async (t) => {
  t.timeout(600_000);
  const qemu = await requireVfioUserQemu();
  const image = await buildGuestImage();
  await run();
  await oneGuestAtATime(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-e2e-cmd-'));
    const socket = path.join(dir, 'vrnic.sock');
    const ttyS1 = path.join(dir, 'ttyS1.sock');
    const serve = await startServe(socket, path.join(dir, 'trace.ndjson'));
    const lines: string[] = [];
    let result: BootResult;
    try {
      const guest = startGuest({
        qemu: qemu.binary,
        kernel: image.kernel,
        initrd: image.initrd,
        append: guestAppend({ commandTty: 'ttyS1', watchSeconds: 120 }),
        socket,
        serial2: { kind: 'unix', path: ttyS1 },
        consoleFile: path.join(dir, 'console.log'),
        timeoutMs: 240_000,
        onLine: (l) => lines.push(l),
      });
      // Event-driven, not timed: each command goes once the program has answered the one before.
      const waitFor = async (re: RegExp) => {
        while (!lines.some((l) => re.test(l))) {
          if (lines.some((l) => l.includes('VRNIC-INIT {"event":"poweroff"}'))) throw new Error(`guest ended before ${re}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      while (!fs.existsSync(ttyS1)) await new Promise((r) => setTimeout(r, 50));
      const channel = net.connect(ttyS1);
      channel.on('error', () => undefined);
      await waitFor(/"event":"ready"/);
      channel.write('watch\n');
      await waitFor(/"event":"watch-start"/);
      channel.write('status\n');
      await waitFor(/"event":"summary"/);
      channel.write('bogus\n');
      await waitFor(/"event":"command-error"/);
      channel.write('stop\n');
      result = await guest.done;
      channel.destroy();
    } finally {
      serve.child.kill('SIGTERM');
    }
    const events = guestEvents(result.console).filter((e) => e.source === 'test');
    t.deepEqual(
      events.filter((e) => e.event === 'command').map((e) => e.fields.command),
      ['watch', 'status', 'bogus', 'stop'],
    );
    t.is(events.find((e) => e.event === 'exit')?.fields.code, 0);
    t.deepEqual(kernelProblems(result.console), []);
  });
});

/** One guest per interrupt mode the device offers, unplugged with QMP device_del once vrnic-test is done. */
interface ModeRun {
  readonly dir: string;
  readonly boot: BootResult;
  readonly events: GuestEvent[];
  readonly trace: Record<string, unknown>[];
  /** DEVICE_DELETED came (ms after device_del), and QEMU still answered query-status after it. */
  readonly unplug: { readonly deletedAfterMs: number | null; readonly aliveAfter: boolean; readonly error: string | null };
}

const modeRuns = new Map<string, Promise<ModeRun>>();
function runMode(irq: 'msi' | 'intx'): Promise<ModeRun> {
  let p = modeRuns.get(irq);
  if (p !== undefined) return p;
  p = oneGuestAtATime(async () => {
    const qemu = await requireVfioUserQemu();
    const image = await buildGuestImage();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vrnic-e2e-${irq}-`));
    const socket = path.join(dir, 'vrnic.sock');
    const qmpPath = path.join(dir, 'qmp.sock');
    const tracePath = path.join(dir, 'trace.ndjson');
    const serve = await startServe(socket, tracePath, ['--irq', irq]);
    const lines: string[] = [];
    let boot: BootResult;
    let unplug: ModeRun['unplug'] = { deletedAfterMs: null, aliveAfter: false, error: null };
    try {
      // the guest lingers after vrnic-test so the device can be unplugged under it
      const guest = startGuest({
        qemu: qemu.binary,
        kernel: image.kernel,
        initrd: image.initrd,
        append: guestAppend({ loglevel: 7, lingerSeconds: 20 }),
        socket,
        qmp: qmpPath,
        consoleFile: path.join(dir, 'console.log'),
        timeoutMs: 300_000,
        onLine: (l) => lines.push(l),
      });
      const ended = guest.done.then(() => true);
      while (!lines.some((l) => l.includes('"event":"interrupts"'))) {
        if (await Promise.race([ended, new Promise<false>((r) => setTimeout(() => r(false), 100))])) break;
      }
      if (lines.some((l) => l.includes('"event":"interrupts"'))) {
        let qmp: QmpClient | undefined;
        try {
          qmp = await QmpClient.connect(qmpPath);
          const { sentAtMs, event } = await qmp.deviceDelAndWait('nic0', 15_000);
          const deletedAt = event.timestampMs;
          await new Promise((r) => setTimeout(r, 1000)); // an abort at finalize comes right after
          await qmp.execute('query-status');
          unplug = { deletedAfterMs: Math.round(deletedAt - sentAtMs), aliveAfter: true, error: null };
          await qmp.quit().catch(() => undefined);
        } catch (err) {
          unplug = { ...unplug, error: (err as Error).message };
        } finally {
          qmp?.close();
        }
      } else {
        guest.kill();
      }
      boot = await guest.done;
    } finally {
      serve.child.kill('SIGTERM');
      await new Promise((r) => (serve.child.exitCode !== null ? r(null) : serve.child.once('exit', r)));
    }
    const trace = fs
      .readFileSync(tracePath, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    console.log(`guest-e2e ${irq} artifacts in ${dir} (QEMU ran ${(boot.elapsedMs / 1000).toFixed(1)} s, exit ${boot.exitCode} ${boot.signal ?? ''})`);
    return { dir, boot, events: guestEvents(boot.console), trace, unplug };
  });
  modeRuns.set(irq, p);
  return p;
}

for (const [irq, kind, handler] of [['msi', 'MSI', /PCI-MSI/], ['intx', 'INTx', /IO-APIC|fasteoi/]] as const) {
  maybe(`with --irq ${irq} the driver binds with ${kind}, admin commands and a CQ completion work, and the device unplugs with QEMU alive`, async (t) => {
    t.timeout(900_000);
    const r = await runMode(irq);
    t.false(r.boot.timedOut);
    // bound with one vector of that kind; uverbs0 there; admin commands answered (QUERY_DEVICE, QUERY_PORT in probe)
    t.regex(r.boot.console, new RegExp(`vrnic 0000:01:00\\.0: vrnic0: version 0x00010000, 16 UAR pages at 0x[0-9a-f]+, 1 vectors, ${kind}, bug=none`));
    const loaded = r.events.find((e) => e.source === 'init' && e.event === 'modules-loaded');
    t.regex(String(loaded?.fields.uverbs), /\buverbs0\b/);
    const admin = r.trace.filter((rec) => rec.kind === 'admin');
    for (const op of ['QUERY_DEVICE', 'QUERY_PORT', 'CREATE_PD', 'CREATE_CQ', 'CREATE_QP']) t.true(admin.some((rec) => rec.op === op && rec.status === 0), op);
    // a NOP completed into the user CQ, and the CQ's completion interrupt went out on the one vector
    const nop = testEvent(r as unknown as Run, 'nop');
    t.is(nop?.fields.step, 'done', JSON.stringify(nop?.fields));
    t.is(nop?.fields.completed, nop?.fields.posted);
    const irqs = r.trace.filter((rec) => rec.kind === 'irq');
    t.true(irqs.some((rec) => rec.reason === 'admin-completion' && rec.delivered === true), 'an admin completion interrupt was delivered');
    // the guest took interrupts through the handler of that kind
    const interrupts = String(r.events.find((e) => e.source === 'init' && e.event === 'interrupts')?.fields.vrnic ?? '');
    t.log(`/proc/interrupts: ${interrupts}`);
    t.regex(interrupts, handler);
    const count = Number(/^\s*\d+:\s*(\d+)/.exec(interrupts)?.[1] ?? 0);
    t.true(count > 0, `the vrnic handler ran (${interrupts})`);
    t.deepEqual(kernelProblems(r.boot.console), []);
    t.notRegex(r.boot.console, /vrnic [0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]: .*(timed out|failed)|nobody cared/);
    // hot unplug: DEVICE_DELETED, and QEMU still answers afterwards (no abort at finalize)
    t.log(`unplug: ${JSON.stringify(r.unplug)}`);
    t.is(r.unplug.error, null);
    t.not(r.unplug.deletedAfterMs, null);
    t.true(r.unplug.aliveAfter);
    t.notRegex(r.boot.stderr, /Assertion|Aborted/);
    t.is(r.boot.signal, null, `QEMU ended by ${r.boot.signal}`);
  });
}
