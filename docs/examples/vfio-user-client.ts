// Example: play QEMU's part with VfioUserClient: negotiate, list the regions, read config space and BAR0.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNic, Daemon, RegionIndex, VfioUserClient, VfioUserError } from 'vrnic';

const MAGIC = 0x004; // BAR0 register: "VNIC"

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-example-'));
  const daemon = await Daemon.start({ socketPath: path.join(dir, 'nic.sock'), transport: 'native', device: createNic() });
  // connect() negotiates the protocol version as QEMU does; connectRaw() leaves that to you.
  const client = await VfioUserClient.connect(daemon.socketPath);
  try {
    const info = await client.deviceInfo();
    console.log(`regions ${info.numRegions}, irq kinds ${info.numIrqs}`);
    for (const bar of [RegionIndex.Bar0, RegionIndex.Bar2, RegionIndex.Bar4]) {
      const r = await client.regionInfo(bar);
      console.log(`BAR${bar}: ${r.size} bytes${r.sparseAreas?.length ? ', mmappable' : ''}`);
    }
    console.log(`vendor 0x${(await client.configRead(0x00, 2)).toString(16)}`);
    await client.enableDevice();
    const magic = await client.regionRead(RegionIndex.Bar0, MAGIC, 4);
    console.log(`MAGIC ${magic.toString('latin1')}`);
    // The device's errors come back as VfioUserError with the errno the server sent.
    await client.regionRead(RegionIndex.Bar0, 0x1000, 4).catch((err: unknown) => {
      if (err instanceof VfioUserError) console.log(`read past BAR0: ${err.code}`);
    });
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
