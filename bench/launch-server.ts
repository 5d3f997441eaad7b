// Bench-only launcher: serves N NICs on N sockets from one process through the Daemon API, for the many-devices memory figure.
//
// `vrnic serve` serves one device per process; this puts N Daemons, each with its own NIC
// (createNic with the default configuration, as `vrnic serve` without --config), in one Node
// process, so bench/startup.ts can compare one process with N devices against N processes.
// It prints `listening device=NAME` once every socket accepts.
//
// Usage: node dist/bench/launch-server.js --transport native|libvfio-user --socket PATH [--socket PATH...]
import { parseArgs } from 'node:util';
import pino from 'pino';
import { createNic } from '../emulator/nic';
import { Daemon } from '../src/daemon';
import type { TransportChoice } from '../src/vfio-user/transports/index';
import { runMain } from './common';

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
    const device = createNic({}, { log });
    name = device.name;
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

runMain(module, 'launch-server', main, { stack: true });
