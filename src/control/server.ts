// The control socket of a running daemon (`<socket>.ctl`, mode 0600): status and vanish, one JSON line each.
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import type { Daemon } from '../daemon';
import { moduleLogger } from '../log';
import { claimSocketPath } from '../socket-path';
import {
  ControlErrorCode,
  type ControlId,
  type ControlReply,
  type ControlRequest,
  encodeReply,
  LineSplitter,
  MAX_REQUEST_LINE,
  parseRequest,
  RequestError,
  type VanishMode,
  type VanishWhen,
} from './protocol';
import { vanish, type VanishResult } from './vanish';
import { deviceStatus, type DeviceStatusView } from './device-status';
import { isTraceSource, TraceVanishArmer, type FiredEvent, type VanishArmer } from './armer';

export type { VanishArmer, FiredEvent } from './armer';

/** The control socket path for a vfio-user socket path. */
export function controlPathFor(socketPath: string): string {
  return `${socketPath}.ctl`;
}

export interface ControlServerOptions {
  /** QEMU's QMP socket, for device_del in the orderly and surprise modes. */
  readonly qmpPath?: string;
  /** QEMU device id of the vfio-user-pci device (default DEFAULT_DEVICE_ID, qemu-config/args.ts). */
  readonly deviceId?: string;
  /** Default controlPathFor(daemon.socketPath). */
  readonly controlPath?: string;
  /** Treat SIGUSR1 as `vanish --mode surprise` (default true). */
  readonly sigusr1?: boolean;
  /**
   * End the process once a vanish has finished and its reply is written (default false: a
   * library user keeps its process; `vrnic serve` passes true).
   */
  readonly exitAfterVanish?: boolean;
  readonly deviceDeletedTimeoutMs?: number;
  /**
   * Arms `vanish` requests carrying `when` (vanish at a device event). Default: a TraceVanishArmer on the daemon's
   * device when it takes trace sinks (the NIC does); null refuses them as unsupported.
   */
  readonly armer?: VanishArmer | null;
  /** Accept a socket directory others can write to (as the daemon's --force). */
  readonly force?: boolean;
  readonly log?: Logger;
}

export interface ControlStatus {
  readonly pid: number;
  readonly socketPath: string;
  readonly controlPath: string;
  readonly transport: string;
  readonly state: string;
  readonly uptimeMs: number;
  readonly clientConnected: boolean;
  readonly transportStats: Record<string, unknown>;
  readonly qmpPath: string | null;
  /** The vanish under way or done, if any; an armed one says at what, and once fired, what fired it. */
  readonly vanish: {
    readonly mode: VanishMode;
    readonly phase: 'armed' | 'running' | 'done' | 'failed';
    readonly when?: VanishWhen;
    readonly fired?: FiredEvent;
  } | null;
  readonly device: DeviceStatusView;
}

type VanishPhase = 'armed' | 'running' | 'done' | 'failed';
interface VanishState {
  readonly mode: VanishMode;
  phase: VanishPhase;
  promise: Promise<VanishResult>;
  when?: VanishWhen;
  fired?: FiredEvent;
}

/** The reply to an armed vanish sent with `wait`: what fired it and the vanish's account. */
export interface ArmedVanishResult extends VanishResult {
  readonly fired: FiredEvent;
}

export interface ControlServer {
  readonly path: string;
  /** Resolves with the result of the first vanish (from a request, SIGUSR1 or vanish()). */
  readonly vanished: Promise<VanishResult>;
  /** Starts a vanish as a control request would; a second call returns the first one's promise. */
  vanish(mode: VanishMode): Promise<VanishResult>;
  close(): Promise<void>;
}

/**
 * Listens on the control socket of `daemon`. Call after Daemon.start; `vrnic serve --qmp PATH`
 * does: `await startControlServer(daemon, { qmpPath, exitAfterVanish: true })`.
 */
export async function startControlServer(daemon: Daemon, opts: ControlServerOptions = {}): Promise<ControlServer> {
  const log = opts.log ?? moduleLogger('control');
  const path = await claimSocketPath(opts.controlPath ?? controlPathFor(daemon.socketPath), { force: opts.force });
  const sockets = new Set<net.Socket>();
  let current: VanishState | null = null;
  let armed: { disarm(): void } | null = null;
  const armer = opts.armer === undefined ? (isTraceSource(daemon.device) ? new TraceVanishArmer(daemon.device) : null) : opts.armer;
  let resolveVanished!: (r: VanishResult) => void;
  const vanished = new Promise<VanishResult>((r) => (resolveVanished = r));
  let closed = false;

  const startVanish = (mode: VanishMode, fired?: { when: VanishWhen; event: FiredEvent }): Promise<VanishResult> => {
    if (current && current.phase !== 'armed' && current.phase !== 'failed') return current.promise;
    armed?.disarm();
    armed = null;
    const state: VanishState = { mode, phase: 'running', promise: vanished, when: fired?.when, fired: fired?.event };
    current = state;
    log.warn({ mode, fired: fired?.event }, fired ? 'armed vanish fired' : 'vanish requested');
    state.promise = vanish(daemon, mode, {
      qmp: opts.qmpPath,
      deviceId: opts.deviceId,
      deviceDeletedTimeoutMs: opts.deviceDeletedTimeoutMs,
      log,
    }).then(
      (result) => {
        state.phase = 'done';
        log.warn({ result }, 'vanished');
        resolveVanished(result);
        return result;
      },
      (err: Error) => {
        state.phase = 'failed';
        log.error({ err, mode }, 'vanish failed; still serving');
        throw err;
      },
    );
    return state.promise;
  };

  const status = (): ControlStatus => {
    const s = daemon.status();
    return {
      pid: s.pid,
      socketPath: s.socketPath,
      controlPath: path,
      transport: s.transport,
      state: s.state,
      uptimeMs: s.uptimeMs,
      clientConnected: s.transportStats.clientConnected,
      transportStats: { ...s.transportStats },
      qmpPath: opts.qmpPath ?? null,
      vanish: current ? { mode: current.mode, phase: current.phase, ...(current.when ? { when: current.when } : {}), ...(current.fired ? { fired: current.fired } : {}) } : null,
      device: deviceStatus(daemon.device),
    };
  };

  const send = (sock: net.Socket, reply: ControlReply): Promise<void> =>
    new Promise((resolve) => {
      if (sock.destroyed || !sock.writable) return resolve();
      sock.write(encodeReply(reply), () => resolve());
    });
  const fail = (sock: net.Socket, id: ControlId | null, code: ControlErrorCode, message: string) =>
    send(sock, { id, ok: false, error: { code, message } });

  const handle = async (sock: net.Socket, req: ControlRequest): Promise<void> => {
    const id = req.id ?? null;
    switch (req.cmd) {
      case 'ping':
        await send(sock, { id, ok: true, result: { pong: true } });
        return;
      case 'status':
        await send(sock, { id, ok: true, result: status() });
        return;
      case 'vanish': {
        if (current && current.phase !== 'failed' && current.phase !== 'armed') {
          await fail(sock, id, ControlErrorCode.Busy, `a ${current.mode} vanish is already ${current.phase}`);
          return;
        }
        if (req.when !== undefined) {
          if (!armer) {
            await fail(sock, id, ControlErrorCode.Unsupported, 'vanish "when" (at a device event) is not available in this daemon');
            return;
          }
          const mode = req.mode;
          const when = req.when;
          let firedBy: Promise<{ result: VanishResult; event: FiredEvent }>;
          try {
            armed?.disarm();
            let settle!: { resolve(v: { result: VanishResult; event: FiredEvent }): void; reject(e: Error): void };
            firedBy = new Promise((resolve, reject) => (settle = { resolve, reject }));
            // arm() throws for a spec it cannot take: that must reach the client as bad-request.
            armed = armer.arm(when, (event) => void startVanish(mode, { when, event }).then((result) => settle.resolve({ result, event }), settle.reject));
            current = { mode, phase: 'armed', promise: vanished, when };
            log.warn({ mode, when }, 'vanish armed');
          } catch (err) {
            await fail(sock, id, ControlErrorCode.BadRequest, (err as Error).message);
            return;
          }
          if (!req.wait) {
            firedBy.catch(() => undefined);
            await send(sock, { id, ok: true, result: { armed: true, mode, when } });
            return;
          }
          // With wait, the reply is the vanish's account once the event has fired and the vanish ran.
          try {
            const { result, event } = await firedBy;
            const reply: ArmedVanishResult = { ...result, fired: event };
            await send(sock, { id, ok: true, result: reply });
          } catch (err) {
            await fail(sock, id, ControlErrorCode.Failed, (err as Error).message);
          }
          return;
        }
        let result: VanishResult;
        try {
          result = await startVanish(req.mode);
        } catch (err) {
          await fail(sock, id, ControlErrorCode.Failed, (err as Error).message);
          return;
        }
        await send(sock, { id, ok: true, result });
        return;
      }
    }
  };

  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', (err) => log.debug({ err }, 'control client error'));
    const splitter = new LineSplitter(
      MAX_REQUEST_LINE,
      (line) => {
        let req: ControlRequest;
        try {
          req = parseRequest(line);
        } catch (err) {
          const e = err as RequestError;
          log.warn({ code: e.code, msg: e.message }, 'bad control request');
          void fail(sock, e.id, e.code, e.message);
          return;
        }
        handle(sock, req).catch((err: Error) => void fail(sock, req.id ?? null, ControlErrorCode.Failed, err.message));
      },
      () => {
        log.warn({ max: MAX_REQUEST_LINE }, 'control request line too long; skipped');
        void fail(sock, null, ControlErrorCode.LineTooLong, `request line longer than ${MAX_REQUEST_LINE} bytes; skipped up to its newline`);
      },
    );
    sock.on('data', (chunk: Buffer) => splitter.push(chunk));
  });

  // The socket must never exist with a wider mode, not even between bind() and chmod().
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(oldMask);
  }
  fs.chmodSync(path, 0o600);
  server.on('error', (err) => log.error({ err }, 'control socket failed'));
  log.info({ control: path, qmp: opts.qmpPath ?? null }, 'control socket listening');

  const onSigusr1 = () => {
    log.warn({ signal: 'SIGUSR1' }, 'SIGUSR1: vanish surprise');
    startVanish('surprise').catch(() => undefined);
  };
  if (opts.sigusr1 ?? true) process.on('SIGUSR1', onSigusr1);

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    armed?.disarm();
    process.off('SIGUSR1', onSigusr1);
    const done = new Promise<void>((r) => server.close(() => r()));
    for (const s of sockets) s.end();
    setTimeout(() => {
      for (const s of sockets) s.destroy();
    }, 500).unref();
    await done;
    try {
      fs.unlinkSync(path);
    } catch {
      // already gone
    }
  };

  // The control socket lives exactly as long as the daemon: whenever the daemon stops (signal,
  // transport failure, a vanish), the socket goes too. Only a vanish still running keeps it a
  // moment longer, so that its reply is written; a failed or armed vanish must not keep it at all,
  // or the listening socket holds the process alive and leaves <socket>.ctl behind.
  daemon.once('stopped', () => {
    const running = current?.phase === 'running' ? current.promise : null;
    if (!running) {
      void close();
      return;
    }
    const afterReply = () => new Promise((r) => setImmediate(r)).then(close);
    running.then(afterReply, afterReply);
  });
  void vanished.then(async () => {
    // Let the replies go out, then close; `vrnic serve` also ends the process.
    await new Promise((r) => setImmediate(r));
    await close();
    if (opts.exitAfterVanish) {
      // Anything still holding the event loop (a stuck transport thread) must not keep a vanished daemon alive.
      setTimeout(() => process.exit(0), 1000).unref();
    }
  });

  return { path, vanished, vanish: startVanish, close };
}
