// Example: run the whole unplug scenario (guest, QEMU, vanish) from a test and act on its verdict.
import { QemuError, reportHuman, requireVfioUserQemu, runUnplugTest } from 'vrnic';

async function main(): Promise<void> {
  // runUnplugTest needs QEMU >= 10.1 with vfio-user-pci (VRNIC_QEMU) and the guest kit's tools.
  try {
    await requireVfioUserQemu();
  } catch (err) {
    if (!(err instanceof QemuError)) throw err;
    console.log(`skipped: ${err.message}`);
    return;
  }
  const report = await runUnplugTest({ mode: 'surprise', scenario: 'single', driverBug: 'none' });
  console.log(reportHuman(report));
  // Each check is { name, ok, detail }; the verdict sums them up.
  for (const c of report.checks) if (!c.ok) console.log(`failed: ${c.name}: ${c.detail}`);
  console.log(`verdict ${report.verdict}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
