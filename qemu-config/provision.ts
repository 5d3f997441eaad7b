// Provisions Debian's own QEMU with the vfio-user client into vrnic's cache, without touching the host system.
//
// Debian bookworm's QEMU (7.2) has no vfio-user client; trixie-backports and sid ship QEMU 11.1
// built with vfio-user-pci. Installing a trixie QEMU on a bookworm host would drag half of trixie
// with it, so instead mmdebstrap (Debian's tool, run with the host's own apt mirror) builds a small
// trixie root holding only qemu-system-x86 and what it needs, and a wrapper script runs that QEMU
// through the root's own dynamic loader and libraries. Nothing outside the cache directory changes.
// The result is checked for vfio-user-pci before it is kept; a second run reuses it.
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LineSplitter } from '../src/lines';
import { cacheDir } from './cache';
import { probeQemu, QEMU_BINARY, QemuError } from './probe';

/** The Debian suite whose QEMU is provisioned by default: the first with vfio-user-pci beside stable. */
export const DEFAULT_QEMU_SUITE = 'trixie-backports';
/** The Debian package that ships qemu-system-x86_64. */
export const QEMU_PACKAGE = 'qemu-system-x86';

const MANIFEST = 'manifest.json';

export interface ProvisionedQemu {
  /** The directory of this provisioned QEMU (root/, bin/, manifest.json). */
  readonly dir: string;
  /** The wrapper to run: behaves as qemu-system-x86_64. */
  readonly binary: string;
  /** QEMU's own version ("11.1.3"). */
  readonly version: string;
  /** The Debian package version ("1:11.1.3+ds-1~bpo13+1"). */
  readonly packageVersion: string;
  readonly suite: string;
  readonly mirror: string;
  /** ISO time of the build. */
  readonly builtAt: string;
  /** True when an earlier provisioning was reused. */
  readonly reused: boolean;
}

interface Manifest {
  version: string;
  packageVersion: string;
  suite: string;
  mirror: string;
  builtAt: string;
}

export interface ProvisionOptions {
  /** Debian suite to take QEMU from (default trixie-backports; sid works too). */
  readonly suite?: string;
  /** Debian mirror URI (default: the one the host's apt uses for Debian's main archive). */
  readonly mirror?: string;
  /** Provision again even if a working copy is there. */
  readonly force?: boolean;
  /** Cache directory (default <cache root>/qemu). */
  readonly dir?: string;
  readonly progress?: (line: string) => void;
  /** apt source files to read the mirror from (tests). */
  readonly aptSources?: readonly string[];
}

/** The provisioned QEMU for a suite (default: the newest provisioned one), if one is complete. */
export function provisionedQemu(opts: { dir?: string; suite?: string } = {}): ProvisionedQemu | undefined {
  const root = opts.dir ?? cacheDir('qemu');
  const suites = opts.suite ? [opts.suite] : listDirs(root);
  let best: ProvisionedQemu | undefined;
  for (const suite of suites) {
    const found = readProvisioned(path.join(root, suite), true);
    if (found && (!best || found.builtAt > best.builtAt)) best = found;
  }
  return best;
}

function listDirs(root: string): string[] {
  try {
    return fs.readdirSync(root, { withFileTypes: true }).filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name);
  } catch {
    return [];
  }
}

function readProvisioned(dir: string, reused: boolean): ProvisionedQemu | undefined {
  let m: Manifest;
  try {
    m = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8')) as Manifest;
  } catch {
    return undefined;
  }
  const binary = path.join(dir, 'bin', QEMU_BINARY);
  if (typeof m.version !== 'string' || !fs.existsSync(binary)) return undefined;
  return { dir, binary, version: m.version, packageVersion: m.packageVersion, suite: m.suite, mirror: m.mirror, builtAt: m.builtAt, reused };
}

/**
 * The host's Debian mirror: the first URI in apt's sources that serves a Debian suite's main
 * component from the main archive (not the security archive). Both source formats are read:
 * one-line `deb URI SUITE COMPONENTS` and deb822 paragraphs (Types/URIs/Suites/Components).
 */
export function debianMirror(files?: readonly string[]): string {
  const list = files ?? aptSourceFiles();
  for (const file of list) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const e of parseAptSources(text)) {
      if (!e.types.includes('deb') || !e.components.includes('main')) continue;
      if (e.suites.some((s) => /-security$/.test(s) || s.includes('/'))) continue;
      for (const uri of e.uris) if (/\/debian\/?$/.test(uri)) return uri.replace(/\/$/, '');
    }
  }
  throw new QemuError(`no Debian mirror found in apt's sources (${list.join(', ') || 'none'}): pass --mirror URI`);
}

function aptSourceFiles(): string[] {
  const out: string[] = [];
  if (fs.existsSync('/etc/apt/sources.list')) out.push('/etc/apt/sources.list');
  try {
    for (const f of fs.readdirSync('/etc/apt/sources.list.d').sort()) {
      if (f.endsWith('.list') || f.endsWith('.sources')) out.push(path.join('/etc/apt/sources.list.d', f));
    }
  } catch {
    // no sources.list.d: only sources.list
  }
  return out;
}

interface AptSource {
  types: string[];
  uris: string[];
  suites: string[];
  components: string[];
}

/** Parses apt source text in either format. Unknown lines are skipped. */
export function parseAptSources(text: string): AptSource[] {
  const out: AptSource[] = [];
  const lines = text.split('\n');
  if (lines.some((l) => /^\s*(Types|URIs)\s*:/i.test(l))) {
    for (const para of text.split(/\n\s*\n/)) {
      const field = (name: string): string[] => {
        const m = new RegExp(`^\\s*${name}\\s*:(.*)$`, 'im').exec(para);
        return m ? m[1].trim().split(/\s+/).filter(Boolean) : [];
      };
      if (field('Enabled')[0]?.toLowerCase() === 'no') continue;
      out.push({ types: field('Types'), uris: field('URIs'), suites: field('Suites'), components: field('Components') });
    }
    return out;
  }
  for (const raw of lines) {
    const line = raw.replace(/#.*/, '').trim();
    const m = /^(deb|deb-src)\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (m) out.push({ types: [m[1]], uris: [m[2]], suites: [m[3]], components: m[4].split(/\s+/).filter(Boolean) });
  }
  return out;
}

/** The suites whose archives a suite's packages come from: trixie-backports needs trixie too. */
export function suiteSources(suite: string, mirror: string): string[] {
  const base = suite.replace(/-backports$/, '');
  const lines = [`deb ${mirror} ${base} main`];
  if (base !== suite) lines.push(`deb ${mirror} ${suite} main`);
  return lines;
}

/** Where Debian's QEMU looks for its modules after QEMU_MODULE_DIR (its build's CONFIG_QEMU_MODDIR). */
export const HOST_QEMU_MODULE_DIR = '/usr/lib/x86_64-linux-gnu/qemu';

/**
 * The wrapper that runs the root's QEMU with the root's loader, libraries, modules and firmware.
 *
 * QEMU looks for a module in QEMU_MODULE_DIR and then in its build's module directory, which is
 * the host's /usr/lib/x86_64-linux-gnu/qemu. A module the root lacks but a host QEMU (bookworm's
 * 7.2) has there is then loaded from the host and refused ("Only modules from the same build can
 * be loaded"), which fails `-device help` and can fail a start. So where the host has that
 * directory, the wrapper runs QEMU in a mount namespace of its own in which the root's module
 * directory is bind-mounted over the host's: QEMU sees only its own build's modules, and nothing
 * changes for any other process. (As root a plain mount namespace; otherwise a user namespace
 * maps the caller to root inside it, as rootless containers do.) `unshare` and the shell exec,
 * so QEMU keeps the wrapper's PID and gets its signals.
 */
export function wrapperScript(root: string): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    '#!/bin/sh',
    `# Runs Debian's ${QEMU_PACKAGE} from the root that \`vrnic qemu provision\` made, with that root's`,
    '# loader, libraries and modules, so nothing of it needs installing on the host.',
    `root=${q(root)}`,
    `hostmods=${HOST_QEMU_MODULE_DIR}`,
    'mods="$root/usr/lib/x86_64-linux-gnu/qemu"',
    'if [ -d "$hostmods" ] && [ "$VRNIC_QEMU_NS" != "$$" ]; then',
    '  # A host QEMU has modules where this one looks second: hide them (see qemu-config/provision.ts).',
    '  if [ "$(id -u)" = 0 ]; then ns="--mount"; else ns="--mount --map-root-user"; fi',
    '  VRNIC_QEMU_NS=$$ exec unshare $ns --propagation private "$0" "$@"',
    'fi',
    'if [ "$VRNIC_QEMU_NS" = "$$" ]; then',
    '  mount --bind "$mods" "$hostmods" || exit 1',
    '  unset VRNIC_QEMU_NS',
    'fi',
    'export QEMU_MODULE_DIR="$mods"',
    'exec "$root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$root/usr/lib/x86_64-linux-gnu" \\',
    `  "$root/usr/bin/${QEMU_BINARY}" -L "$root/usr/share/qemu" -L "$root/usr/share/seabios" "$@"`,
    '',
  ].join('\n');
}

/** Builds (or reuses) the provisioned QEMU. Throws a QemuError saying what to do when it cannot. */
export async function provisionQemu(opts: ProvisionOptions = {}): Promise<ProvisionedQemu> {
  const progress = opts.progress ?? (() => undefined);
  const suite = opts.suite ?? DEFAULT_QEMU_SUITE;
  if (!/^[a-z][a-z0-9-]*$/.test(suite)) throw new QemuError(`'${suite}' is not a Debian suite name`);
  const root = opts.dir ?? cacheDir('qemu');
  const dir = path.join(root, suite);

  if (!opts.force) {
    const have = readProvisioned(dir, true);
    if (have) {
      // A copy made by an older vrnic gets the current wrapper; the root itself is unchanged.
      const wrapper = wrapperScript(path.join(dir, 'root'));
      if (fs.readFileSync(have.binary, 'utf8') !== wrapper) {
        fs.writeFileSync(have.binary, wrapper, { mode: 0o755 });
        progress(`[qemu] updated the wrapper ${have.binary}`);
      }
      const info = await probeQemu(have.binary).catch(() => undefined);
      if (info?.hasVfioUser) {
        progress(`[qemu] QEMU ${have.version} (${have.packageVersion}, ${suite}) is already provisioned: ${have.binary}`);
        return have;
      }
      progress(`[qemu] the provisioned QEMU in ${dir} does not run or lacks vfio-user-pci: provisioning again`);
    }
  }

  const mirror = opts.mirror ?? debianMirror(opts.aptSources);
  if (!(await hasCommand('mmdebstrap'))) {
    throw new QemuError("mmdebstrap is not installed: apt-get install mmdebstrap (Debian's tool that builds the QEMU root in vrnic's cache)");
  }
  fs.mkdirSync(root, { recursive: true });
  const work = fs.mkdtempSync(path.join(root, `.build-${suite}-`));
  const started = Date.now();
  try {
    const rootfs = path.join(work, 'root');
    progress(`[qemu] building a ${suite} root with ${QEMU_PACKAGE} from ${mirror} (mmdebstrap; about a minute)`);
    await runStreaming(
      'mmdebstrap',
      [
        '--variant=essential',
        `--include=${QEMU_PACKAGE}`,
        `--aptopt=APT::Default-Release "${suite}"`,
        suite.replace(/-backports$/, ''),
        rootfs,
        ...suiteSources(suite, mirror),
      ],
      (line) => progress(`[qemu] ${line}`),
    );
    const packageVersion = (await output('dpkg-query', [`--admindir=${path.join(rootfs, 'var/lib/dpkg')}`, '-W', '-f', '${Version}', QEMU_PACKAGE])).trim();

    // The wrapper names the final location, so write it for there and move the whole tree at once.
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(path.join(work, 'bin'));
    fs.writeFileSync(path.join(work, 'bin', QEMU_BINARY), wrapperScript(path.join(dir, 'root')), { mode: 0o755 });
    fs.chmodSync(work, 0o755); // mkdtemp made it private; the QEMU in it is for every user of the cache
    fs.renameSync(work, dir);

    const binary = path.join(dir, 'bin', QEMU_BINARY);
    const info = await probeQemu(binary);
    if (!info.hasVfioUser) {
      throw new QemuError(`${QEMU_PACKAGE} ${packageVersion} from ${suite} has no vfio-user-pci device; try --suite sid`);
    }
    const manifest: Manifest = { version: info.version, packageVersion, suite, mirror, builtAt: new Date().toISOString() };
    fs.writeFileSync(path.join(dir, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
    progress(`[qemu] QEMU ${info.version} (${packageVersion}) with vfio-user-pci ready in ${((Date.now() - started) / 1000).toFixed(0)} s: ${binary}`);
    return { dir, binary, ...manifest, reused: false };
  } catch (err) {
    fs.rmSync(work, { recursive: true, force: true });
    throw err;
  }
}

function hasCommand(cmd: string): Promise<boolean> {
  return new Promise((resolve) => execFile('sh', ['-c', `command -v ${cmd}`], (err) => resolve(!err)));
}

function output(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, stdout, stderr) => {
      if (err) reject(new QemuError(`${cmd} failed: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Runs a command, handing each line it prints to `line`; rejects with its last lines on failure. */
function runStreaming(cmd: string, args: readonly string[], line: (l: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    const tail: string[] = [];
    const take = (stream: NodeJS.ReadableStream) => {
      const lines = new LineSplitter((raw) => {
        const l = raw.trimEnd();
        if (!l) return;
        tail.push(l);
        if (tail.length > 20) tail.shift();
        line(l);
      });
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => lines.push(d));
    };
    take(child.stdout!);
    take(child.stderr!);
    child.on('error', (err) => reject(new QemuError(`${cmd}: ${err.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new QemuError(`${cmd} failed (${signal ?? `exit ${code}`}):\n${tail.join('\n')}`));
    });
  });
}
