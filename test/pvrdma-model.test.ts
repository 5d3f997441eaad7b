// The pvrdma model driven in-process as vmw_pvrdma's probe drives it: shared region, commands, interrupts, bad input.
import test from 'ava';
import { pvrdmaAbi as abi } from '../emulator/pvrdma';
import { command, DSR, probe, setup, tick } from './pvrdma-support';

test('the capabilities are in the shared region when the DSRHIGH write returns, as vmw_pvrdma reads them right after', (t) => {
  const s = setup();
  void probe(s);
  const caps = s.mem(DSR + BigInt(abi.Dsr.caps));
  t.is(caps.readUInt8(abi.Caps.mode), abi.DEVICE_MODE_ROCE);
  t.is(caps.readUInt8(abi.Caps.gidTypes), abi.GID_TYPE_FLAG_ROCE_V1);
  t.is(caps.readUInt8(abi.Caps.physPortCnt), 1);
  t.is(caps.readUInt32LE(abi.Caps.maxUar), 16);
  t.is(s.reg.read(abi.Reg.Version), abi.PVRDMA_VERSION);
});

test('QUERY_PORT is answered in the response slot with the port ACTIVE, and the response interrupt follows', async (t) => {
  const s = setup();
  await probe(s);
  await tick();
  s.reg.write(abi.Reg.Imr, 0);
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  t.is(s.reg.read(abi.Reg.Err), 0);
  await tick();
  s.vectors.length = 0;
  const r = await command(s, abi.Cmd.QueryPort, (b) => b.writeUInt8(1, 16));
  t.is(r.readBigUInt64LE(0), 0x1234n);
  t.is(r.readUInt32LE(8), (abi.CMD_RESP_BIT + abi.Cmd.QueryPort) >>> 0);
  t.is(r.readUInt8(12), 0);
  t.is(r.readUInt32LE(16), abi.PORT_ACTIVE);
  t.deepEqual(s.vectors, [abi.Vector.Response]);
});

test('a command the driver does not wait for (DESTROY_PD) is acknowledged without an interrupt', async (t) => {
  const s = setup();
  await probe(s);
  await tick();
  s.reg.write(abi.Reg.Imr, 0);
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  const pd = (await command(s, abi.Cmd.CreatePd)).readUInt32LE(16);
  t.true(pd > 0);
  s.vectors.length = 0;
  const r = await command(s, abi.Cmd.DestroyPd, (b) => b.writeUInt32LE(pd, 16));
  t.is(r.readUInt8(12), 0);
  t.deepEqual(s.vectors, []);
  t.is(s.dev.objects.pds.size, 0);
});

test('a CREATE_QP naming a CQ that does not exist gets err set and creates nothing; the device goes on', async (t) => {
  const s = setup();
  await probe(s);
  await tick();
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  const pd = (await command(s, abi.Cmd.CreatePd)).readUInt32LE(16);
  const r = await command(s, abi.Cmd.CreateQp, (b) => {
    b.writeUInt32LE(pd, 24);
    b.writeUInt32LE(77, 28);
    b.writeUInt32LE(77, 32);
  });
  t.not(r.readUInt8(12), 0);
  t.is(s.dev.objects.qps.size, 0);
  t.is((await command(s, abi.Cmd.QueryPort, (b) => b.writeUInt8(1, 16))).readUInt8(12), 0);
});

test('without MSI-X the response sets ICR and the INTx level, and reading ICR clears both', async (t) => {
  const s = setup('intx');
  await probe(s);
  await tick();
  s.reg.write(abi.Reg.Imr, 0);
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  await command(s, abi.Cmd.QueryPort, (b) => b.writeUInt8(1, 16));
  t.true(s.level());
  t.is(s.reg.read(abi.Reg.Icr), 1 << abi.Vector.Response);
  t.false(s.level());
  t.is(s.reg.read(abi.Reg.Icr), 0);
});

test('a shared region outside guest memory fails the probe through ERR instead of crashing the device', (t) => {
  const s = setup();
  s.reg.write(abi.Reg.DsrLow, 0x1000);
  s.reg.write(abi.Reg.DsrHigh, 0x7);
  t.is(s.reg.read(abi.Reg.Err), 1);
  s.reg.write(abi.Reg.Ctl, abi.Ctl.Activate);
  t.is(s.reg.read(abi.Reg.Err), 1);
  t.true(s.dev.guestErrors.count() >= 2);
});
