// The VanishArmer on a real NIC: the vanish fires at the Nth matching device event, once, never after disarm; and through a daemon's control socket.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { PciDevice } from '../emulator/framework/device';
import { ControlClient, ControlError, startControlServer } from '../src/control/index';
import { Daemon } from '../src/daemon';
import { createNic } from '../emulator/nic';
import { TraceVanishArmer, type FiredEvent } from '../src/control/armer';
import { localAccess, TestDriver, until } from '../src/testing/nic-driver';

function setup() {
  const nic = createNic({});
  const { access, heap, ram } = localAccess(nic);
  const drv = new TestDriver(access, heap);
  return { nic, access, drv, close: () => { nic.close(); ram.close(); } };
}

test('an armed vanish fires at the second ALLOC_UAR, not at the first or at other commands', async (t) => {
  const { nic, drv, close } = setup();
  try {
    await drv.bringUp();
    const fired: FiredEvent[] = [];
    new TraceVanishArmer(nic).arm({ event: 'admin-command', opcode: 'ALLOC_UAR', nth: 2 }, (e) => fired.push(e));
    await drv.allocUar();
    await drv.createPd();
    await new Promise((r) => setImmediate(r));
    t.is(fired.length, 0);
    await drv.allocUar();
    await until(() => fired.length > 0, 'the armed vanish');
    t.is(fired[0].when, 'admin:ALLOC_UAR:2');
    t.like(fired[0].record, { kind: 'admin', op: 'ALLOC_UAR' });
    await drv.allocUar();
    await new Promise((r) => setImmediate(r));
    t.is(fired.length, 1, 'it fires once');
  } finally {
    close();
  }
});

test('an armed vanish fires at the Nth doorbell write', async (t) => {
  const { nic, access, drv, close } = setup();
  try {
    await drv.bringUp();
    const uar = await drv.allocUar();
    let fired: FiredEvent | null = null;
    new TraceVanishArmer(nic).arm({ event: 'doorbell', nth: 3 }, (e) => (fired = e));
    for (let i = 1; i <= 3; i++) {
      access.uar.writeUInt32LE(i, uar * 4096 + 0x100);
      await until(() => nic.counters().doorbells >= i, `doorbell ${i}`);
      await new Promise((r) => setImmediate(r));
      if (i < 3) t.is(fired, null, `fired early, at doorbell ${i}`);
    }
    await until(() => fired !== null, 'the armed vanish');
    t.like(fired, { when: 'doorbell:3' });
  } finally {
    close();
  }
});

test('reg:1 fires at the first BAR0 access after arming, and a disarmed vanish never fires', async (t) => {
  const { nic, access, close } = setup();
  try {
    const armer = new TraceVanishArmer(nic);
    const fired: FiredEvent[] = [];
    const disarmed = armer.arm({ event: 'register-access', reg: 'STATUS', nth: 1 }, (e) => fired.push(e));
    disarmed.disarm();
    armer.arm({ event: 'register-access', nth: 1 }, (e) => fired.push(e));
    await access.readReg(0x004);
    await access.readReg(0x044);
    await until(() => fired.length > 0, 'the armed vanish');
    await new Promise((r) => setImmediate(r));
    t.is(fired.length, 1);
    t.like(fired[0].record, { kind: 'reg', reg: 'MAGIC', op: 'read' });
  } finally {
    close();
  }
});

test('arming at an unknown event throws before anything is armed', (t) => {
  const { nic, close } = setup();
  try {
    t.throws(() => new TraceVanishArmer(nic).arm({ event: 'admin-command', opcode: 'FROB' }, () => undefined), { message: /unknown admin opcode/ });
  } finally {
    close();
  }
});

async function daemonWith(device: PciDevice) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-armer-'));
  const daemon = await Daemon.start({ socketPath: path.join(dir, 'v.sock'), transport: 'auto', device });
  const control = await startControlServer(daemon, { sigusr1: false });
  const client = await ControlClient.connect(control.path);
  return {
    daemon,
    control,
    client,
    async stop() {
      client.close();
      await control.close();
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

test('over the control socket, a vanish armed at reg:2 shows as armed, fires at the second BAR0 access and answers with what fired it', async (t) => {
  const nic = createNic({});
  const d = await daemonWith(nic);
  try {
    const { fired } = await d.client.armVanish('surprise', { event: 'register-access', nth: 2 });
    const st = await d.client.status();
    t.like(st.vanish, { mode: 'surprise', phase: 'armed', when: { event: 'register-access', nth: 2 } });
    const bar0 = nic.bars.find((b) => b.index === 0);
    if (bar0?.kind !== 'trapped') throw new Error('no trapped BAR0');
    bar0.read(0x004, Buffer.alloc(4));
    t.is((await d.client.status()).vanish?.phase, 'armed');
    bar0.read(0x008, Buffer.alloc(4));
    const r = await fired;
    t.like(r?.fired, { when: 'reg:2', record: { kind: 'reg', reg: 'NUM_UARS', op: 'read' } });
    t.not(r?.servingStoppedAtMs, null);
  } finally {
    await d.stop();
  }
});

test('over the control socket, an unknown event is refused as bad-request and nothing is armed', async (t) => {
  const d = await daemonWith(createNic({}));
  try {
    const err = await t.throwsAsync(d.client.armVanish('orderly', { event: 'admin-command', opcode: 'FROB' }), { instanceOf: ControlError });
    t.is(err?.code, 'bad-request');
    t.is((await d.client.status()).vanish, null);
  } finally {
    await d.stop();
  }
});

test('a daemon whose device has no trace refuses a vanish with when as unsupported', async (t) => {
  const tiny: PciDevice = {
    name: 'tiny',
    identity: { vendorId: 0x1af4, deviceId: 0x10ff, subsystemVendorId: 0x1af4, subsystemId: 0, classCode: 0x020700, revision: 1 },
    capabilities: { pm: false, pcie: true },
    bars: [{ kind: 'trapped', index: 0, size: 4096, read: (_o, data) => data.fill(0), write: () => undefined }],
    attach: () => undefined,
    reset: () => undefined,
    close: () => undefined,
  };
  const d = await daemonWith(tiny);
  try {
    const err = await t.throwsAsync(d.client.vanish('orderly', { when: { event: 'doorbell' } }), { instanceOf: ControlError });
    t.is(err?.code, 'unsupported');
  } finally {
    await d.stop();
  }
});
