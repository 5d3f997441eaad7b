// Guest and client mistakes, counted exactly and logged at most once a second per kind, so a guest cannot flood the log.
//
// A guest that loops on a bad access (say, reading BAR0 with memory decoding off) would
// otherwise write one warn line per access: tens of thousands of lines a second. Each kind
// (a short fixed string, usually the log message) gets its first line at once, then at most one
// line per interval that says how many more of that kind there were (`repeated`), so the
// numbers in the log add up to the exact count. A kind that goes quiet gets its last summary
// from a timer that does not keep the process alive.
import type { Logger } from 'pino';

export const GUEST_ERROR_INTERVAL_MS = 1000;

type Fields = Record<string, unknown>;

interface KindState {
  count: number;
  /** Occurrences since the last line written for this kind. */
  suppressed: number;
  lastLine: number;
  lastFields: Fields;
  timer: NodeJS.Timeout | null;
}

export class GuestErrorLog {
  private readonly kinds = new Map<string, KindState>();
  private total = 0;

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = GUEST_ERROR_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts one guest error of `kind` (also the log message) and logs it unless this kind already logged within the interval. */
  report(kind: string, fields: Fields = {}): void {
    this.total++;
    let k = this.kinds.get(kind);
    if (k === undefined) {
      k = { count: 0, suppressed: 0, lastLine: -Infinity, lastFields: fields, timer: null };
      this.kinds.set(kind, k);
    }
    k.count++;
    const t = this.now();
    if (t - k.lastLine >= this.intervalMs) {
      this.write(kind, k, fields, 1 + k.suppressed, t);
      return;
    }
    k.suppressed++;
    k.lastFields = fields;
    if (k.timer === null) {
      k.timer = setTimeout(() => this.flushKind(kind), Math.max(0, k.lastLine + this.intervalMs - t));
      k.timer.unref();
    }
  }

  /** Guest errors of `kind` counted so far (every kind when omitted). */
  count(kind?: string): number {
    return kind === undefined ? this.total : (this.kinds.get(kind)?.count ?? 0);
  }

  /** Writes the pending summaries now (before stopping, or in tests). */
  flush(): void {
    for (const kind of this.kinds.keys()) this.flushKind(kind);
  }

  private flushKind(kind: string): void {
    const k = this.kinds.get(kind);
    if (k === undefined) return;
    if (k.timer !== null) {
      clearTimeout(k.timer);
      k.timer = null;
    }
    if (k.suppressed > 0) this.write(kind, k, k.lastFields, k.suppressed, this.now());
  }

  /** One line standing for `occurrences` errors: this one plus the ones held back since the last line. */
  private write(kind: string, k: KindState, fields: Fields, occurrences: number, t: number): void {
    if (k.timer !== null) {
      clearTimeout(k.timer);
      k.timer = null;
    }
    k.suppressed = 0;
    k.lastLine = t;
    if (occurrences === 1) this.log.warn({ guestError: true, ...fields }, kind);
    else this.log.warn({ guestError: true, ...fields, repeated: occurrences, total: k.count }, `${kind} (${occurrences} times since the last report)`);
  }
}
