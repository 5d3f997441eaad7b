// The QEMU command line for a q35 guest with the vrnic device on a hot-pluggable PCIe root port.

/** Where a serial port goes. */
export type SerialTarget =
  | { readonly kind: 'stdio' }
  | { readonly kind: 'file'; readonly path: string }
  /** A Unix socket QEMU listens on (does not wait for a client); read and write it for a line protocol. */
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'none' };

/** QEMU's id for the device when none is given: what `vanish` asks QMP device_del to remove. */
export const DEFAULT_DEVICE_ID = 'nic0';
/** QEMU's id for the hot-pluggable root port the device sits on. */
export const DEFAULT_ROOT_PORT_ID = 'rp1';

/** The hot-pluggable PCIe root port the device is plugged into. */
export function rootPortArg(id = DEFAULT_ROOT_PORT_ID, slot = 1): string {
  return `pcie-root-port,id=${id},slot=${slot}`;
}

export interface QemuOptions {
  readonly kernel: string;
  readonly initrd: string;
  /** Kernel command line (see guestAppend in image.ts). */
  readonly append: string;
  /** vfio-user socket of `vrnic serve`; without it the guest has no vrnic device. */
  readonly socket?: string;
  /** QEMU id of the device (what QMP device_del names). Default DEFAULT_DEVICE_ID. */
  readonly deviceId?: string;
  /** Extra vfio-user-pci properties (e.g. {"x-msix-relocation": "bar5"}). */
  readonly deviceProperties?: Readonly<Record<string, string | number | boolean>>;
  /**
   * The pvrdma model's pairing: QEMU's own vmxnet3 at function 0 of the slot (multifunction) and
   * the vfio-user device at function 1, as vmw_pvrdma's probe requires (docs/pvrdma.md).
   */
  readonly pairedVmxnet3?: boolean;
  /** QEMU id of the root port carrying it. Default DEFAULT_ROOT_PORT_ID. */
  readonly rootPortId?: string;
  /** PCIe slot number of the root port. Default 1. */
  readonly slot?: number;
  /** Guest RAM in MiB; shared memfd so the emulator can map it. Default 512. */
  readonly memoryMiB?: number;
  readonly smp?: number;
  /** The console (ttyS0). Default stdio. */
  readonly serial?: SerialTarget;
  /** A second serial port (ttyS1), e.g. a report or command channel for vrnic-test. */
  readonly serial2?: SerialTarget;
  /** QMP Unix socket path (server, no wait). */
  readonly qmp?: string;
  /** `-d` items, e.g. ['invalid_mem'] (QEMU >= 10.0 logs guest accesses to unassigned memory). */
  readonly logItems?: readonly string[];
  /** `-D` file for the -d log. */
  readonly logFile?: string;
  /** Native PCIe hotplug instead of q35's ACPI hotplug (device_del then waits for the guest's attention-button handling). */
  readonly nativeHotplug?: boolean;
  readonly accel?: 'tcg' | 'kvm';
  /** Appended verbatim. */
  readonly extra?: readonly string[];
}

function serialArg(t: SerialTarget, id: string): string[] {
  switch (t.kind) {
    case 'stdio':
      return ['-serial', 'stdio'];
    case 'file':
      return ['-chardev', `file,id=${id},path=${chardevPath(t.path)}`, '-serial', `chardev:${id}`];
    case 'unix':
      return ['-chardev', `socket,id=${id},path=${chardevPath(t.path)},server=on,wait=off`, '-serial', `chardev:${id}`];
    case 'none':
      return ['-serial', 'none'];
  }
}

/** QEMU splits option values at commas; a path with one would be misread. */
function chardevPath(p: string): string {
  if (p.includes(',')) throw new Error(`path for QEMU must not contain a comma: ${p}`);
  return p;
}

function positiveInt(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`${name} must be a positive integer, got ${v}`);
  return v;
}

/** The QEMU arguments (without the binary). */
export function qemuArgs(opts: QemuOptions): string[] {
  const mem = positiveInt('memoryMiB', opts.memoryMiB ?? 512);
  const smp = positiveInt('smp', opts.smp ?? 1);
  const slot = positiveInt('slot', opts.slot ?? 1);
  const deviceId = opts.deviceId ?? DEFAULT_DEVICE_ID;
  const rootPortId = opts.rootPortId ?? DEFAULT_ROOT_PORT_ID;
  for (const [k, v] of [['deviceId', deviceId], ['rootPortId', rootPortId]] as const) {
    if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(v)) throw new Error(`${k} '${v}' is not a QEMU id`);
  }
  const args = [
    '-machine', 'q35,memory-backend=mem',
    '-accel', opts.accel ?? 'tcg',
    '-m', `${mem}M`,
    '-smp', String(smp),
    // The emulator maps guest RAM to DMA into it: the RAM must be a shareable memfd.
    '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-nographic',
    '-no-reboot',
    // QMP is the control path; the human monitor would compete with the console for stdio.
    '-monitor', 'none',
    '-kernel', opts.kernel,
    '-initrd', opts.initrd,
    '-append', opts.append,
    ...serialArg(opts.serial ?? { kind: 'stdio' }, 'console0'),
  ];
  if (opts.serial2) args.push(...serialArg(opts.serial2, 'serial1'));
  if (opts.qmp) args.push('-qmp', `unix:${chardevPath(opts.qmp)},server=on,wait=off`);
  if (opts.nativeHotplug) args.push('-global', 'ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off');
  args.push('-device', rootPortArg(rootPortId, slot));
  if (opts.pairedVmxnet3) args.push('-device', pairedVmxnet3Arg(deviceId, rootPortId));
  const properties = opts.pairedVmxnet3 ? { ...PVRDMA_DEVICE_PROPERTIES, ...opts.deviceProperties } : opts.deviceProperties;
  if (opts.socket) args.push('-device', vfioUserDeviceJson(opts.socket, { deviceId, rootPortId, properties }));
  if (opts.logItems && opts.logItems.length) args.push('-d', opts.logItems.join(','));
  if (opts.logFile) args.push('-D', opts.logFile);
  if (opts.extra) args.push(...opts.extra);
  return args;
}

/**
 * The pvrdma function's vfio-user-pci properties: function 1 of the slot, and register writes that
 * wait for the device. vmw_pvrdma writes DSRHIGH and then reads the capabilities the device must
 * have put into the shared region, with no register read in between to flush a posted write
 * (pvrdma_pci_probe); VMware's device handles the write synchronously in the hypervisor's trap.
 */
export const PVRDMA_DEVICE_PROPERTIES: Readonly<Record<string, string | boolean>> = Object.freeze({ addr: '0.1', 'x-no-posted-writes': true });

/** QEMU's vmxnet3 at function 0 of the root port's slot, the pvrdma function's paired NIC (no netdev: it carries no traffic). */
export function pairedVmxnet3Arg(deviceId = DEFAULT_DEVICE_ID, rootPortId = DEFAULT_ROOT_PORT_ID): string {
  return `vmxnet3,id=${deviceId}-net,bus=${rootPortId},addr=0.0,multifunction=on`;
}

/**
 * The vfio-user-pci device on a Unix socket, as QEMU's JSON -device syntax: the only syntax that
 * takes a socket path with any character in it (the key=value form splits at commas).
 */
export function vfioUserDeviceJson(
  socket: string,
  opts: { deviceId?: string; rootPortId?: string; properties?: Readonly<Record<string, string | number | boolean>> } = {},
): string {
  return JSON.stringify({ driver: 'vfio-user-pci', id: opts.deviceId ?? DEFAULT_DEVICE_ID, bus: opts.rootPortId ?? DEFAULT_ROOT_PORT_ID, socket: { type: 'unix', path: socket }, ...opts.properties });
}

/** How `vrnic qemu-args` prints a command line. */
export const COMMAND_LINE_FORMATS = ['shell', 'args', 'json'] as const;
export type CommandLineFormat = (typeof COMMAND_LINE_FORMATS)[number];

/**
 * A command line for people or programs:
 * - shell: shell-quoted, one option and its value per line, joined by backslash-newlines, so it
 *   pastes into a shell and reads as QEMU's documentation does;
 * - args: one raw argument per line (for `mapfile -t`), refused when an argument holds a newline;
 * - json: a JSON array of strings, binary first.
 */
export function formatCommandLine(binary: string, args: readonly string[], format: CommandLineFormat = 'shell'): string {
  const argv = [binary, ...args];
  switch (format) {
    case 'json':
      return JSON.stringify(argv);
    case 'args': {
      const bad = argv.find((a) => a.includes('\n'));
      if (bad !== undefined) throw new Error(`an argument holds a newline, which one-per-line output cannot carry (use the json format): ${JSON.stringify(bad)}`);
      return argv.join('\n');
    }
    case 'shell':
      return shellLines(argv).join(' \\\n  ');
  }
}

/** Shell-quoted words, an option and the value that follows it on one line. */
function shellLines(argv: readonly string[]): string[] {
  const lines = [shellQuote(argv[0])];
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    const next = argv[i + 1];
    if (a.startsWith('-') && next !== undefined && !next.startsWith('-')) {
      lines.push(`${shellQuote(a)} ${shellQuote(next)}`);
      i++;
    } else {
      lines.push(shellQuote(a));
    }
  }
  return lines;
}

export function shellQuote(s: string): string {
  if (s !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
