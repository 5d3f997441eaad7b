// What the NIC tells whoever debugs a driver: counters, debug logs and trace records for every register access, command, doorbell and interrupt.
import type { Logger } from 'pino';
import { GuestErrorLog } from '../framework/guest-errors';

export type TraceKind = 'reg' | 'admin' | 'admin-stall' | 'admin-output' | 'doorbell' | 'irq' | 'event' | 'guest-error';

/** One trace record; JSON-able (numbers and strings only, bigints rendered as hex strings). */
export interface TraceRecord {
  /** Milliseconds since the epoch (Date.now()), with sub-ms precision where available. */
  readonly t: number;
  readonly kind: TraceKind;
  readonly [field: string]: string | number | boolean | null;
}

/** A sink for trace records; the device calls it synchronously, so it must not block or throw. */
export interface NicTrace {
  record(rec: TraceRecord): void;
}

export interface NicCounters {
  regReads: number;
  regWrites: number;
  adminCommands: number;
  adminErrors: number;
  doorbells: number;
  interrupts: number;
  interruptsUndelivered: number;
  events: number;
  eventsDropped: number;
  guestErrors: number;
  completions: number;
  resets: number;
  pollerWakeups: number;
}

export function zeroCounters(): NicCounters {
  return {
    regReads: 0,
    regWrites: 0,
    adminCommands: 0,
    adminErrors: 0,
    doorbells: 0,
    interrupts: 0,
    interruptsUndelivered: 0,
    events: 0,
    eventsDropped: 0,
    guestErrors: 0,
    completions: 0,
    resets: 0,
    pollerWakeups: 0,
  };
}

type Fields = Record<string, string | number | boolean | null>;

const perfOrigin = Date.now() - performance.now();

/** Logs, counts and traces in one place so no path forgets one of the three. */
export class Observer {
  readonly counters: NicCounters = zeroCounters();
  private sinks: NicTrace[] = [];
  /** Guest errors reach the log at most once a second per kind; the counter and the trace get every one. */
  private guestErrors: GuestErrorLog;
  private logger: Logger;

  constructor(log: Logger) {
    this.logger = log;
    this.guestErrors = new GuestErrorLog(log);
  }

  get log(): Logger {
    return this.logger;
  }

  /** Logs to `log` from now on (the device context's, once a transport attaches); what the old one held back is written first. */
  useLogger(log: Logger): void {
    this.guestErrors.flush();
    this.logger = log;
    this.guestErrors = new GuestErrorLog(log);
  }

  addTrace(sink: NicTrace): void {
    this.sinks.push(sink);
  }

  removeTrace(sink: NicTrace): void {
    this.sinks = this.sinks.filter((s) => s !== sink);
  }

  /** True when something would consume a debug record (lets hot paths skip building fields). */
  get verbose(): boolean {
    return this.sinks.length > 0 || this.log.isLevelEnabled('debug');
  }

  emit(kind: TraceKind, fields: Fields, msg: string): void {
    if (kind === 'guest-error') {
      this.counters.guestErrors++;
      this.guestErrors.report(msg, fields);
    } else if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ kind, ...fields }, msg);
    }
    if (this.sinks.length === 0) return;
    const rec = { t: perfOrigin + performance.now(), kind, msg, ...fields } as TraceRecord;
    for (const s of this.sinks) {
      try {
        s.record(rec);
      } catch (err) {
        // A broken sink must not take the device down; drop it and say so once.
        this.log.error({ err }, 'trace sink failed; removing it');
        this.removeTrace(s);
      }
    }
  }

  /** Writes the guest-error summaries held back by the once-a-second limit. */
  flushGuestErrors(): void {
    this.guestErrors.flush();
  }

  guestError(fields: Fields, msg: string): void {
    this.emit('guest-error', fields, msg);
  }
}

export function hex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}
