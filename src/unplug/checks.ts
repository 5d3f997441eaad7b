// The verdict of an unplug run: the named checks, each ok, FAIL or n/a (could not judge) with what was seen.
import { kernelProblemKinds, kernelProblems } from '../../guest/kit/guest-log';
import type { MappingEvidence, PfnState, PhysRange, UnplugEvidence } from './evidence';

export type CheckName =
  | 'process-survived'
  | 'mapping-moved-off-bar'
  | 'reads-return-zero'
  | 'unplug-not-blocked'
  | 'no-kernel-warnings'
  | 'device-removed'
  | 'no-bar-access-after-unplug'
  | 'removal-bounded'
  | 'traffic-ended';

/**
 * ok: judged and passed. FAIL: judged and failed. n/a: could not judge (the evidence it needs is
 * missing, or the run took a path on which the check says nothing); the detail says why. An n/a
 * never counts as ok: a run with one is not a PASS.
 */
export type CheckResult = 'ok' | 'FAIL' | 'n/a';

export interface Check {
  readonly name: CheckName;
  readonly result: CheckResult;
  /** result === 'ok'. */
  readonly ok: boolean;
  readonly detail: string;
}

/** PASS: every check judged and passed. FAIL: a check failed. ERROR: the run, or a check, could not judge the driver. */
export type Verdict = 'PASS' | 'FAIL' | 'ERROR';

/**
 * One run's verdict. A run error (the run broke, or a log the checks need is missing) is ERROR
 * even when checks failed: what failed may be the run's own breakage. Otherwise a failed check
 * is FAIL, an n/a is ERROR, and only a run whose every check passed is PASS.
 */
export function verdictOf(checks: readonly Check[], error?: string): Verdict {
  if (error !== undefined) return 'ERROR';
  if (checks.some((c) => c.result === 'FAIL')) return 'FAIL';
  if (checks.length === 0 || checks.some((c) => c.result !== 'ok')) return 'ERROR';
  return 'PASS';
}

/** Several runs' verdict: a real failure anywhere is FAIL, else an ERROR anywhere is ERROR. */
export function combineVerdicts(verdicts: readonly Verdict[]): Verdict {
  if (verdicts.includes('FAIL')) return 'FAIL';
  if (verdicts.length === 0 || verdicts.includes('ERROR')) return 'ERROR';
  return 'PASS';
}

/**
 * The bounds the checks use. Measured on a 2-core machine under TCG (no KVM): with a
 * disassociating driver the ib device left 20-50 ms after the vanish and DEVICE_DELETED came
 * 40-85 ms after it. The bounds leave two orders of magnitude for a noisy host; the guest
 * program holds its context for longer than unplugMs (watch 15 s), so a removal that waits for
 * user space cannot pass unplug-not-blocked, while device-removed still sees it complete.
 */
export const BOUNDS = {
  /** From the vanish to the guest seeing its ib device gone while the context is open. */
  unplugMs: 10_000,
  /** From the vanish to QEMU's DEVICE_DELETED. */
  deviceDeletedMs: 30_000,
} as const;

const hex = (v: bigint): string => `0x${v.toString(16)}`;
const word = (v: bigint | null | undefined): string => (v === null || v === undefined ? '?' : `0x${v.toString(16).padStart(8, '0')}`);
const ALL_ONES = 0xffffffffn;

/** A mapping as the verdict names it: the program's label and, with several processes, the pid. */
function who(m: MappingEvidence): string {
  return m.pid !== undefined && m.pid >= 0 ? `${m.label} (pid ${m.pid})` : m.label;
}

export function inRanges(addr: bigint, ranges: readonly PhysRange[]): PhysRange | null {
  return ranges.find((r) => addr >= r.start && addr < r.end) ?? null;
}

function describePfn(p: PfnState, bars: readonly PhysRange[]): string {
  switch (p.kind) {
    case 'present': {
      const bar = inRanges(p.phys, bars);
      return bar ? `present at ${hex(p.phys)} (inside ${bar.name})` : `present at ${hex(p.phys)} (RAM, off the BARs)`;
    }
    case 'not-present':
      return 'not present (zapped, never faulted in again)';
    case 'no-vma':
      return 'no mapping at that address any more';
    case 'unknown':
      return `unreadable walk result: ${p.text}`;
  }
}

/** One parsed line of QEMU's `-d invalid_mem` log. */
export interface InvalidAccess {
  readonly op: 'read' | 'write';
  readonly addr: bigint;
  readonly size: number;
  readonly line: string;
  /** The line's index in the log. */
  readonly index: number;
}

// QEMU 10.x and 11.x: "Invalid read at addr 0xFE800000, size 4, region '(null)', reason: rejected"
const INVALID_RE = /Invalid (read|write) at addr 0x([0-9a-fA-F]+), size (\d+)/;

export function parseInvalidMem(lines: readonly string[]): InvalidAccess[] {
  const out: InvalidAccess[] = [];
  lines.forEach((line, index) => {
    const m = INVALID_RE.exec(line);
    if (m) out.push({ op: m[1] as 'read' | 'write', addr: BigInt(`0x${m[2]}`), size: Number(m[3]), line: line.trim(), index });
  });
  return out;
}

/** The guest kernel log's problem lines (the one pattern list of guest/kit/guest-log.ts). */
export function kernelTrouble(log: string): string[] {
  return kernelProblems(log);
}

/**
 * True when no mapping can have outlived the removal: the program closed its context (and then
 * exited) while the device was still there, and the device left only afterwards. That is what a
 * driver without disassociate_ucontext makes happen; unplug-not-blocked judges it, and the
 * mapping checks, having nothing to look at, say n/a. A removal that never finished (no
 * DEVICE_DELETED) did not wait for the program: what it did to the mappings is simply unseen.
 */
function removalWaitedForProgram(e: UnplugEvidence): boolean {
  return (
    e.contextClosed !== null &&
    e.guestRemoved === null &&
    e.deviceDeleted !== null &&
    e.deviceDeleted.atMs >= e.contextClosed.atMs &&
    e.mappings.every((m) => m.after === null)
  );
}

/** The checks a run without a scenario is judged by. */
export const DEFAULT_CHECKS: readonly CheckName[] = [
  'process-survived',
  'mapping-moved-off-bar',
  'reads-return-zero',
  'unplug-not-blocked',
  'no-kernel-warnings',
  'device-removed',
  'no-bar-access-after-unplug',
];

/** The named checks (default: DEFAULT_CHECKS), in the order asked for. */
export function computeChecks(e: UnplugEvidence, names: readonly CheckName[] = DEFAULT_CHECKS): Check[] {
  const all = computeAllChecks(e);
  return names.map((n) => all.find((c) => c.name === n)).filter((c): c is Check => c !== undefined);
}

const check = (name: CheckName, result: CheckResult, detail: string): Check => ({ name, result, ok: result === 'ok', detail });
const judged = (name: CheckName, ok: boolean, detail: string): Check => check(name, ok ? 'ok' : 'FAIL', detail);

const WAITED =
  'not judged: the removal waited for the program to close its context, so no mapping outlived it (unplug-not-blocked or removal-bounded judges the wait)';

function processSurvived(e: UnplugEvidence): Check {
  const end = e.programEnd;
  const others = e.processFailures ?? [];
  const main =
    end.kind === 'exit'
      ? `the program exited by itself with status ${end.code}`
      : end.kind === 'signal'
        ? `the program took ${end.signal} at ${end.addr}`
        : 'the program never reported how it ended (hung, or the guest died)';
  return judged('process-survived', end.kind === 'exit' && others.length === 0, others.length === 0 ? main : `${main}; ${others.join('; ')}`);
}

/**
 * The core's answer to a zapped mapping is its dummy page: one zeroed RAM page per uverbs file,
 * which every (possibly writable) mapping of that file gets on its next fault. So after the
 * removal every mapping must be present on RAM, on no BAR, and all mappings of one file on the
 * same frame; not present, gone, or on different frames is something else.
 */
function mappingMovedOffBar(e: UnplugEvidence): Check {
  const name = 'mapping-moved-off-bar';
  if (e.bars.length === 0) return check(name, 'n/a', 'not judged: nobody reported where the BARs were');
  if (e.mappings.length === 0) return check(name, 'n/a', 'not judged: the program reported no mapping');
  if (removalWaitedForProgram(e)) return check(name, 'n/a', WAITED);
  const bad: string[] = [];
  const good: string[] = [];
  // Never walked after the removal (the process died first, or never saw its device leave): unseen, not wrong.
  const unjudged: string[] = [];
  const byFile = new Map<string, MappingEvidence[]>();
  for (const m of e.mappings) {
    const after = m.after;
    if (after === null) {
      unjudged.push(`${who(m)}: never walked after the removal`);
      continue;
    }
    const text = `${who(m)}: ${m.before ? `${describePfn(m.before, e.bars)} -> ` : ''}${describePfn(after, e.bars)}`;
    const onRam = after.kind === 'present' && inRanges(after.phys, e.bars) === null;
    (onRam ? good : bad).push(text);
    if (onRam && m.file) byFile.set(m.file, [...(byFile.get(m.file) ?? []), m]);
  }
  for (const [file, ms] of byFile) {
    const frames = new Set(ms.map((m) => (m.after as { phys: bigint }).phys));
    if (frames.size > 1) {
      bad.push(
        `the mappings of one uverbs file (${file}) point at ${frames.size} different RAM frames (${ms
          .map((m) => `${who(m)} ${hex((m.after as { phys: bigint }).phys)}`)
          .join(', ')}): not the core's one dummy page per file`,
      );
    }
  }
  if (bad.length > 0) return check(name, 'FAIL', [...bad, ...unjudged].join('; '));
  if (unjudged.length > 0) return check(name, 'n/a', `not judged: ${unjudged.join('; ')}`);
  const shared = [...byFile.entries()].filter(([, ms]) => ms.length > 1).map(([f, ms]) => `${f}: ${ms.map(who).join(', ')} share one frame`);
  return check(name, 'ok', `${good.join('; ')}${shared.length ? ` (${shared.join('; ')})` : ''}`);
}

/**
 * What a mapping reads after the removal must be the core's dummy page: the program's own
 * writes stick (a stale mapping on the BAR address reads QEMU's unassigned space: zeros, and
 * writes vanish), nothing reads all-ones (the gone device's BAR), no read is served by a BAR
 * frame, and a write through one mapping of a file is seen through another of the same file.
 */
function readsReturnZero(e: UnplugEvidence): Check {
  const name = 'reads-return-zero';
  if (e.mappings.length === 0) return check(name, 'n/a', 'not judged: the program reported no mapping');
  if (removalWaitedForProgram(e)) return check(name, 'n/a', WAITED);
  const bad: string[] = [];
  const unjudged: string[] = [];
  const kinds = new Set<string>();
  for (const m of e.mappings) {
    if (m.viewAfter === null) {
      unjudged.push(`${who(m)}: never read after the removal`);
      continue;
    }
    const read = `read doorbell ${word(m.lastDoorbell)}, scratch ${word(m.lastScratch)}`;
    const wrote = m.expectScratch !== null && m.expectScratch !== undefined ? ` after writing ${word(m.expectScratch)}` : '';
    const problems: string[] = [];
    if (m.barReadsAfterGone > 0) problems.push(`${m.barReadsAfterGone} read(s) after the removal still went to the BAR`);
    if (m.lastDoorbell === ALL_ONES || m.lastScratch === ALL_ONES) problems.push("all-ones: the gone device's BAR answers");
    if (m.writable !== false && m.expectScratch !== null && m.expectScratch !== undefined && m.lastScratch !== m.expectScratch) {
      problems.push(m.lastScratch === 0n ? "its writes vanish (QEMU's unassigned space where the BAR was), not the core's dummy page" : 'it does not read back its own write');
    }
    if (m.echo && !m.echo.seen) {
      problems.push(`${word(m.echo.wrote)} written through one of ${who(m)} and ${m.echo.peer} read back through the other as ${word(m.echo.read)}: not one page shared by the file's mappings`);
    }
    if (problems.length > 0) bad.push(`${who(m)}: ${read}${wrote}; ${problems.join('; ')}`);
    else {
      kinds.add(m.writable === false ? 'zeros' : "zeros and the program's own writes");
      if (m.echo) kinds.add(`${m.echo.peer} saw a write through ${m.label}`);
    }
  }
  if (bad.length > 0) return check(name, 'FAIL', [...bad, ...unjudged].join('; '));
  if (unjudged.length > 0) return check(name, 'n/a', `not judged: ${unjudged.join('; ')}`);
  return check(name, 'ok', `after the removal every mapping read the core's dummy page: ${[...kinds].join('; ')}`);
}

function unplugNotBlocked(e: UnplugEvidence): Check {
  const g = e.guestRemoved;
  const rel = (t: { atMs: number } | null) => (t ? `${t.atMs - e.vanishAtMs} ms` : 'never');
  if (g && g.contextOpen && (e.contextClosed === null || e.contextClosed.atMs >= g.atMs)) {
    const ms = g.atMs - e.vanishAtMs;
    return judged(
      'unplug-not-blocked',
      ms <= BOUNDS.unplugMs,
      ms <= BOUNDS.unplugMs
        ? `the ib device left ${ms} ms after the vanish with the context still open (bound ${BOUNDS.unplugMs} ms)`
        : `the ib device left ${ms} ms after the vanish, over the ${BOUNDS.unplugMs} ms bound`,
    );
  }
  if (e.contextClosed !== null && e.guestView && e.guestView.ib.length > 0) {
    return check(
      'unplug-not-blocked',
      'FAIL',
      `the removal never finished: the program closed its context ${rel(e.contextClosed)} after the vanish and the guest still listed its ib device ${e.guestView.ib.join(', ')} afterwards`,
    );
  }
  if (e.contextClosed !== null) {
    return check(
      'unplug-not-blocked',
      'FAIL',
      `removal waited for user space: the program gave up and closed its context ${rel(e.contextClosed)} after the vanish with the device still there; DEVICE_DELETED came ${rel(e.deviceDeleted)} after the vanish`,
    );
  }
  if (e.programEnd.kind === 'signal') {
    return check('unplug-not-blocked', 'n/a', `not judged: the program took ${e.programEnd.signal} before it saw its ib device leave (process-survived judges that)`);
  }
  return check('unplug-not-blocked', 'FAIL', 'the guest program never saw its ib device leave');
}

/** Judged on the console (KERN_WARNING and worse) and /init's dmesg dump; without the dump, only a problem seen is conclusive. */
function noKernelWarnings(e: UnplugEvidence): Check {
  const trouble = kernelTrouble(e.kernelLog);
  if (trouble.length > 0) {
    // A WARN starts with its "cut here" marker; the line after it says what warned, and where.
    const first = trouble.find((l) => !/\[ cut here \]/.test(l)) ?? trouble[0];
    return check('no-kernel-warnings', 'FAIL', `${kernelProblemKinds(e.kernelLog).join(', ')}: ${trouble.length} line(s), first: ${first.trim().slice(0, 200)}`);
  }
  if (!e.kernelLogDumped) {
    return check('no-kernel-warnings', 'n/a', "not judged: the guest never dumped its kernel log (no dmesg-end), and the console alone showed no report");
  }
  return check('no-kernel-warnings', 'ok', 'no WARN, BUG, Oops, Call Trace, panic, hung task, lockdep, KASAN, UBSAN or Unknown symbol report in the guest log');
}

function deviceRemoved(e: UnplugEvidence): Check {
  const problems: string[] = [];
  let ms: number | null = null;
  if (!e.deviceDeleted) problems.push('QEMU never reported DEVICE_DELETED');
  else {
    ms = e.deviceDeleted.atMs - e.vanishAtMs;
    if (ms > BOUNDS.deviceDeletedMs) problems.push(`DEVICE_DELETED came ${ms} ms after the vanish, over the ${BOUNDS.deviceDeletedMs} ms bound`);
  }
  const v = e.guestView;
  if (v) {
    if (v.pci.length > 0) problems.push(`the guest still lists the PCI function ${v.pci.join(', ')}`);
    if (v.ib.length > 0) problems.push(`the guest still lists the ib device ${v.ib.join(', ')}`);
  }
  if (problems.length > 0) return check('device-removed', 'FAIL', problems.join('; '));
  if (!v) return check('device-removed', 'n/a', `DEVICE_DELETED ${ms} ms after the vanish, but not judged: the guest never listed its PCI functions and ib devices after the program`);
  return check(
    'device-removed',
    'ok',
    `DEVICE_DELETED ${ms} ms after the vanish; the guest's own listing after the program has no vrnic PCI function and no vrnic ib device${v.waitedMs !== null ? ` (${v.waitedMs} ms after the program)` : ''}`,
  );
}

/**
 * Accesses QEMU logged to the BARs after the vanish. The log earns trust from the canary: a read,
 * made on purpose before the vanish, of an address nothing decodes must be in it, parsed; a log
 * that is missing, unreadable, or lacks the canary cannot show that no BAR access happened.
 */
function noBarAccess(e: UnplugEvidence): Check {
  const name = 'no-bar-access-after-unplug';
  if (e.invalidMem === null) return check(name, 'n/a', "not judged: QEMU's -d invalid_mem log is missing or unreadable");
  if (e.bars.length === 0) return check(name, 'n/a', 'not judged: the guest never reported where the BARs were');
  const all = parseInvalidMem(e.invalidMem);
  const canary = e.canary ?? null;
  if (canary === null) return check(name, 'n/a', "not judged: the guest made no canary access, so the log's power to show one is unproven");
  const seen = all.find((a) => a.op === 'read' && a.addr === canary.addr);
  if (!seen) {
    return check(
      name,
      'n/a',
      `not judged: the guest's canary read of ${hex(canary.addr)} (it read ${canary.read}) is not in QEMU's invalid_mem log (${e.invalidMem.length} line(s)): the log misses such accesses or words them differently`,
    );
  }
  const from = e.invalidMemAtVanish ?? 0;
  const hits = all.filter((a) => a.index >= from && inRanges(a.addr, e.bars) !== null);
  const proof = `the canary (${seen.line}) is in the log`;
  if (hits.length === 0) {
    return check(name, 'ok', `QEMU logged no access to ${e.bars.map((b) => `${b.name} [${hex(b.start)}, ${hex(b.end)})`).join(', ')} after the vanish; ${proof}`);
  }
  const reads = hits.filter((h) => h.op === 'read').length;
  return check(name, 'FAIL', `QEMU logged ${hits.length} access(es) to the removed BARs after the vanish (${reads} reads, ${hits.length - reads} writes), first: ${hits[0].line}`);
}

/** The guest's whole removal (driver remove, eject) within the unplug bound. */
function removalBounded(e: UnplugEvidence): Check {
  const drv = e.driverRemoveMs !== undefined && e.driverRemoveMs !== null ? `; the driver's remove took ${e.driverRemoveMs} ms` : '';
  if (!e.deviceDeleted) return check('removal-bounded', 'FAIL', `QEMU never reported DEVICE_DELETED: the guest's removal did not finish${drv}`);
  const ms = e.deviceDeleted.atMs - e.vanishAtMs;
  return judged(
    'removal-bounded',
    ms <= BOUNDS.unplugMs,
    ms <= BOUNDS.unplugMs
      ? `the guest removed and ejected the device ${ms} ms after the vanish (bound ${BOUNDS.unplugMs} ms)${drv}`
      : `the guest's removal took ${ms} ms after the vanish, over the ${BOUNDS.unplugMs} ms bound${drv}`,
  );
}

/** The sides of vrnic-pingpong's traffic: both must end by the device's removal, not before it and not by silence. */
const TRAFFIC_SIDES = ['requester', 'responder'];

/**
 * With traffic in flight a removal must end the exchange visibly: each side's wait ends with an
 * error completion or EIO from the core, after the vanish. A side that reported nothing hung or
 * died; one that saw only silence (no-answer) means the removal left user space waiting.
 */
function trafficEnded(e: UnplugEvidence): Check {
  const ends = e.trafficEnds ?? [];
  const problems: string[] = [];
  const seen: string[] = [];
  for (const side of TRAFFIC_SIDES) {
    const end = ends.find((x) => x.label === side);
    if (!end) {
      problems.push(`the ${side} never reported how its traffic ended`);
      continue;
    }
    const at = `${end.atMs - e.vanishAtMs} ms after the vanish`;
    if (end.atMs < e.vanishAtMs) problems.push(`the ${side}'s traffic ended (${end.reason}) before the vanish`);
    else if (end.reason !== 'eio' && end.reason !== 'error-cqe') problems.push(`the ${side}'s traffic ended by ${end.reason} ${at}, not by an error completion or EIO`);
    else seen.push(`${side}: ${end.reason} ${at} after ${end.roundTrips} round trips`);
  }
  return problems.length ? check('traffic-ended', 'FAIL', problems.join('; ')) : check('traffic-ended', 'ok', seen.join('; '));
}

function computeAllChecks(e: UnplugEvidence): Check[] {
  return [processSurvived(e), mappingMovedOffBar(e), readsReturnZero(e), unplugNotBlocked(e), noKernelWarnings(e), deviceRemoved(e), noBarAccess(e), removalBounded(e), trafficEnded(e)];
}

/** The driver's own account of its remove (guest/driver/vrnic_main.c prints "remove: done in N ms"). */
export function driverRemoveMs(kernelLog: string): number | null {
  const m = /remove: done in (\d+) ms/.exec(kernelLog);
  return m ? Number(m[1]) : null;
}
