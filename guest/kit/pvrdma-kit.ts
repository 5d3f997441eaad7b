// The PVRDMA guest kit: VMware's upstream vmw_pvrdma driver built unmodified from Debian's kernel source, and Debian's rdma-core user space, for the guest image.
//
// Debian's kernel does not build vmw_pvrdma (CONFIG_INFINIBAND_VMWARE_PVRDMA is not set), but its
// linux-source package carries the driver's unmodified source, which builds out of tree against
// the guest's headers. The RDMA user space is Debian's own rdma-core (ibv_devinfo, the ping-pong
// tools and the libvmw_pvrdma provider). Those are dynamically linked, so the image carries the
// packages unpacked as Debian ships them, with the C library they link against: the guest never
// depends on the host's files. Nothing of the kernel source is kept beyond the build directory.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CpioWriter } from './cpio';
import { downloadDeb, packageVersion, runTool } from './image';

/** The guest models an image can be built for: vrnic's own device, or VMware's PVRDMA with its upstream driver. */
export const GUEST_MODELS = ['vrnic', 'pvrdma'] as const;
export type GuestModel = (typeof GUEST_MODELS)[number];

/** Debian's kernel source package: its tarball holds drivers/infiniband/hw/vmw_pvrdma. */
export const KERNEL_SOURCE_PACKAGE = 'linux-source-6.1';
const DRIVER_DIR = 'drivers/infiniband/hw/vmw_pvrdma';

/**
 * rdma-core's user space and what it links against (ldd of ibv_devinfo, ibv_rc_pingpong and
 * libvmw_pvrdma-rdmav34.so: libibverbs, libnl-route-3, libnl-3, libc), and perftest (ib_write_bw
 * and friends), whose binaries also need libpci3 (itself on libudev1 and zlib1g) and libm.
 */
export const PVRDMA_USER_PACKAGES = [
  'libc6', 'libnl-3-200', 'libnl-route-3-200', 'libibverbs1', 'ibverbs-providers', 'ibverbs-utils', 'librdmacm1', 'perftest', 'libpci3', 'libudev1', 'zlib1g',
] as const;

/** Kernel modules the model needs besides the RDMA core: the paired NIC's driver first, since vmw_pvrdma's probe looks for it. */
export const PVRDMA_MODULES = ['vmxnet3', 'vmw_pvrdma'] as const;

/** The guest-side script the pvrdma image runs in place of vrnic-test (repo-relative). */
export const PVRDMA_GUEST_SCRIPT = 'guest/pvrdma/pvrdma-guest.sh';

/** Package name -> version, for the image's cache key. */
export async function pvrdmaPackageVersions(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const p of [KERNEL_SOURCE_PACKAGE, ...PVRDMA_USER_PACKAGES]) out[p] = await packageVersion(p);
  return out;
}

export interface PvrdmaKit {
  /** The built vmw_pvrdma.ko. */
  readonly module: string;
  /** The unpacked user-space packages, a root tree to copy into the initramfs. */
  readonly userRoot: string;
}

/** Builds vmw_pvrdma.ko from the kernel source package and unpacks the user space under `work`. */
export async function buildPvrdmaKit(work: string, headersDir: string, debDir: string, versions: Record<string, string>, progress: (l: string) => void): Promise<PvrdmaKit> {
  const srcDeb = await downloadDeb(KERNEL_SOURCE_PACKAGE, versions[KERNEL_SOURCE_PACKAGE]!, debDir, progress, 'all');
  progress(`[guest] extracting ${DRIVER_DIR} from ${path.basename(srcDeb)}`);
  const sroot = path.join(work, 'linux-source');
  fs.mkdirSync(sroot);
  const tarball = `./usr/src/${KERNEL_SOURCE_PACKAGE.replace(/^linux-source-/, 'linux-source-')}.tar.xz`;
  // dpkg-deb gives the package's file tree as a tar; the kernel tarball inside it is xz.
  await runTool('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -xO "$2" | tar -xJ -C "$3" --wildcards "*/${DRIVER_DIR}/*"`, 'sh', srcDeb, tarball, sroot]);
  const top = fs.readdirSync(sroot)[0];
  const drv = top === undefined ? '' : path.join(sroot, top, DRIVER_DIR);
  if (!fs.existsSync(path.join(drv, 'pvrdma_main.c'))) throw new Error(`${srcDeb}: no ${DRIVER_DIR}/pvrdma_main.c in its tarball`);
  progress(`[guest] building vmw_pvrdma.ko (unmodified) against ${headersDir}`);
  // The driver's Makefile builds under its Kconfig symbol, which Debian's config leaves unset.
  await runTool('make', ['-C', headersDir, `M=${drv}`, 'CONFIG_INFINIBAND_VMWARE_PVRDMA=m', 'modules']);
  const module = path.join(drv, 'vmw_pvrdma.ko');
  if (!fs.existsSync(module)) throw new Error('Kbuild produced no vmw_pvrdma.ko');

  const userRoot = path.join(work, 'pvrdma-user');
  fs.mkdirSync(userRoot);
  for (const p of PVRDMA_USER_PACKAGES) {
    const deb = await downloadDeb(p, versions[p]!, debDir, progress);
    await runTool('dpkg-deb', ['-x', deb, userRoot]);
  }
  return { module, userRoot };
}

/** Paths of a user-space tree the guest has no use for: documentation and character-set converters. */
function skipped(rel: string): boolean {
  return rel === 'usr/share' || rel.startsWith('usr/share/') || /(^|\/)gconv(\/|$)/.test(rel) || rel.startsWith('usr/lib/x86_64-linux-gnu/audit');
}

/** Copies a root tree (files, symlinks, directories) into the initramfs, skipping what `skipped` names. */
export function addTree(cpio: CpioWriter, rootDir: string, existing: ReadonlySet<string>): void {
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(rootDir, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (skipped(r)) continue;
      const abs = path.join(rootDir, r);
      if (e.isSymbolicLink()) cpio.symlink(r, fs.readlinkSync(abs));
      else if (e.isDirectory()) {
        if (!existing.has(r)) cpio.directory(r);
        walk(r);
      } else if (e.isFile()) cpio.file(r, fs.readFileSync(abs), fs.statSync(abs).mode & 0o777);
    }
  };
  walk('');
}
