// The control socket of a running daemon: status, vanish, and refusing bad requests while staying up.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { PciDevice } from '../emulator/framework/device';
import { ControlClient, ControlError, MAX_REQUEST_LINE, startControlServer, type ControlServer } from '../src/control/index';
import { Daemon } from '../src/daemon';
import { QmpClient } from '../src/qmp/client';
import { skipping } from './helpers/skip';

/** The smallest device the framework accepts: BAR0 of 4 KiB that reads zero; and a status() hook. */
function tinyDevice(): PciDevice & { status(): { state: string; uarPagesInUse: number; counters: Record<string, number> } } {
  return {
    name: 'tiny',
    identity: { vendorId: 0x1af4, deviceId: 0x10ff, subsystemVendorId: 0x1af4, subsystemId: 0, classCode: 0x020700, revision: 1 },
    capabilities: { pm: false, pcie: true },
    bars: [{ kind: 'trapped', index: 0, size: 4096, read: (_o, data) => data.fill(0), write: () => undefined }],
    attach: () => undefined,
    reset: () => undefined,
    close: () => undefined,
    status: () => ({ state: 'ready', uarPagesInUse: 3, counters: { doorbells: 7 } }),
  };
}

interface Running {
  readonly dir: string;
  readonly daemon: Daemon;
  readonly control: ControlServer;
}

async function startDaemon(qmpPath?: string): Promise<Running> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-ctl-'));
  const daemon = await Daemon.start({ socketPath: path.join(dir, 'v.sock'), transport: 'auto', device: tinyDevice() });
  const control = await startControlServer(daemon, { qmpPath, sigusr1: false });
  return { dir, daemon, control };
}

async function stopDaemon(r: Running): Promise<void> {
  await r.control.close();
  await r.daemon.stop();
  fs.rmSync(r.dir, { recursive: true, force: true });
}

test('status over the control socket reports the daemon, its client and the device model', async (t) => {
  const r = await startDaemon();
  const c = await ControlClient.connect(r.control.path);
  try {
    const s = await c.status();
    t.is(s.pid, process.pid);
    t.is(s.socketPath, r.daemon.socketPath);
    t.is(s.state, 'serving');
    t.false(s.clientConnected);
    t.is(s.device.state, 'ready');
    t.is(s.device.uarPagesInUse, 3);
    t.deepEqual(s.device.counters, { doorbells: 7 });
  } finally {
    c.close();
    await stopDaemon(r);
  }
});

test('the control socket sits beside the vfio-user socket with mode 0600', async (t) => {
  const r = await startDaemon();
  try {
    t.is(r.control.path, `${r.daemon.socketPath}.ctl`);
    const st = fs.statSync(r.control.path);
    t.true(st.isSocket());
    t.is(st.mode & 0o777, 0o600);
  } finally {
    await stopDaemon(r);
  }
});

test('an unknown command gets an error reply and the socket keeps answering', async (t) => {
  const r = await startDaemon();
  const c = await ControlClient.connect(r.control.path);
  try {
    const err = await t.throwsAsync(c.request({ cmd: 'reboot-the-world' }), { instanceOf: ControlError });
    t.is(err?.code, 'unknown-command');
    t.is((await c.status()).state, 'serving');
  } finally {
    c.close();
    await stopDaemon(r);
  }
});

test('malformed JSON gets a bad-json reply and the same connection keeps working', async (t) => {
  const r = await startDaemon();
  const c = await ControlClient.connect(r.control.path);
  try {
    c.writeRaw('{"cmd": "status", oops\n');
    const reply = await c.nextUnmatched();
    t.false(reply.ok);
    t.is(reply.ok ? '' : reply.error.code, 'bad-json');
    t.is((await c.status()).state, 'serving');
  } finally {
    c.close();
    await stopDaemon(r);
  }
});

test('a request missing its fields gets a bad-request reply naming what is missing', async (t) => {
  const r = await startDaemon();
  const c = await ControlClient.connect(r.control.path);
  try {
    const noCmd = await t.throwsAsync(c.request({ mode: 'surprise' }), { instanceOf: ControlError });
    t.is(noCmd?.code, 'bad-request');
    const noMode = await t.throwsAsync(c.request({ cmd: 'vanish' }), { instanceOf: ControlError });
    t.is(noMode?.code, 'bad-request');
    t.regex(noMode?.message ?? '', /mode/);
    const badMode = await t.throwsAsync(c.request({ cmd: 'vanish', mode: 'gently' }), { instanceOf: ControlError });
    t.is(badMode?.code, 'bad-request');
    t.is((await c.status()).state, 'serving');
  } finally {
    c.close();
    await stopDaemon(r);
  }
});

test('a request line over 64 KiB is refused once and the next line is read normally', async (t) => {
  const r = await startDaemon();
  const c = await ControlClient.connect(r.control.path);
  try {
    c.writeRaw(`{"cmd":"status","pad":"${'x'.repeat(MAX_REQUEST_LINE + 100)}"}\n`);
    const reply = await c.nextUnmatched();
    t.is(reply.ok ? '' : reply.error.code, 'line-too-long');
    t.is((await c.status()).state, 'serving');
    t.is(c.unmatched.length, 0);
  } finally {
    c.close();
    await stopDaemon(r);
  }
});

test('orderly vanish without a QMP socket is refused and the daemon keeps serving', async (t) => {
  const r = await startDaemon();
  const c = await ControlClient.connect(r.control.path);
  try {
    const err = await t.throwsAsync(c.vanish('orderly'), { instanceOf: ControlError });
    t.regex(err?.message ?? '', /qmp/i);
    t.is((await c.status()).state, 'serving');
  } finally {
    c.close();
    await stopDaemon(r);
  }
});

test('surprise vanish stops serving, removes both sockets and answers with its account', async (t) => {
  const r = await startDaemon();
  const c = await ControlClient.connect(r.control.path);
  try {
    const result = await c.vanish('surprise');
    t.is(result?.mode, 'surprise');
    t.not(result?.servingStoppedAtMs ?? null, null);
    t.false(result?.deviceDeleted);
    t.is(r.daemon.status().state, 'stopped');
    await c.whenClosed();
    t.false(fs.existsSync(r.daemon.socketPath));
    t.false(fs.existsSync(r.control.path));
  } finally {
    c.close();
    await stopDaemon(r);
  }
});

// Orderly and surprise against a real QEMU's QMP: an e1000e stands in for the vfio-user-pci
// device (Debian's QEMU has no vfio-user client); what is tested is the QMP side of vanish.
const QEMU = process.env.VRNIC_QEMU ?? '/usr/bin/qemu-system-x86_64';
const haveQemu = fs.existsSync(QEMU);
if (!haveQemu) skipping('control tests with QMP', `no QEMU at ${QEMU} (set VRNIC_QEMU)`);
const qtest = haveQemu ? test : test.skip;

async function qemuWithNic(dir: string): Promise<{ proc: ChildProcess; qmpPath: string; exited: Promise<unknown> }> {
  const qmpPath = path.join(dir, 'qmp.sock');
  const proc = spawn(
    QEMU,
    [
      '-M', 'q35', '-accel', 'tcg', '-nodefaults', '-display', 'none',
      '-global', 'ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off',
      '-device', 'pcie-root-port,id=rp1,slot=1,chassis=1',
      '-qmp', `unix:${qmpPath},server=on,wait=off`,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const qmp = await QmpClient.connect(qmpPath);
  // Hot-added into an unpowered slot: QEMU completes a device_del there without a guest.
  await qmp.execute('device_add', { driver: 'e1000e', id: 'nic0', bus: 'rp1' });
  qmp.close();
  return { proc, qmpPath, exited };
}

qtest('orderly vanish asks QEMU to device_del, sees DEVICE_DELETED, then stops serving', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-ctlq-'));
  const vm = await qemuWithNic(dir);
  const r = await startDaemon(vm.qmpPath);
  const c = await ControlClient.connect(r.control.path);
  try {
    const result = await c.vanish('orderly');
    t.true(result?.deviceDeleted);
    t.true((result?.deviceDeletedAtMs ?? Infinity) <= (result?.servingStoppedAtMs ?? -Infinity));
    t.is(r.daemon.status().state, 'stopped');
  } finally {
    c.close();
    vm.proc.kill('SIGKILL');
    await vm.exited;
    await stopDaemon(r);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

qtest('surprise vanish stops serving before it asks QEMU to device_del', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-ctlq-'));
  const vm = await qemuWithNic(dir);
  const r = await startDaemon(vm.qmpPath);
  const c = await ControlClient.connect(r.control.path);
  try {
    const result = await c.vanish('surprise');
    t.true(result?.deviceDeleted);
    t.true((result?.servingStoppedAtMs ?? Infinity) <= (result?.deviceDelSentAtMs ?? -Infinity));
  } finally {
    c.close();
    vm.proc.kill('SIGKILL');
    await vm.exited;
    await stopDaemon(r);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGUSR1 to `vrnic serve` makes the device vanish in surprise mode and the process exits', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-usr1-'));
  const sock = path.join(dir, 'v.sock');
  const cli = path.join(__dirname, '..', 'src', 'cli.js');
  const proc = spawn(process.execPath, [cli, 'serve', '--socket', sock, '--log-level', 'info'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  proc.stderr?.on('data', (b: Buffer) => (log += b.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  try {
    const c = await ControlClient.connect(`${sock}.ctl`, { timeoutMs: 30_000 });
    t.is((await c.status()).state, 'serving');
    c.close();
    proc.kill('SIGUSR1');
    t.is(await exited, 0);
    t.regex(log, /SIGUSR1/);
    t.regex(log, /"mode":"surprise"/);
    t.false(fs.existsSync(sock));
    t.false(fs.existsSync(`${sock}.ctl`));
  } finally {
    proc.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
