// Reads a guest console log: the /init and vrnic-test report lines, and the kernel's complaints.

/** How vrnic-test (guest/uverbs-test) starts each report line; a JSON object follows. */
export const REPORT_MARK = 'VRNIC-TEST ';
/** How the guest's /init starts each report of its steps; a JSON object follows. */
export const INIT_MARK = 'VRNIC-INIT ';

export interface GuestEvent {
  /** VRNIC-INIT (the guest's /init) or VRNIC-TEST (vrnic-test). */
  readonly source: 'init' | 'test';
  readonly event: string;
  readonly fields: Readonly<Record<string, unknown>>;
  readonly line: string;
}

/**
 * One console line as a report, or null for anything else: kernel output, and report lines cut
 * by it (the guest shares the console with the kernel and is not trusted to be tidy).
 */
export function parseGuestLine(line: string): GuestEvent | null {
  let at = line.indexOf(REPORT_MARK);
  let source: GuestEvent['source'] = 'test';
  let mark = REPORT_MARK;
  if (at < 0) {
    at = line.indexOf(INIT_MARK);
    source = 'init';
    mark = INIT_MARK;
  }
  if (at < 0) return null;
  let obj: unknown;
  try {
    obj = JSON.parse(line.slice(at + mark.length));
  } catch {
    return null;
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return null;
  const fields = obj as Record<string, unknown>;
  if (typeof fields.event !== 'string') return null;
  return { source, event: fields.event, fields, line };
}

/** Every well-formed report line of a console log, in order. */
export function guestEvents(log: string): GuestEvent[] {
  return splitLines(log).map(parseGuestLine).filter((e): e is GuestEvent => e !== null);
}

function splitLines(log: string): string[] {
  return log.split(/\r?\n/);
}

/**
 * What a kernel prints when something went wrong, one pattern per kind of report: the one list
 * the unplug verdict (no-kernel-warnings) and the guest tests judge a kernel log by. Matched
 * case-sensitively on the kernel's own wording, so lines like "... report a bug" do not count.
 * The guest's console must carry KERN_WARNING (loglevel 5 or more, guest/kit/image.ts) for
 * WARN() reports to reach it before /init's dmesg dump.
 */
export const KERNEL_PROBLEM_PATTERNS: readonly { readonly kind: string; readonly re: RegExp }[] = [
  // WARN(), WARN_ON(): "WARNING: CPU: 0 PID: 55 at drivers/...", and the lockdep/RCU "WARNING: ..." reports.
  { kind: 'WARN', re: /\bWARNING: / },
  { kind: 'WARN', re: /-{12}\[ cut here \]-{12}/ },
  // BUG(), BUG_ON(), soft lockups ("watchdog: BUG: soft lockup"), "BUG: KASAN: ...", bad page state.
  { kind: 'BUG', re: /\bBUG: / },
  { kind: 'BUG', re: /\bkernel BUG at\b/ },
  { kind: 'Oops', re: /\bOops\b/ },
  { kind: 'Oops', re: /\bgeneral protection fault\b/ },
  { kind: 'Call Trace', re: /\bCall Trace:/ },
  { kind: 'Kernel panic', re: /\bKernel panic\b/ },
  { kind: 'hung task', re: /\bINFO: task \S+ blocked for more than \d+ seconds/ },
  { kind: 'hung task', re: /\brcu: INFO: \S+ (?:self-)?detected stalls?\b/ },
  { kind: 'lockdep', re: /\bpossible circular locking dependency\b/ },
  { kind: 'lockdep', re: /\bpossible recursive locking detected\b/ },
  { kind: 'lockdep', re: /\binconsistent lock state\b/ },
  { kind: 'lockdep', re: /\bsuspicious RCU usage\b/ },
  { kind: 'lockdep', re: /\bDEBUG_LOCKS_WARN_ON\b/ },
  { kind: 'KASAN', re: /\bKASAN: / },
  { kind: 'UBSAN', re: /\bUBSAN: / },
  { kind: 'Unknown symbol', re: /\bUnknown symbol\b/ },
  { kind: 'Unknown symbol', re: /\bdisagrees about version of symbol\b/ },
];

/** The lines of the log that match a kernel problem pattern. */
export function kernelProblems(log: string): string[] {
  return splitLines(log).filter((l) => KERNEL_PROBLEM_PATTERNS.some((p) => p.re.test(l)));
}

/** The kinds of problem a log shows (WARN, BUG, ...), in the list's order, each once. */
export function kernelProblemKinds(log: string): string[] {
  const lines = kernelProblems(log);
  return [...new Set(KERNEL_PROBLEM_PATTERNS.filter((p) => lines.some((l) => p.re.test(l))).map((p) => p.kind))];
}
