// Asks a QEMU binary what it is: its version and whether it has the vfio-user client device.
import { execFile } from 'node:child_process';

export const QEMU_BINARY = 'qemu-system-x86_64';

export interface QemuInfo {
  readonly binary: string;
  /** "11.1.3" */
  readonly version: string;
  readonly hasVfioUser: boolean;
}

/** What is wrong with the QEMU at hand, said so a user can fix it. */
export class QemuError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QemuError';
  }
}

// Both questions take a few tens of milliseconds; the bound only keeps a wedged binary from
// holding a command up.
const PROBE_TIMEOUT_MS = 5_000;

function output(binary: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: PROBE_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new QemuError(`${binary} ${args.join(' ')} failed: ${err.message.split('\n')[0]}${stderr ? ` (${stderr.trim().split('\n')[0]})` : ''}`));
      else resolve(stdout);
    });
  });
}

/** Asks the binary for its version and its device list. */
export async function probeQemu(binary: string): Promise<QemuInfo> {
  const [versionText, devices] = await Promise.all([output(binary, ['--version']), output(binary, ['-machine', 'none', '-device', 'help'])]);
  const m = /version (\d+\.\d+(?:\.\d+)?)/.exec(versionText);
  return { binary, version: m ? m[1] : 'unknown', hasVfioUser: /"vfio-user-pci"/.test(devices) };
}
