// `vrnic vanish`: makes a running daemon's device vanish (orderly, surprise or crash) over its control socket.
import { parseArgs } from 'node:util';
import { ControlClient } from '../control/client';
import { VANISH_MODES, type VanishMode } from '../control/protocol';
import { parseWhen, WHEN_SYNTAX, whenToJson, WhenError, formatWhen, type WhenSpec } from '../control/when';
import { defaultSocketPath } from '../socket-path';
import { type Command, UsageError } from './command';
import { controlTarget, unreachable } from './control-target';

const help = `Usage: vrnic vanish --mode MODE [--when EVENT [--wait]] [--socket PATH | --control PATH] [--json]

Makes the device of a running daemon vanish, so the guest's hot-unplug path runs.

Modes:
  orderly    ask QEMU (serve --qmp) to device_del, wait for DEVICE_DELETED, then stop serving
  surprise   stop serving at once (the vfio-user connection and every mapping closed, so
             QEMU's trapped accesses fail), then device_del through QMP if the daemon has it
  crash      the daemon is killed with SIGKILL: no goodbye to anyone; device_del is left to
             whoever runs QEMU

Flags:
  --mode MODE      orderly | surprise | crash (required)
  --when EVENT     arm the vanish to fire at a device event instead of at once; prints
                   "armed" and exits 0 once the daemon has armed it. EVENT:
                     ${WHEN_SYNTAX.replace(/\n/g, '\n                     ')}
  --wait           with --when: wait until the event fired and the vanish ran, then report
  --socket PATH    the daemon's vfio-user socket (default ${defaultSocketPath()});
                   its control socket is PATH.ctl
  --control PATH   the control socket itself
  --json           print the daemon's account (times of each step) as one JSON object
  -h, --help       this text

Exit codes: 0 the device vanished; 1 no daemon answered or the vanish failed; 2 bad flags.`;

export const vanishCommand: Command = {
  name: 'vanish',
  summary: 'make a running daemon\'s device vanish: orderly, surprise or crash',
  help,
  async run(argv) {
    let values: { socket?: string; control?: string; mode?: string; json?: boolean; when?: string; wait?: boolean };
    try {
      ({ values } = parseArgs({
        args: argv,
        options: {
          socket: { type: 'string' },
          control: { type: 'string' },
          mode: { type: 'string' },
          json: { type: 'boolean', default: false },
          when: { type: 'string' },
          wait: { type: 'boolean', default: false },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    if (values.mode === undefined) throw new UsageError(`--mode is required: one of ${VANISH_MODES.join(', ')}`);
    const mode = values.mode as VanishMode;
    if (!VANISH_MODES.includes(mode)) throw new UsageError(`--mode: '${values.mode}' is not one of ${VANISH_MODES.join(', ')}`);
    let when: WhenSpec | null = null;
    if (values.when !== undefined) {
      try {
        when = parseWhen(values.when);
      } catch (err) {
        if (err instanceof WhenError) throw new UsageError(`--when: ${err.message}`);
        throw err;
      }
    } else if (values.wait) {
      throw new UsageError('--wait goes with --when');
    }
    const path = controlTarget(values);
    let client: ControlClient;
    try {
      client = await ControlClient.connect(path);
    } catch (err) {
      process.stderr.write(`vrnic vanish: ${unreachable(path, err as Error)}\n`);
      return 1;
    }
    try {
      if (when !== null) {
        const { fired } = await client.armVanish(mode, whenToJson(when));
        if (!values.wait) {
          process.stdout.write(values.json ? JSON.stringify({ armed: true, mode, when: whenToJson(when) }) + '\n' : `armed: ${mode} vanish at ${formatWhen(when)}\n`);
          return 0;
        }
        const r = await fired;
        if (values.json) process.stdout.write(JSON.stringify(r ?? { mode, crashed: true }) + '\n');
        else if (r === null) process.stdout.write(`crash at ${formatWhen(when)}: the daemon is gone (SIGKILL)\n`);
        else process.stdout.write(`${mode} vanish fired at ${r.fired.when} (${JSON.stringify(r.fired.record)}); stopped serving${r.note ? `; ${r.note}` : ''}\n`);
        return 0;
      }
      const result = await client.vanish(mode);
      if (values.json) {
        process.stdout.write(JSON.stringify(result ?? { mode, crashed: true }) + '\n');
      } else if (result === null) {
        process.stdout.write('crash: the daemon is gone (SIGKILL)\n');
      } else {
        const parts = [`${mode}: stopped serving`];
        if (result.deviceDeletedAtMs !== null && result.deviceDelSentAtMs !== null) {
          parts.push(`DEVICE_DELETED ${result.deviceDeletedAtMs - result.deviceDelSentAtMs} ms after device_del`);
        }
        if (result.note) parts.push(result.note);
        process.stdout.write(parts.join('; ') + '\n');
      }
      return 0;
    } catch (err) {
      process.stderr.write(`vrnic vanish: ${(err as Error).message}\n`);
      return 1;
    } finally {
      client.close();
    }
  },
};
