// Which QEMU every command runs (--qemu, VRNIC_QEMU, the provisioned one, PATH), the provisioner's pieces, and the interrupt mode `--irq auto` picks.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findQemu, probeQemu, QemuError, requireVfioUserQemu } from '../qemu-config/qemu';
import { debianMirror, parseAptSources, provisionedQemu, suiteSources } from '../qemu-config/provision';
import { chooseIrq, recordMsixUnplug } from '../qemu-config/msix-unplug';
import { skipping } from './helpers/skip';

const CLI = path.resolve(__dirname, '..', 'src', 'cli.js');

/** A temporary directory removed when the test ends. */
function tmp(t: { teardown(fn: () => void): void }, prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A stand-in qemu-system-x86_64 that answers --version and -device help as a QEMU of that version would. */
function fakeQemu(dir: string, version: string, vfioUser: boolean): string {
  fs.mkdirSync(dir, { recursive: true });
  const p = path.join(dir, 'qemu-system-x86_64');
  const devices = `name "virtio-net-pci", bus PCI${vfioUser ? '\\nname "vfio-user-pci", bus PCI, desc "VFIO over socket PCI device assignment"' : ''}`;
  fs.writeFileSync(p, `#!/bin/sh\ncase "$*" in *--version*) echo "QEMU emulator version ${version}";; *) printf '${devices}\\n';; esac\n`, { mode: 0o755 });
  return p;
}

/** A cache root holding a provisioned QEMU (manifest and wrapper) for a suite. */
function fakeProvisioned(cache: string, suite: string, version: string): string {
  const dir = path.join(cache, 'qemu', suite);
  const bin = fakeQemu(path.join(dir, 'bin'), version, true);
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ version, packageVersion: `1:${version}+ds-1`, suite, mirror: 'http://mirror.invalid/debian', builtAt: new Date().toISOString() }));
  return bin;
}

test('the --qemu flag wins over VRNIC_QEMU, the provisioned QEMU and PATH', (t) => {
  const d = tmp(t, 'vrnic-find-');
  const flag = fakeQemu(path.join(d, 'flag'), '11.1.3', true);
  const env = fakeQemu(path.join(d, 'env'), '11.1.3', true);
  fakeProvisioned(path.join(d, 'cache'), 'trixie-backports', '11.1.3');
  const onPath = path.join(d, 'path');
  fakeQemu(onPath, '7.2.0', false);
  t.deepEqual(findQemu({ flag, env: { VRNIC_QEMU: env, VRNIC_CACHE: path.join(d, 'cache'), PATH: onPath } }), { binary: flag, source: '--qemu' });
});

test('VRNIC_QEMU wins over the provisioned QEMU, which wins over PATH', (t) => {
  const d = tmp(t, 'vrnic-find-');
  const env = fakeQemu(path.join(d, 'env'), '11.1.3', true);
  const provisioned = fakeProvisioned(path.join(d, 'cache'), 'trixie-backports', '11.1.3');
  const onPath = path.join(d, 'path');
  fakeQemu(onPath, '7.2.0', false);
  const base = { VRNIC_CACHE: path.join(d, 'cache'), PATH: onPath };
  t.deepEqual(findQemu({ env: { ...base, VRNIC_QEMU: env } }), { binary: env, source: 'VRNIC_QEMU' });
  t.deepEqual(findQemu({ env: base }), { binary: provisioned, source: 'provisioned' });
  t.deepEqual(findQemu({ env: { VRNIC_CACHE: path.join(d, 'empty-cache'), PATH: onPath } }), { binary: path.join(onPath, 'qemu-system-x86_64'), source: 'PATH' });
});

test('a provisioned directory without its manifest is not taken for a provisioned QEMU', (t) => {
  const d = tmp(t, 'vrnic-find-');
  fakeProvisioned(path.join(d, 'cache'), 'sid', '11.1.3');
  fs.rmSync(path.join(d, 'cache', 'qemu', 'sid', 'manifest.json'));
  t.is(provisionedQemu({ dir: path.join(d, 'cache', 'qemu') }), undefined);
});

test('a --qemu or VRNIC_QEMU naming nothing runnable is an error, not a fall-through to another QEMU', (t) => {
  const d = tmp(t, 'vrnic-find-');
  fakeQemu(d, '11.1.3', true);
  t.throws(() => findQemu({ flag: '/nonexistent/qemu', env: { PATH: d } }), { instanceOf: QemuError, message: /--qemu=\/nonexistent\/qemu/ });
  t.throws(() => findQemu({ env: { VRNIC_QEMU: '/nonexistent/qemu', PATH: d } }), { instanceOf: QemuError, message: /VRNIC_QEMU=\/nonexistent\/qemu/ });
});

test('with no QEMU anywhere the error says how to provision one', async (t) => {
  const d = tmp(t, 'vrnic-nopath-');
  const env = { VRNIC_CACHE: path.join(d, 'cache'), PATH: d };
  t.is(findQemu({ env }), undefined);
  await t.throwsAsync(requireVfioUserQemu({ env }), { instanceOf: QemuError, message: /vrnic qemu provision/ });
});

test('a QEMU without vfio-user-pci is refused, naming vfio-user-pci and how to get a QEMU with it', async (t) => {
  const d = tmp(t, 'vrnic-old-');
  const old = fakeQemu(d, '7.2.19', false);
  await t.throwsAsync(requireVfioUserQemu({ flag: old, env: {} }), { instanceOf: QemuError, message: /QEMU 7\.2\.19, from --qemu\) has no vfio-user-pci device.*vrnic qemu provision/s });
});

const debianQemu = '/usr/bin/qemu-system-x86_64';
const hasDebianQemu = fs.existsSync(debianQemu) && !/version (1[0-9]|[2-9][0-9])\./.test(spawnSync(debianQemu, ['--version'], { encoding: 'utf8' }).stdout ?? '');
if (!hasDebianQemu) skipping('the bookworm-QEMU refusal test', `no pre-10 QEMU at ${debianQemu} (apt-get install qemu-system-x86)`);
(hasDebianQemu ? test : test.skip)("unplug-test with Debian bookworm's QEMU ends ERROR at once, saying why in one line, with no check table", (t) => {
  const started = Date.now();
  const r = spawnSync(process.execPath, [CLI, 'unplug-test', '--qemu', debianQemu], { encoding: 'utf8' });
  const ms = Date.now() - started;
  t.is(r.status, 3); // ERROR: nothing was judged
  const lines = r.stdout.trim().split('\n');
  t.deepEqual(lines.length, 2, r.stdout);
  t.regex(lines[0], /: ERROR$/);
  t.regex(lines[1], /^  run error: .*has no vfio-user-pci device.*vrnic qemu provision/);
  t.notRegex(r.stdout + r.stderr, /^\s+at /m); // no stack
  t.true(ms < 5000, `took ${ms} ms`); // node start-up included; the probe itself is a few tens of ms
});

const provisioned = provisionedQemu();
if (!provisioned) skipping('the provisioned-QEMU probe', 'no provisioned QEMU: run `vrnic qemu provision` (CI does)');
(provisioned ? test : test.skip)('the provisioned Debian QEMU runs and has vfio-user-pci', async (t) => {
  const info = await probeQemu(provisioned!.binary);
  t.true(info.hasVfioUser);
  t.is(info.version, provisioned!.version);
});

test("the Debian mirror is read from apt's sources in both formats, never the security archive", (t) => {
  const d = tmp(t, 'vrnic-apt-');
  const deb822 = path.join(d, 'debian.sources');
  fs.writeFileSync(
    deb822,
    'Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: http://main.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main contrib\n',
  );
  t.is(debianMirror([deb822]), 'http://main.example/debian');
  const oneLine = path.join(d, 'sources.list');
  fs.writeFileSync(oneLine, '# comment\ndeb [arch=amd64] https://other.example/apt stable main\ndeb http://one.example/debian bookworm main\n');
  t.is(debianMirror([oneLine]), 'http://one.example/debian');
  t.deepEqual(parseAptSources('Types: deb\nURIs: http://x/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n'), []);
  t.throws(() => debianMirror([path.join(d, 'missing.list')]), { instanceOf: QemuError, message: /--mirror/ });
});

test('a backports suite is fetched together with its base suite', (t) => {
  t.deepEqual(suiteSources('trixie-backports', 'http://m/debian'), ['deb http://m/debian trixie main', 'deb http://m/debian trixie-backports main']);
  t.deepEqual(suiteSources('sid', 'http://m/debian'), ['deb http://m/debian sid main']);
});

test('--irq auto picks MSI for a QEMU not on record as surviving an MSI-X unplug, and MSI-X once it is', (t) => {
  const d = tmp(t, 'vrnic-irq-');
  const qemu = { binary: fakeQemu(d, '11.1.3', true), version: '11.1.3' };
  const records = path.join(d, 'records');
  t.is(chooseIrq('auto', qemu, records).mode, 'msi');
  recordMsixUnplug(qemu, false, records);
  t.regex(chooseIrq('auto', qemu, records).reason, /aborted/);
  t.is(chooseIrq('auto', qemu, records).mode, 'msi');
  recordMsixUnplug(qemu, true, records);
  t.is(chooseIrq('auto', qemu, records).mode, 'msix');
  // Another build at the same path is another QEMU: its record does not carry over.
  fs.appendFileSync(qemu.binary, '# rebuilt\n');
  t.is(chooseIrq('auto', qemu, records).mode, 'msi');
  t.is(chooseIrq('intx', qemu, records).mode, 'intx');
});
