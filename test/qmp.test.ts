// QmpClient against a real QEMU: greeting, commands, errors, device_del with DEVICE_DELETED, QEMU exiting.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { flattenPci, QmpClient, QmpClosedError, QmpCommandError } from '../src/qmp/client';
import { skipping } from './helpers/skip';

// Any QEMU with q35 and pcie-root-port serves: Debian's 7.2 by default, VRNIC_QEMU when set.
const QEMU = process.env.VRNIC_QEMU ?? '/usr/bin/qemu-system-x86_64';
const haveQemu = fs.existsSync(QEMU);
if (!haveQemu) skipping('qmp tests', `no QEMU at ${QEMU} (set VRNIC_QEMU)`);
const qtest = haveQemu ? test : test.skip;

interface Vm {
  readonly proc: ChildProcess;
  readonly qmpPath: string;
  readonly exited: Promise<number | null>;
}

/**
 * A machine that runs no guest. Native PCIe hotplug (ACPI hotplug off) on an empty root port:
 * the slot stays powered off, so QEMU completes a device_del there without asking a guest.
 */
function startVm(): Vm {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-qmp-'));
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
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  void exited.then(() => fs.rmSync(dir, { recursive: true, force: true }));
  return { proc, qmpPath, exited };
}

/** query-pci lists a device behind a bridge only once the firmware numbered the buses: poll, bounded. */
async function listedSoon(qmp: QmpClient, id: string): Promise<boolean> {
  for (let i = 0; i < 300; i++) {
    if (flattenPci(await qmp.queryPci()).some((d) => d.qdev_id === id)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

async function withVm(fn: (vm: Vm, qmp: QmpClient) => Promise<void>): Promise<void> {
  const vm = startVm();
  const qmp = await QmpClient.connect(vm.qmpPath);
  try {
    await fn(vm, qmp);
  } finally {
    qmp.close();
    vm.proc.kill('SIGKILL');
    await vm.exited;
  }
}

qtest('connect reads the greeting and negotiates capabilities, so commands answer', async (t) => {
  await withVm(async (_vm, qmp) => {
    t.true(qmp.version.qemu.major >= 7);
    const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
    t.is(status.status, 'running');
    t.true(status.running);
  });
});

qtest('a command QEMU refuses rejects with its error class and the session goes on', async (t) => {
  await withVm(async (_vm, qmp) => {
    const err = await t.throwsAsync(qmp.deviceDel('no-such-device'), { instanceOf: QmpCommandError });
    t.is(err?.errorClass, 'DeviceNotFound');
    const status = await qmp.execute<{ status: string }>('query-status');
    t.is(status.status, 'running');
  });
});

qtest('device_del of a hot-plugged device ends in DEVICE_DELETED for its id, and it leaves query-pci', async (t) => {
  await withVm(async (_vm, qmp) => {
    await qmp.execute('device_add', { driver: 'e1000e', id: 'nic0', bus: 'rp1' });
    t.true(await listedSoon(qmp, 'nic0'), 'nic0 never showed in query-pci');
    const { sentAtMs, event } = await qmp.deviceDelAndWait('nic0', 10_000);
    t.is(event.event, 'DEVICE_DELETED');
    t.is(event.data.device, 'nic0');
    t.true(event.receivedAtMs >= sentAtMs);
    t.false(flattenPci(await qmp.queryPci()).some((d) => d.qdev_id === 'nic0'));
  });
});

qtest('events arrive on the async stream in order', async (t) => {
  await withVm(async (_vm, qmp) => {
    const stream = qmp.eventStream();
    const first = stream.next();
    await qmp.execute('device_add', { driver: 'e1000e', id: 'nic1', bus: 'rp1' });
    await qmp.deviceDel('nic1');
    const e = await first;
    t.false(e.done);
    t.is(e.value?.event, 'DEVICE_DELETED');
    await stream.return(undefined);
  });
});

qtest('when QEMU dies, a pending wait rejects with QmpClosedError instead of hanging', async (t) => {
  await withVm(async (vm, qmp) => {
    const waiting = qmp.waitEvent('DEVICE_DELETED', () => true, 60_000);
    vm.proc.kill('SIGKILL');
    await t.throwsAsync(waiting, { instanceOf: QmpClosedError });
    t.true(qmp.closed);
    await t.throwsAsync(qmp.execute('query-status'), { instanceOf: QmpClosedError });
  });
});

qtest('quit ends QEMU and resolves when the connection closes', async (t) => {
  const vm = startVm();
  const qmp = await QmpClient.connect(vm.qmpPath);
  await qmp.quit();
  t.true(qmp.closed);
  t.is(await vm.exited, 0);
});
