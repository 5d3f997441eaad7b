// Finds the QEMU binary (VRNIC_QEMU or PATH) and checks that it has the vfio-user client device.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const QEMU_BINARY = 'qemu-system-x86_64';

export interface QemuInfo {
  readonly binary: string;
  /** "10.1.92" */
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

/** VRNIC_QEMU if set (must exist), else qemu-system-x86_64 on PATH, else undefined. */
export function findQemu(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = env.VRNIC_QEMU;
  if (fromEnv) {
    if (!isExecutable(fromEnv)) throw new QemuError(`VRNIC_QEMU=${fromEnv} is not an executable file`);
    return fromEnv;
  }
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, QEMU_BINARY);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function output(binary: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: 30_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new QemuError(`${binary} ${args.join(' ')} failed: ${err.message}${stderr ? `\n${stderr.trim()}` : ''}`));
      else resolve(stdout);
    });
  });
}

/** Asks the binary for its version and its device list. */
export async function probeQemu(binary: string): Promise<QemuInfo> {
  const versionText = await output(binary, ['--version']);
  const m = /version (\d+\.\d+(?:\.\d+)?)/.exec(versionText);
  const devices = await output(binary, ['-machine', 'none', '-device', 'help']);
  return { binary, version: m ? m[1] : 'unknown', hasVfioUser: /"vfio-user-pci"/.test(devices) };
}

/** The QEMU to run the vrnic device with; throws a QemuError saying what to do when there is none. */
export async function requireVfioUserQemu(env: NodeJS.ProcessEnv = process.env): Promise<QemuInfo> {
  const binary = findQemu(env);
  if (!binary) {
    throw new QemuError(
      `no ${QEMU_BINARY} found: set VRNIC_QEMU to a QEMU >= 10.1 built with vfio-user (the client device vfio-user-pci)`,
    );
  }
  const info = await probeQemu(binary);
  if (!info.hasVfioUser) {
    throw new QemuError(
      `${binary} (QEMU ${info.version}) has no vfio-user-pci device: the vfio-user client is in QEMU from 10.1 ` +
        `(Debian bookworm ships 7.2). Build a newer QEMU and set VRNIC_QEMU to its qemu-system-x86_64.`,
    );
  }
  return info;
}
