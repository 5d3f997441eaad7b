// ControlClient: talks to a running daemon's control socket (what `vrnic status`/`vrnic vanish` and test suites use).
import net from 'node:net';
import { LineSplitter } from '../lines';
import { type ControlErrorBody, type ControlId, type ControlReply, type VanishMode, type VanishWhen } from './protocol';
import type { ArmedVanishResult, ControlStatus } from './server';
import type { VanishResult } from './vanish';

/** The daemon answered with an error reply. */
export class ControlError extends Error {
  readonly code: string;
  constructor(body: ControlErrorBody) {
    super(body.message);
    this.name = 'ControlError';
    this.code = body.code;
  }
}

/** The daemon went away before answering (expected after a crash vanish). */
export class ControlClosedError extends Error {
  constructor() {
    super('control connection closed before the reply');
    this.name = 'ControlClosedError';
  }
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

export interface ControlConnectOptions {
  /** Keep retrying while the socket does not exist yet or refuses (default 0: one try). */
  readonly timeoutMs?: number;
}

export class ControlClient {
  private readonly pending = new Map<ControlId, Pending>();
  /** Replies without an id (to a line the daemon could not parse), oldest first. */
  readonly unmatched: ControlReply[] = [];
  private nextId = 1;
  private readonly lines = new LineSplitter((line) => this.onLine(line));
  private isClosed = false;
  private readonly closedPromise: Promise<void>;

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('error', () => undefined);
    this.closedPromise = new Promise((resolve) =>
      sock.on('close', () => {
        this.isClosed = true;
        for (const p of this.pending.values()) p.reject(new ControlClosedError());
        this.pending.clear();
        resolve();
      }),
    );
  }

  static async connect(path: string, opts: ControlConnectOptions = {}): Promise<ControlClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 0);
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(path);
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        });
        return new ControlClient(sock);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (!(code === 'ENOENT' || code === 'ECONNREFUSED') || Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Resolves when the daemon closes the connection. */
  whenClosed(): Promise<void> {
    return this.closedPromise;
  }

  /** Sends one request object (an id is added) and resolves with its result. */
  request<T = unknown>(body: Record<string, unknown>): Promise<T> {
    const id = this.nextId++;
    return this.send<T>({ ...body, id }, id);
  }

  /** Writes a raw line (tests use it for malformed requests); replies without an id land in `unmatched`. */
  writeRaw(text: string): void {
    this.sock.write(text);
  }

  /** The next reply without an id, e.g. to a malformed line. */
  async nextUnmatched(timeoutMs = 10_000): Promise<ControlReply> {
    const deadline = Date.now() + timeoutMs;
    while (this.unmatched.length === 0) {
      if (this.isClosed) throw new ControlClosedError();
      if (Date.now() > deadline) throw new Error(`no reply within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.unmatched.shift() as ControlReply;
  }

  status(): Promise<ControlStatus> {
    return this.request<ControlStatus>({ cmd: 'status' });
  }

  /**
   * Makes the device vanish. Resolves with the daemon's account once it is done; for 'crash'
   * the daemon dies without answering and this resolves with null once the connection drops.
   */
  async vanish(mode: VanishMode, opts: { when?: VanishWhen; wait?: boolean } = {}): Promise<VanishResult | null> {
    const body: Record<string, unknown> = { cmd: 'vanish', mode };
    if (opts.when) body.when = opts.when;
    if (opts.when && opts.wait) body.wait = true;
    if (mode !== 'crash') return this.request<VanishResult>(body);
    try {
      await this.request(body);
    } catch (err) {
      if (err instanceof ControlClosedError) return null;
      throw err;
    }
    return null;
  }

  /**
   * Arms the vanish at a device event (see src/control/when.ts). Resolves once armed; `fired`
   * resolves with what fired it and the vanish's account (null for crash, which never answers).
   */
  async armVanish(mode: VanishMode, when: VanishWhen): Promise<{ fired: Promise<ArmedVanishResult | null> }> {
    const id = this.nextId++;
    const fired = this.send<ArmedVanishResult>({ cmd: 'vanish', mode, when, wait: true, id }, id).catch((err: Error) => {
      if (mode === 'crash' && err instanceof ControlClosedError) return null;
      throw err;
    });
    fired.catch(() => undefined); // the caller awaits it; a refusal is thrown below
    // Requests are handled in order and a refusal is written before the next reply, so the status
    // shows the vanish armed (or already fired) unless arming failed.
    const first = await Promise.race([this.status().then((st) => ({ st })), fired.then(() => ({ st: null }))]);
    if (first.st !== null && first.st.vanish?.when === undefined) {
      // The refusal came in before the status reply; its rejection may still be a few promise hops away.
      await Promise.race([fired, new Promise((r) => setImmediate(r))]);
      throw new Error(`the daemon did not arm the vanish (vanish state: ${JSON.stringify(first.st.vanish)})`);
    }
    return { fired };
  }

  close(): void {
    this.sock.destroy();
  }

  private send<T>(msg: Record<string, unknown>, id: ControlId): Promise<T> {
    if (this.isClosed) return Promise.reject(new ControlClosedError());
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(JSON.stringify(msg) + '\n');
    });
  }

  private onData(chunk: string): void {
    this.lines.push(chunk);
  }

  private onLine(line: string): void {
    let reply: ControlReply;
    try {
      reply = JSON.parse(line) as ControlReply;
    } catch {
      return;
    }
    const p = reply.id === null || reply.id === undefined ? undefined : this.pending.get(reply.id);
    if (!p) {
      this.unmatched.push(reply);
      return;
    }
    this.pending.delete(reply.id as ControlId);
    if (reply.ok) p.resolve(reply.result);
    else p.reject(new ControlError(reply.error));
  }
}
