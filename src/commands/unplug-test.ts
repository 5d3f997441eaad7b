// `vrnic unplug-test`: boots a guest on the emulator, makes the device vanish, prints the verdict.
import { parseArgs } from 'node:util';
import { VANISH_MODES, type VanishMode } from '../control/protocol';
import { configureLogging } from '../log';
import { DRIVER_BUGS, type DriverBug } from '../unplug/evidence';
import { reportHuman, reportJson } from '../unplug/report';
import { runUnplugTest } from '../unplug/runner';
import { BOUNDS } from '../unplug/checks';
import { type Command, UsageError } from './command';

const help = `Usage: vrnic unplug-test [--mode M] [--driver-bug B] [--json] [flags]

Starts the emulator (vrnic serve, as a child process), builds or reuses the guest image, boots
it in QEMU with QMP and -d invalid_mem, waits until the guest's vrnic-test holds a context and a
mapped UAR page, makes the device vanish, waits for the guest's report and prints a verdict.

Checks (each with what was seen):
  process-survived            the guest program was not killed by a signal
  mapping-moved-off-bar       after removal the mapping no longer points into a BAR
  reads-return-zero           reads after removal give zeros or the program's own writes
  unplug-not-blocked          removal finished within ${BOUNDS.unplugMs} ms with the context still open
  no-kernel-warnings          no WARN, BUG, Oops or lockdep report in the guest's kernel log
  device-removed              DEVICE_DELETED within ${BOUNDS.deviceDeletedMs} ms; gone from the guest's PCI tree and /sys/class/infiniband
  no-bar-access-after-unplug  QEMU's invalid_mem log shows no access to the removed BARs

Flags:
  --mode M          orderly | surprise | crash (default surprise)
  --driver-bug B    none | legacy-mmap | no-disassociate (default none): a planted driver bug,
                    the driver's bug= module parameter; the verdict must then FAIL
  --json            print one JSON object: {"verdict", "checks", "timings", ...}
  --qemu PATH       QEMU >= 10.1 with vfio-user-pci (default $VRNIC_QEMU)
  --transport T     auto | libvfio-user | native, for the emulator (default auto)
  --work-dir DIR    keep the run's files (console, QEMU and daemon logs) in DIR
  --keep            keep the work directory after a PASS (a FAIL always keeps it)
  --log-level L     progress logs on stderr (default warn)
  -h, --help        this text

Exit codes: 0 PASS; 1 FAIL (or the run could not be carried out: see "error"); 2 bad flags.`;

export const unplugTestCommand: Command = {
  name: 'unplug-test',
  summary: 'hot-unplug a running guest\'s device and judge its driver: PASS or FAIL with checks',
  help,
  async run(argv) {
    let values: {
      mode?: string;
      'driver-bug'?: string;
      json?: boolean;
      qemu?: string;
      transport?: string;
      'work-dir'?: string;
      keep?: boolean;
      'log-level'?: string;
    };
    try {
      ({ values } = parseArgs({
        args: argv,
        options: {
          mode: { type: 'string', default: 'surprise' },
          'driver-bug': { type: 'string', default: 'none' },
          json: { type: 'boolean', default: false },
          qemu: { type: 'string' },
          transport: { type: 'string' },
          'work-dir': { type: 'string' },
          keep: { type: 'boolean', default: false },
          'log-level': { type: 'string', default: 'warn' },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const mode = values.mode as VanishMode;
    if (!VANISH_MODES.includes(mode)) throw new UsageError(`--mode: '${values.mode}' is not one of ${VANISH_MODES.join(', ')}`);
    const driverBug = values['driver-bug'] as DriverBug;
    if (!DRIVER_BUGS.includes(driverBug)) throw new UsageError(`--driver-bug: '${values['driver-bug']}' is not one of ${DRIVER_BUGS.join(', ')}`);
    const transport = values.transport;
    if (transport !== undefined && !['auto', 'libvfio-user', 'native'].includes(transport)) {
      throw new UsageError(`--transport: '${transport}' is not one of auto, libvfio-user, native`);
    }
    const level = values['log-level'] as 'warn';
    if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) throw new UsageError(`--log-level: '${level}' is not a level`);
    const log = configureLogging({ level });
    const report = await runUnplugTest({
      mode,
      driverBug,
      qemu: values.qemu,
      transport: transport as 'auto' | 'libvfio-user' | 'native' | undefined,
      workDir: values['work-dir'],
      keep: values.keep,
      log: log.child({ module: 'unplug' }),
    });
    process.stdout.write((values.json ? reportJson(report) : reportHuman(report)) + '\n');
    return report.verdict === 'PASS' ? 0 : 1;
  },
};
