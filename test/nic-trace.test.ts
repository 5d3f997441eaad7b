// The NIC's trace: what `vrnic serve --trace FILE` writes for the people who debug drivers with it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'ava';
import { createNic, TraceFile } from '../emulator/nic';
import { localAccess, TestDriver, until } from '../src/testing/nic-driver';

test('the trace file holds one ndjson record per register access, command, doorbell and interrupt', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-trace-'));
  const file = path.join(dir, 'trace.ndjson');
  const trace = new TraceFile(file);
  const nic = createNic({}, { trace });
  try {
    const { access, heap } = localAccess(nic);
    const drv = new TestDriver(access, heap);
    await drv.bringUp();
    const uar = await drv.allocUar();
    access.uar.writeUInt32LE(0x00010001, uar * 4096 + 0x100);
    await until(() => nic.counters().doorbells > 0, 'the doorbell');
    await access.readReg(0x3f0);
    trace.close();
    const records = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const kinds = new Set(records.map((r) => r.kind));
    for (const k of ['reg', 'admin', 'doorbell', 'irq', 'event', 'guest-error']) t.true(kinds.has(k), `no ${k} record`);
    t.true(records.every((r) => typeof r.t === 'string' && !Number.isNaN(Date.parse(r.t as string))));
    const admin = records.find((r) => r.kind === 'admin');
    t.like(admin, { op: 'ALLOC_UAR', statusName: 'OK', result0: uar });
    const ctrl = records.find((r) => r.kind === 'reg' && r.reg === 'CTRL' && r.op === 'write' && r.value === '0x1');
    t.truthy(ctrl);
  } finally {
    nic.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
