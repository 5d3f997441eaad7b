// The unplug verdict's checks judged on hand-written evidence: each passes on a clean run, fails for the bug it names, and says n/a (never ok) when it cannot judge.
import test from 'ava';
import { computeChecks, kernelTrouble, parseInvalidMem, verdictOf, type Check, type CheckName } from '../src/unplug/checks';
import type { MappingEvidence, UnplugEvidence } from '../src/unplug/evidence';
import { checksFor } from '../src/unplug/runner';
import { scenarioByName } from '../src/unplug/scenarios';
import { KERNEL_PROBLEM_PATTERNS } from '../guest/kit/guest-log';

const BAR0 = { name: 'BAR0', start: 0xfe000000n, end: 0xfe004000n };
const BAR2 = { name: 'BAR2', start: 0xfe800000n, end: 0xfe810000n };
const CANARY = 0xfe812000n;
const CANARY_LINE = "Invalid read at addr 0xFE812000, size 4, region '(null)', reason: rejected";

/** One mapping on the core's dummy page after the removal, as the reference driver leaves it. */
function onDummy(label: string, extra: Partial<MappingEvidence> = {}): MappingEvidence {
  return {
    label,
    file: 'uar0',
    writable: true,
    before: { kind: 'present', phys: 0xfe800000n },
    after: { kind: 'present', phys: 0x1234000n },
    viewAfter: 'own-writes',
    barReadsAfterGone: 0,
    lastDoorbell: 0n,
    lastScratch: 0x5c000012n,
    expectScratch: 0x5c000012n,
    echo: null,
    lastRead: 'doorbell 0x00000000, scratch 0x5c000012',
    ...extra,
  };
}

/** What a run with the reference driver looks like (numbers from a real run's shape). */
function clean(): UnplugEvidence {
  return {
    mode: 'surprise',
    driverBug: 'none',
    bars: [BAR0, BAR2],
    mappings: [
      onDummy('uar0', { echo: { peer: 'uar0-twin', wrote: 0xec000095n, read: 0xec000095n, seen: true } }),
      onDummy('uar0-twin', { lastScratch: 0x5c000013n, expectScratch: 0x5c000013n, echo: { peer: 'uar0', wrote: 0xec010095n, read: 0xec010095n, seen: true } }),
    ],
    programEnd: { kind: 'exit', code: 0 },
    vanishAtMs: 1000,
    guestRemoved: { atMs: 1100, contextOpen: true },
    mappingZapped: { atMs: 1090 },
    contextClosed: { atMs: 1500 },
    deviceDelSent: { atMs: 1010 },
    deviceDeleted: { atMs: 1080 },
    guestView: { pci: [], ib: [], waitedMs: 0 },
    kernelLog: 'vrnic 0000:01:00.0: remove: done in 12 ms (device gone)\n',
    kernelLogDumped: true,
    invalidMem: [CANARY_LINE],
    invalidMemAtVanish: 1,
    canary: { addr: CANARY, read: '0x00000000' },
  };
}

/** What the legacy-mmap planted bug leaves: the mapping still on BAR2, which QEMU removed (reads 0, writes vanish). */
function staleOnBar(label: string): MappingEvidence {
  return onDummy(label, {
    after: { kind: 'present', phys: 0xfe800000n },
    viewAfter: 'zero',
    barReadsAfterGone: 97,
    lastScratch: 0n,
    expectScratch: 0x5c000070n,
    echo: null,
    lastRead: 'doorbell 0x00000000, scratch 0x00000000',
  });
}

/** The clean run's mappings as a program leaves them when it never walked them after the removal. */
function unwalked(): MappingEvidence[] {
  return clean().mappings.map((m) => ({ ...m, after: null, viewAfter: null }));
}

/** The program watched to its end without seeing the device leave, closed its context at 16 s; the device left then, or never. */
function closedBeforeRemoval(deviceDeleted: { atMs: number } | null): UnplugEvidence {
  return { ...clean(), mappings: unwalked(), guestRemoved: null, contextClosed: { atMs: 16_000 }, deviceDeleted };
}

function failing(e: UnplugEvidence, names?: readonly CheckName[]): CheckName[] {
  return computeChecks(e, names).filter((c) => c.result === 'FAIL').map((c) => c.name);
}

function one(e: UnplugEvidence, name: CheckName): Check {
  const [c] = computeChecks(e, [name]);
  return c;
}

test('a clean run passes all seven checks and is a PASS', (t) => {
  const checks = computeChecks(clean());
  t.deepEqual(checks.map((c) => c.name), [
    'process-survived', 'mapping-moved-off-bar', 'reads-return-zero', 'unplug-not-blocked',
    'no-kernel-warnings', 'device-removed', 'no-bar-access-after-unplug',
  ]);
  t.deepEqual(checks.filter((c) => c.result !== 'ok').map((c) => `${c.name}: ${c.detail}`), []);
  t.is(verdictOf(checks), 'PASS');
});

// --- n/a and ERROR -------------------------------------------------------------------------------

test('a run whose QEMU invalid_mem log is missing is ERROR, not PASS: no-bar-access-after-unplug says n/a', (t) => {
  const e: UnplugEvidence = { ...clean(), invalidMem: null };
  const c = one(e, 'no-bar-access-after-unplug');
  t.is(c.result, 'n/a');
  t.false(c.ok);
  t.regex(c.detail, /invalid_mem log is missing or unreadable/);
  t.is(verdictOf(computeChecks(e)), 'ERROR');
});

test('a run whose guest kernel log never arrived is ERROR: no-kernel-warnings says n/a', (t) => {
  const e: UnplugEvidence = { ...clean(), kernelLogDumped: false };
  t.is(one(e, 'no-kernel-warnings').result, 'n/a');
  t.is(verdictOf(computeChecks(e)), 'ERROR');
});

test('a run error makes the verdict ERROR even when every check passed or one failed', (t) => {
  t.is(verdictOf(computeChecks(clean()), 'QEMU died by SIGABRT'), 'ERROR');
  t.is(verdictOf(computeChecks({ ...clean(), programEnd: { kind: 'signal', signal: 'SIGBUS', addr: '0x1' } }), 'the guest never dumped its kernel log'), 'ERROR');
  t.is(verdictOf([]), 'ERROR', 'a run with no checks judged nothing');
});

test('a failed check wins over an n/a one: FAIL, not ERROR', (t) => {
  const e: UnplugEvidence = { ...clean(), guestView: null, programEnd: { kind: 'signal', signal: 'SIGSEGV', addr: '0x7f00' } };
  t.is(one(e, 'device-removed').result, 'n/a');
  t.is(verdictOf(computeChecks(e)), 'FAIL');
});

// --- no-bar-access-after-unplug -----------------------------------------------------------------

test('the canary read must appear in the invalid_mem log, or no-bar-access-after-unplug cannot judge', (t) => {
  const noCanaryInLog = one({ ...clean(), invalidMem: ['something QEMU printed'] }, 'no-bar-access-after-unplug');
  t.is(noCanaryInLog.result, 'n/a');
  t.regex(noCanaryInLog.detail, /canary read of 0xfe812000 .* is not in QEMU's invalid_mem log/);
  // A QEMU that words the line differently is caught the same way: the canary no longer parses.
  const reworded = one({ ...clean(), invalidMem: ['guest read of unassigned address 0xFE812000 (4 bytes)'] }, 'no-bar-access-after-unplug');
  t.is(reworded.result, 'n/a');
  t.is(one({ ...clean(), canary: null }, 'no-bar-access-after-unplug').result, 'n/a');
});

test('a BAR access after the vanish fails no-bar-access-after-unplug and names the first', (t) => {
  const e = { ...clean(), invalidMem: [CANARY_LINE, "Invalid write at addr 0xFE800800, size 4, region '(null)', reason: rejected", "Invalid read at addr 0xFE800000, size 4, region '(null)', reason: rejected"] };
  const c = one(e, 'no-bar-access-after-unplug');
  t.is(c.result, 'FAIL');
  t.regex(c.detail, /2 access\(es\) .* \(1 reads, 1 writes\), first: Invalid write at addr 0xFE800800/);
});

test('only accesses logged after the vanish count against the driver', (t) => {
  const early = "Invalid read at addr 0xFE800000, size 4, region '(null)', reason: rejected";
  t.is(one({ ...clean(), invalidMem: [early, CANARY_LINE], invalidMemAtVanish: 2 }, 'no-bar-access-after-unplug').result, 'ok');
  t.is(one({ ...clean(), invalidMem: [CANARY_LINE, early], invalidMemAtVanish: 1 }, 'no-bar-access-after-unplug').result, 'FAIL');
});

test('invalid_mem lines outside the BARs do not count against the device', (t) => {
  const e = { ...clean(), invalidMem: [CANARY_LINE, "Invalid write at addr 0x80, size 1, region '(null)', reason: rejected"] };
  t.deepEqual(failing(e), []);
});

test('QEMU invalid_mem lines parse into operation, address, size and position', (t) => {
  t.deepEqual(parseInvalidMem(['other', "Invalid write at addr 0xFE800040, size 8, region '(null)', reason: rejected"]).map((a) => [a.op, a.addr, a.size, a.index]), [
    ['write', 0xfe800040n, 8, 1],
  ]);
});

// --- mapping-moved-off-bar and reads-return-zero ---------------------------------------------------

test('legacy-mmap: a mapping left on the removed BAR fails mapping-moved-off-bar, reads-return-zero (showing what it read) and no-bar-access', (t) => {
  const e: UnplugEvidence = {
    ...clean(),
    mappings: [staleOnBar('uar0'), { ...staleOnBar('uar0-twin'), echo: { peer: 'uar0', wrote: 0xec010095n, read: 0n, seen: false } }],
    invalidMem: [CANARY_LINE, "Invalid read at addr 0xFE800000, size 4, region '(null)', reason: rejected"],
  };
  t.deepEqual(failing(e), ['mapping-moved-off-bar', 'reads-return-zero', 'no-bar-access-after-unplug']);
  t.regex(one(e, 'mapping-moved-off-bar').detail, /uar0: present at 0xfe800000 \(inside BAR2\) -> present at 0xfe800000 \(inside BAR2\)/);
  const reads = one(e, 'reads-return-zero').detail;
  t.regex(reads, /uar0: read doorbell 0x00000000, scratch 0x00000000 after writing 0x5c000070; 97 read\(s\) after the removal still went to the BAR; its writes vanish/);
  t.regex(reads, /0xec010095 written through one of uar0-twin and uar0 read back through the other as 0x00000000/);
});

test('a stale mapping that reads all-ones (the gone device still mapped) fails reads-return-zero', (t) => {
  const m = onDummy('uar0', { lastDoorbell: 0xffffffffn, lastScratch: 0x5c000012n });
  const c = one({ ...clean(), mappings: [m] }, 'reads-return-zero');
  t.is(c.result, 'FAIL');
  t.regex(c.detail, /all-ones/);
});

test("the dummy page keeping the program's own doorbell writes is not device data (a vanish during setup)", (t) => {
  // The mapping was zapped before the program wrote its doorbell pattern: the dummy page holds it.
  const m = onDummy('uar0', { viewAfter: 'device', lastDoorbell: 0x10010n, lastRead: 'doorbell 0x00010010, scratch 0x5c000091' });
  t.deepEqual(failing({ ...clean(), mappings: [m] }), []);
});

test('mappings of one uverbs file on different RAM frames are not the core dummy page: mapping-moved-off-bar fails', (t) => {
  // What a driver that hands each VMA its own zeroed page does (4.19's mlx5 gave each an anonymous page).
  const e = { ...clean(), mappings: [clean().mappings[0], { ...clean().mappings[1], after: { kind: 'present' as const, phys: 0x5678000n } }] };
  const c = one(e, 'mapping-moved-off-bar');
  t.is(c.result, 'FAIL');
  t.regex(c.detail, /one uverbs file \(uar0\) point at 2 different RAM frames/);
});

test('a mapping not present or gone after the removal is not on the dummy page: mapping-moved-off-bar fails', (t) => {
  for (const after of [{ kind: 'not-present' as const }, { kind: 'no-vma' as const }]) {
    t.deepEqual(failing({ ...clean(), mappings: [onDummy('uar0', { after })] }), ['mapping-moved-off-bar'], after.kind);
  }
});

test('a write through one mapping not seen through another of the same file fails reads-return-zero', (t) => {
  const m = onDummy('page0', { echo: { peer: 'page2', wrote: 0xec000095n, read: 0n, seen: false } });
  t.deepEqual(failing({ ...clean(), mappings: [m] }), ['reads-return-zero']);
});

test('a read-only piece reads zeros and is judged by the echo only', (t) => {
  const ro = onDummy('page3-ro', { writable: false, lastScratch: 0n, expectScratch: null, echo: { peer: 'page0', wrote: 0xec020095n, read: 0xec020095n, seen: true } });
  t.deepEqual(failing({ ...clean(), mappings: [ro] }), []);
});

test('with several processes, a mapping left on the BAR fails naming that process and mapping only', (t) => {
  const parent = onDummy('parent', { pid: 151 });
  const child = { ...staleOnBar('child'), pid: 152 };
  const c = one({ ...clean(), mappings: [parent, child] }, 'mapping-moved-off-bar');
  t.is(c.result, 'FAIL');
  t.is(c.detail, 'child (pid 152): present at 0xfe800000 (inside BAR2) -> present at 0xfe800000 (inside BAR2)');
});

test('when the removal waited for the program, the mapping checks say n/a, not ok, and unplug-not-blocked fails', (t) => {
  // What a driver without disassociate_ucontext does: the watch times out with the device still
  // there, the program closes and exits, and only then does the device leave.
  const e = closedBeforeRemoval({ atMs: 16_050 });
  const checks = computeChecks(e);
  t.deepEqual(checks.filter((c) => c.result === 'n/a').map((c) => c.name), ['mapping-moved-off-bar', 'reads-return-zero']);
  t.deepEqual(failing(e), ['unplug-not-blocked']);
  t.regex(one(e, 'mapping-moved-off-bar').detail, /not judged: the removal waited for the program/);
  t.regex(one(e, 'unplug-not-blocked').detail, /waited for user space/);
  t.is(verdictOf(checks), 'FAIL');
});

test('a program that reported no mapping leaves the mapping checks n/a', (t) => {
  t.is(one({ ...clean(), mappings: [] }, 'mapping-moved-off-bar').result, 'n/a');
  t.is(one({ ...clean(), mappings: [] }, 'reads-return-zero').result, 'n/a');
});

// --- the other checks -------------------------------------------------------------------------

test('a device that never left fails unplug-not-blocked (the removal never finished) and device-removed from the guest listing', (t) => {
  // The program's mappings were zapped, but the ib device never left: the program watched to the
  // end of its watch, closed, and the guest still listed the device afterwards.
  const e: UnplugEvidence = { ...closedBeforeRemoval(null), guestView: { pci: ['0000:01:00.0'], ib: ['vrnic0'], waitedMs: 10_000 } };
  t.deepEqual(failing(e), ['unplug-not-blocked', 'device-removed']);
  t.regex(one(e, 'unplug-not-blocked').detail, /removal never finished: .* still listed its ib device vrnic0/);
  t.regex(one(e, 'device-removed').detail, /still lists the PCI function 0000:01:00\.0; the guest still lists the ib device vrnic0/);
  // It did not wait for the program (it never finished): the mappings were never walked after it.
  t.regex(one(e, 'mapping-moved-off-bar').detail, /^not judged: uar0: never walked after the removal/);
  t.is(verdictOf(computeChecks(e)), 'FAIL');
});

test('a program killed before it saw its device leave fails process-survived; the checks that needed it to watch say n/a', (t) => {
  const e: UnplugEvidence = {
    ...clean(),
    mappings: unwalked(),
    programEnd: { kind: 'signal', signal: 'SIGBUS', addr: '0x7f2d714a9000' },
    guestRemoved: null,
    contextClosed: null,
  };
  const checks = computeChecks(e);
  t.deepEqual(failing(e), ['process-survived']);
  t.deepEqual(checks.filter((c) => c.result === 'n/a').map((c) => c.name), ['mapping-moved-off-bar', 'reads-return-zero', 'unplug-not-blocked']);
  t.regex(one(e, 'unplug-not-blocked').detail, /took SIGBUS before it saw its ib device leave/);
  t.is(verdictOf(checks), 'FAIL');
  // A mapping on the BAR still fails, whatever another mapping could not show.
  const mixed = one({ ...e, mappings: [staleOnBar('uar0'), { ...onDummy('uar0-twin'), after: null }] }, 'mapping-moved-off-bar');
  t.is(mixed.result, 'FAIL');
  t.regex(mixed.detail, /uar0: .*inside BAR2.*; uar0-twin: never walked after the removal/);
});

test('a removal slower than the bound fails unplug-not-blocked and says how slow', (t) => {
  const e: UnplugEvidence = { ...clean(), guestRemoved: { atMs: 1000 + 60_000, contextOpen: true }, contextClosed: null };
  t.deepEqual(failing(e), ['unplug-not-blocked']);
  t.regex(one(e, 'unplug-not-blocked').detail, /60000 ms/);
});

test('a program killed by a signal fails process-survived', (t) => {
  t.deepEqual(failing({ ...clean(), programEnd: { kind: 'signal', signal: 'SIGBUS', addr: '0x7f0000000000' } }), ['process-survived']);
});

test('process-survived fails when a forked process died by a signal, even though the main program exited', (t) => {
  const c = one({ ...clean(), processFailures: ['child pid 152 of pid 151 ended by signal 7'] }, 'process-survived');
  t.is(c.result, 'FAIL');
  t.regex(c.detail, /exited by itself with status 0; child pid 152 of pid 151 ended by signal 7/);
});

test('a WARN in the guest log fails no-kernel-warnings quoting the line that says what warned, even when the dump never came', (t) => {
  // As 6.1 prints one: the "cut here" marker first, then the line naming the file and function.
  const log = 'ok\n[   12.2] ------------[ cut here ]------------\n[   12.3] WARNING: CPU: 0 PID: 55 at drivers/infiniband/core/rdma_core.c:940 uverbs_destroy_ufile_hw+0x1/0x2\n';
  for (const dumped of [true, false]) {
    const c = one({ ...clean(), kernelLog: log, kernelLogDumped: dumped }, 'no-kernel-warnings');
    t.is(c.result, 'FAIL');
    t.regex(c.detail, /^WARN: 2 line\(s\), first: \[ +12\.3\] WARNING: .*rdma_core\.c:940/);
  }
});

test('the kernel pattern list catches each kind of report it names and not ordinary lines', (t) => {
  const samples: Record<string, string> = {
    WARN: 'WARNING: CPU: 0 PID: 1 at mm/memory.c:1 x+0x1/0x2',
    BUG: 'BUG: unable to handle page fault for address: 0000000000000008',
    Oops: 'Oops: 0000 [#1] PREEMPT SMP NOPTI',
    'Call Trace': ' Call Trace:',
    'Kernel panic': 'Kernel panic - not syncing: Fatal exception',
    'hung task': 'INFO: task kworker/0:1:23 blocked for more than 120 seconds.',
    lockdep: 'WARNING: possible circular locking dependency detected',
    KASAN: 'BUG: KASAN: use-after-free in vrnic_remove+0x1/0x2',
    UBSAN: 'UBSAN: shift-out-of-bounds in drivers/x.c:1:2',
    'Unknown symbol': 'vrnic: Unknown symbol ib_register_device (err -2)',
  };
  const kinds = new Set(KERNEL_PROBLEM_PATTERNS.map((p) => p.kind));
  for (const [kind, line] of Object.entries(samples)) {
    t.true(kinds.has(kind), `the list has ${kind}`);
    t.true(KERNEL_PROBLEM_PATTERNS.some((p) => p.kind === kind && p.re.test(line)), `${kind} matches ${line}`);
    t.deepEqual(kernelTrouble(line), [line]);
  }
  t.deepEqual(kernelTrouble('vrnic: planted bug legacy-mmap is active (negative control)\nreport a bug to the maintainer\nvrnic 0000:01:00.0: register 0x000 reads all-ones: device gone, no more commands\n'), []);
});

test("device-removed reads the guest's own listing: a PCI function or ib device left behind fails it, no listing is n/a", (t) => {
  t.deepEqual(failing({ ...clean(), guestView: { pci: ['0000:01:00.0'], ib: [], waitedMs: 10_000 } }), ['device-removed']);
  const ib = one({ ...clean(), guestView: { pci: [], ib: ['vrnic0'], waitedMs: 10_000 } }, 'device-removed');
  t.is(ib.result, 'FAIL');
  t.regex(ib.detail, /still lists the ib device vrnic0/);
  t.is(one({ ...clean(), guestView: null }, 'device-removed').result, 'n/a');
  t.deepEqual(failing({ ...clean(), deviceDeleted: null }), ['device-removed']);
});

test('removal-bounded passes when the guest removed the device within the bound and says how long the driver took', (t) => {
  const c = one({ ...clean(), driverRemoveMs: 12 }, 'removal-bounded');
  t.true(c.ok);
  t.is(c.detail, "the guest removed and ejected the device 80 ms after the vanish (bound 10000 ms); the driver's remove took 12 ms");
});

test('removal-bounded fails when the removal took longer than the bound or never finished', (t) => {
  const slow = one({ ...clean(), deviceDeleted: { atMs: 1000 + 15_083 } }, 'removal-bounded');
  t.is(slow.result, 'FAIL');
  t.regex(slow.detail, /took 15083 ms after the vanish, over the 10000 ms bound/);
  t.is(one({ ...clean(), deviceDeleted: null }, 'removal-bounded').result, 'FAIL');
});

test('a removal during other work is judged on mappings only when the program had made one', (t) => {
  const during = scenarioByName('vanish-during-alloc-ucontext');
  if (!during) throw new Error('no scenario');
  t.false(checksFor(during, { ...clean(), mappings: [] }).includes('mapping-moved-off-bar'));
  t.true(checksFor(during, clean()).includes('mapping-moved-off-bar'));
  const single = scenarioByName('single');
  if (!single) throw new Error('no scenario');
  t.true(checksFor(single, { ...clean(), mappings: [] }).includes('mapping-moved-off-bar'), 'a held mapping that never showed up is judged (n/a), not skipped');
});

/** The traffic scenario's evidence: both sides of the ping-pong ended by EIO after the vanish. */
function trafficRun(ends: UnplugEvidence['trafficEnds']): UnplugEvidence {
  return { ...clean(), mappings: [], trafficEnds: ends };
}

function trafficEnded(e: UnplugEvidence): Check {
  return one(e, 'traffic-ended');
}

test('traffic-ended passes when both sides of the ping-pong end by EIO or an error completion after the vanish', (t) => {
  const c = trafficEnded(trafficRun([
    { label: 'requester', reason: 'eio', roundTrips: 14, atMs: 1500 },
    { label: 'responder', reason: 'error-cqe', roundTrips: 14, atMs: 1400 },
  ]));
  t.is(c.result, 'ok', c.detail);
  t.regex(c.detail, /requester: eio 500 ms after the vanish after 14 round trips; responder: error-cqe 400 ms/);
});

test('traffic-ended fails when a side of the ping-pong hung, went silent, or stopped before the device vanished', (t) => {
  const silent = trafficEnded(trafficRun([
    { label: 'requester', reason: 'no-answer', roundTrips: 14, atMs: 31000 },
    { label: 'responder', reason: 'eio', roundTrips: 14, atMs: 1400 },
  ]));
  t.is(silent.result, 'FAIL');
  t.regex(silent.detail, /requester's traffic ended by no-answer/);
  const missing = trafficEnded(trafficRun([{ label: 'requester', reason: 'eio', roundTrips: 3, atMs: 1500 }]));
  t.is(missing.result, 'FAIL');
  t.regex(missing.detail, /responder never reported how its traffic ended/);
  const early = trafficEnded(trafficRun([
    { label: 'requester', reason: 'error-cqe', roundTrips: 3, atMs: 900 },
    { label: 'responder', reason: 'eio', roundTrips: 3, atMs: 1400 },
  ]));
  t.is(early.result, 'FAIL');
  t.regex(early.detail, /requester's traffic ended \(error-cqe\) before the vanish/);
  t.is(trafficEnded(trafficRun(undefined)).result, 'FAIL');
});

test('the traffic scenario is judged without the mapping checks and with traffic-ended', (t) => {
  const s = scenarioByName('traffic');
  t.truthy(s);
  const names = s ? checksFor(s, trafficRun([])) : [];
  t.true(names.includes('traffic-ended'));
  t.false(names.includes('mapping-moved-off-bar'));
  t.false(names.includes('reads-return-zero'));
});
