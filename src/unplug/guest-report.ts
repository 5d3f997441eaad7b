// Reads the guest's side of an unplug run from its console: vrnic-test's report lines and the kernel's log.
import { INIT_MARK, parseGuestLine, REPORT_MARK } from '../../guest/kit/guest-log';
import type { MappingEvidence, PfnState, PhysRange, Stamp } from './evidence';

/**
 * guest/uverbs-test/report.c (shared by vrnic-test and vrnic-pingpong) writes each report as one console line
 * `VRNIC-TEST {"event":"...","t_ms":...,"pid":...,"label":"...",...}`. The runner reads:
 *   device            bar2: [start, end] (inclusive, from sysfs resource)
 *   frame             per mapping: frame bar|ram|not-present|no-vma|unknown, pfn (device alive)
 *   ready             context open, UAR mapped and written
 *   watch-start       the probe loop runs
 *   change            per mapping: a new view (device|zero|own-writes|other) or frame
 *   device-gone       /sys/class/infiniband/<ibdev> disappeared (context still open)
 *   summary           per mapping, at the end of the watch: view, frame, pfn, bar_reads_after_gone,
 *                     last_doorbell, last_scratch, expect_scratch, echo (seen|lost|none), echo_peer
 *   canary            addr, read: the read of an address nothing decodes, made before any vanish
 *   watch-timeout     the device never went away within --watch
 *   closed            the program closed its context
 *   signal            SIGBUS/SIGSEGV on a mapping (the program then exits 4)
 *   exit              code
 *   no-device         (a later run with --wait-device 0, by the guest's init) pci_device_present, ib_devices
 *
 * The guest's /init reports its steps as `VRNIC-INIT {"event":...}`: boot, canary (vrnic-test
 * --canary, before the modules load), module, modules-loaded, test-start, test-exit, devices
 * {"vrnic_pci": [...], "ib": [...], "waited_ms": N} (the guest's own view after the program),
 * dmesg-begin, dmesg-end, poweroff. Both kinds of line are parsed by guest/kit/guest-log.ts.
 */
const PAGE = 4096n;

export interface ReportLine extends Stamp {
  /** vrnic-test, or the guest's /init. */
  readonly source: 'test' | 'init';
  readonly event: string;
  readonly pid: number;
  readonly label: string;
  readonly fields: Readonly<Record<string, unknown>>;
}

/** Parses one console line; null for anything that is not a well-formed report. */
export function parseReportLine(line: string, atMs: number): ReportLine | null {
  const e = parseGuestLine(line);
  if (e === null) return null;
  const f = e.fields;
  return { source: e.source, event: e.event, pid: typeof f.pid === 'number' ? f.pid : -1, label: typeof f.label === 'string' ? f.label : 'main', fields: f, atMs };
}

/** A "0x..." string or a number as the guest prints it; null when it is neither. */
export function parseNumber(v: unknown): bigint | null {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'string' && /^(0x[0-9a-fA-F]{1,16}|\d{1,20})$/.test(v)) return BigInt(v);
  return null;
}

/** The program's frame report as a page-table walk result. */
export function frameToPfn(frame: unknown, pfn: unknown): PfnState {
  switch (frame) {
    case 'bar':
    case 'ram': {
      const n = parseNumber(pfn);
      return n === null ? { kind: 'unknown', text: `${frame} without a pfn` } : { kind: 'present', phys: n * PAGE };
    }
    case 'not-present':
      return { kind: 'not-present' };
    case 'no-vma':
      return { kind: 'no-vma' };
    default:
      return { kind: 'unknown', text: String(frame) };
  }
}

/** BAR2 as the guest's sysfs placed it: the `device` event's [start, end] (end inclusive). */
export function guestBar2(line: ReportLine | null): PhysRange | null {
  const bar2 = line?.fields.bar2;
  if (!Array.isArray(bar2) || bar2.length !== 2) return null;
  const start = parseNumber(bar2[0]);
  const end = parseNumber(bar2[1]);
  if (start === null || end === null || start === 0n || end < start) return null;
  return { name: 'BAR2', start, end: end + 1n };
}

/**
 * Collects one run's console: every line (the kernel log, for the warnings check) and the
 * report lines in order, with the host time each arrived.
 */
export class GuestConsole {
  readonly lines: string[] = [];
  readonly reports: ReportLine[] = [];
  private readonly waiters: Array<{ pred: (l: ReportLine) => boolean; resolve(l: ReportLine): void }> = [];

  push(line: string, atMs: number): void {
    if (this.lines.length < 200_000) this.lines.push(line);
    const r = parseReportLine(line, atMs);
    if (!r || this.reports.length >= 100_000) return;
    this.reports.push(r);
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i].pred(r)) this.waiters[i].resolve(r);
    }
  }

  first(event: string, pred: (l: ReportLine) => boolean = () => true): ReportLine | null {
    return this.reports.find((r) => r.event === event && pred(r)) ?? null;
  }

  last(event: string, pred: (l: ReportLine) => boolean = () => true): ReportLine | null {
    for (let i = this.reports.length - 1; i >= 0; i--) if (this.reports[i].event === event && pred(this.reports[i])) return this.reports[i];
    return null;
  }

  /** Resolves with the first report (already seen or to come) matching, or null after timeoutMs or when `abort` settles. */
  wait(event: string, timeoutMs: number, abort?: Promise<unknown>, pred: (l: ReportLine) => boolean = () => true): Promise<ReportLine | null> {
    const seen = this.first(event, pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const entry = { pred: (l: ReportLine) => l.event === event && pred(l), resolve: (l: ReportLine) => finish(l) };
      const finish = (l: ReportLine | null) => {
        clearTimeout(timer);
        const i = this.waiters.indexOf(entry);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        resolve(l);
      };
      const timer = setTimeout(() => finish(null), timeoutMs);
      this.waiters.push(entry);
      void abort?.then(() => finish(null), () => finish(null));
    });
  }

  /**
   * Every process of the program's that died by a signal: `signal` reports (the process names
   * itself) and `child-exit` reports of a parent whose child did not exit normally.
   */
  processFailures(): string[] {
    const out: string[] = [];
    for (const r of this.reports) {
      if (r.source !== 'test') continue;
      if (r.event === 'signal') out.push(`${r.label} (pid ${r.pid}) took ${String(r.fields.signal)} at ${String(r.fields.addr)}`);
      else if (r.event === 'child-exit' && (r.fields.exited === false || (typeof r.fields.signal === 'number' && r.fields.signal !== 0))) {
        out.push(`child pid ${String(r.fields.child)} of pid ${r.pid} ended by signal ${String(r.fields.signal)}`);
      }
    }
    return out;
  }

  text(): string {
    return this.lines.join('\n');
  }

  /** The kernel's lines: the console without the program's and /init's report lines. */
  kernelLog(): string {
    return this.lines.filter((l) => !l.includes(REPORT_MARK) && !l.includes(INIT_MARK)).join('\n');
  }

  /**
   * Every watched mapping (by pid and label): where it pointed with the device alive (its
   * `frame` report) and after the removal (the `summary` at the end of the watch, or the last
   * `change` when no summary came), and what reads showed after the device was gone.
   */
  mappings(): MappingEvidence[] {
    const key = (r: ReportLine) => `${r.pid}/${r.label}`;
    const byKey = new Map<string, { label: string; pid: number; frame: ReportLine | null; last: ReportLine | null; summary: ReportLine | null }>();
    for (const r of this.reports) {
      if (r.source !== 'test' || (r.event !== 'frame' && r.event !== 'change' && r.event !== 'summary' && r.event !== 'watch-start')) continue;
      const k = key(r);
      let m = byKey.get(k);
      if (!m) byKey.set(k, (m = { label: r.label, pid: r.pid, frame: null, last: null, summary: null }));
      if (r.event === 'frame' && !m.frame) m.frame = r;
      else if (r.event === 'summary') m.summary = r;
      else m.last = r;
    }
    const out: MappingEvidence[] = [];
    for (const m of byKey.values()) {
      const end = m.summary ?? m.last;
      const gone = end?.fields.device_gone === true;
      const f = end?.fields ?? {};
      const lastRead = end ? `doorbell ${String(f.last_doorbell ?? f.read_doorbell)}, scratch ${String(f.last_scratch ?? f.read_scratch)}` : 'nothing';
      const echo = gone && typeof f.echo_peer === 'string' && (f.echo === 'seen' || f.echo === 'lost')
        ? { peer: f.echo_peer, wrote: parseNumber(f.echo_wrote) ?? 0n, read: parseNumber(f.echo_read) ?? 0n, seen: f.echo === 'seen' }
        : null;
      const frameFields = m.frame?.fields ?? {};
      out.push({
        label: m.label,
        pid: m.pid,
        file: typeof frameFields.file === 'string' ? frameFields.file : typeof f.file === 'string' ? f.file : null,
        writable: (frameFields.writable ?? f.writable) !== false,
        before: m.frame ? frameToPfn(m.frame.fields.frame, m.frame.fields.pfn) : null,
        after: end && gone ? frameToPfn(f.frame, f.pfn) : null,
        viewAfter: end && gone && typeof f.view === 'string' ? f.view : null,
        barReadsAfterGone: typeof m.summary?.fields.bar_reads_after_gone === 'number' ? m.summary.fields.bar_reads_after_gone : 0,
        lastDoorbell: gone ? parseNumber(f.last_doorbell ?? f.read_doorbell) : null,
        lastScratch: gone ? parseNumber(f.last_scratch ?? f.read_scratch) : null,
        expectScratch: gone && f.expect_scratch !== undefined && f.expect_scratch !== null ? parseNumber(f.expect_scratch) : null,
        echo,
        lastRead,
      });
    }
    return out;
  }
}
