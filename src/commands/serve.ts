// `vrnic serve`: runs the emulator until SIGTERM, SIGINT or SIGHUP.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { configureLogging, type LogLevel } from '../log';
import { Daemon, qemuAttachLine } from '../daemon';
import { defaultSocketPath, SocketPathError } from '../socket-path';
import type { TransportChoice } from '../vfio-user/transports/index';
import { loadDeviceConfig, type DeviceConfigResult } from '../device-config';
import { createPvrdma } from '../../emulator/pvrdma/index';
import { GUEST_MODELS, type GuestModel } from '../../guest/kit/pvrdma-kit';
import { createNic, IRQ_MODES, TraceFile, type IrqMode, type NicConfig } from '../../emulator/nic/index';
import { type Command, UsageError } from './command';
import { startControlServer, type ControlServer } from '../control/server';

const LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const TRANSPORTS: readonly TransportChoice[] = ['auto', 'libvfio-user', 'native'];

const help = `Usage: vrnic serve [flags]

Runs the emulated RDMA NIC and serves it over vfio-user until SIGTERM, SIGINT or SIGHUP
(exit 0; the socket and its control socket are removed). Once it accepts connections it
prints one line on stdout per device: the QEMU arguments that attach it, ready to paste. Logs
are JSON lines on stderr.

Several devices: give --socket once per device. Each device has its own socket, client and
control socket (<socket>.ctl: \`vrnic status\` and \`vrnic vanish\` act on that device only),
and all of them share one fabric (LIDs 1, 2, ... in --socket order), so QPs in different
guests reach each other. The process ends when every device has stopped or vanished.

Flags:
  --socket PATH         vfio-user socket to listen on; repeat for more devices
                        (default ${defaultSocketPath()}, in a private directory)
  --transport T         auto | libvfio-user | native (default auto: libvfio-user
                        when it loads, else the built-in TypeScript transport)
  --config FILE         device configuration, JSON (see docs/device.md, "Configuration")
  --model M             vrnic (default) | pvrdma: VMware's paravirtual RDMA function for the
                        upstream vmw_pvrdma driver (docs/pvrdma.md); --config and --trace are vrnic's
  --irq MODE            msix | msi | intx: the one interrupt capability the device offers
                        (overrides the config's "irq"; default msix). docs/device.md section 2
  --trace FILE          write every register access, admin command, doorbell and
                        interrupt as ndjson with timestamps to FILE
  --log-level L         fatal | error | warn | info | debug | trace | silent (default info)
  --pretty              human-readable logs (default only when stderr is a TTY)
  --socket-mode MODE    octal file mode of the socket (default 0600)
  --force               accept a socket directory that others can write to
  --qmp PATH            QEMU's QMP socket: lets \`vrnic vanish\` ask QEMU to device_del
                        (orderly, surprise). With several devices, once per --socket in
                        the same order (each device's QEMU). The control socket is the
                        socket path + .ctl; SIGUSR1 means \`vrnic vanish --mode surprise\`
                        for every device
  -h, --help            this text

Exit codes: 0 stopped by SIGTERM, SIGINT or SIGHUP; 1 a host failure; 2 bad flags, a bad config file, or a
socket path that is taken (live server, or not a socket).`;

function parseMode(text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) throw new UsageError(`--socket-mode: '${text}' is not an octal mode like 0600`);
  return parseInt(text, 8);
}

export const serveCommand: Command = {
  name: 'serve',
  summary: 'run the emulator on a vfio-user socket',
  help,
  async run(argv) {
    let values;
    try {
      ({ values } = parseArgs({
        args: argv,
        options: {
          socket: { type: 'string', multiple: true },
          transport: { type: 'string', default: 'auto' },
          config: { type: 'string' },
          irq: { type: 'string' },
          model: { type: 'string', default: 'vrnic' },
          trace: { type: 'string' },
          'log-level': { type: 'string', default: 'info' },
          pretty: { type: 'boolean' },
          'socket-mode': { type: 'string' },
          force: { type: 'boolean', default: false },
          qmp: { type: 'string', multiple: true },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const level = values['log-level'] as LogLevel;
    if (!LEVELS.includes(level)) throw new UsageError(`--log-level: '${level}' is not one of ${LEVELS.join(', ')}`);
    const transport = values.transport as TransportChoice;
    if (!TRANSPORTS.includes(transport)) throw new UsageError(`--transport: '${transport}' is not one of ${TRANSPORTS.join(', ')}`);
    const socketMode = values['socket-mode'] !== undefined ? parseMode(values['socket-mode']) : undefined;
    // undefined: the one default socket.
    const sockets: readonly (string | undefined)[] = values.socket?.length ? values.socket : [undefined];
    if (new Set(sockets).size !== sockets.length) throw new UsageError('--socket: the same path twice');
    const qmps = values.qmp ?? [];
    if (qmps.length > 0 && qmps.length !== sockets.length) {
      throw new UsageError(`--qmp: give it once per --socket (${sockets.length}), in the same order; got ${qmps.length}`);
    }

    let config: DeviceConfigResult;
    try {
      config = loadDeviceConfig(values.config);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const irq = values.irq as IrqMode | undefined;
    if (irq !== undefined && !IRQ_MODES.includes(irq)) throw new UsageError(`--irq: '${irq}' is not one of ${IRQ_MODES.join(', ')}`);
    const nicConfig: NicConfig = irq === undefined ? config.nic : Object.freeze({ ...config.nic, irq });
    if (values.trace !== undefined) {
      try {
        fs.writeFileSync(values.trace, '', { flag: 'a' });
      } catch (err) {
        throw new UsageError(`--trace ${values.trace}: cannot write it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
    }

    const log = configureLogging({ level, pretty: values.pretty });
    const trace = values.trace !== undefined ? new TraceFile(values.trace) : undefined;
    const model = values.model as GuestModel;
    if (!GUEST_MODELS.includes(model)) throw new UsageError(`--model: '${model}' is not one of ${GUEST_MODELS.join(', ')}`);
    if (model === 'pvrdma' && (values.config !== undefined || values.trace !== undefined)) throw new UsageError('--config and --trace are the vrnic model\'s; pvrdma takes --irq only');
    log.info({ config: config.source, irq: nicConfig.irq, devices: sockets.length }, 'device configured');
    // Handlers go in before the socket exists: a SIGTERM that lands while we start must still stop us cleanly.
    let signalled: NodeJS.Signals | null = null;
    let onSignal: (signal: NodeJS.Signals) => void = (signal) => {
      signalled = signal;
    };
    const handler = (signal: NodeJS.Signals) => onSignal(signal);
    // SIGHUP (the terminal closed) is a stop like the others: a daemon outliving its session
    // would keep the socket claimed with nobody to stop it.
    const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
    for (const s of STOP_SIGNALS) process.once(s, handler);

    // Every device of this process joins the process's one fabric when it is created.
    const daemons: Daemon[] = [];
    const controls: ControlServer[] = [];
    const single = sockets.length === 1;
    for (const [i, socketPath] of sockets.entries()) {
      const dlog = single ? log : log.child({ device: i });
      const device = model === 'pvrdma' ? createPvrdma({ irq: nicConfig.irq }, { log: dlog.child({ module: 'pvrdma' }) }) : createNic(nicConfig, { log, trace });
      let daemon: Daemon;
      try {
        daemon = await Daemon.start({ socketPath, transport, device, socketMode, force: values.force, log: dlog.child({ module: 'daemon' }) });
      } catch (err) {
        device.close();
        for (const d of daemons) await d.stop();
        trace?.close();
        if (err instanceof SocketPathError) throw new UsageError(err.message);
        throw err;
      }
      daemons.push(daemon);
      try {
        // One device: a vanish ends the process. Several: each vanish ends its own device, and
        // the process ends once all have (below); SIGUSR1 reaches every control server.
        controls.push(await startControlServer(daemon, { qmpPath: qmps[i], exitAfterVanish: single, force: values.force, log: dlog.child({ module: 'control' }) }));
      } catch (err) {
        for (const d of daemons) await d.stop();
        trace?.close();
        if (err instanceof SocketPathError) throw new UsageError(`control socket: ${err.message}`);
        throw err;
      }
    }
    if (!single) {
      void Promise.all(controls.map((c) => c.vanished)).then(() => {
        // As with one device: nothing left holding the event loop may keep a vanished daemon alive.
        setTimeout(() => process.exit(0), 1000).unref();
      });
    }
    // One plain line per device on stdout, apart from the logs on stderr: what to add to its QEMU's command line.
    for (const d of daemons) process.stdout.write(`${qemuAttachLine(d.socketPath, model)}\n`);
    log.info('attach it by adding the line printed on stdout to QEMU\'s command line (guest RAM must be a memory-backend-memfd with share=on; `vrnic qemu-args` prints a whole command line)');
    const code = await new Promise<number>((resolve) => {
      onSignal = (signal) => {
        log.info({ signal }, 'signal received; stopping');
        Promise.all(daemons.map((d) => d.stop())).then(
          () => resolve(0),
          (err) => {
            log.error({ err }, 'stop failed');
            resolve(1);
          },
        );
      };
      let running = daemons.length;
      for (const d of daemons) {
        d.once('stopped', () => {
          if (--running === 0) resolve(daemons.some((x) => x.failure) ? 1 : 0);
        });
      }
      if (signalled !== null) onSignal(signalled);
    });
    trace?.close();
    return code;
  },
};
