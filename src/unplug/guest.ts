// The guest an unplug run boots: the guest kit's image (guest/kit/image.ts) and QEMU command line (args.ts).
import type { Logger } from 'pino';
import { qemuArgs } from '../../qemu-config/args';
import { buildGuestImage, guestAppend, type GuestImage, type GuestScenario } from '../../guest/kit/image';
import type { DriverBug } from './evidence';
import type { HotplugKind } from './runner';

export interface GuestMachine {
  readonly image: GuestImage;
  /** QEMU arguments: guest RAM shareable, vrnic as `deviceId` on a hot-pluggable root port, console on stdio. */
  qemuArgs(opts: { readonly socketPath: string; readonly deviceId: string; readonly nativeHotplug?: boolean }): string[];
}

export interface PrepareGuestOptions {
  readonly driverBug: DriverBug;
  /**
   * How long vrnic-test keeps its mapping and context while waiting for the device to leave.
   * Longer than the unplug bound, so a removal that waits for user space shows as one.
   */
  readonly watchSeconds?: number;
  /** What vrnic-test runs (default single) and with how many processes (many, race-close). */
  readonly scenario?: GuestScenario;
  readonly procs?: number;
  /** The platform's hotplug (the guest needs nothing different; kept for the record). */
  readonly hotplug?: HotplugKind;
  readonly log: Logger;
}

/** Builds (or reuses, by input hash) the guest image and says how to boot it for one run. */
export async function prepareGuest(opts: PrepareGuestOptions): Promise<GuestMachine> {
  const image = await buildGuestImage({ progress: (line) => opts.log.info({ step: line }, 'guest image') });
  const append = guestAppend({
    bug: opts.driverBug,
    scenario: opts.scenario ?? 'single',
    procs: opts.procs,
    watchSeconds: opts.watchSeconds ?? 15,
    waitDeviceSeconds: 60,
    settleMs: 2000,
    intervalMs: 20,
    // The program's exit, the kernel log dump and poweroff follow; nothing to linger for.
    lingerSeconds: 0,
    // After the program /init waits this long for the device to leave, then lists what is left
    // (device-removed reads that listing). A driver whose removal waited for the program finishes
    // it within milliseconds of the program's exit; native hotplug adds the slot's 5 s wait.
    deviceGoneWaitSeconds: 10,
  });
  return {
    image,
    qemuArgs: ({ socketPath, deviceId, nativeHotplug }) =>
      qemuArgs({ kernel: image.kernel, initrd: image.initrd, append, socket: socketPath, deviceId, nativeHotplug, serial: { kind: 'stdio' } }),
  };
}
