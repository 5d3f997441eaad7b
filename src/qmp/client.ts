// A QMP (QEMU Machine Protocol) client over a Unix socket: commands with ids, events, device_del.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { LineSplitter } from '../lines';

/** One asynchronous event from QEMU, e.g. DEVICE_DELETED. */
export interface QmpEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
  /** QEMU's timestamp, in milliseconds since the epoch. */
  readonly timestampMs: number;
  /** When this client read it (Date.now()), for timings measured on the host. */
  readonly receivedAtMs: number;
}

/** QEMU answered a command with {"error": {...}}. */
export class QmpCommandError extends Error {
  readonly errorClass: string;
  constructor(command: string, errorClass: string, desc: string) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpCommandError';
    this.errorClass = errorClass;
  }
}

/** The connection ended (QEMU exited or closed the monitor) before an answer came. */
export class QmpClosedError extends Error {
  constructor(what: string) {
    super(`QMP connection closed ${what}`);
    this.name = 'QmpClosedError';
  }
}

export class QmpTimeoutError extends Error {
  constructor(what: string, ms: number) {
    super(`QMP: no ${what} within ${ms} ms`);
    this.name = 'QmpTimeoutError';
  }
}

export interface QmpConnectOptions {
  /** Keep retrying connect() for this long: QEMU creates the socket a moment after it starts. Default 10 s. */
  readonly timeoutMs?: number;
}

interface Pending {
  readonly command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

export interface QmpVersion {
  readonly qemu: { readonly major: number; readonly minor: number; readonly micro: number };
  readonly package: string;
}

/** QMP's text is a stream of JSON objects each ending in CRLF; QEMU never puts a raw newline inside one. */
const MAX_LINE = 16 * 1024 * 1024;

/**
 * A connected, capability-negotiated QMP session.
 * Events: 'event' (QmpEvent), 'close' (once, when the connection ends for any reason).
 * When QEMU exits, every pending command and waitEvent rejects with QmpClosedError.
 */
export class QmpClient extends EventEmitter {
  readonly version: QmpVersion;
  private readonly sock: net.Socket;
  private readonly pending = new Map<number, Pending>();
  private readonly history: QmpEvent[] = [];
  private nextId = 1;
  private readonly lines = new LineSplitter((l) => {
    const line = l.trim();
    if (line.length > 0) this.onMessage(line);
  });
  private closedFlag = false;

  private constructor(sock: net.Socket, version: QmpVersion) {
    super();
    this.sock = sock;
    this.version = version;
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('error', () => undefined); // 'close' follows and does the cleanup
    sock.on('close', () => this.onClose());
  }

  /** Connects to QEMU's -qmp socket, reads the greeting and enters command mode. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    for (;;) {
      try {
        return await QmpClient.connectOnce(path, Math.max(deadline - Date.now(), 1));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const retryable = code === 'ENOENT' || code === 'ECONNREFUSED';
        if (!retryable || Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private static connectOnce(path: string, timeoutMs: number): Promise<QmpClient> {
    return new Promise<QmpClient>((resolve, reject) => {
      const sock = net.connect(path);
      sock.setEncoding('utf8');
      let text = '';
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new QmpTimeoutError('greeting', timeoutMs)), timeoutMs);
      const onData = (chunk: string) => {
        text += chunk;
        const nl = text.indexOf('\n');
        if (nl < 0) {
          if (text.length > MAX_LINE) fail(new Error('QMP greeting too long'));
          return;
        }
        let greeting: { QMP?: { version?: QmpVersion } };
        try {
          greeting = JSON.parse(text.slice(0, nl)) as typeof greeting;
        } catch {
          fail(new Error(`QMP: not a greeting: ${text.slice(0, 200)}`));
          return;
        }
        if (!greeting.QMP || !greeting.QMP.version) {
          fail(new Error(`QMP: not a greeting: ${text.slice(0, 200)}`));
          return;
        }
        settled = true;
        clearTimeout(timer);
        sock.off('data', onData);
        sock.off('error', fail);
        sock.off('close', onEarlyClose);
        const client = new QmpClient(sock, greeting.QMP.version);
        client.execute('qmp_capabilities').then(
          () => resolve(client),
          (err: Error) => {
            client.close();
            reject(err);
          },
        );
        const rest = text.slice(nl + 1);
        if (rest.length > 0) client.onData(rest);
      };
      const onEarlyClose = () => fail(new QmpClosedError('before the greeting'));
      sock.on('data', onData);
      sock.on('error', fail);
      sock.on('close', onEarlyClose);
    });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Runs a QMP command; resolves with its "return" value, rejects with QmpCommandError on "error". */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedFlag) return Promise.reject(new QmpClosedError(`before ${command}`));
    const id = this.nextId++;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg.arguments = args;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(JSON.stringify(msg) + '\r\n');
    });
  }

  /**
   * Resolves with the first event named `name` that satisfies `pred`, looking first at events
   * received since `sinceMs` (Date.now() scale; default: only new events), so a caller can issue
   * a command and then wait without losing an event that raced ahead of the command's reply.
   */
  waitEvent(name: string, pred: (e: QmpEvent) => boolean = () => true, timeoutMs = 10_000, sinceMs?: number): Promise<QmpEvent> {
    if (sinceMs !== undefined) {
      const seen = this.history.find((e) => e.receivedAtMs >= sinceMs && e.event === name && pred(e));
      if (seen) return Promise.resolve(seen);
    }
    if (this.closedFlag) return Promise.reject(new QmpClosedError(`while waiting for ${name}`));
    return new Promise<QmpEvent>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      const onEvent = (e: QmpEvent) => {
        if (e.event !== name || !pred(e)) return;
        done();
        resolve(e);
      };
      const onClose = () => {
        done();
        reject(new QmpClosedError(`while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        done();
        reject(new QmpTimeoutError(name, timeoutMs));
      }, timeoutMs);
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  /** Every event received so far, oldest first. */
  events(): readonly QmpEvent[] {
    return this.history;
  }

  /** An async stream of events from now on; ends when the connection closes. */
  async *eventStream(): AsyncGenerator<QmpEvent> {
    const queue: QmpEvent[] = [];
    let wake: (() => void) | null = null;
    const onEvent = (e: QmpEvent) => {
      queue.push(e);
      wake?.();
    };
    const onClose = () => wake?.();
    this.on('event', onEvent);
    this.on('close', onClose);
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift() as QmpEvent;
        if (this.closedFlag) return;
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
    } finally {
      this.off('event', onEvent);
      this.off('close', onClose);
    }
  }

  /** Asks QEMU to unplug device `id` (the guest may still have to agree, see deviceDelAndWait). */
  async deviceDel(id: string): Promise<void> {
    await this.execute('device_del', { id });
  }

  /**
   * device_del, then DEVICE_DELETED for that device (the event whose "device" is the id; QEMU
   * also sends one per QOM path without an id, e.g. for the device's sub-objects).
   * Resolves with the event and the host time the request was sent.
   */
  async deviceDelAndWait(id: string, timeoutMs = 10_000): Promise<{ readonly sentAtMs: number; readonly event: QmpEvent }> {
    const sentAtMs = Date.now();
    await this.deviceDel(id);
    const event = await this.waitEvent('DEVICE_DELETED', (e) => e.data.device === id, timeoutMs, sentAtMs);
    return { sentAtMs, event };
  }

  /** query-pci: the PCI tree as QEMU sees it. */
  queryPci(): Promise<QmpPciBus[]> {
    return this.execute<QmpPciBus[]>('query-pci');
  }

  /** Asks QEMU to exit; resolves when the connection closes (QEMU may close before answering). */
  async quit(): Promise<void> {
    if (this.closedFlag) return;
    const closed = new Promise<void>((r) => this.once('close', () => r()));
    this.execute('quit').catch(() => undefined);
    await closed;
  }

  /** Closes the connection; QEMU keeps running. */
  close(): void {
    this.sock.destroy();
  }

  private onData(chunk: string): void {
    this.lines.push(chunk);
    if (this.lines.pending > MAX_LINE) {
      // QEMU never sends this; treat it as a broken peer rather than buffering without bound.
      this.sock.destroy(new Error('QMP message too long'));
    }
  }

  private onMessage(line: string): void {
    let msg: {
      id?: unknown;
      return?: unknown;
      error?: { class?: string; desc?: string };
      event?: string;
      data?: Record<string, unknown>;
      timestamp?: { seconds: number; microseconds: number };
    };
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      return; // not ours to fix; QEMU only sends JSON
    }
    if (typeof msg.event === 'string') {
      const ts = msg.timestamp;
      const e: QmpEvent = {
        event: msg.event,
        data: msg.data ?? {},
        timestampMs: ts ? ts.seconds * 1000 + ts.microseconds / 1000 : Date.now(),
        receivedAtMs: Date.now(),
      };
      this.history.push(e);
      if (this.history.length > 1000) this.history.shift();
      this.emit('event', e);
      return;
    }
    if (typeof msg.id !== 'number') return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.error) p.reject(new QmpCommandError(p.command, msg.error.class ?? 'GenericError', msg.error.desc ?? ''));
    else p.resolve(msg.return);
  }

  private onClose(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    for (const p of this.pending.values()) p.reject(new QmpClosedError(`before ${p.command} answered`));
    this.pending.clear();
    this.emit('close');
  }
}

/** The parts of query-pci's answer vrnic reads. */
export interface QmpPciDevice {
  readonly bus: number;
  readonly slot: number;
  readonly function: number;
  readonly qdev_id: string;
  readonly class_info: { readonly class: number; readonly desc?: string };
  readonly id: { readonly vendor: number; readonly device: number };
  readonly regions: ReadonlyArray<{ readonly bar: number; readonly type: string; readonly address: number; readonly size: number }>;
  readonly pci_bridge?: { readonly devices?: readonly QmpPciDevice[] };
}

export interface QmpPciBus {
  readonly bus: number;
  readonly devices: readonly QmpPciDevice[];
}

/** Every device in a query-pci answer, bridges' children included. */
export function flattenPci(buses: readonly QmpPciBus[]): QmpPciDevice[] {
  const out: QmpPciDevice[] = [];
  const walk = (devs: readonly QmpPciDevice[]) => {
    for (const d of devs) {
      out.push(d);
      if (d.pci_bridge?.devices) walk(d.pci_bridge.devices);
    }
  };
  for (const b of buses) walk(b.devices);
  return out;
}
