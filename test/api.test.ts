// The package's TypeScript API as an integration test suite uses it: start a daemon, script the device, make it vanish.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ControlClient, controlPathFor, createNic, Daemon, NIC_DEFAULTS, startControlServer, VfioUserClient, DisconnectedError } from '../src/index';

function socketIn(name: string): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-api-')), name);
}

test('a suite starts a daemon from the API and reads the NIC identity through the client', async (t) => {
  const daemon = await Daemon.start({ socketPath: socketIn('nic.sock'), transport: 'native', device: createNic() });
  const client = await VfioUserClient.connect(daemon.socketPath);
  try {
    t.is(await client.configRead(0x00, 2), NIC_DEFAULTS.vendorId);
    t.is(await client.configRead(0x02, 2), NIC_DEFAULTS.deviceId);
    t.is((await client.configRead(0x08, 4)) >>> 8, 0x020700, 'class: network controller, InfiniBand');
    t.true(daemon.status().transportStats.clientConnected);
  } finally {
    await client.close();
    await daemon.stop();
  }
  t.false(fs.existsSync(daemon.socketPath), 'stop removes the socket');
});

test('a surprise vanish from the control client drops the connected client at once', async (t) => {
  const daemon = await Daemon.start({ socketPath: socketIn('nic.sock'), transport: 'native', device: createNic() });
  const control = await startControlServer(daemon, {});
  const client = await VfioUserClient.connect(daemon.socketPath);
  const ctl = await ControlClient.connect(controlPathFor(daemon.socketPath));
  try {
    t.true((await ctl.status()).clientConnected);
    await ctl.vanish('surprise');
    await t.throwsAsync(() => client.configRead(0, 4), { instanceOf: DisconnectedError });
  } finally {
    ctl.close();
    await client.close().catch(() => undefined);
    await control.close();
    await daemon.stop();
  }
});
