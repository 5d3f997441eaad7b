// The unplug scenario end to end on a real guest: every vanish mode passes with the reference driver, each planted bug fails its own checks.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { DEFAULT_KERNEL_RELEASE } from '../qemu-config/image';
import type { CheckName } from '../src/unplug/checks';
import type { DriverBug } from '../src/unplug/evidence';
import type { UnplugReport } from '../src/unplug/report';
import { runUnplugTest } from '../src/unplug/runner';
import type { VanishMode } from '../src/control/protocol';

/** Why the scenario cannot run here, or null. Decided once, at registration. */
function unavailable(): string | null {
  const qemu = process.env.VRNIC_QEMU;
  if (!qemu) return 'VRNIC_QEMU is not set (a qemu-system-x86_64 >= 10.1 with vfio-user-pci)';
  if (!fs.existsSync(qemu)) return `VRNIC_QEMU=${qemu} does not exist`;
  let devices: string;
  try {
    devices = execFileSync(qemu, ['-machine', 'none', '-device', 'help'], { encoding: 'utf8', timeout: 30_000 });
  } catch (err) {
    return `VRNIC_QEMU=${qemu} does not run: ${(err as Error).message}`;
  }
  if (!devices.includes('"vfio-user-pci"')) return `VRNIC_QEMU=${qemu} has no vfio-user-pci device`;
  const headers = `/usr/src/linux-headers-${DEFAULT_KERNEL_RELEASE}/Makefile`;
  if (!fs.existsSync(headers)) return `no kernel headers for the guest modules (${headers})`;
  return null;
}

const why = unavailable();
if (why) console.log(`unplug e2e tests skipped: ${why}`);
const e2e = why === null ? test.serial : test.skip;

function failing(r: UnplugReport): CheckName[] {
  return r.checks.filter((c) => !c.ok).map((c) => c.name);
}

async function run(t: { log(...v: unknown[]): void; timeout(ms: number): void }, mode: VanishMode, driverBug: DriverBug): Promise<UnplugReport> {
  t.timeout(600_000);
  const r = await runUnplugTest({ mode, driverBug, keep: false });
  t.log(`${mode}/${driverBug}: ${r.verdict}${r.error ? ` (${r.error})` : ''}; ${JSON.stringify(r.timings)}`);
  for (const c of r.checks) if (!c.ok) t.log(`  ${c.name}: ${c.detail}`);
  return r;
}

for (const mode of ['orderly', 'surprise', 'crash'] as const) {
  e2e(`with the reference driver, a ${mode} vanish passes every check`, async (t) => {
    const r = await run(t, mode, 'none');
    t.is(r.error, undefined);
    t.deepEqual(failing(r), []);
    t.is(r.verdict, 'PASS');
    t.not(r.timings.vanishToDeviceDeletedMs, null);
    t.not(r.timings.vanishToMappingZappedMs, null);
  });
}

e2e('the legacy-mmap planted bug fails mapping-moved-off-bar and no-bar-access-after-unplug', async (t) => {
  const r = await run(t, 'surprise', 'legacy-mmap');
  t.is(r.error, undefined);
  t.is(r.verdict, 'FAIL');
  t.deepEqual(failing(r), ['mapping-moved-off-bar', 'no-bar-access-after-unplug']);
  t.regex(r.checks.find((c) => c.name === 'mapping-moved-off-bar')?.detail ?? '', /inside BAR2\)$/);
});

e2e('the no-disassociate planted bug fails unplug-not-blocked', async (t) => {
  const r = await run(t, 'surprise', 'no-disassociate');
  t.is(r.error, undefined);
  t.is(r.verdict, 'FAIL');
  t.deepEqual(failing(r), ['unplug-not-blocked']);
  t.regex(r.checks.find((c) => c.name === 'unplug-not-blocked')?.detail ?? '', /waited for user space/);
});
