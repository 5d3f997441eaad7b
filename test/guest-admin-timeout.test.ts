// An admin command the device sits on: the reference driver times out, resets the device, and frees the command's buffer only once no device write can land in it.
//
// The emulator holds QUERY_PORT (opcode 2) longer than the driver's admin timeout (5 s) through its
// stallAdmin fault injection. The driver probes: QUERY_DEVICE answers, QUERY_PORT times out, the
// driver resets the device and frees the output buffer, logging its bus address. The emulator's
// trace records every query answer it writes (admin-output, with the address) and the stalled
// command's fate: none of its writes may reach the freed buffer after the reset.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { bootGuest, type BootResult } from '../src/testing/boot';
import { kernelProblems } from '../guest/kit/guest-log';
import { buildGuestImage, guestAppend } from '../guest/kit/image';
import { requireVfioUserQemu } from '../qemu-config/qemu';
import { e2eTest } from './helpers/e2e';

const CLI = path.resolve(__dirname, '..', 'src', 'cli.js');
const maybe = e2eTest('guest-admin-timeout');
const QUERY_PORT = 2;
/** Longer than the driver's default admin_timeout_ms (5000). */
const STALL_MS = 9000;

interface Run {
  readonly boot: BootResult;
  readonly trace: Record<string, unknown>[];
}

async function runStalled(): Promise<Run> {
  const qemu = await requireVfioUserQemu();
  const image = await buildGuestImage({ progress: (l) => console.log(l) });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-admin-timeout-'));
  const socket = path.join(dir, 'vrnic.sock');
  const tracePath = path.join(dir, 'trace.ndjson');
  const config = path.join(dir, 'nic.json');
  fs.writeFileSync(config, JSON.stringify({ stallAdminOpcode: QUERY_PORT, stallAdminMs: STALL_MS }));
  const child = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--trace', tracePath, '--config', config, '--log-level', 'info'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  let boot: BootResult;
  try {
    const deadline = Date.now() + 30_000;
    while (!(fs.existsSync(socket) && /"msg":"serving/.test(log))) {
      if (child.exitCode !== null) throw new Error(`vrnic serve exited ${child.exitCode}: ${log}`);
      if (Date.now() > deadline) throw new Error(`vrnic serve did not start: ${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    boot = await bootGuest({
      qemu: qemu.binary,
      kernel: image.kernel,
      initrd: image.initrd,
      // No test program (probe fails, there is no device to use); the guest stays up past the
      // stall so the emulator's end of it is in the trace.
      append: guestAppend({ loglevel: 7, runTest: false, lingerSeconds: Math.ceil(STALL_MS / 1000) }),
      socket,
      qmp: path.join(dir, 'qmp.sock'),
      consoleFile: path.join(dir, 'console.log'),
      timeoutMs: 300_000,
    });
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
  }
  const trace = fs
    .readFileSync(tracePath, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  console.log(`guest-admin-timeout artifacts in ${dir}`);
  return { boot, trace };
}

maybe('after an admin command times out, no device write lands in the buffer the driver freed', async (t) => {
  t.timeout(600_000);
  const r = await runStalled();
  t.false(r.boot.timedOut);
  const con = r.boot.console;
  // the driver gave up on QUERY_PORT, reset the device, then freed the output buffer
  const timedOut = /vrnic 0000:01:00\.0: admin opcode 0x02 \(command (\d+)\) timed out/.exec(con);
  t.truthy(timedOut, 'the driver reports the timeout');
  const cmdId = Number(timedOut?.[1]);
  const resetAt = con.indexOf('device reset after the timeout');
  t.true(resetAt > 0, 'the driver reset the device after the timeout');
  const freed = /freeing (\d+) DMA bytes at (0x[0-9a-f]+): the device can no longer write them/.exec(con.slice(resetAt));
  t.truthy(freed, 'the driver says which buffer it freed, after the reset');
  t.regex(con, /QUERY_PORT failed: -110/);
  t.deepEqual(kernelProblems(con), []);
  const start = BigInt(freed?.[2] ?? '0');
  const end = start + BigInt(freed?.[1] ?? '0');

  // the device stalled that command, and the reset abandoned it
  const stall = r.trace.filter((rec) => rec.kind === 'admin-stall' && rec.cmdId === cmdId);
  t.deepEqual(stall.map((rec) => rec.phase), ['start', 'abandoned']);
  const reset = r.trace.find((rec) => rec.kind === 'event' && rec.event === 'RESET' && Number(rec.tMs) > Number(stall[0]?.tMs));
  t.truthy(reset, 'the emulator saw the reset during the stall');

  // what the device wrote as query answers: QUERY_DEVICE went through, into live memory
  const outputs = r.trace.filter((rec) => rec.kind === 'admin-output');
  t.true(outputs.some((rec) => rec.op === 'QUERY_DEVICE'), 'answers are traced');
  t.false(outputs.some((rec) => rec.cmdId === cmdId), 'the stalled command wrote nothing');
  const intoFreed = outputs.filter((rec) => {
    const a = BigInt(String(rec.addr));
    return Number(rec.tMs) >= Number(reset?.tMs) && a < end && a + BigInt(Number(rec.len)) > start;
  });
  t.deepEqual(intoFreed, [], 'no answer written into the freed buffer after the reset');
});
