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
 * What a kernel prints when something went wrong, one pattern per kind of report: the one list
 * the unplug verdict (no-kernel-warnings) and the guest tests judge a kernel log by. Matched
 * case-sensitively on the kernel's own wording, so lines like "... report a bug" do not count.
 * The guest's console must carry KERN_WARNING (loglevel 5 or more, qemu-config/image.ts) for
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
  return log.split(/\r?\n/).filter((l) => KERNEL_PROBLEM_PATTERNS.some((p) => p.re.test(l)));
}

/** The kinds of problem a log shows (WARN, BUG, ...), in the list's order, each once. */
export function kernelProblemKinds(log: string): string[] {
  const lines = kernelProblems(log);
  return [...new Set(KERNEL_PROBLEM_PATTERNS.filter((p) => lines.some((l) => p.re.test(l))).map((p) => p.kind))];
}
