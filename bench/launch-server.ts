// Bench-only launcher: serves a device on one or more sockets in one process through the Daemon API, for when `vrnic serve` cannot.
//
// Used by bench/ only where `vrnic serve` does not start (it is tried first), and for the
// many-devices-in-one-process memory measurement. The device is the NIC as `vrnic serve` builds
// it (src/device-config, default configuration) when that module loads; otherwise a stand-in
// with the NIC's 4 KiB BAR0 whose offset 0 reads as the VERSION register, as
// bench/c-server/server.c does. It prints `listening device=NAME` once every socket accepts.
//
// Usage: node dist/bench/launch-server.js --transport native|libvfio-user --socket PATH [--socket PATH...]
import { parseArgs } from 'node:util';
import pino, { type Logger } from 'pino';
import type { PciDevice, TrappedBar } from '../emulator/framework/device';
import { Daemon } from '../src/daemon';
import type { TransportChoice } from '../src/transports/index';
import { BENCH_BAR0_SIZE, BENCH_VERSION_VALUE } from './common';

function standInDevice(): PciDevice {
  const bar0: TrappedBar = {
    kind: 'trapped',
    index: 0,
    size: BENCH_BAR0_SIZE,
    read(offset: number, data: Buffer): void {
      data.fill(0);
      if (offset === 0 && data.length >= 4) data.writeUInt32LE(BENCH_VERSION_VALUE, 0);
    },
    write(): void {},
  };
  return {
    name: 'bench-stand-in',
    identity: { vendorId: 0x1de5, deviceId: 0x0001, subsystemVendorId: 0x1de5, subsystemId: 0x0001, classCode: 0x020700, revision: 0 },
    capabilities: { pm: false, pcie: true },
    bars: [bar0],
    attach(): void {},
    reset(): void {},
    close(): void {},
  };
}

/** What bench/ needs of src/device-config (the module `vrnic serve` builds its device with). */
interface DeviceConfigModule {
  loadDeviceConfig(file?: string): unknown;
  buildDevice(config: unknown, opts: { log: Logger }): PciDevice;
}

/** The NIC with its default configuration, or null (and why) when src/device-config is not there yet. */
function nicDevice(log: Logger): { device: PciDevice } | { reason: string } {
  let mod: DeviceConfigModule;
  try {
    mod = require('../src/device-config') as DeviceConfigModule;
  } catch (err) {
    return { reason: (err as Error).message.split('\n')[0] };
  }
  return { device: mod.buildDevice(mod.loadDeviceConfig(undefined), { log }) };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      transport: { type: 'string', default: 'native' },
      socket: { type: 'string', multiple: true },
    },
    strict: true,
  });
  const sockets = values.socket ?? [];
  if (sockets.length === 0) throw new Error('--socket is required');
  const log = pino({ level: 'warn' }, pino.destination(2));
  const daemons: Daemon[] = [];
  let name = '';
  for (const socketPath of sockets) {
    const nic = nicDevice(log);
    const device = 'device' in nic ? nic.device : standInDevice();
    name = 'device' in nic ? device.name : `${device.name}(${nic.reason.replace(/\s+/g, '_')})`;
    daemons.push(await Daemon.start({ socketPath, transport: values.transport as TransportChoice, device, force: true, log }));
  }
  process.stdout.write(`listening device=${name}\n`);
  return await new Promise<number>((resolve) => {
    const stop = () => {
      Promise.all(daemons.map((d) => d.stop())).then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

if (require.main === module) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`launch-server: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
