// Several unplug runs in one verdict: `--scenario all` (a scenario x check table) and `--repeat N --random-delay MS` (a pass rate and the distinct failures).
import { combineVerdicts, type CheckName, type CheckResult, type Verdict } from './checks';
import type { UnplugReport } from './report';
import type { ScenarioName } from './scenarios';

/** A seeded PRNG (mulberry32): the same seed draws the same delays, so a failing run can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** N delays in [0, maxMs] (whole milliseconds, both ends included) from `seed`. */
export function drawDelays(seed: number, n: number, maxMs: number): number[] {
  const rand = seededRandom(seed);
  return Array.from({ length: n }, () => Math.floor(rand() * (maxMs + 1)));
}

/** A failure's signature: the check and its detail with the run-to-run noise (numbers, addresses, pids) masked. */
export function failureSignature(check: string, detail: string): string {
  const masked = detail
    .replace(/0x[0-9a-fA-F]+/g, '0x#')
    .replace(/\d+/g, '#');
  return `${check}: ${masked}`;
}

export interface DistinctFailure {
  readonly signature: string;
  readonly check: CheckName | 'run-error';
  /** How many runs failed this way, and which (1-based, with the delay each had). */
  readonly count: number;
  readonly runs: readonly { readonly run: number; readonly delayMs: number | null }[];
  /** The detail as the first such run gave it. */
  readonly example: string;
}

export interface RepeatSummary {
  readonly scenario: ScenarioName | 'single';
  readonly runs: number;
  readonly passed: number;
  /** Runs that could not judge the driver (ERROR). */
  readonly errors: number;
  readonly passRate: number;
  readonly verdict: Verdict;
  readonly seed: number;
  readonly maxDelayMs: number;
  readonly delays: readonly number[];
  readonly failures: readonly DistinctFailure[];
}

/** Groups the failed checks (and broken runs) of repeated runs by signature, most frequent first. */
export function summarizeRepeat(reports: readonly UnplugReport[], seed: number, maxDelayMs: number): RepeatSummary {
  const groups = new Map<string, { check: CheckName | 'run-error'; example: string; runs: { run: number; delayMs: number | null }[] }>();
  const add = (sig: string, check: CheckName | 'run-error', example: string, run: number, delayMs: number | null) => {
    let g = groups.get(sig);
    if (!g) groups.set(sig, (g = { check, example, runs: [] }));
    g.runs.push({ run, delayMs });
  };
  reports.forEach((r, i) => {
    const delay = r.vanishDelayMs ?? null;
    if (r.error !== undefined) add(failureSignature('run-error', r.error), 'run-error', r.error, i + 1, delay);
    for (const c of r.checks) if (c.result !== 'ok') add(failureSignature(c.name, `${c.result}: ${c.detail}`), c.name, `${c.result}: ${c.detail}`, i + 1, delay);
  });
  const passed = reports.filter((r) => r.verdict === 'PASS').length;
  const failures = [...groups.entries()]
    .map(([signature, g]) => ({ signature, check: g.check, count: g.runs.length, runs: g.runs, example: g.example }))
    .sort((a, b) => b.count - a.count || a.signature.localeCompare(b.signature));
  return {
    scenario: reports[0]?.scenario ?? 'single',
    runs: reports.length,
    passed,
    errors: reports.filter((r) => r.verdict === 'ERROR').length,
    verdict: combineVerdicts(reports.map((r) => r.verdict)),
    passRate: reports.length === 0 ? 0 : passed / reports.length,
    seed,
    maxDelayMs,
    delays: reports.map((r) => r.vanishDelayMs ?? 0),
    failures,
  };
}

export function repeatHuman(s: RepeatSummary, mode: string, driverBug: string): string {
  const pct = (s.passRate * 100).toFixed(s.passRate === 1 || s.passRate === 0 ? 0 : 1);
  const lines = [
    `vrnic unplug-test: scenario ${s.scenario}, mode ${mode}, driver bug ${driverBug}: ${s.verdict}, ${s.passed}/${s.runs} passed (${pct}%)${s.errors ? `, ${s.errors} could not judge (ERROR)` : ''}`,
    `  vanish delay drawn in [0, ${s.maxDelayMs}] ms after ready, seed ${s.seed} (replay: --seed ${s.seed})`,
  ];
  if (s.failures.length === 0) lines.push('  no failure');
  else {
    lines.push('', `  ${s.failures.length} distinct failure(s):`);
    for (const f of s.failures) {
      lines.push(`  ${String(f.count).padStart(3)}x  ${f.check}: ${f.example}`);
      lines.push(`        runs ${f.runs.map((r) => `#${r.run}${r.delayMs !== null ? ` (${r.delayMs} ms)` : ''}`).join(', ')}`);
    }
  }
  return lines.join('\n');
}

/** The scenario x check table of `--scenario all`: ok, FAIL, n/a, or - (the check does not judge that scenario). */
export interface MatrixSummary {
  readonly verdict: Verdict;
  readonly checks: readonly CheckName[];
  readonly rows: readonly {
    readonly scenario: ScenarioName;
    readonly verdict: Verdict;
    readonly cells: Readonly<Partial<Record<CheckName, CheckResult>>>;
    readonly error?: string;
    /** Every check that failed or could not judge, with its detail (which mapping or process). */
    readonly failures: readonly { readonly check: CheckName; readonly result: CheckResult; readonly detail: string }[];
  }[];
}

export function summarizeMatrix(reports: readonly UnplugReport[]): MatrixSummary {
  const checks: CheckName[] = [];
  for (const r of reports) for (const c of r.checks) if (!checks.includes(c.name)) checks.push(c.name);
  const rows = reports.map((r) => {
    const cells: Partial<Record<CheckName, CheckResult>> = {};
    for (const c of r.checks) cells[c.name] = c.result;
    return {
      scenario: r.scenario ?? 'single',
      verdict: r.verdict,
      cells,
      ...(r.error !== undefined ? { error: r.error } : {}),
      failures: r.checks.filter((c) => c.result !== 'ok').map((c) => ({ check: c.name, result: c.result, detail: c.detail })),
    };
  });
  return { verdict: combineVerdicts(rows.map((r) => r.verdict)), checks, rows };
}

/** Short column names so the table fits a terminal. */
const SHORT: Readonly<Record<CheckName, string>> = {
  'process-survived': 'survived',
  'mapping-moved-off-bar': 'off-bar',
  'reads-return-zero': 'reads-0',
  'unplug-not-blocked': 'not-blocked',
  'no-kernel-warnings': 'no-warn',
  'device-removed': 'removed',
  'no-bar-access-after-unplug': 'no-bar-acc',
  'removal-bounded': 'bounded',
  'traffic-ended': 'traffic',
};

export function matrixHuman(m: MatrixSummary, mode: string, driverBug: string): string {
  const w0 = Math.max(8, ...m.rows.map((r) => r.scenario.length));
  const cols = m.checks.map((c) => SHORT[c]);
  const cell = (v: CheckResult | undefined, w: number) => (v ?? '-').padEnd(w);
  const lines = [
    `vrnic unplug-test: all scenarios, mode ${mode}, driver bug ${driverBug}: ${m.verdict}`,
    '',
    `  ${'scenario'.padEnd(w0)}  ${'verdict'.padEnd(7)}  ${cols.map((c) => c.padEnd(Math.max(c.length, 4))).join('  ')}`,
    ...m.rows.map(
      (r) => `  ${r.scenario.padEnd(w0)}  ${r.verdict.padEnd(7)}  ${m.checks.map((c, i) => cell(r.cells[c], Math.max(cols[i].length, 4))).join('  ')}`,
    ),
    '',
    `  columns: ${m.checks.map((c) => `${SHORT[c]} = ${c}`).join(', ')}`,
  ];
  const failed = m.rows.filter((r) => r.failures.length > 0 || r.error);
  if (failed.length > 0) {
    lines.push('', '  failures:');
    for (const r of failed) {
      if (r.error) lines.push(`  ${r.scenario}: run error: ${r.error}`);
      for (const f of r.failures) lines.push(`  ${r.scenario}: ${f.check}: ${f.result}: ${f.detail}`);
    }
  }
  return lines.join('\n');
}

/** The table as Markdown (docs/unplug.md): one row per scenario, a column per check. */
export function matrixMarkdown(m: MatrixSummary): string {
  const head = `| scenario | ${m.checks.join(' | ')} |`;
  const sep = `|---|${m.checks.map(() => '---').join('|')}|`;
  const rows = m.rows.map((r) => `| ${r.scenario} | ${m.checks.map((c) => (r.cells[c] === 'FAIL' ? '**FAIL**' : r.cells[c] ?? '-')).join(' | ')} |`);
  return [head, sep, ...rows].join('\n');
}
