// The guest's kernel sources (the reference driver and the pfn helper) pass Linux 6.1's checkpatch --strict and sparse with nothing to report.
//
// Both tools come from Debian, not from the repository: checkpatch.pl and the two data files it
// reads are extracted from linux-source-6.1's tarball into a directory under the system's temp
// directory (never the work tree), and sparse is Debian's `sparse`, run by Kbuild with C=1 over
// a copy of the sources, so a lint run leaves no build output behind in guest/.
import test from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { defaultKernelRelease } from '../guest/kit/image';
import { skipping } from './helpers/skip';

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '..', '..');
const SOURCE_TARBALL = '/usr/src/linux-source-6.1.tar.xz';
const CHECKPATCH_FILES = ['scripts/checkpatch.pl', 'scripts/spelling.txt', 'scripts/const_structs.checkpatch'];
const HEADERS = `/usr/src/linux-headers-${defaultKernelRelease()}`;
/** The guest folders that hold kernel code (guest/uverbs-test is a user-space program). */
const KERNEL_DIRS = ['guest/driver', 'guest/pfn-helper'];

function kernelSources(): string[] {
  const out: string[] = [];
  for (const d of KERNEL_DIRS) {
    for (const e of fs.readdirSync(path.join(REPO, d))) {
      if (/\.(c|h)$/.test(e) && !e.endsWith('.mod.c')) out.push(path.join(REPO, d, e));
    }
  }
  return out.sort();
}

function hasCommand(name: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && fs.existsSync(path.join(dir, name)));
}

/** Extracts checkpatch.pl and its data files once per tarball version; returns the script's path. */
async function checkpatch(): Promise<string> {
  const st = fs.statSync(SOURCE_TARBALL);
  const dir = path.join(os.tmpdir(), `vrnic-checkpatch-6.1-${st.size}-${Math.floor(st.mtimeMs)}`);
  const script = path.join(dir, 'scripts', 'checkpatch.pl');
  if (CHECKPATCH_FILES.every((f) => fs.existsSync(path.join(dir, f)))) return script;
  const tmp = fs.mkdtempSync(`${dir}.partial-`);
  try {
    // The tarball's single top directory (linux-source-6.1/) is stripped.
    await run('tar', ['-xJf', SOURCE_TARBALL, '-C', tmp, '--strip-components=1', '--wildcards',
      ...CHECKPATCH_FILES.map((f) => `*/${f}`)], { maxBuffer: 1 << 20 });
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return script;
}

const checkpatchMissing = fs.existsSync(SOURCE_TARBALL)
  ? undefined
  : `${SOURCE_TARBALL} is missing (apt-get install linux-source-6.1)`;
if (checkpatchMissing) skipping('checkpatch of the guest kernel sources', checkpatchMissing);

(checkpatchMissing ? test.skip : test)('the guest kernel sources pass checkpatch --strict from Linux 6.1 with no error, warning or check', async (t) => {
  t.timeout(300_000);
  const script = await checkpatch();
  const files = kernelSources();
  t.true(files.some((f) => f.endsWith('vrnic_main.c')), 'the driver is among the files checked');
  // checkpatch exits non-zero on errors and warnings only; checks are counted from its totals.
  // It runs in its own directory so nothing it caches lands in the work tree.
  const res = await run('perl', [script, '--strict', '--no-tree', '--show-types', '-f', ...files], {
    cwd: path.dirname(path.dirname(script)),
    maxBuffer: 16 << 20,
  }).catch((err: { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? '' }));
  const totals = [...res.stdout.matchAll(/^total: (\d+) errors, (\d+) warnings, (\d+) checks/gm)];
  t.is(totals.length, files.length, `one total per file checked:\n${res.stdout}${res.stderr}`);
  const sum = totals.reduce((a, m) => [a[0] + Number(m[1]), a[1] + Number(m[2]), a[2] + Number(m[3])], [0, 0, 0]);
  t.log(`checkpatch --strict over ${files.length} files: ${sum[0]} errors, ${sum[1]} warnings, ${sum[2]} checks`);
  const findings = res.stdout.split('\n').filter((l) => /^(ERROR|WARNING|CHECK):/.test(l));
  t.deepEqual(findings, [], res.stdout);
  t.deepEqual(sum, [0, 0, 0], res.stdout);
});

const sparseMissing = !hasCommand('sparse')
  ? 'sparse is not installed (apt-get install sparse)'
  : !fs.existsSync(path.join(HEADERS, 'Makefile'))
    ? `${HEADERS} is missing (apt-get install linux-headers-${defaultKernelRelease()})`
    : undefined;
if (sparseMissing) skipping('sparse over the guest kernel modules', sparseMissing);

(sparseMissing ? test.skip : test)('sparse finds nothing in the guest kernel modules', async (t) => {
  t.timeout(600_000);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-sparse-'));
  try {
    let checked = 0;
    for (const d of KERNEL_DIRS) {
      const dir = path.join(work, path.basename(d));
      fs.mkdirSync(dir);
      for (const e of fs.readdirSync(path.join(REPO, d))) {
        if ((/\.(c|h)$/.test(e) && !e.endsWith('.mod.c')) || e === 'Makefile' || e === 'Kbuild') fs.copyFileSync(path.join(REPO, d, e), path.join(dir, e));
      }
      // C=1 runs sparse on every file Kbuild compiles; the copy is fresh, so that is all of them.
      const res = await run('make', ['-C', HEADERS, `M=${dir}`, 'C=1', 'modules'], { maxBuffer: 16 << 20 })
        .catch((err: { stdout?: string; stderr?: string; message: string }) => {
          t.fail(`make C=1 in ${d} failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
          return { stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
        });
      const out = `${res.stdout}${res.stderr}`;
      const sources = fs.readdirSync(dir).filter((e) => e.endsWith('.c') && !e.endsWith('.mod.c'));
      const checks = out.split('\n').filter((l) => /^\s*CHECK\s/.test(l));
      t.is(checks.length, sources.length, `sparse ran once per source file in ${d}:\n${out}`);
      checked += checks.length;
      const findings = out.split('\n').filter((l) => /: (warning|error):/.test(l));
      t.deepEqual(findings, [], `sparse or the compiler in ${d}:\n${findings.join('\n')}`);
    }
    t.log(`sparse over ${checked} source files: 0 findings`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});
