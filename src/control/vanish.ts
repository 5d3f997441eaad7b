// Making the device vanish from a running daemon: orderly (QEMU unplugs first), surprise (we die first), crash.
import type { Logger } from 'pino';
import type { Daemon } from '../daemon';
import { moduleLogger } from '../log';
import { DEFAULT_DEVICE_ID } from '../../qemu-config/args';
import { QmpClient } from '../qmp/client';
import type { VanishMode } from './protocol';

export interface VanishOptions {
  /** QEMU's QMP socket (or a connected client) for device_del; orderly needs it, surprise uses it when given. */
  readonly qmp?: string | QmpClient;
  /** The QEMU device id of our vfio-user-pci device (default DEFAULT_DEVICE_ID). */
  readonly deviceId?: string;
  /**
   * How long to wait for DEVICE_DELETED (default 60 s). A guest driver that blocks removal while a
   * context is open (no disassociate_ucontext) delays it until the guest program exits.
   */
  readonly deviceDeletedTimeoutMs?: number;
  readonly log?: Logger;
}

/** What happened, with host times (Date.now()) of each step so callers can compute timings. */
export interface VanishResult {
  readonly mode: VanishMode;
  readonly startedAtMs: number;
  /** When the vfio-user connection was dropped and the socket closed. */
  readonly servingStoppedAtMs: number | null;
  readonly deviceDelSentAtMs: number | null;
  /** When DEVICE_DELETED arrived (host clock). */
  readonly deviceDeletedAtMs: number | null;
  readonly deviceDeleted: boolean;
  /** Why device_del was not issued or DEVICE_DELETED did not come, when it did not. */
  readonly note?: string;
}

export class VanishError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VanishError';
  }
}

/**
 * Makes the daemon's device vanish. Resolves once the daemon has stopped serving (and, with QMP,
 * once QEMU removed the device or the wait timed out). 'crash' never resolves: the process is
 * killed with SIGKILL, as a card pulled from its slot says no goodbye.
 */
export async function vanish(daemon: Daemon, mode: VanishMode, opts: VanishOptions = {}): Promise<VanishResult> {
  const log = opts.log ?? moduleLogger('vanish');
  const startedAtMs = Date.now();
  if (mode === 'crash') {
    log.warn({ mode }, 'vanishing: SIGKILL to self');
    process.kill(process.pid, 'SIGKILL');
    // SIGKILL is delivered before the next instruction returns to JS in practice; never resolve.
    return new Promise<VanishResult>(() => undefined);
  }
  const deviceId = opts.deviceId ?? DEFAULT_DEVICE_ID;
  const timeoutMs = opts.deviceDeletedTimeoutMs ?? 60_000;
  if (mode === 'orderly' && opts.qmp === undefined) {
    throw new VanishError('orderly vanish needs QEMU\'s QMP socket (serve --qmp PATH) to ask for device_del');
  }

  let qmp: QmpClient | null = null;
  let ownQmp = false;
  const connectQmp = async (): Promise<QmpClient> => {
    if (opts.qmp instanceof QmpClient) return opts.qmp;
    ownQmp = true;
    return QmpClient.connect(opts.qmp as string, { timeoutMs: 5000 });
  };

  let servingStoppedAtMs: number | null = null;
  let deviceDelSentAtMs: number | null = null;
  let deviceDeletedAtMs: number | null = null;
  let note: string | undefined;
  try {
    if (mode === 'surprise') {
      // Drop first, synchronously: from here on every access QEMU forwards fails.
      daemon.transport.dropClient();
      log.warn({ mode }, 'vanishing: vfio-user client dropped');
      await daemon.stop();
      servingStoppedAtMs = Date.now();
      if (opts.qmp === undefined) {
        note = 'no QMP socket given: device_del left to whoever runs QEMU';
        return { mode, startedAtMs, servingStoppedAtMs, deviceDelSentAtMs, deviceDeletedAtMs, deviceDeleted: false, note };
      }
    }
    let accepted = false;
    try {
      qmp = await connectQmp();
      const sent = Date.now();
      await qmp.deviceDel(deviceId);
      accepted = true;
      deviceDelSentAtMs = sent;
      const event = await qmp.waitEvent('DEVICE_DELETED', (e) => e.data.device === deviceId, timeoutMs, sent);
      deviceDeletedAtMs = event.receivedAtMs;
      log.info({ mode, deviceId, ms: deviceDeletedAtMs - sent }, 'QEMU reported DEVICE_DELETED');
    } catch (err) {
      note = `device_del ${deviceId}: ${(err as Error).message}`;
      log.error({ err, mode, deviceId }, 'device_del did not complete');
      // Orderly promises QEMU unplugs first: when QEMU never took the request, keep serving.
      if (mode === 'orderly' && !accepted) throw new VanishError(note);
    }
    if (mode === 'orderly') {
      await daemon.stop();
      servingStoppedAtMs = Date.now();
    }
    return { mode, startedAtMs, servingStoppedAtMs, deviceDelSentAtMs, deviceDeletedAtMs, deviceDeleted: deviceDeletedAtMs !== null, note };
  } finally {
    if (ownQmp && qmp) qmp.close();
  }
}
