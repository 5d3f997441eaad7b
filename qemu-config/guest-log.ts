// Reads a guest console log: the /init and vrnic-test report lines, and the kernel's complaints.

export interface GuestEvent {
  /** VRNIC-INIT (the guest's /init) or VRNIC-TEST (vrnic-test). */
  readonly source: 'init' | 'test';
  readonly event: string;
  readonly fields: Readonly<Record<string, unknown>>;
  readonly line: string;
}

const MARKS = [
  ['VRNIC-INIT ', 'init'],
  ['VRNIC-TEST ', 'test'],
] as const;

/** Every well-formed report line, in order; lines cut by other console output are skipped. */
export function guestEvents(log: string): GuestEvent[] {
  const out: GuestEvent[] = [];
  for (const line of log.split(/\r?\n/)) {
    for (const [mark, source] of MARKS) {
      const at = line.indexOf(mark);
      if (at < 0) continue;
      try {
        const f = JSON.parse(line.slice(at + mark.length)) as unknown;
        if (typeof f === 'object' && f !== null && !Array.isArray(f) && typeof (f as { event?: unknown }).event === 'string') {
          out.push({ source, event: (f as { event: string }).event, fields: f as Record<string, unknown>, line });
        }
      } catch {
        // not JSON: a report line interleaved with kernel output
      }
    }
  }
  return out;
}

/**
 * Kernel messages that mean something went wrong: oopses, WARN()s, BUG()s, lockdep and hung-task
 * reports, panics, and modules that failed to link. Matched case-sensitively on the kernel's own
 * wording so that lines like "... report a bug" do not count.
 */
export const KERNEL_PROBLEM_PATTERNS: readonly RegExp[] = [
  /\bOops\b/,
  /\bWARNING: /,
  /\bBUG: /,
  /kernel BUG at/,
  /Unknown symbol/,
  /disagrees about version of symbol/,
  /Call Trace:/,
  /general protection fault/,
  /Kernel panic/,
  /possible circular locking dependency/,
  /INFO: task .* blocked for more than/,
  /\bUBSAN:/,
  /\bKASAN:/,
];

/** The lines of the log that match a kernel problem pattern. */
export function kernelProblems(log: string): string[] {
  return log.split(/\r?\n/).filter((l) => KERNEL_PROBLEM_PATTERNS.some((p) => p.test(l)));
}
