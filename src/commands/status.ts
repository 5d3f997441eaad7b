// `vrnic status`: asks a running daemon over its control socket what it is doing.
import { parseArgs } from 'node:util';
import { ControlClient } from '../control/client';
import type { ControlStatus } from '../control/server';
import { defaultSocketPath } from '../socket-path';
import { type Command, UsageError } from './command';
import { controlTarget, unreachable } from './control-target';

const help = `Usage: vrnic status [--socket PATH | --control PATH] [--json]

Shows a running daemon's state: whether a vfio-user client (QEMU) is connected, the device
state, the UAR pages in use and the device's counters.

Flags:
  --socket PATH    the daemon's vfio-user socket (default ${defaultSocketPath()});
                   its control socket is PATH.ctl
  --control PATH   the control socket itself
  --json           print the daemon's answer as one JSON object
  -h, --help       this text

Exit codes: 0 answered; 1 no daemon answered; 2 bad flags.`;

function formatStatus(s: ControlStatus): string {
  const ts = s.transportStats as { clients?: number; messages?: number; errors?: number; dmaRegions?: number };
  const lines = [
    `vrnic pid ${s.pid}: ${s.state}, transport ${s.transport}, up ${(s.uptimeMs / 1000).toFixed(1)} s`,
    `  socket   ${s.socketPath}`,
    `  client   ${s.clientConnected ? 'connected' : 'not connected'} (clients served ${ts.clients ?? '?'}, messages ${ts.messages ?? '?'}, errors ${ts.errors ?? '?'}, DMA regions ${ts.dmaRegions ?? '?'})`,
    `  device   ${s.device.name}: state ${s.device.state ?? 'unknown'}, UAR pages in use ${s.device.uarPagesInUse ?? 'unknown'}`,
  ];
  const counters = Object.entries(s.device.counters);
  if (counters.length > 0) lines.push(`  counters ${counters.map(([k, v]) => `${k}=${v}`).join(' ')}`);
  lines.push(`  qmp      ${s.qmpPath ?? 'none (orderly vanish unavailable)'}`);
  if (s.vanish) lines.push(`  vanish   ${s.vanish.mode}: ${s.vanish.phase}`);
  return lines.join('\n');
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'show a running daemon: client, device state, UAR pages, counters',
  help,
  async run(argv) {
    let values: { socket?: string; control?: string; json?: boolean };
    try {
      ({ values } = parseArgs({
        args: argv,
        options: { socket: { type: 'string' }, control: { type: 'string' }, json: { type: 'boolean', default: false } },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const path = controlTarget(values);
    let client: ControlClient;
    try {
      client = await ControlClient.connect(path);
    } catch (err) {
      process.stderr.write(`vrnic status: ${unreachable(path, err as Error)}\n`);
      return 1;
    }
    try {
      const s = await client.status();
      process.stdout.write((values.json ? JSON.stringify(s) : formatStatus(s)) + '\n');
      return 0;
    } finally {
      client.close();
    }
  },
};
