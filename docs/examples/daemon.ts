// Example: start the emulated NIC from a test suite, print the QEMU arguments that attach it, stop it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNic, Daemon, qemuAttachLine } from 'vrnic';

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-example-'));
  const daemon = await Daemon.start({ socketPath: path.join(dir, 'nic.sock'), transport: 'native', device: createNic() });
  try {
    // Resolves once the socket accepts connections: QEMU (or VfioUserClient) may connect now.
    console.log(`QEMU arguments: ${qemuAttachLine(daemon.socketPath)}`);
    const s = daemon.status();
    console.log(`state ${s.state}, transport ${s.transport}, client connected: ${s.transportStats.clientConnected}`);
  } finally {
    await daemon.stop(); // drops the client, removes the socket
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`stopped; socket removed: ${!fs.existsSync(daemon.socketPath)}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
