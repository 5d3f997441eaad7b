// The unplug verdict's checks judged on hand-written evidence: each check passes on a clean run and fails for its own reason.
import test from 'ava';
import { computeChecks, kernelTrouble, parseInvalidMem, type CheckName } from '../src/unplug/checks';
import type { UnplugEvidence } from '../src/unplug/evidence';
import { checksFor } from '../src/unplug/runner';
import { scenarioByName } from '../src/unplug/scenarios';

const BAR0 = { name: 'BAR0', start: 0xfe000000n, end: 0xfe004000n };
const BAR2 = { name: 'BAR2', start: 0xfe800000n, end: 0xfe810000n };

/** What a run with the reference driver looks like (numbers from a real run's shape). */
function clean(): UnplugEvidence {
  return {
    mode: 'surprise',
    driverBug: 'none',
    bars: [BAR0, BAR2],
    mappings: [
      {
        label: 'uar0',
        before: { kind: 'present', phys: 0xfe800000n },
        after: { kind: 'present', phys: 0x1234000n },
        viewAfter: 'own-writes',
        deviceDataAfterGone: 0,
        lastRead: 'doorbell 0x00000000, scratch 0x5c000012',
      },
    ],
    programEnd: { kind: 'exit', code: 0 },
    vanishAtMs: 1000,
    guestRemoved: { atMs: 1100, contextOpen: true },
    mappingZapped: { atMs: 1090 },
    contextClosed: { atMs: 1500 },
    deviceDelSent: { atMs: 1010 },
    deviceDeleted: { atMs: 1080 },
    pciGone: true,
    ibGone: true,
    goneHow: 'test evidence',
    kernelLog: 'vrnic 0000:01:00.0: remove: done in 12 ms (device gone)\n',
    invalidMem: [],
  };
}

function failing(e: UnplugEvidence): CheckName[] {
  return computeChecks(e).filter((c) => !c.ok).map((c) => c.name);
}

test('a clean run passes all seven checks', (t) => {
  const checks = computeChecks(clean());
  t.deepEqual(checks.map((c) => c.name), [
    'process-survived', 'mapping-moved-off-bar', 'reads-return-zero', 'unplug-not-blocked',
    'no-kernel-warnings', 'device-removed', 'no-bar-access-after-unplug',
  ]);
  t.deepEqual(failing(clean()), []);
});

test('a mapping still on the BAR with logged BAR accesses fails mapping-moved-off-bar and no-bar-access-after-unplug', (t) => {
  const e: UnplugEvidence = {
    ...clean(),
    mappings: [{ ...clean().mappings[0], after: { kind: 'present', phys: 0xfe800000n }, viewAfter: 'zero' }],
    invalidMem: ["Invalid read at addr 0xFE800000, size 4, region '(null)', reason: rejected"],
  };
  t.deepEqual(failing(e), ['mapping-moved-off-bar', 'no-bar-access-after-unplug']);
  const detail = computeChecks(e).find((c) => c.name === 'mapping-moved-off-bar')?.detail ?? '';
  t.regex(detail, /inside BAR2/);
});

test('a removal that waited for the program to close its context fails unplug-not-blocked only', (t) => {
  // What a driver without disassociate_ucontext does: the watch times out with the device still
  // there, the program closes and exits, and only then does the device leave.
  const e: UnplugEvidence = {
    ...clean(),
    mappings: [{ ...clean().mappings[0], after: null, viewAfter: null }],
    guestRemoved: null,
    contextClosed: { atMs: 16_000 },
    deviceDeleted: { atMs: 16_050 },
  };
  t.deepEqual(failing(e), ['unplug-not-blocked']);
  t.regex(computeChecks(e)[3].detail, /waited for user space/);
});

test('a device that never left fails unplug-not-blocked and device-removed', (t) => {
  const e: UnplugEvidence = { ...clean(), guestRemoved: null, contextClosed: { atMs: 16_000 }, deviceDeleted: null, pciGone: false, ibGone: false };
  t.deepEqual(failing(e), ['unplug-not-blocked', 'device-removed']);
});

test('a removal slower than the bound fails unplug-not-blocked and says how slow', (t) => {
  const e: UnplugEvidence = { ...clean(), guestRemoved: { atMs: 1000 + 60_000, contextOpen: true }, contextClosed: null };
  t.deepEqual(failing(e), ['unplug-not-blocked']);
  t.regex(computeChecks(e)[3].detail, /60000 ms/);
});

test('a program killed by a signal fails process-survived', (t) => {
  t.deepEqual(failing({ ...clean(), programEnd: { kind: 'signal', signal: 'SIGBUS', addr: '0x7f0000000000' } }), ['process-survived']);
});

test('a read of device data after removal fails reads-return-zero and says it was device data', (t) => {
  const e = { ...clean(), mappings: [{ ...clean().mappings[0], viewAfter: 'device', deviceDataAfterGone: 12 }] };
  t.deepEqual(failing(e), ['reads-return-zero']);
  t.regex(computeChecks(e)[2].detail, /12 read\(s\) after the removal still gave device data/);
});

test('every mapping is judged: one piece left on the BAR fails the check and is named', (t) => {
  const e = {
    ...clean(),
    mappings: [clean().mappings[0], { ...clean().mappings[0], label: 'child', after: { kind: 'present' as const, phys: 0xfe801000n } }],
  };
  t.deepEqual(failing(e), ['mapping-moved-off-bar']);
  t.regex(computeChecks(e)[1].detail, /^child: /);
});

test('a WARN in the guest log fails no-kernel-warnings with the line', (t) => {
  const log = 'ok\n[   12.3] WARNING: CPU: 0 PID: 55 at drivers/infiniband/core/rdma_core.c:940 uverbs_destroy_ufile_hw+0x1/0x2\n';
  const e = { ...clean(), kernelLog: log };
  t.deepEqual(failing(e), ['no-kernel-warnings']);
  t.regex(computeChecks(e)[4].detail, /rdma_core\.c:940/);
});

test('no DEVICE_DELETED, or a device left in the guest, fails device-removed', (t) => {
  t.deepEqual(failing({ ...clean(), deviceDeleted: null }), ['device-removed']);
  t.deepEqual(failing({ ...clean(), ibGone: false }), ['device-removed']);
});

test('invalid_mem lines outside the BARs do not count against the device', (t) => {
  const e = { ...clean(), invalidMem: ["Invalid write at addr 0x80, size 1, region '(null)', reason: rejected"] };
  t.deepEqual(failing(e), []);
});

test('QEMU invalid_mem lines parse into operation, address and size', (t) => {
  t.deepEqual(parseInvalidMem(["Invalid write at addr 0xFE800040, size 8, region '(null)', reason: rejected", 'other']).map((a) => [a.op, a.addr, a.size]), [
    ['write', 0xfe800040n, 8],
  ]);
});

test('kernel trouble is found in BUG, Oops and lockdep lines and not in ordinary ones', (t) => {
  t.is(kernelTrouble('BUG: unable to handle page fault for address: 0\nOops: 0000 [#1] SMP\nfine line\n').length, 2);
  t.is(kernelTrouble('WARNING: possible circular locking dependency detected\n').length, 1);
  t.is(kernelTrouble('vrnic: planted bug legacy-mmap is active (negative control)\n').length, 0);
});

test('with several processes, a mapping left on the BAR fails naming that process and mapping only', (t) => {
  const parent = { ...clean().mappings[0], label: 'parent', pid: 151 };
  const child = { ...clean().mappings[0], label: 'child', pid: 152, after: { kind: 'present' as const, phys: 0xfe800000n } };
  const c = computeChecks({ ...clean(), mappings: [parent, child] }).find((x) => x.name === 'mapping-moved-off-bar');
  t.false(c?.ok);
  t.is(c?.detail, 'child (pid 152): present at 0xfe800000 (inside BAR2) -> present at 0xfe800000 (inside BAR2)');
});

test('process-survived fails when a forked process died by a signal, even though the main program exited', (t) => {
  const e: UnplugEvidence = { ...clean(), processFailures: ['child pid 152 of pid 151 ended by signal 7'] };
  const c = computeChecks(e).find((x) => x.name === 'process-survived');
  t.false(c?.ok);
  t.regex(c?.detail ?? '', /exited by itself with status 0; child pid 152 of pid 151 ended by signal 7/);
});

test('removal-bounded passes when the guest removed the device within the bound and says how long the driver took', (t) => {
  const [c] = computeChecks({ ...clean(), driverRemoveMs: 12 }, ['removal-bounded']);
  t.true(c.ok);
  t.is(c.detail, "the guest removed and ejected the device 80 ms after the vanish (bound 10000 ms); the driver's remove took 12 ms");
});

test('removal-bounded fails when the removal took longer than the bound or never finished', (t) => {
  const [slow] = computeChecks({ ...clean(), deviceDeleted: { atMs: 1000 + 15_083 } }, ['removal-bounded']);
  t.false(slow.ok);
  t.regex(slow.detail, /took 15083 ms after the vanish, over the 10000 ms bound/);
  const [never] = computeChecks({ ...clean(), deviceDeleted: null }, ['removal-bounded']);
  t.false(never.ok);
});

test('a removal during other work is judged on mappings only when the program had made one', (t) => {
  const during = scenarioByName('vanish-during-alloc-ucontext');
  if (!during) throw new Error('no scenario');
  t.false(checksFor(during, { ...clean(), mappings: [] }).includes('mapping-moved-off-bar'));
  t.true(checksFor(during, clean()).includes('mapping-moved-off-bar'));
  const single = scenarioByName('single');
  if (!single) throw new Error('no scenario');
  t.true(checksFor(single, { ...clean(), mappings: [] }).includes('mapping-moved-off-bar'), 'a held mapping that never showed up is a failure, not a skip');
});

test("a 'device' view whose doorbell word reads zero is the program's own writes, not device data (the mapping was zapped before the program read its expectation)", (t) => {
  const m = { ...clean().mappings[0], viewAfter: 'device', doorbellAfter: 0n, lastRead: 'doorbell 0x00000000, scratch 0x5c000091' };
  t.deepEqual(failing({ ...clean(), mappings: [m] }), []);
  const stale = { ...m, doorbellAfter: 0x10010n, lastRead: 'doorbell 0x00010010, scratch 0x5c000091' };
  t.deepEqual(failing({ ...clean(), mappings: [stale] }), ['reads-return-zero']);
});
