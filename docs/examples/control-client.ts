// Example: a daemon's control socket from a test: ask its status, then make the device vanish as a surprise.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ControlClient, controlPathFor, createNic, Daemon, DisconnectedError, startControlServer, VfioUserClient } from 'vrnic';

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-example-'));
  const daemon = await Daemon.start({ socketPath: path.join(dir, 'nic.sock'), transport: 'native', device: createNic() });
  // The control socket is what `vrnic status` and `vrnic vanish` talk to: <socket>.ctl, mode 0600.
  const control = await startControlServer(daemon, {});
  const client = await VfioUserClient.connect(daemon.socketPath);
  const ctl = await ControlClient.connect(controlPathFor(daemon.socketPath));
  try {
    const s = await ctl.status();
    console.log(`status: ${s.state}, client connected ${s.clientConnected}, device ${s.device.name} ${s.device.state}`);
    // surprise: the daemon stops serving at once (no QMP here, so no device_del follows).
    const result = await ctl.vanish('surprise');
    console.log(`vanished: serving stopped ${result?.servingStoppedAtMs !== null}, device deleted ${result?.deviceDeleted}`);
    await client.configRead(0, 4).catch((err: unknown) => {
      if (err instanceof DisconnectedError) console.log('the client sees the device gone');
    });
  } finally {
    ctl.close();
    await client.close().catch(() => undefined);
    await control.close();
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
