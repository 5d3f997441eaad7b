// The NIC model driven in-process (no transport): register rules, config validation, queue index checks, the data path.
import test from 'ava';
import pino from 'pino';
import { DmaError } from '../emulator/framework/device';
import { createNic, NicConfigError, validateNicConfig } from '../emulator/nic';
import { Reg } from '../emulator/nic/regs';
import { command, localAccess, OP, ST, TestDriver, until } from '../src/testing/nic-driver';
import { NIC_CASES } from './nic-suite';

function setup(config: Record<string, unknown> = {}) {
  const nic = createNic(config);
  const local = localAccess(nic);
  const drv = new TestDriver(local.access, local.heap);
  return { nic, drv, ...local };
}

/** A pino logger whose lines land in `lines`, parsed. */
function capture(lines: Array<Record<string, unknown>>): pino.Logger {
  return pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
}

test('once attached, the NIC logs through the logger of its device context, not the one it was created with', (t) => {
  const early: Array<Record<string, unknown>> = [];
  const fromContext: Array<Record<string, unknown>> = [];
  const nic = createNic({}, { log: capture(early) });
  t.teardown(() => nic.close());
  nic.attach({
    dma: {
      read: (addr, length) => Promise.reject(new DmaError(addr, length, 'no guest memory in this test')),
      write: (addr, data) => Promise.reject(new DmaError(addr, data.length, 'no guest memory in this test')),
      isMapped: () => false,
    },
    irq: { trigger: () => false, setLevel: () => false },
    log: capture(fromContext).child({ device: 'vrnic' }),
  });
  const bar0 = nic.bars.find((b) => b.index === 0);
  if (bar0?.kind !== 'trapped') return t.fail('no trapped BAR0');
  // An offset outside the register map: a guest error, logged at warn.
  bar0.read(0x3f0, Buffer.alloc(4));
  t.deepEqual(early, []);
  t.deepEqual(
    fromContext.map((l) => [l.msg, l.device]),
    [
      ['NIC attached', 'vrnic'],
      ['read of an undefined BAR0 offset (reads 0)', 'vrnic'],
    ],
  );
});

test('a bad config file names every bad field', (t) => {
  const err = t.throws(() => validateNicConfig({ numUars: 12, maxQp: 70000, poll: { spin: 1 }, colour: 'red' }, 'nic.json'), { instanceOf: NicConfigError });
  t.true(err!.message.includes('nic.json'));
  t.deepEqual(
    err!.problems.map((p) => p.split(':')[0]),
    ['numUars', 'maxQp', 'poll.spin', 'colour'],
  );
});

test('a partial config takes the documented defaults for the rest', (t) => {
  const c = validateNicConfig({ numUars: 4, nodeGuid: '0x1122' });
  t.is(c.numUars, 4);
  t.is(c.nodeGuid, 0x1122n);
  t.is(c.msixVectors, 4);
  t.is(c.maxQpWr, 1024);
  t.is(c.poll.maxSleepMs, 10);
});

test('the interrupt mode defaults to msix, a config may name msi or intx, and anything else is refused', (t) => {
  t.is(validateNicConfig({}).irq, 'msix');
  t.is(validateNicConfig({ irq: 'intx' }).irq, 'intx');
  const err = t.throws(() => validateNicConfig({ irq: 'msi-x' }), { instanceOf: NicConfigError });
  t.regex(err!.problems[0]!, /^irq: expected one of msix, msi, intx/);
});

test('each interrupt mode offers only its capability: MSI-X with its BAR4, MSI rounded up to a power of two, or neither', (t) => {
  const msix = createNic({ irq: 'msix', msixVectors: 5 });
  const msi = createNic({ irq: 'msi', msixVectors: 5 });
  const intx = createNic({ irq: 'intx' });
  try {
    t.deepEqual(msix.capabilities.msix, { vectors: 5, bar: 4, tableOffset: 0, pbaOffset: 0x800 });
    t.is(msix.capabilities.msi, undefined);
    t.deepEqual(msi.capabilities.msi, { vectors: 8 });
    t.is(msi.capabilities.msix, undefined);
    t.is(intx.capabilities.msi, undefined);
    t.is(intx.capabilities.msix, undefined);
  } finally {
    msix.close();
    msi.close();
    intx.close();
  }
});

test('INT_CAUSE names each source that raised an interrupt until the driver writes 1 to clear it', async (t) => {
  const { nic, access } = setup({ irq: 'msi' });
  nic.raise(0, 'test');
  nic.raise(5, 'test'); // a completion vector
  t.is(await access.readReg(Reg.IntCause), 0b101);
  await access.writeReg(Reg.IntCause, 0b001);
  t.is(await access.readReg(Reg.IntCause), 0b100);
  nic.raise(1, 'test');
  await access.writeReg(Reg.Ctrl, 2); // RESET clears it
  t.is(await access.readReg(Reg.IntCause), 0);
  nic.close();
});

test('identity registers read as the datasheet says and undefined offsets read 0', async (t) => {
  const { nic, access } = setup({ numUars: 8 });
  t.is(await access.readReg(Reg.Version), 0x00010000);
  t.is(await access.readReg(Reg.Magic), 0x43494e56);
  t.is(await access.readReg(Reg.NumUars), 8);
  t.is(await access.readReg(0x3fc), 0);
  t.is(nic.counters().guestErrors, 1);
  nic.close();
});

test('a 2-byte BAR0 read returns all-ones and counts a guest error', (t) => {
  const { nic } = setup();
  const bar0 = nic.bars[0];
  if (bar0.kind !== 'trapped') return t.fail();
  const b = Buffer.alloc(2);
  bar0.read(0x004, b);
  t.deepEqual([...b], [0xff, 0xff]);
  t.is(nic.counters().guestErrors, 1);
  nic.close();
});

test('a 64-bit access reads two 32-bit registers, low first', (t) => {
  const { nic } = setup();
  const bar0 = nic.bars[0];
  if (bar0.kind !== 'trapped') return t.fail();
  const b = Buffer.alloc(8);
  bar0.read(0x000, b);
  t.is(b.readUInt32LE(0), 0x00010000);
  t.is(b.readUInt32LE(4), 0x43494e56);
  nic.close();
});

test('enable with an unmapped admin queue goes FATAL with code 1', async (t) => {
  const { nic, access } = setup();
  await access.writeReg(Reg.AsqBaseLo, 0x1000);
  await access.writeReg(Reg.AsqSize, 16);
  await access.writeReg(Reg.Ctrl, 1);
  t.is(await access.readReg(Reg.Status), 2);
  t.is(await access.readReg(Reg.FatalCode), 1);
  await access.writeReg(Reg.Ctrl, 2);
  t.is(await access.readReg(Reg.Status), 0);
  t.is(await access.readReg(Reg.FatalCode), 0);
  nic.close();
});

test('an ASQ_TAIL more than ASQ_SIZE ahead is fatal code 3', async (t) => {
  const { nic, access, drv } = setup();
  t.is(await drv.bringUp(), 1);
  await access.writeReg(Reg.AsqTail, 1000);
  t.is(await access.readReg(Reg.Status), 2);
  t.is(await access.readReg(Reg.FatalCode), 3);
  nic.close();
});

test('enabling posts PORT_STATE_CHANGE on the event queue and raises vector 1', async (t) => {
  const { nic, access, drv } = setup();
  await drv.bringUp();
  const ev = await drv.nextEvent();
  t.deepEqual(ev, { type: 1, data0: 1, data1: 4 });
  await until(() => access.irqCount(1) > 0, 'vector 1');
  t.pass();
  nic.close();
});

test('the ACQ wraps with a flipped phase', async (t) => {
  const { nic, drv } = setup();
  await drv.bringUp();
  const phases: number[] = [];
  for (let i = 0; i < 20; i++) phases.push((await drv.ok(command(OP.CREATE_PD, drv.nextCmdId()))).phase);
  t.deepEqual(phases, [...Array(16).fill(1), 0, 0, 0, 0]);
  nic.close();
});

test('NOP WQEs rung on an RTS QP complete in order in the send CQ and the armed CQ raises its vector', async (t) => {
  const { nic, access, drv } = setup();
  await drv.bringUp();
  const uar = await drv.allocUar();
  const pd = await drv.createPd();
  const cq = await drv.createCq(uar, 16, 1);
  const qp = await drv.createQp(pd, cq);
  for (const s of [1, 2, 3]) t.is((await drv.modifyQp(qp.qpn, s)).status, ST.OK);
  drv.armCq(cq, 0);
  for (let i = 0; i < 3; i++) drv.postNop(qp, i, 100n + BigInt(i));
  drv.ringSq(qp, 3);
  await until(() => drv.cqe(cq, 2) !== null, 'the third CQE');
  t.deepEqual(
    [0, 1, 2].map((i) => drv.cqe(cq, i)!.wrId),
    [100n, 101n, 102n],
  );
  await until(() => access.irqCount(3) === 1, 'vector 3');
  t.is(drv.cqe(cq, 0)!.status, 0);
  t.is(drv.cqe(cq, 0)!.qpn, qp.qpn);
  nic.close();
});

test('a doorbell on an unallocated UAR page is counted and logged as a guest error', async (t) => {
  const { nic, access, drv } = setup();
  await drv.bringUp();
  await drv.allocUar();
  const before = nic.counters();
  access.uar.writeUInt32LE(0x10001, 5 * 4096);
  await until(() => nic.counters().doorbells > before.doorbells, 'the doorbell');
  t.is(nic.counters().guestErrors, before.guestErrors + 1);
  nic.close();
});

test('reset frees every object and the UAR pages read all-ones', async (t) => {
  const { nic, access, drv } = setup();
  await drv.bringUp();
  const uar = await drv.allocUar(2);
  const pd = await drv.createPd();
  const cq = await drv.createCq(uar);
  await drv.createQp(pd, cq);
  access.uar.writeUInt32LE(0xabcd, uar * 4096 + 0x900);
  t.deepEqual(nic.status().objects, { uarPages: 2, pds: 1, cqs: 1, qps: 1, mrs: 0, ahs: 0 });
  await access.writeReg(Reg.Ctrl, 2);
  t.deepEqual(nic.status().objects, { uarPages: 0, pds: 0, cqs: 0, qps: 0, mrs: 0, ahs: 0 });
  t.is(access.uar.readUInt32LE(uar * 4096 + 0x900), 0xffffffff);
  nic.close();
});

// The same behaviours the client-driven tests check, in-process: a failure here points at the model, not the transport.
for (const [title, body] of NIC_CASES) {
  test(`in-process: ${title}`, async (t) => {
    const { nic, drv, access, heap } = setup({ numUars: 8 });
    try {
      await body(t, { nic, drv, access, heap, unmappedAddr: 0x4000_0000n, transportReset: async () => nic.reset() });
    } finally {
      nic.close();
    }
  });
}

test('with the ACQ full the device waits for ACQ_HEAD instead of overwriting completions', async (t) => {
  const nic = createNic({});
  const { access, heap } = localAccess(nic);
  const drv = new TestDriver(access, heap, 16, 2, 16);
  try {
    await drv.bringUp();
    for (let i = 0; i < 3; i++) drv.dev.memWrite(drv.asq + BigInt(64 * i), command(OP.CREATE_PD, 100 + i));
    await access.writeReg(Reg.AsqTail, 3);
    await until(() => nic.admin.acqTail === 2, 'two completions');
    // The third waits: ASQ_HEAD stays at 2 until the driver frees an ACQ slot.
    t.is(await access.readReg(Reg.AsqHead), 2);
    t.is(await access.readReg(Reg.AcqTail), 2);
    await access.writeReg(Reg.AcqHead, 1);
    // Second pass over the 2-entry ring: slot 0 again, phase 0.
    await until(() => (drv.dev.memRead(drv.acq + 6n, 2).readUInt16LE(0) & 1) === 0, 'the third completion');
    t.is(drv.dev.memRead(drv.acq, 16).readUInt32LE(0), 102);
    t.is(nic.status().objects.pds, 3);
  } finally {
    nic.close();
  }
});

test('a completion on a full CQ puts the CQ in error and posts CQ_ERROR', async (t) => {
  const { nic, drv } = setup();
  try {
    await drv.bringUp();
    t.is((await drv.nextEvent()).type, 1);
    const uar = await drv.allocUar();
    const pd = await drv.createPd();
    const cq = await drv.createCq(uar, 2);
    const qp = await drv.createQp(pd, cq);
    for (const s of [1, 2, 3]) await drv.modifyQp(qp.qpn, s);
    for (let i = 0; i < 3; i++) drv.postNop(qp, i, BigInt(i));
    drv.ringSq(qp, 3);
    t.deepEqual(await drv.nextEvent(), { type: 3, data0: cq.cqn, data1: 1 });
    t.not(drv.cqe(cq, 1), null);
  } finally {
    nic.close();
  }
});

test('an SQ doorbell claiming more WQEs than the SQ holds moves the QP to ERR with QP_FATAL', async (t) => {
  const { nic, drv } = setup();
  try {
    await drv.bringUp();
    await drv.nextEvent();
    const uar = await drv.allocUar();
    const pd = await drv.createPd();
    const cq = await drv.createCq(uar);
    const qp = await drv.createQp(pd, cq, 16);
    drv.ringSq(qp, 17);
    t.deepEqual(await drv.nextEvent(), { type: 4, data0: qp.qpn, data1: 2 });
    t.is(nic.objects.qps.get(qp.qpn)?.state, 6);
  } finally {
    nic.close();
  }
});

test('a command submitted right after a reset that interrupted another command still completes', async (t) => {
  const nic = createNic({});
  const { access, heap } = localAccess(nic);
  const drv = new TestDriver(access, heap);
  try {
    await drv.bringUp();
    drv.dev.memWrite(drv.asq, command(OP.CREATE_PD, 1));
    // No awaits between these writes: the first command's loop is parked on its DMA read while
    // the device is reset, re-enabled and rung again.
    void access.writeReg(Reg.AsqTail, 1);
    void access.writeReg(Reg.Ctrl, 2);
    drv.dev.memWrite(drv.acq, Buffer.alloc(16 * drv.acqSize));
    void drv.writeBase(Reg.AsqBaseLo, drv.asq);
    void access.writeReg(Reg.AsqSize, drv.asqSize);
    void drv.writeBase(Reg.AcqBaseLo, drv.acq);
    void access.writeReg(Reg.AcqSize, drv.acqSize);
    void access.writeReg(Reg.Ctrl, 1);
    drv.dev.memWrite(drv.asq, command(OP.CREATE_PD, 2));
    void access.writeReg(Reg.AsqTail, 1);
    await until(() => (drv.dev.memRead(drv.acq + 6n, 2).readUInt16LE(0) & 1) === 1, 'the completion after the reset');
    t.is(drv.dev.memRead(drv.acq, 4).readUInt32LE(0), 2);
    t.is(nic.status().objects.pds, 1);
  } finally {
    nic.close();
  }
});
