// The guest kit on Debian's own QEMU (7.2, no vfio-user client): the image builds, boots, loads every module and finds no device.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bootGuest, type BootResult } from '../src/testing/boot';
import { guestEvents, kernelProblems } from '../guest/kit/guest-log';
import { buildGuestImage, defaultKernelRelease, guestAppend, type GuestImage } from '../guest/kit/image';
import { cacheDir } from '../qemu-config/cache';
import { skipping } from './helpers/skip';

const DEBIAN_QEMU = '/usr/bin/qemu-system-x86_64';
const RELEASE = defaultKernelRelease();
const HEADERS = `/usr/src/linux-headers-${RELEASE}`;
const REPO = path.resolve(__dirname, '..', '..');

function missing(): string | undefined {
  if (!fs.existsSync(DEBIAN_QEMU)) return `${DEBIAN_QEMU} is missing (apt-get install qemu-system-x86)`;
  if (!fs.existsSync(path.join(HEADERS, 'Makefile'))) return `${HEADERS} is missing (apt-get install linux-headers-${RELEASE})`;
  for (const tool of ['apt-get', 'dpkg-deb', 'modinfo', 'make', 'gcc']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed`;
    }
  }
  return undefined;
}

const reason = missing();
if (reason) skipping('guest-image tests', reason);
const maybe = reason ? test.skip : test;

// One build and one boot, shared by the tests below (each checks one thing about it).
let built: Promise<GuestImage> | undefined;
function image(): Promise<GuestImage> {
  built ??= buildGuestImage({ progress: (l) => console.log(l) });
  return built;
}
let booted: Promise<{ image: GuestImage; boot: BootResult }> | undefined;
function boot(): Promise<{ image: GuestImage; boot: BootResult }> {
  booted ??= image().then(async (img) => {
    const logFile = path.join(os.tmpdir(), `vrnic-guest-image-${process.pid}.log`);
    fs.rmSync(logFile, { force: true });
    const result = await bootGuest({
      qemu: DEBIAN_QEMU,
      kernel: img.kernel,
      initrd: img.initrd,
      append: guestAppend({ waitDeviceSeconds: 2 }),
      consoleFile: logFile,
      timeoutMs: 240_000,
    });
    console.log(`guest console: ${logFile} (QEMU ran ${(result.elapsedMs / 1000).toFixed(1)} s)`);
    return { image: img, boot: result };
  });
  return booted;
}

maybe('the guest image builds from Debian packages with the driver, the helper and the test program', async (t) => {
  t.timeout(600_000);
  const img = await image();
  for (const f of [img.kernel, img.initrd, img.modules.vrnic, img.modules.pfnHelper, img.testProgram]) {
    t.true(fs.statSync(f).size > 0, f);
  }
  t.is(img.kernelRelease, RELEASE);
  t.true(execFileSync('modinfo', ['-F', 'vermagic', img.modules.vrnic], { encoding: 'utf8' }).startsWith(`${RELEASE} `));
  t.regex(execFileSync('modinfo', ['-F', 'parm', img.modules.vrnic], { encoding: 'utf8' }), /^bug:/m);
});

maybe('a second build with unchanged inputs reuses the cached image', async (t) => {
  t.timeout(600_000);
  const first = await image();
  const again = await buildGuestImage();
  t.true(again.cached);
  t.is(again.key, first.key);
  t.is(again.dir, first.dir);
});

maybe('a changed driver source gives a new cache key and a rebuild', async (t) => {
  t.timeout(600_000);
  await image(); // the shared build first: both use the machine's two cores
  const repo = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-guest-src-'));
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-guest-out-'));
  try {
    fs.cpSync(path.join(REPO, 'guest'), path.join(repo, 'guest'), { recursive: true });
    // The downloaded packages are reused; only the sources differ.
    fs.symlinkSync(path.join(cacheDir('guest'), 'debs'), path.join(out, 'debs'));
    const a = await buildGuestImage({ repoRoot: repo, outDir: out });
    fs.appendFileSync(path.join(repo, 'guest', 'driver', 'vrnic_main.c'), '\n/* changed */\n');
    const b = await buildGuestImage({ repoRoot: repo, outDir: out });
    t.false(b.cached);
    t.not(a.key, b.key);
  } finally {
    fs.rmSync(repo, { recursive: true, force: true });
    fs.rmSync(out, { recursive: true, force: true });
  }
});

maybe('the guest boots to /init and powers off by itself', async (t) => {
  t.timeout(600_000);
  const { boot: b } = await boot();
  t.false(b.timedOut, 'QEMU had to be killed');
  t.is(b.exitCode, 0, b.stderr);
  const events = guestEvents(b.console).filter((e) => e.source === 'init').map((e) => e.event);
  t.true(events.includes('boot'));
  t.true(events.includes('dmesg-end'));
  t.is(events[events.length - 1], 'poweroff');
});

maybe('ib_core, ib_uverbs, vrnic_pfn and vrnic all load in the guest', async (t) => {
  t.timeout(600_000);
  const { boot: b } = await boot();
  const modules = guestEvents(b.console).filter((e) => e.source === 'init' && e.event === 'module');
  t.deepEqual(
    modules.map((m) => [m.fields.name, m.fields.rc]),
    [
      ['ib_core', 0],
      ['ib_uverbs', 0],
      ['vrnic_pfn', 0],
      ['vrnic', 0],
    ],
  );
});

maybe('without a vrnic device the test program says so and exits 3', async (t) => {
  t.timeout(600_000);
  const { boot: b } = await boot();
  const ev = guestEvents(b.console);
  const noDevice = ev.find((e) => e.source === 'test' && e.event === 'no-device');
  t.truthy(noDevice, 'no no-device report');
  t.is(noDevice?.fields.pci_device_present, false);
  t.is(ev.find((e) => e.source === 'init' && e.event === 'test-exit')?.fields.code, 3);
});

maybe('the guest log has no Oops, WARN, BUG or unknown symbol', async (t) => {
  t.timeout(600_000);
  const { boot: b } = await boot();
  t.true(b.console.includes('VRNIC-INIT {"event":"dmesg-end"}'), 'the kernel log dump is missing');
  t.true(/vrnic_pfn: loading out-of-tree module/.test(b.console), 'the kernel log dump does not show our modules');
  t.deepEqual(kernelProblems(b.console), []);
});
