// The verdict of an unplug run: the seven named checks of issue 6, each with what was seen.
import type { PfnState, PhysRange, UnplugEvidence } from './evidence';

export type CheckName =
  | 'process-survived'
  | 'mapping-moved-off-bar'
  | 'reads-return-zero'
  | 'unplug-not-blocked'
  | 'no-kernel-warnings'
  | 'device-removed'
  | 'no-bar-access-after-unplug';

export interface Check {
  readonly name: CheckName;
  readonly ok: boolean;
  readonly detail: string;
}

/**
 * The bounds the checks use, measured on a 2-core machine under TCG (no KVM): removal with a
 * disassociating driver took ~10-300 ms; these leave an order of magnitude for a noisy host.
 */
export const BOUNDS = {
  /** From the vanish to the guest seeing its ib device gone while the context is open. */
  unplugMs: 10_000,
  /** From the vanish to QEMU's DEVICE_DELETED. */
  deviceDeletedMs: 20_000,
} as const;

const hex = (v: bigint): string => `0x${v.toString(16)}`;

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

export function computeChecks(e: UnplugEvidence): Check[] {
  const checks: Check[] = [];

  // process-survived
  {
    const end = e.programEnd;
    const ok = end.kind === 'exit';
    const detail =
      end.kind === 'exit'
        ? `the program exited by itself with status ${end.code}`
        : end.kind === 'signal'
          ? `the program was killed by signal ${end.signal}`
          : 'the program never reported how it ended (hung, or the guest died)';
    checks.push({ name: 'process-survived', ok, detail });
  }

  // mapping-moved-off-bar
  {
    const after = e.mappingAfter;
    let ok = false;
    let detail: string;
    if (e.bars.length === 0) detail = 'the guest never reported where the BARs were';
    else if (!after) detail = 'the program never walked its mapping after the removal';
    else {
      ok = after.kind === 'not-present' || after.kind === 'no-vma' || (after.kind === 'present' && inRanges(after.phys, e.bars) === null);
      const before = e.mappingBefore ? `before: ${describePfn(e.mappingBefore.pfn, e.bars)}; ` : '';
      detail = `${before}after removal: ${describePfn(after, e.bars)}`;
    }
    checks.push({ name: 'mapping-moved-off-bar', ok, detail });
  }

  // reads-return-zero
  {
    const r = e.readsAfter;
    let ok = false;
    let detail: string;
    if (!r) detail = 'the program reported no reads after the removal';
    else if (r.values.length === 0) detail = 'the program read nothing after the removal';
    else {
      const own = new Set(r.ownWrites.map((v) => v.toString()));
      const device = new Set(e.deviceData.filter((v) => v !== 0n).map((v) => v.toString()));
      const bad = r.values.filter((v) => v !== 0n && !own.has(v.toString()));
      const deviceSeen = bad.filter((v) => device.has(v.toString()));
      ok = bad.length === 0;
      detail = ok
        ? `${r.values.length} reads after removal gave ${r.values.every((v) => v === 0n) ? 'zeros' : 'zeros or the program\'s own writes'}`
        : `reads after removal gave ${bad.slice(0, 4).map(hex).join(', ')}${deviceSeen.length > 0 ? ' (device data written before the vanish)' : ''}`;
    }
    checks.push({ name: 'reads-return-zero', ok, detail });
  }

  // unplug-not-blocked
  {
    const g = e.guestRemoved;
    let ok = false;
    let detail: string;
    if (!g) detail = `the guest never saw its ib device leave`;
    else {
      const ms = g.atMs - e.vanishAtMs;
      const closedFirst = e.contextClosed !== null && e.contextClosed.atMs <= g.atMs;
      ok = g.contextOpen && !closedFirst && ms <= BOUNDS.unplugMs;
      if (!g.contextOpen || closedFirst) detail = `the ib device left only after the program closed its context (${ms} ms after the vanish): removal waited for user space`;
      else if (ms > BOUNDS.unplugMs) detail = `the ib device left ${ms} ms after the vanish, over the ${BOUNDS.unplugMs} ms bound`;
      else detail = `the ib device left ${ms} ms after the vanish with the context still open (bound ${BOUNDS.unplugMs} ms)`;
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
      detail: problems.length === 0 ? `DEVICE_DELETED ${ms} ms after the vanish; gone from the guest's PCI tree and /sys/class/infiniband` : problems.join('; '),
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

  return checks;
}
