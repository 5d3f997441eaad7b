// The pvrdma model seen from a real guest: the upstream vmw_pvrdma driver and Debian's stock ibv_rc_pingpong move data through the device.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bootGuest, type BootResult } from '../src/testing/boot';
import { buildGuestImage, guestAppend } from '../guest/kit/image';
import { requireVfioUserQemu } from '../qemu-config/qemu';
import { e2eTest } from './helpers/e2e';
import { startServe } from './helpers/serve-process';

const maybe = e2eTest('guest-pvrdma');
/** Round trips: few, because CI runs the guest under TCG. */
const ITERS = 20;

/** What ibv_*_pingpong prints when it finished: "N bytes in S seconds = R Mbit/sec" and "N iters in S seconds = U usec/iter". */
function pingpongTotals(consoleText: string): { bytes: number; iters: number; seconds: number }[] {
  const out: { bytes: number; iters: number; seconds: number }[] = [];
  const re = /^(\d+) bytes in ([\d.]+) seconds = [\d.]+ Mbit\/sec\r?\n(\d+) iters in [\d.]+ seconds/gm;
  for (const m of consoleText.matchAll(re)) out.push({ bytes: Number(m[1]), seconds: Number(m[2]), iters: Number(m[3]) });
  return out;
}

maybe('ibv_rc_pingpong, client and server in one guest on the upstream vmw_pvrdma driver, completes every round trip', async (t) => {
  t.timeout(600_000);
  const qemu = await requireVfioUserQemu();
  const image = await buildGuestImage({ model: 'pvrdma', progress: (l) => console.log(l) });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-pvrdma-'));
  const socket = path.join(dir, 'pvrdma.sock');
  const serve = (await startServe([socket], ['--model', 'pvrdma'])).child;
  let boot: BootResult;
  try {
    boot = await bootGuest({
      qemu: qemu.binary,
      kernel: image.kernel,
      initrd: image.initrd,
      append: guestAppend({ program: 'pvrdma-guest', lingerSeconds: 0 }) + ` vrnic.pvrdma=rc=${ITERS}`,
      socket,
      pairedVmxnet3: true,
      qmp: path.join(dir, 'qmp.sock'),
      consoleFile: path.join(dir, 'console.log'),
      timeoutMs: 300_000,
    });
  } finally {
    serve.kill('SIGTERM');
    await new Promise((r) => (serve.exitCode !== null ? r(null) : serve.once('exit', r)));
  }
  t.log(`console in ${dir}/console.log`);
  const step = boot.console.match(/PVRDMA-STEP (\{"step":"rc-pingpong".*\})/);
  t.truthy(step, 'no rc-pingpong step in the console');
  t.deepEqual(JSON.parse(step![1]!), { step: 'rc-pingpong', client: 0, server: 0, iters: ITERS });
  // ibv_rc_pingpong's default message is 4096 bytes, counted both ways: 2 * 4096 per round trip, on each side.
  const totals = pingpongTotals(boot.console);
  t.is(totals.length, 2, 'client and server each print their totals');
  for (const x of totals) t.like(x, { iters: ITERS, bytes: 2 * 4096 * ITERS });
});
