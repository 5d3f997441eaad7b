// The verdict of an unplug run: the named checks of issues 6 and 9, each with what was seen.
import type { MappingEvidence, PfnState, PhysRange, UnplugEvidence } from './evidence';

export type CheckName =
  | 'process-survived'
  | 'mapping-moved-off-bar'
  | 'reads-return-zero'
  | 'unplug-not-blocked'
  | 'no-kernel-warnings'
  | 'device-removed'
  | 'no-bar-access-after-unplug'
  | 'removal-bounded';

export interface Check {
  readonly name: CheckName;
  readonly ok: boolean;
  readonly detail: string;
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
      return 'not present (zapped)';
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
}

// QEMU 10.x: "Invalid read at addr 0xFE800000, size 4, region '(null)', reason: rejected"
const INVALID_RE = /Invalid (read|write) at addr 0x([0-9a-fA-F]+), size (\d+)/;

export function parseInvalidMem(lines: readonly string[]): InvalidAccess[] {
  const out: InvalidAccess[] = [];
  for (const line of lines) {
    const m = INVALID_RE.exec(line);
    if (m) out.push({ op: m[1] as 'read' | 'write', addr: BigInt(`0x${m[2]}`), size: Number(m[3]), line: line.trim() });
  }
  return out;
}

// What a kernel prints when something went wrong: WARN_ON, BUG_ON, oopses, lockdep and hung tasks.
const KERNEL_TROUBLE: readonly RegExp[] = [
  /\bWARNING: .*(?:at|CPU)/,
  /\bkernel BUG at\b/,
  /\bBUG: /,
  /\bOops\b/,
  /general protection fault/,
  /possible circular locking dependency/,
  /\blockdep\b/i,
  /INFO: task .* blocked for more than/,
  /\bUBSAN:/,
  /\bKASAN:/,
];

export function kernelTrouble(log: string): string[] {
  return log.split(/\r?\n/).filter((l) => KERNEL_TROUBLE.some((re) => re.test(l)));
}

/**
 * True when no mapping can have outlived the removal: the program closed its context (and then
 * exited) while the device was still there, and the device left only afterwards. That is what a
 * driver without disassociate_ucontext makes happen; unplug-not-blocked judges it, not the
 * mapping checks.
 */
function removalWaitedForProgram(e: UnplugEvidence): boolean {
  return e.contextClosed !== null && e.guestRemoved === null && (e.deviceDeleted === null || e.deviceDeleted.atMs >= e.contextClosed.atMs);
}

/** The checks of issue 6, what a run without a scenario is judged by. */
export const DEFAULT_CHECKS: readonly CheckName[] = [
  'process-survived',
  'mapping-moved-off-bar',
  'reads-return-zero',
  'unplug-not-blocked',
  'no-kernel-warnings',
  'device-removed',
  'no-bar-access-after-unplug',
];

/** The named checks (default: issue 6's seven), in the order asked for. */
export function computeChecks(e: UnplugEvidence, names: readonly CheckName[] = DEFAULT_CHECKS): Check[] {
  const all = computeAllChecks(e);
  return names.map((n) => all.find((c) => c.name === n)).filter((c): c is Check => c !== undefined);
}

function computeAllChecks(e: UnplugEvidence): Check[] {
  const checks: Check[] = [];
  const waited = removalWaitedForProgram(e);
  const waitedDetail = 'no mapping outlived the removal: the device left only after the program had closed its context';

  // process-survived
  {
    const end = e.programEnd;
    const others = e.processFailures ?? [];
    const ok = end.kind === 'exit' && others.length === 0;
    const main =
      end.kind === 'exit'
        ? `the program exited by itself with status ${end.code}`
        : end.kind === 'signal'
          ? `the program took ${end.signal} at ${end.addr}`
          : 'the program never reported how it ended (hung, or the guest died)';
    const detail = others.length === 0 ? main : `${main}; ${others.join('; ')}`;
    checks.push({ name: 'process-survived', ok, detail });
  }

  // mapping-moved-off-bar
  {
    let ok = false;
    let detail: string;
    if (e.bars.length === 0) detail = 'nobody reported where the BARs were';
    else if (e.mappings.length === 0) detail = 'the program reported no mapping';
    else if (waited && e.mappings.every((m) => m.after === null)) {
      ok = true;
      detail = waitedDetail;
    }
    else {
      const bad: string[] = [];
      const good: string[] = [];
      for (const m of e.mappings) {
        const after = m.after;
        const moved = after !== null && (after.kind === 'not-present' || after.kind === 'no-vma' || (after.kind === 'present' && inRanges(after.phys, e.bars) === null));
        const text = `${who(m)}: ${m.before ? `${describePfn(m.before, e.bars)} -> ` : ''}${after ? describePfn(after, e.bars) : 'never walked after the removal'}`;
        (moved ? good : bad).push(text);
      }
      ok = bad.length === 0;
      detail = ok ? good.join('; ') : bad.join('; ');
    }
    checks.push({ name: 'mapping-moved-off-bar', ok, detail });
  }

  // reads-return-zero
  {
    let ok = false;
    let detail: string;
    if (e.mappings.length === 0) detail = 'the program reported no mapping';
    else if (waited && e.mappings.every((m) => m.viewAfter === null)) {
      ok = true;
      detail = waitedDetail;
    } else {
      const bad: string[] = [];
      for (const m of e.mappings) {
        if (m.viewAfter === null) bad.push(`${who(m)}: never read after the removal`);
        else if (m.deviceDataAfterGone > 0) bad.push(`${who(m)}: ${m.deviceDataAfterGone} read(s) after the removal still gave device data (${m.lastRead})`);
        else if (m.viewAfter === 'device' && m.doorbellAfter === 0n) continue; // zeros and own writes: see doorbellAfter
        else if (m.viewAfter !== 'zero' && m.viewAfter !== 'own-writes') bad.push(`${who(m)}: reads after the removal showed ${m.viewAfter} (${m.lastRead})`);
      }
      ok = bad.length === 0;
      detail = ok
        ? `after the removal every mapping read ${[...new Set(e.mappings.map((m) => (m.viewAfter === 'zero' ? 'zeros' : "zeros or the program's own writes")))].join(' / ')}`
        : bad.join('; ');
    }
    checks.push({ name: 'reads-return-zero', ok, detail });
  }

  // unplug-not-blocked
  {
    const g = e.guestRemoved;
    let ok = false;
    let detail: string;
    const rel = (t: { atMs: number } | null) => (t ? `${t.atMs - e.vanishAtMs} ms` : 'never');
    if (g && g.contextOpen && (e.contextClosed === null || e.contextClosed.atMs >= g.atMs)) {
      const ms = g.atMs - e.vanishAtMs;
      ok = ms <= BOUNDS.unplugMs;
      detail = ok
        ? `the ib device left ${ms} ms after the vanish with the context still open (bound ${BOUNDS.unplugMs} ms)`
        : `the ib device left ${ms} ms after the vanish, over the ${BOUNDS.unplugMs} ms bound`;
    } else if (e.contextClosed !== null) {
      detail = `removal waited for user space: the program gave up and closed its context ${rel(e.contextClosed)} after the vanish with the device still there; DEVICE_DELETED came ${rel(e.deviceDeleted)} after the vanish`;
    } else {
      detail = 'the guest program never saw its ib device leave';
    }
    checks.push({ name: 'unplug-not-blocked', ok, detail });
  }

  // no-kernel-warnings
  {
    const trouble = kernelTrouble(e.kernelLog);
    checks.push({
      name: 'no-kernel-warnings',
      ok: trouble.length === 0,
      detail: trouble.length === 0 ? 'no WARN, BUG, Oops or lockdep report in the guest log' : `${trouble.length} line(s), first: ${trouble[0].trim().slice(0, 200)}`,
    });
  }

  // device-removed
  {
    const problems: string[] = [];
    let ms: number | null = null;
    if (!e.deviceDeleted) problems.push('QEMU never reported DEVICE_DELETED');
    else {
      ms = e.deviceDeleted.atMs - e.vanishAtMs;
      if (ms > BOUNDS.deviceDeletedMs) problems.push(`DEVICE_DELETED came ${ms} ms after the vanish, over the ${BOUNDS.deviceDeletedMs} ms bound`);
    }
    if (e.pciGone !== true) problems.push(e.pciGone === false ? '0000:01:00.0 is still in the guest\'s PCI tree' : 'the guest never said whether the PCI function left');
    if (e.ibGone !== true) problems.push(e.ibGone === false ? '/sys/class/infiniband still lists the device' : 'the guest never said whether the ib device left');
    checks.push({
      name: 'device-removed',
      ok: problems.length === 0,
      detail:
        problems.length === 0
          ? `DEVICE_DELETED ${ms} ms after the vanish; gone from the guest's PCI tree and /sys/class/infiniband (${e.goneHow})`
          : `${problems.join('; ')} (${e.goneHow})`,
    });
  }

  // no-bar-access-after-unplug
  {
    const hits = parseInvalidMem(e.invalidMem).filter((a) => inRanges(a.addr, e.bars) !== null);
    let detail: string;
    if (e.bars.length === 0) detail = 'the guest never reported where the BARs were, so the log cannot be judged';
    else if (hits.length === 0) detail = `QEMU logged no access to ${e.bars.map((b) => `${b.name} [${hex(b.start)}, ${hex(b.end)})`).join(', ')} after the removal`;
    else {
      const reads = hits.filter((h) => h.op === 'read').length;
      detail = `QEMU logged ${hits.length} access(es) to the removed BARs (${reads} reads, ${hits.length - reads} writes), first: ${hits[0].line}`;
    }
    checks.push({ name: 'no-bar-access-after-unplug', ok: e.bars.length > 0 && hits.length === 0, detail });
  }

  // removal-bounded: the guest's whole removal (driver remove, ACPI eject) within the unplug bound
  {
    let ok = false;
    let detail: string;
    const drv = e.driverRemoveMs !== undefined && e.driverRemoveMs !== null ? `; the driver's remove took ${e.driverRemoveMs} ms` : '';
    if (!e.deviceDeleted) detail = `QEMU never reported DEVICE_DELETED: the guest's removal did not finish${drv}`;
    else {
      const ms = e.deviceDeleted.atMs - e.vanishAtMs;
      ok = ms <= BOUNDS.unplugMs;
      detail = ok
        ? `the guest removed and ejected the device ${ms} ms after the vanish (bound ${BOUNDS.unplugMs} ms)${drv}`
        : `the guest's removal took ${ms} ms after the vanish, over the ${BOUNDS.unplugMs} ms bound${drv}`;
    }
    checks.push({ name: 'removal-bounded', ok, detail });
  }

  return checks;
}

/** The driver's own account of its remove (guest/driver/vrnic.c prints "remove: done in N ms"). */
export function driverRemoveMs(kernelLog: string): number | null {
  const m = /remove: done in (\d+) ms/.exec(kernelLog);
  return m ? Number(m[1]) : null;
}
