// Builds the guest kit: vmlinuz + initramfs from Debian packages, vrnic.ko, vrnic_pfn.ko and vrnic-test, cached by input hash.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { cacheDir, packageRoot } from '../../qemu-config/cache';
import { CpioWriter } from './cpio';
import { addTree, buildPvrdmaKit, PVRDMA_GUEST_SCRIPT, PVRDMA_MODULES, pvrdmaPackageVersions, type GuestModel } from './pvrdma-kit';

/**
 * The guest kernel follows Debian: the release the metapackage linux-image-amd64 currently
 * depends on (e.g. 6.1.0-56-amd64). Each bookworm point or security release moves it, and the
 * previous ABI's packages then leave the archive, so a hard-coded release would break every
 * fresh install the day the next one ships. A pin stays possible (--kernel-release,
 * VRNIC_KERNEL_RELEASE); the image cache keys on the package versions it resolved to.
 */
export const KERNEL_METAPACKAGE = 'linux-image-amd64';

/** The kernel release to build the guest for: VRNIC_KERNEL_RELEASE, else the metapackage's current one. */
export function defaultKernelRelease(env: NodeJS.ProcessEnv = process.env): string {
  if (env.VRNIC_KERNEL_RELEASE) return env.VRNIC_KERNEL_RELEASE;
  let out: string;
  try {
    out = execFileSync('apt-cache', ['show', '--no-all-versions', KERNEL_METAPACKAGE], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`apt-cache show ${KERNEL_METAPACKAGE} failed (run apt-get update; or pin a release with --kernel-release): ${(err as Error).message.split('\n')[0]}`);
  }
  const m = /^Depends:.*?\blinux-image-(\d[\w.+~-]*-amd64)\b/m.exec(out);
  if (!m) throw new Error(`${KERNEL_METAPACKAGE} names no linux-image-*-amd64 in its Depends (apt-get update?)`);
  return m[1];
}

/** Images kept in a cache root; older ones are removed after a new build (the .deb downloads stay). */
const KEEP_IMAGES = 4;

/** Bump when the layout of the image or of its manifest changes in a way the sources don't show. */
const BUILDER_VERSION = 5;

export interface GuestBuildOptions {
  /** Cache root; each build lives in a subdirectory named by its input hash. Default `<cache root>/guest` (qemu-config/cache.ts). */
  outDir?: string;
  /** Repository root holding guest/; default: found from this file's location. */
  repoRoot?: string;
  /** Debian kernel release, e.g. 6.1.0-56-amd64 (image package linux-image-RELEASE, headers in /usr/src/linux-headers-RELEASE). */
  kernelRelease?: string;
  /** Kbuild directory for the modules; default /usr/src/linux-headers-RELEASE. */
  headersDir?: string;
  /** Rebuild even when a cached image with the same inputs exists. */
  force?: boolean;
  /** Receives one human-readable line per step. */
  progress?: (line: string) => void;
  /** Which device's guest kit: vrnic's own (default), or pvrdma's upstream driver with Debian's rdma-core (guest/kit/pvrdma-kit.ts). */
  model?: GuestModel;
}

export interface GuestImage {
  /** Directory holding everything below. */
  readonly dir: string;
  readonly kernel: string;
  readonly initrd: string;
  readonly kernelRelease: string;
  /** The hash of the inputs that named `dir`. */
  readonly key: string;
  /** True when an earlier build was reused. */
  readonly cached: boolean;
  /** Package name -> Debian version used. */
  readonly packages: Readonly<Record<string, string>>;
  /** Built artifacts (also inside the initramfs), for inspection. */
  readonly modules: { readonly vrnic: string; readonly pfnHelper: string };
  readonly testProgram: string;
  readonly model: GuestModel;
}

interface Manifest {
  builderVersion: number;
  key: string;
  kernelRelease: string;
  packages: Record<string, string>;
  builtAt: string;
  kernelModules: string[];
  model?: GuestModel;
}

/**
 * The driver's planted bugs (vrnic.ko's `bug=` parameter, guest/README.md): the negative controls
 * every command that boots the guest names with `--driver-bug`.
 */
export const DRIVER_BUGS = ['none', 'legacy-mmap', 'no-disassociate', 'private-tracking', 'zap-sigbus', 'destroy-error', 'held-reference'] as const;
export type DriverBug = (typeof DRIVER_BUGS)[number];

/**
 * The guest program's scenarios (guest/README.md): vrnic-test's, and vrnic-pingpong's pingpong (a
 * verified RC ping-pong, RDMA WRITE and READ between two processes) and traffic (the ping-pong
 * until the device goes away).
 */
export const GUEST_SCENARIOS = ['single', 'fork', 'split', 'fd-passing', 'many', 'race-close', 'pingpong', 'traffic'] as const;
export type GuestScenario = (typeof GUEST_SCENARIOS)[number];

/** Options the guest's /init reads from the kernel command line (all `vrnic.` keys). */
export interface GuestRunOptions {
  /** Planted driver bug; the module's `bug=` parameter. */
  bug?: DriverBug;
  /** Run vrnic-test after loading the modules (default true). */
  runTest?: boolean;
  scenario?: GuestScenario;
  /** Processes for the many (default 32) and race-close (default 8) scenarios. */
  procs?: number;
  /** Seconds vrnic-test keeps reading/writing the mapping (0: set up, report, exit). */
  watchSeconds?: number;
  uars?: number;
  settleMs?: number;
  intervalMs?: number;
  /** Seconds to wait for the uverbs device (vrnic-test --wait-device). */
  waitDeviceSeconds?: number;
  /** The program /init runs from /bin instead of vrnic-test (the pvrdma image's pvrdma-guest). */
  program?: string;
  /** Extra vrnic-test flags; must not contain spaces or commas (commas separate them on the command line). */
  testArgs?: readonly string[];
  /** Serial device (e.g. ttyS1) vrnic-test writes its reports to instead of the console. */
  reportTty?: string;
  /** Serial device vrnic-test reads commands from. */
  commandTty?: string;
  /** Seconds /init waits after the test before dumping the kernel log and powering off. */
  lingerSeconds?: number;
  /** Power off at the end (default true); false drops to a shell on the console. */
  powerOff?: boolean;
  /**
   * Kernel console log level (default 5: messages more urgent than 5, i.e. KERN_WARNING and worse,
   * reach the console as they happen, so a WARN() is seen even when the guest dies before /init
   * dumps the full log at the end).
   */
  loglevel?: number;
  /**
   * After the program, wait up to this long for the vrnic PCI function and ib device to leave,
   * then report the guest's own listing (`devices`). Default 0: list at once.
   */
  deviceGoneWaitSeconds?: number;
  /** Read an address nothing decodes before loading the modules (the invalid_mem log's canary; default on). */
  canary?: boolean;
}

/** The kernel command line for a guest image booted with these options. */
export function guestAppend(opts: GuestRunOptions = {}): string {
  // no_timer_check: under TCG on a busy host the kernel's check that the IO-APIC timer ticks can
  // time out, and the guest panics ("IO-APIC + timer doesn't work") before any module loads.
  const words = ['console=ttyS0', 'panic=-1', 'no_timer_check', `loglevel=${opts.loglevel ?? 5}`];
  const add = (k: string, v: string | number | undefined) => {
    if (v === undefined) return;
    const s = String(v);
    if (!/^[A-Za-z0-9_.,/:=+-]*$/.test(s)) throw new Error(`guest option ${k}=${s}: only [A-Za-z0-9_.,/:=+-] allowed`);
    words.push(`vrnic.${k}=${s}`);
  };
  add('bug', opts.bug);
  if (opts.runTest === false) add('test', 0);
  add('scenario', opts.scenario);
  add('procs', opts.procs);
  add('watch', opts.watchSeconds);
  add('prog', opts.program);
  add('uars', opts.uars);
  add('settle', opts.settleMs);
  add('interval', opts.intervalMs);
  add('wait', opts.waitDeviceSeconds);
  if (opts.testArgs && opts.testArgs.length) {
    for (const a of opts.testArgs) if (a.includes(',') || /\s/.test(a)) throw new Error(`test argument '${a}' contains a comma or space`);
    add('args', opts.testArgs.join(','));
  }
  add('out', opts.reportTty);
  add('cmd', opts.commandTty);
  add('linger', opts.lingerSeconds);
  add('gonewait', opts.deviceGoneWaitSeconds);
  if (opts.canary === false) add('canary', 0);
  if (opts.powerOff === false) add('poweroff', 0);
  return words.join(' ');
}

/** The guest's /init (busybox sh), a file of the guest kit: it reads the module order from /lib/modules/order. */
export const INIT_SCRIPT = 'guest/kit/init.sh';


function run(cmd: string, args: readonly string[], cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err) {
        const tail = `${stdout}\n${stderr}`.trim().split('\n').slice(-25).join('\n');
        const code = (err as NodeJS.ErrnoException).code;
        const hint = code === 'ENOENT' ? ` (${cmd} is not installed)` : '';
        reject(new Error(`${cmd} ${args.join(' ')} failed${hint}:\n${tail}`));
      } else {
        resolve(stdout);
      }
    });
  });
}

/** The builder's way to run a tool (errors carry its output's tail), for the model kits (guest/kit/pvrdma-kit.ts). */
export const runTool = run;

/** The guest sources that go into the image, as sorted repo-relative paths. */
function guestSources(repo: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(repo, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) walk(r);
      else if (e.isFile() && (/\.(c|h)$/.test(e.name) || e.name === 'Makefile' || e.name === 'Kbuild')) out.push(r);
    }
  };
  for (const d of ['guest/driver', 'guest/pfn-helper', 'guest/uverbs-test']) walk(d);
  out.push(INIT_SCRIPT);
  return out.sort();
}

export async function packageVersion(pkg: string): Promise<string> {
  const out = await run('apt-cache', ['show', '--no-all-versions', pkg]).catch((err: Error) => {
    throw new Error(`apt-cache does not know ${pkg} (is the Debian bookworm archive configured? run apt-get update): ${err.message}`);
  });
  const m = /^Version: (.+)$/m.exec(out);
  if (!m) throw new Error(`apt-cache show ${pkg}: no Version field`);
  return m[1];
}

export async function installedVersion(pkg: string): Promise<string> {
  const out = await run('dpkg-query', ['-W', '-f', '${Version}', pkg]).catch(() => '');
  if (!out) throw new Error(`${pkg} is not installed: apt-get install ${pkg}`);
  return out.trim();
}

/** Downloads a package into `debDir` unless it is there already; returns the .deb path. */
export async function downloadDeb(pkg: string, version: string, debDir: string, progress: (l: string) => void, arch = 'amd64'): Promise<string> {
  const name = `${pkg}_${version.replace(/:/g, '%3a')}_${arch}.deb`;
  const file = path.join(debDir, name);
  if (fs.existsSync(file)) {
    progress(`[guest] using downloaded ${name}`);
    return file;
  }
  progress(`[guest] apt-get download ${pkg}=${version}`);
  await run('apt-get', ['download', `${pkg}=${version}`], debDir);
  if (!fs.existsSync(file)) throw new Error(`apt-get download ${pkg}=${version} left no ${name} in ${debDir}`);
  return file;
}

/** Finds a kernel module file by name (dashes and underscores are the same) under a modules tree. */
function findModule(tree: string, name: string): string | undefined {
  const want = name.replace(/-/g, '_');
  const stack = [tree];
  while (stack.length) {
    const dir = stack.pop() as string;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.name.endsWith('.ko') && e.name.slice(0, -3).replace(/-/g, '_') === want) return p;
    }
  }
  return undefined;
}

async function moduleDepends(file: string): Promise<string[]> {
  const out = await run('modinfo', ['-F', 'depends', file]);
  return out.trim().split(',').map((s) => s.trim()).filter(Boolean);
}

/**
 * Orders kernel modules so each comes after what it depends on (`depends=` in its modinfo).
 * Our own modules resolve to `local`; the rest come from the kernel package's tree.
 */
async function resolveModules(roots: readonly string[], local: ReadonlyMap<string, string>, tree: string): Promise<{ name: string; file: string }[]> {
  const order: { name: string; file: string }[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = async (name: string, chain: string[]): Promise<void> => {
    const key = name.replace(/-/g, '_');
    if (state.get(key) === 'done') return;
    if (state.get(key) === 'visiting') throw new Error(`module dependency cycle: ${[...chain, key].join(' -> ')}`);
    state.set(key, 'visiting');
    const file = local.get(key) ?? findModule(tree, key);
    if (!file) throw new Error(`module ${key} (needed by ${chain.join(' -> ') || 'the image'}) is not in the kernel package`);
    for (const dep of await moduleDepends(file)) await visit(dep, [...chain, key]);
    state.set(key, 'done');
    order.push({ name: key, file });
  };
  for (const r of roots) await visit(r, []);
  return order;
}

function hashInputs(repo: string, sources: readonly string[], packages: Record<string, string>, extra: Record<string, string>): string {
  const h = createHash('sha256');
  const field = (k: string, v: string | Buffer) => {
    h.update(`${k}\0${v.length}\0`);
    h.update(v);
  };
  field('builder', String(BUILDER_VERSION));
  // The builder itself is an input: its compiled code decides what goes into the image.
  field('image.js', fs.readFileSync(__filename));
  field('cpio.js', fs.readFileSync(path.join(__dirname, `cpio${path.extname(__filename)}`)));
  for (const s of sources) field(`src:${s}`, fs.readFileSync(path.join(repo, s)));
  for (const k of Object.keys(packages).sort()) field(`pkg:${k}`, packages[k]);
  for (const k of Object.keys(extra).sort()) field(`env:${k}`, extra[k]);
  return h.digest('hex').slice(0, 16);
}

function copyTree(srcDir: string, dstDir: string): void {
  fs.mkdirSync(dstDir, { recursive: true });
  for (const e of fs.readdirSync(srcDir, { withFileTypes: true })) {
    if (e.isFile() && (/\.(c|h)$/.test(e.name) || e.name === 'Makefile' || e.name === 'Kbuild')) {
      fs.copyFileSync(path.join(srcDir, e.name), path.join(dstDir, e.name));
    }
  }
}

function readManifest(dir: string): Manifest | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    for (const f of ['vmlinuz', 'initrd.img', 'vrnic.ko', 'vrnic_pfn.ko', 'vrnic-test']) {
      if (!fs.existsSync(path.join(dir, f))) return undefined;
    }
    return m.builderVersion === BUILDER_VERSION ? m : undefined;
  } catch {
    return undefined;
  }
}

function imageAt(dir: string, m: Manifest, cached: boolean): GuestImage {
  return {
    dir,
    kernel: path.join(dir, 'vmlinuz'),
    initrd: path.join(dir, 'initrd.img'),
    kernelRelease: m.kernelRelease,
    key: m.key,
    cached,
    packages: m.packages,
    modules: { vrnic: path.join(dir, 'vrnic.ko'), pfnHelper: path.join(dir, 'vrnic_pfn.ko') },
    testProgram: path.join(dir, 'vrnic-test'),
    model: m.model ?? 'vrnic',
  };
}

/** Removes all but the KEEP_IMAGES newest images (by build time) under a cache root; never `keep`. */
function pruneImages(root: string, keep: string, progress: (l: string) => void): void {
  const images: { dir: string; builtAt: string }[] = [];
  for (const e of fs.readdirSync(root, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name.startsWith('.') || e.name === 'debs') continue;
    const dir = path.join(root, e.name);
    const m = readManifest(dir);
    if (m) images.push({ dir, builtAt: m.builtAt });
  }
  images.sort((a, b) => (a.builtAt < b.builtAt ? 1 : -1));
  for (const old of images.slice(KEEP_IMAGES)) {
    if (old.dir === keep) continue;
    fs.rmSync(old.dir, { recursive: true, force: true });
    progress(`[guest] removed old image ${old.dir}`);
  }
}

/** The most recently built image under a cache root (default `<cache root>/guest`), if any. */
export function latestGuestImage(outDir?: string, repoRoot?: string, model: GuestModel = 'vrnic'): GuestImage | undefined {
  let root: string;
  try {
    root = path.resolve(outDir ?? (repoRoot === undefined ? cacheDir('guest') : path.join(repoRoot, '.vrnic-cache', 'guest')));
  } catch {
    return undefined;
  }
  let best: { m: Manifest; dir: string } | undefined;
  for (const e of fs.existsSync(root) ? fs.readdirSync(root, { withFileTypes: true }) : []) {
    if (!e.isDirectory() || e.name.startsWith('.') || e.name === 'debs') continue;
    const dir = path.join(root, e.name);
    const m = readManifest(dir);
    if (m && (m.model ?? 'vrnic') === model && (!best || m.builtAt > best.m.builtAt)) best = { m, dir };
  }
  return best && imageAt(best.dir, best.m, true);
}

/** Builds (or reuses) the guest image. */
export async function buildGuestImage(opts: GuestBuildOptions = {}): Promise<GuestImage> {
  const progress = opts.progress ?? (() => undefined);
  const repo = opts.repoRoot ?? packageRoot();
  const release = opts.kernelRelease ?? defaultKernelRelease();
  const headersDir = opts.headersDir ?? `/usr/src/linux-headers-${release}`;
  const root = path.resolve(opts.outDir ?? (opts.repoRoot === undefined ? cacheDir('guest') : path.join(repo, '.vrnic-cache', 'guest')));
  const imagePkg = `linux-image-${release}`;
  const model = opts.model ?? 'vrnic';

  if (!fs.existsSync(path.join(headersDir, 'Makefile'))) {
    throw new Error(`no kernel headers at ${headersDir}: apt-get install linux-headers-${release}`);
  }
  progress('[guest] checking inputs');
  const packages: Record<string, string> = {
    [imagePkg]: await packageVersion(imagePkg),
    'busybox-static': await packageVersion('busybox-static'),
    [`linux-headers-${release}`]: await installedVersion(`linux-headers-${release}`),
    ...(model === 'pvrdma' ? await pvrdmaPackageVersions() : {}),
  };
  const gccVersion = (await run('gcc', ['-dumpfullversion'])).trim();
  const sources = [...guestSources(repo), ...(model === 'pvrdma' ? [PVRDMA_GUEST_SCRIPT] : [])];
  const key = hashInputs(repo, sources, packages, { gcc: gccVersion, headersDir, ...(model === 'pvrdma' ? { model } : {}) });
  const dir = path.join(root, key);

  const existing = opts.force ? undefined : readManifest(dir);
  if (existing) {
    progress(`[guest] reusing ${dir} (inputs unchanged, key ${key})`);
    return imageAt(dir, existing, true);
  }

  const started = Date.now();
  fs.mkdirSync(root, { recursive: true });
  const work = fs.mkdtempSync(path.join(root, `.build-${key}-`));
  try {
    const debDir = path.join(root, 'debs');
    fs.mkdirSync(debDir, { recursive: true });
    const kernelDeb = await downloadDeb(imagePkg, packages[imagePkg], debDir, progress);
    const busyboxDeb = await downloadDeb('busybox-static', packages['busybox-static'], debDir, progress);

    progress(`[guest] unpacking ${path.basename(kernelDeb)}`);
    const kroot = path.join(work, 'kernel');
    const broot = path.join(work, 'busybox');
    fs.mkdirSync(kroot);
    fs.mkdirSync(broot);
    await run('dpkg-deb', ['-x', kernelDeb, kroot]);
    await run('dpkg-deb', ['-x', busyboxDeb, broot]);
    const vmlinuz = path.join(kroot, 'boot', `vmlinuz-${release}`);
    const busybox = path.join(broot, 'bin', 'busybox');
    if (!fs.existsSync(vmlinuz)) throw new Error(`${kernelDeb} has no boot/vmlinuz-${release}`);
    if (!fs.existsSync(busybox)) throw new Error(`${busyboxDeb} has no bin/busybox`);

    const built: Record<string, string> = {};
    for (const [name, src] of [['vrnic', 'guest/driver'], ['vrnic_pfn', 'guest/pfn-helper']] as const) {
      progress(`[guest] building ${name}.ko against ${headersDir}`);
      const bdir = path.join(work, 'src', path.basename(src));
      copyTree(path.join(repo, src), bdir);
      await run('make', ['-C', headersDir, `M=${bdir}`, 'modules']);
      built[name] = path.join(bdir, `${name}.ko`);
      if (!fs.existsSync(built[name])) throw new Error(`Kbuild produced no ${name}.ko`);
    }
    // vrnic-test includes the driver's ABI header from ../driver, as in the repository.
    progress('[guest] building vrnic-test and vrnic-pingpong (static)');
    const tdir = path.join(work, 'src', 'uverbs-test');
    copyTree(path.join(repo, 'guest/uverbs-test'), tdir);
    const testBin = path.join(work, 'vrnic-test');
    const pingpongBin = path.join(work, 'vrnic-pingpong');
    await run('make', ['-C', tdir, `OUT=${testBin}`, `PINGPONG_OUT=${pingpongBin}`]);

    const pvrdma = model === 'pvrdma' ? await buildPvrdmaKit(work, headersDir, debDir, packages, progress) : undefined;

    progress('[guest] resolving module dependencies');
    const kmods = path.join(kroot, 'lib', 'modules', release);
    const local = new Map([
      ['vrnic', built.vrnic],
      ['vrnic_pfn', built.vrnic_pfn],
    ]);
    if (pvrdma) local.set('vmw_pvrdma', pvrdma.module);
    const order = await resolveModules(['ib_core', 'ib_uverbs', 'vrnic_pfn', 'vrnic', ...(pvrdma ? PVRDMA_MODULES : [])], local, kmods);

    progress(`[guest] writing initramfs (${order.map((m) => m.name).join(', ')})`);
    const cpio = new CpioWriter();
    for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'lib', 'lib/modules']) cpio.directory(d);
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    cpio.charDevice('dev/console', 5, 1, 0o600);
    cpio.file('init', fs.readFileSync(path.join(repo, INIT_SCRIPT)), 0o755);
    cpio.file('lib/modules/order', Buffer.from(order.map((m) => `${m.name}\n`).join('')), 0o644);
    cpio.file('bin/busybox', fs.readFileSync(busybox), 0o755);
    cpio.file('bin/vrnic-test', fs.readFileSync(testBin), 0o755);
    cpio.file('bin/vrnic-pingpong', fs.readFileSync(pingpongBin), 0o755);
    for (const m of order) cpio.file(`lib/modules/${m.name}.ko`, fs.readFileSync(m.file), 0o644);
    if (pvrdma) {
      addTree(cpio, pvrdma.userRoot, new Set(['bin', 'dev', 'proc', 'sys', 'tmp', 'lib', 'lib/modules']));
      cpio.file('bin/pvrdma-guest', fs.readFileSync(path.join(repo, PVRDMA_GUEST_SCRIPT)), 0o755);
    }
    const initrd = gzipSync(cpio.finish(), { level: 6 });

    const out = path.join(work, 'out');
    fs.mkdirSync(out);
    fs.copyFileSync(vmlinuz, path.join(out, 'vmlinuz'));
    fs.writeFileSync(path.join(out, 'initrd.img'), initrd);
    fs.copyFileSync(built.vrnic, path.join(out, 'vrnic.ko'));
    fs.copyFileSync(built.vrnic_pfn, path.join(out, 'vrnic_pfn.ko'));
    fs.copyFileSync(testBin, path.join(out, 'vrnic-test'));
    const manifest: Manifest = {
      builderVersion: BUILDER_VERSION,
      key,
      kernelRelease: release,
      packages,
      builtAt: new Date().toISOString(),
      kernelModules: order.map((m) => m.name),
      model,
    };
    fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

    // Publish atomically: a reader sees a complete image or none.
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(out, dir);
    pruneImages(root, dir, progress);
    progress(`[guest] built ${dir} in ${((Date.now() - started) / 1000).toFixed(1)} s (initramfs ${(initrd.length / 1048576).toFixed(1)} MiB)`);
    return imageAt(dir, manifest, false);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
