// `vrnic qemu-args`: prints the QEMU command line for a guest with the vrnic device, ready to paste.
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { COMMAND_LINE_FORMATS, type CommandLineFormat, formatCommandLine, qemuArgs, type SerialTarget } from '../../qemu-config/args';
import { DRIVER_BUGS, GUEST_SCENARIOS, guestAppend, latestGuestImage, type DriverBug, type GuestScenario } from '../../guest/kit/image';
import { GUEST_MODELS, type GuestModel } from '../../guest/kit/pvrdma-kit';
import { findQemu, QEMU_BINARY } from '../../qemu-config/qemu';
import { type Command, UsageError } from './command';

const help = `Usage: vrnic qemu-args --socket PATH [--qmp PATH] [--guest DIR] [flags]

Prints the QEMU command line for a q35 guest with guest RAM in a shared memfd, a PCIe root port
carrying the vfio-user-pci device on the daemon's socket, the console on a serial port and QMP
on a Unix socket. The kernel and initramfs are those \`vrnic guest build\` made (give its
directory with --guest, or --kernel and --initrd). By default the output is ready to paste into
a shell (or to save as a script and run).

Flags:
  --socket PATH       the daemon's vfio-user socket (required; --no-device for a guest without it)
  --no-device         leave the vrnic device out
  --model M           vrnic (default) | pvrdma: QEMU's vmxnet3 at function 0 of the slot and the
                      device at function 1, a \`guest build --model pvrdma\` image, and the guest
                      running pvrdma-guest (ibv_devinfo; vrnic.pvrdma= picks its steps)
  --qmp PATH          QMP Unix socket (server, no wait)
  --guest DIR         a built image directory (default: the latest \`vrnic guest build\` made)
  --kernel FILE       kernel image (default DIR/vmlinuz)
  --initrd FILE       initramfs (default DIR/initrd.img)
  --append TEXT       the whole kernel command line (default from --driver-bug/--watch/--scenario)
  --driver-bug NAME   planted driver bug: ${DRIVER_BUGS.join(', ')} (default none)
  --hotplug H         acpi (default) or native: native PCIe hotplug (pciehp) instead of ACPI
  --scenario NAME     vrnic-test scenario: ${GUEST_SCENARIOS.join(', ')} (default single)
  --watch SEC         seconds vrnic-test watches its mapping (default 0)
  --console FILE      console to FILE instead of stdio
  --log FILE          QEMU's -D log file
  --log-items LIST    QEMU's -d items (e.g. invalid_mem)
  --memory MIB        guest RAM (default 512)
  --device-id ID      QEMU id of the device (default nic0)
  --qemu PATH         binary to print, as given (default: the one \`vrnic qemu find\` names)
  --format F          shell: shell-quoted, an option and its value per line (default);
                      args: one raw argument per line; json: a JSON array, binary first
  -h, --help          this text

Exit codes: 0 printed; 1 VRNIC_QEMU names no executable; 2 bad flags.`;

export const qemuArgsCommand: Command = {
  name: 'qemu-args',
  summary: 'print the QEMU command line for a guest with the vrnic device',
  help,
  async run(argv) {
    let v: Record<string, string | boolean | undefined>;
    try {
      ({ values: v } = parseArgs({
        args: argv,
        options: {
          socket: { type: 'string' },
          'no-device': { type: 'boolean', default: false },
          qmp: { type: 'string' },
          guest: { type: 'string' },
          kernel: { type: 'string' },
          initrd: { type: 'string' },
          append: { type: 'string' },
          'driver-bug': { type: 'string' },
          hotplug: { type: 'string' },
          scenario: { type: 'string' },
          watch: { type: 'string' },
          console: { type: 'string' },
          log: { type: 'string' },
          'log-items': { type: 'string' },
          memory: { type: 'string' },
          'device-id': { type: 'string' },
          model: { type: 'string', default: 'vrnic' },
          qemu: { type: 'string' },
          format: { type: 'string', default: 'shell' },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const str = (k: string): string | undefined => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
    const socket = str('socket');
    if (!socket && !v['no-device']) throw new UsageError('--socket PATH is required (or --no-device)');
    if (socket && v['no-device']) throw new UsageError('--socket and --no-device exclude each other');
    const format = str('format') as CommandLineFormat;
    if (!COMMAND_LINE_FORMATS.includes(format)) throw new UsageError(`--format: '${format}' is not one of ${COMMAND_LINE_FORMATS.join(', ')}`);
    const model = str('model') as GuestModel;
    if (!GUEST_MODELS.includes(model)) throw new UsageError(`--model: '${model}' is not one of ${GUEST_MODELS.join(', ')}`);
    const guestDir = str('guest') ?? latestGuestImage(undefined, undefined, model)?.dir;
    if (!guestDir && !(str('kernel') && str('initrd'))) {
      throw new UsageError('no guest image: run `vrnic guest build` first, or give --guest DIR or --kernel and --initrd');
    }
    const bug = str('driver-bug') ?? 'none';
    if (!(DRIVER_BUGS as readonly string[]).includes(bug)) throw new UsageError(`--driver-bug must be one of ${DRIVER_BUGS.join(', ')}`);
    const hotplug = str('hotplug') ?? 'acpi';
    if (hotplug !== 'acpi' && hotplug !== 'native') throw new UsageError('--hotplug must be acpi or native');
    const scenario = str('scenario') ?? 'single';
    if (!(GUEST_SCENARIOS as readonly string[]).includes(scenario)) throw new UsageError(`--scenario must be one of ${GUEST_SCENARIOS.join(', ')}`);
    const watch = str('watch');
    if (watch !== undefined && !/^\d+(\.\d+)?$/.test(watch)) throw new UsageError('--watch takes seconds');
    const memory = str('memory');
    if (memory !== undefined && !/^[1-9]\d*$/.test(memory)) throw new UsageError('--memory takes MiB');
    const consoleFile = str('console');
    const serial: SerialTarget = consoleFile ? { kind: 'file', path: path.resolve(consoleFile) } : { kind: 'stdio' };
    let args: string[];
    try {
      args = qemuArgs({
        kernel: str('kernel') ?? path.join(guestDir as string, 'vmlinuz'),
        initrd: str('initrd') ?? path.join(guestDir as string, 'initrd.img'),
        append:
          str('append') ??
          guestAppend({ ...(model === 'pvrdma' ? { program: 'pvrdma-guest' } : {}), bug: bug as DriverBug, scenario: scenario as GuestScenario, watchSeconds: watch === undefined ? undefined : Number(watch) }),
        socket: socket ? path.resolve(socket) : undefined,
        qmp: str('qmp') ? path.resolve(str('qmp') as string) : undefined,
        serial,
        logFile: str('log') ? path.resolve(str('log') as string) : undefined,
        logItems: str('log-items')?.split(',').filter(Boolean),
        memoryMiB: memory === undefined ? undefined : Number(memory),
        deviceId: str('device-id'),
        nativeHotplug: hotplug === 'native',
        pairedVmxnet3: model === 'pvrdma',
      });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    // --qemu is printed as given (the line may be for another machine); otherwise the QEMU every
    // other command would run here, and a VRNIC_QEMU naming nothing is an error (one line from the
    // finder), not a fallback.
    const binary = str('qemu') ?? findQemu()?.binary ?? QEMU_BINARY;
    let text: string;
    try {
      text = formatCommandLine(binary, args, format);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    process.stdout.write(text + '\n');
    return 0;
  },
};
