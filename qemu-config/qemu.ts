// Finds the QEMU to run the vrnic device with, in one documented order, and refuses one without vfio-user-pci.
//
// Order: the --qemu flag, then $VRNIC_QEMU, then the QEMU `vrnic qemu provision` put in vrnic's
// cache, then qemu-system-x86_64 on PATH. The first candidate found is the one used: a flag or
// variable that names nothing runnable is an error, never a silent fall-through to another QEMU.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cacheDir } from './cache';
import { probeQemu, QEMU_BINARY, QemuError, type QemuInfo } from './probe';
import { provisionedQemu } from './provision';

export { probeQemu, QEMU_BINARY, QemuError, type QemuInfo } from './probe';

export type QemuSource = '--qemu' | 'VRNIC_QEMU' | 'provisioned' | 'PATH';

export interface FoundQemu {
  readonly binary: string;
  readonly source: QemuSource;
}

export interface FindQemuOptions {
  /** The --qemu flag's value, if given. */
  readonly flag?: string;
  /** Environment to read VRNIC_QEMU, VRNIC_CACHE and PATH from (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
}

/** How to get a QEMU with the vfio-user client, for every message that lacks one. */
export const HOW_TO_GET_QEMU =
  "run `vrnic qemu provision` (Debian's QEMU 11.1 into vrnic's cache, the host untouched), " +
  'or pass --qemu / set VRNIC_QEMU to a qemu-system-x86_64 >= 10.1 with vfio-user-pci';

/** The first QEMU candidate in the documented order, or undefined when there is none at all. */
export function findQemu(opts: FindQemuOptions = {}): FoundQemu | undefined {
  const env = opts.env ?? process.env;
  if (opts.flag !== undefined) return { binary: executable(opts.flag, '--qemu'), source: '--qemu' };
  if (env.VRNIC_QEMU) return { binary: executable(env.VRNIC_QEMU, 'VRNIC_QEMU'), source: 'VRNIC_QEMU' };
  const provisioned = provisionedQemu({ dir: cacheDir('qemu', env) });
  if (provisioned) return { binary: provisioned.binary, source: 'provisioned' };
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, QEMU_BINARY);
    if (isExecutable(p)) return { binary: p, source: 'PATH' };
  }
  return undefined;
}

function executable(p: string, from: string): string {
  if (!isExecutable(p)) throw new QemuError(`${from}=${p} is not an executable file`);
  return p;
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** The QEMU to run the vrnic device with; throws a QemuError saying what to do when there is none. */
export async function requireVfioUserQemu(opts: FindQemuOptions = {}): Promise<QemuInfo & { readonly source: QemuSource }> {
  const found = findQemu(opts);
  if (!found) throw new QemuError(`no ${QEMU_BINARY} found: ${HOW_TO_GET_QEMU}`);
  const info = await probeQemu(found.binary);
  if (!info.hasVfioUser) {
    throw new QemuError(
      `${found.binary} (QEMU ${info.version}, from ${found.source}) has no vfio-user-pci device: the vfio-user client ` +
        `is in QEMU from 10.1 (Debian bookworm ships 7.2); ${HOW_TO_GET_QEMU}`,
    );
  }
  return { ...info, source: found.source };
}
