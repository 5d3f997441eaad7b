// The vrnic daemon: one device, one transport, one socket; what `vrnic serve` and the TypeScript API start.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { PciDevice } from '../emulator/framework/device';
import { moduleLogger } from './log';
import { DEFAULT_DEVICE_ID, DEFAULT_ROOT_PORT_ID, pairedVmxnet3Arg, PVRDMA_DEVICE_PROPERTIES, rootPortArg, shellQuote, vfioUserDeviceJson } from '../qemu-config/args';
import { claimSocketPath, defaultSocketPath } from './socket-path';
import { createTransport, resolveTransport, type Transport, type TransportChoice, type TransportName, type TransportStats } from './vfio-user/transports/index';

export interface DaemonOptions {
  /** vfio-user socket path; defaults to defaultSocketPath(). */
  readonly socketPath?: string;
  readonly transport?: TransportChoice;
  readonly device: PciDevice;
  /** Socket file mode, default 0o600. */
  readonly socketMode?: number;
  /** Accept a socket directory that others can write to. */
  readonly force?: boolean;
  readonly log?: Logger;
}

export interface DaemonStatus {
  readonly pid: number;
  readonly socketPath: string;
  readonly transport: TransportName;
  readonly state: 'serving' | 'stopping' | 'stopped';
  readonly uptimeMs: number;
  readonly transportStats: TransportStats;
}

/** The QEMU -device argument (its value, JSON) that attaches a vfio-user server listening on socketPath. */
export function qemuDeviceArg(socketPath: string, id = DEFAULT_DEVICE_ID, bus = DEFAULT_ROOT_PORT_ID): string {
  return vfioUserDeviceJson(socketPath, { deviceId: id, rootPortId: bus });
}

/**
 * The QEMU arguments that attach the device: its hot-pluggable root port and the device on it,
 * as one shell-quoted line a user can paste after the rest of their QEMU command line.
 */
export function qemuAttachLine(socketPath: string, model: 'vrnic' | 'pvrdma' = 'vrnic'): string {
  if (model === 'pvrdma') {
    // vmw_pvrdma wants QEMU's vmxnet3 at function 0 of its slot; the device is function 1
    const dev = vfioUserDeviceJson(socketPath, { properties: PVRDMA_DEVICE_PROPERTIES });
    return ['-device', rootPortArg(), '-device', pairedVmxnet3Arg(), '-device', dev].map(shellQuote).join(' ');
  }
  return ['-device', rootPortArg(), '-device', qemuDeviceArg(socketPath)].map(shellQuote).join(' ');
}

/**
 * A running emulator. `Daemon.start` resolves once the socket accepts connections.
 * Events: 'client' (connected: boolean), 'stopped'.
 */
export class Daemon extends EventEmitter {
  readonly socketPath: string;
  readonly transport: Transport;
  readonly device: PciDevice;
  private readonly log: Logger;
  private readonly startedAt = Date.now();
  private state: DaemonStatus['state'] = 'serving';
  private stopping: Promise<void> | null = null;
  private failed: Error | null = null;

  private constructor(socketPath: string, transport: Transport, device: PciDevice, log: Logger) {
    super();
    this.socketPath = socketPath;
    this.transport = transport;
    this.device = device;
    this.log = log;
  }

  static async start(opts: DaemonOptions): Promise<Daemon> {
    const log = opts.log ?? moduleLogger('daemon');
    const requested = opts.socketPath ?? defaultSocketPath();
    const socketPath = await claimSocketPath(requested, { force: opts.force, createDir: opts.socketPath === undefined });
    const name = resolveTransport(opts.transport ?? 'auto');
    const transport = createTransport(name, {
      socketPath,
      socketMode: opts.socketMode ?? 0o600,
      device: opts.device,
      log,
    });
    const daemon = new Daemon(socketPath, transport, opts.device, log);
    transport.on('client', (connected: boolean) => daemon.emit('client', connected));
    transport.on('error', (err: Error) => {
      log.error({ err }, 'transport failed; stopping');
      daemon.failed = err;
      void daemon.stop();
    });
    await transport.start();
    // The attach line itself is not logged: inside a JSON log line it would arrive escaped and
    // could not be pasted. `vrnic serve` prints it on stdout; library users call qemuAttachLine.
    log.info({ socket: socketPath, transport: name, device: opts.device.name }, 'serving');
    return daemon;
  }

  /** The host failure that stopped the daemon, if one did. */
  get failure(): Error | null {
    return this.failed;
  }

  status(): DaemonStatus {
    return {
      pid: process.pid,
      socketPath: this.socketPath,
      transport: this.transport.name,
      state: this.state,
      uptimeMs: Date.now() - this.startedAt,
      transportStats: this.transport.stats(),
    };
  }

  /** Stops serving: drops the client, closes and unlinks the socket, releases the device. Idempotent. */
  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.state = 'stopping';
    this.stopping = (async () => {
      try {
        await this.transport.stop();
      } finally {
        this.device.close();
        this.state = 'stopped';
        this.log.info({ socket: this.socketPath }, 'stopped');
        this.emit('stopped');
      }
    })();
    return this.stopping;
  }
}
