// The control socket's wire format: one JSON object per line each way, requests checked before use.

/** How the device leaves (docs/unplug.md): telling QEMU first, as a surprise, or by crashing. */
export type VanishMode = 'orderly' | 'surprise' | 'crash';
export const VANISH_MODES: readonly VanishMode[] = ['orderly', 'surprise', 'crash'];

/**
 * A device event to arm a vanish at, e.g. the 3rd CREATE_QP admin command:
 * `{"event":"admin-command","opcode":"CREATE_QP","nth":3}` (the forms: src/control/when.ts).
 * The control server passes it to a VanishArmer; without one, a request carrying `when` is
 * refused as unsupported. With `"wait":true` the reply comes once the vanish has fired and run.
 */
export interface VanishWhen {
  readonly event: string;
  readonly nth?: number;
  readonly [key: string]: unknown;
}

export type ControlRequest =
  | { readonly id?: ControlId; readonly cmd: 'status' }
  | { readonly id?: ControlId; readonly cmd: 'vanish'; readonly mode: VanishMode; readonly when?: VanishWhen; readonly wait?: boolean }
  | { readonly id?: ControlId; readonly cmd: 'ping' };

/** Request ids are echoed back as given: a number or a short string. */
export type ControlId = number | string;

export const enum ControlErrorCode {
  BadJson = 'bad-json',
  BadRequest = 'bad-request',
  UnknownCommand = 'unknown-command',
  LineTooLong = 'line-too-long',
  Busy = 'busy',
  Unsupported = 'unsupported',
  Failed = 'failed',
}

export interface ControlErrorBody {
  readonly code: ControlErrorCode;
  readonly message: string;
}

export type ControlReply =
  | { readonly id: ControlId | null; readonly ok: true; readonly result: unknown }
  | { readonly id: ControlId | null; readonly ok: false; readonly error: ControlErrorBody };

/** A request line may not be longer than this (bytes, newline excluded). */
export const MAX_REQUEST_LINE = 64 * 1024;

export class RequestError extends Error {
  readonly code: ControlErrorCode;
  readonly id: ControlId | null;
  constructor(code: ControlErrorCode, message: string, id: ControlId | null) {
    super(message);
    this.name = 'RequestError';
    this.code = code;
    this.id = id;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function validId(v: unknown): v is ControlId {
  return (typeof v === 'number' && Number.isSafeInteger(v)) || (typeof v === 'string' && v.length <= 128);
}

/** Parses and checks one request line; throws RequestError with the id when one could be read. */
export function parseRequest(line: string): ControlRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (err) {
    throw new RequestError(ControlErrorCode.BadJson, `not JSON: ${(err as Error).message}`, null);
  }
  if (!isPlainObject(raw)) throw new RequestError(ControlErrorCode.BadRequest, 'a request is a JSON object', null);
  let id: ControlId | undefined;
  if (raw.id !== undefined) {
    if (!validId(raw.id)) throw new RequestError(ControlErrorCode.BadRequest, 'id must be an integer or a string of at most 128 characters', null);
    id = raw.id;
  }
  const rid = id ?? null;
  if (typeof raw.cmd !== 'string') throw new RequestError(ControlErrorCode.BadRequest, 'missing "cmd" (a string)', rid);
  switch (raw.cmd) {
    case 'status':
    case 'ping':
      return { id, cmd: raw.cmd };
    case 'vanish': {
      if (typeof raw.mode !== 'string') throw new RequestError(ControlErrorCode.BadRequest, `vanish needs "mode": one of ${VANISH_MODES.join(', ')}`, rid);
      const mode = raw.mode as VanishMode;
      if (!VANISH_MODES.includes(mode)) throw new RequestError(ControlErrorCode.BadRequest, `unknown vanish mode '${raw.mode.slice(0, 40)}': one of ${VANISH_MODES.join(', ')}`, rid);
      if (raw.when === undefined) return { id, cmd: 'vanish', mode };
      if (!isPlainObject(raw.when) || typeof raw.when.event !== 'string') {
        throw new RequestError(ControlErrorCode.BadRequest, '"when" must be an object with an "event" string', rid);
      }
      if (raw.when.nth !== undefined && !(Number.isSafeInteger(raw.when.nth) && (raw.when.nth as number) >= 1)) {
        throw new RequestError(ControlErrorCode.BadRequest, '"when.nth" must be an integer >= 1', rid);
      }
      if (raw.wait !== undefined && typeof raw.wait !== 'boolean') throw new RequestError(ControlErrorCode.BadRequest, '"wait" must be a boolean', rid);
      return { id, cmd: 'vanish', mode, when: raw.when as VanishWhen, ...(raw.wait ? { wait: true } : {}) };
    }
    default:
      throw new RequestError(ControlErrorCode.UnknownCommand, `unknown command '${raw.cmd.slice(0, 40)}' (known: status, vanish, ping)`, rid);
  }
}

export function encodeReply(reply: ControlReply): string {
  return JSON.stringify(reply) + '\n';
}

/**
 * Splits a byte stream into lines of at most `max` bytes. An overlong line is reported once
 * (onOverflow) and skipped up to its newline, so the next line is read normally.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private discarding = false;

  constructor(
    private readonly max: number,
    private readonly onLine: (line: string) => void,
    private readonly onOverflow: () => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      if (!this.discarding) {
        const piece = chunk.subarray(start, end);
        if (this.size + piece.length > this.max) {
          this.parts = [];
          this.size = 0;
          this.discarding = true;
          this.onOverflow();
        } else if (piece.length > 0) {
          this.parts.push(piece);
          this.size += piece.length;
        }
      }
      if (nl < 0) return;
      if (!this.discarding) {
        const line = Buffer.concat(this.parts).toString('utf8').replace(/\r$/, '');
        this.parts = [];
        this.size = 0;
        if (line.trim().length > 0) this.onLine(line);
      }
      this.discarding = false;
      start = nl + 1;
    }
  }
}
