// Example: a NIC with its own configuration (docs/device.md, "Configuration"), checked through its BAR0 registers.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNic, Daemon, NicConfigError, VfioUserClient } from 'vrnic';

const NUM_UARS = 0x008; // BAR0 register: UAR pages in BAR2
const NUM_VECTORS = 0x028; // BAR0 register: MSI-X vectors

async function main(): Promise<void> {
  // Any subset of the configuration; the rest takes NIC_DEFAULTS. Bad values throw NicConfigError.
  const nic = createNic({ numUars: 4, msixVectors: 6, deviceId: 0x7a02 });
  try {
    createNic({ numUars: 3 });
  } catch (err) {
    if (err instanceof NicConfigError) console.log(`refused: ${err.message}`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-example-'));
  const daemon = await Daemon.start({ socketPath: path.join(dir, 'nic.sock'), transport: 'native', device: nic });
  const client = await VfioUserClient.connect(daemon.socketPath);
  try {
    await client.enableDevice(); // memory decoding on: BAR0 answers
    console.log(`device id 0x${(await client.configRead(0x02, 2)).toString(16)}`);
    console.log(`NUM_UARS ${await client.barRead32(0, NUM_UARS)}, NUM_VECTORS ${await client.barRead32(0, NUM_VECTORS)}`);
  } finally {
    await client.close();
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
