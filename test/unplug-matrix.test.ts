// Several unplug runs in one verdict: seeded vanish delays, the repeat summary's pass rate and distinct failures, the scenario x check table.
import test from 'ava';
import { verdictOf, type Check, type CheckName } from '../src/unplug/checks';
import { drawDelays, failureSignature, matrixHuman, matrixMarkdown, summarizeMatrix, summarizeRepeat } from '../src/unplug/matrix';
import type { UnplugReport } from '../src/unplug/report';
import type { ScenarioName } from '../src/unplug/scenarios';

function report(scenario: ScenarioName, checks: ReadonlyArray<readonly [CheckName, boolean, string?]>, extra: Partial<UnplugReport> = {}): UnplugReport {
  const cs: Check[] = checks.map(([name, ok, detail]) => ({ name, ok, result: ok ? 'ok' : 'FAIL', detail: detail ?? (ok ? 'fine' : 'broken') }));
  return {
    verdict: verdictOf(cs, extra.error),
    mode: 'orderly',
    driverBug: 'none',
    scenario,
    checks: cs,
    timings: { vanishToDeviceDeletedMs: 1, vanishToMappingZappedMs: 1, vanishToGuestRemovedMs: 1, deviceDelToDeviceDeletedMs: 1, bootToReadyMs: 1, totalMs: 1 },
    artifacts: {},
    ...extra,
  };
}

test('the same seed draws the same delays, each within [0, max]', (t) => {
  const a = drawDelays(1234, 50, 200);
  t.deepEqual(a, drawDelays(1234, 50, 200));
  t.notDeepEqual(a, drawDelays(1235, 50, 200));
  t.true(a.every((d) => Number.isInteger(d) && d >= 0 && d <= 200));
  t.true(new Set(a).size > 10, 'the delays spread over the range');
  t.deepEqual(drawDelays(7, 3, 0), [0, 0, 0]);
});

test('a failure signature masks the numbers and addresses that differ from run to run', (t) => {
  t.is(
    failureSignature('mapping-moved-off-bar', 'child (pid 153): present at 0xfe800000 (inside BAR2)'),
    failureSignature('mapping-moved-off-bar', 'child (pid 161): present at 0xfe801000 (inside BAR2)'),
  );
  t.not(
    failureSignature('mapping-moved-off-bar', 'child (pid 153): present at 0xfe800000 (inside BAR2)'),
    failureSignature('mapping-moved-off-bar', 'parent (pid 152): present at 0xfe800000 (inside BAR2)'),
  );
});

test('repeated runs report the pass rate and each distinct failure with its count and the runs that had it', (t) => {
  const ok = (delay: number) => report('race-close', [['process-survived', true], ['removal-bounded', true]], { vanishDelayMs: delay });
  const slow = (delay: number, ms: number) =>
    report('race-close', [['process-survived', true], ['removal-bounded', false, `the guest's removal took ${ms} ms after the vanish`]], { vanishDelayMs: delay });
  const reports = [ok(10), slow(150, 12000), ok(3), slow(199, 15000), report('race-close', [['process-survived', false, 'worker race3 (pid 200) took SIGBUS']], { vanishDelayMs: 42 })];
  const s = summarizeRepeat(reports, 99, 200);
  t.is(s.runs, 5);
  t.is(s.passed, 2);
  t.is(s.passRate, 0.4);
  t.is(s.seed, 99);
  t.deepEqual(s.delays, [10, 150, 3, 199, 42]);
  t.is(s.failures.length, 2);
  t.like(s.failures[0], { check: 'removal-bounded', count: 2 });
  t.deepEqual(s.failures[0].runs, [{ run: 2, delayMs: 150 }, { run: 4, delayMs: 199 }]);
  t.like(s.failures[1], { check: 'process-survived', count: 1, example: 'FAIL: worker race3 (pid 200) took SIGBUS' });
  t.is(s.verdict, 'FAIL');
});

test('a run that broke counts as an error of its own kind, and runs with only errors are ERROR, not FAIL', (t) => {
  const s = summarizeRepeat([report('single', [['process-survived', true]], { error: 'QEMU exited before the guest program was ready' })], 1, 10);
  t.is(s.passed, 0);
  t.is(s.errors, 1);
  t.is(s.verdict, 'ERROR');
  t.like(s.failures[0], { check: 'run-error', count: 1 });
});

test('all scenarios give one table: a column per check, - where a check does not judge a scenario, FAIL overall if any row fails', (t) => {
  const m = summarizeMatrix([
    report('single', [['process-survived', true], ['mapping-moved-off-bar', true]]),
    report('fork', [['process-survived', true], ['mapping-moved-off-bar', false, 'child (pid 153): present at 0xfe800000 (inside BAR2)']]),
    report('race-close', [['process-survived', true], ['removal-bounded', true]]),
  ]);
  t.is(m.verdict, 'FAIL');
  t.deepEqual(m.checks, ['process-survived', 'mapping-moved-off-bar', 'removal-bounded']);
  t.deepEqual(m.rows[2].cells, { 'process-survived': 'ok', 'removal-bounded': 'ok' });
  const text = matrixHuman(m, 'orderly', 'none');
  t.regex(text, /fork: mapping-moved-off-bar: FAIL: child \(pid 153\)/, 'the failure names the process');
  const md = matrixMarkdown(m).split('\n');
  t.is(md[0], '| scenario | process-survived | mapping-moved-off-bar | removal-bounded |');
  t.is(md[3], '| fork | ok | **FAIL** | - |');
  t.is(md[4], '| race-close | ok | - | ok |');
});

test('all scenarios passing is a PASS', (t) => {
  t.is(summarizeMatrix([report('single', [['process-survived', true]]), report('split', [['process-survived', true]])]).verdict, 'PASS');
  t.is(summarizeMatrix([]).verdict, 'ERROR');
});

test('a check that could not judge shows n/a in the table and makes its row ERROR', (t) => {
  const na: Check = { name: 'no-bar-access-after-unplug', result: 'n/a', ok: false, detail: "not judged: QEMU's -d invalid_mem log is missing or unreadable" };
  const r = { ...report('single', [['process-survived', true]]), checks: [report('single', [['process-survived', true]]).checks[0], na] };
  const m = summarizeMatrix([{ ...r, verdict: verdictOf(r.checks) }]);
  t.is(m.verdict, 'ERROR');
  t.is(m.rows[0].cells['no-bar-access-after-unplug'], 'n/a');
  t.regex(matrixHuman(m, 'orderly', 'none'), /single: no-bar-access-after-unplug: n\/a: not judged/);
});
