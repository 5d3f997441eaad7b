// Runs several unplug scenarios in a row: every scenario once (--scenario all), or one scenario N times with seeded random vanish delays (--repeat).
import path from 'node:path';
import { runUnplugTest, type UnplugTestOptions } from './runner';
import { drawDelays, summarizeMatrix, summarizeRepeat, type MatrixSummary, type RepeatSummary } from './matrix';
import type { UnplugReport } from './report';
import { SCENARIO_NAMES, type ScenarioName } from './scenarios';

export type BatchOptions = Omit<UnplugTestOptions, 'scenario' | 'vanishDelayMs'> & {
  /** Called after each run (progress lines). */
  readonly onRun?: (r: UnplugReport, index: number, total: number) => void;
};

/** A work directory per run under the caller's, when the caller gave one. */
function runDir(base: string | undefined, name: string, i: number): string | undefined {
  return base === undefined ? undefined : path.join(base, `${String(i + 1).padStart(3, '0')}-${name}`);
}

/** Every scenario once, in SCENARIO_NAMES order, judged in one table. */
export async function runAllScenarios(opts: BatchOptions, names: readonly ScenarioName[] = SCENARIO_NAMES): Promise<{ matrix: MatrixSummary; reports: UnplugReport[] }> {
  const reports: UnplugReport[] = [];
  for (const [i, scenario] of names.entries()) {
    const r = await runUnplugTest({ ...opts, scenario, workDir: runDir(opts.workDir, scenario, i) });
    reports.push(r);
    opts.onRun?.(r, i, names.length);
  }
  return { matrix: summarizeMatrix(reports), reports };
}

/** One scenario `runs` times, each vanish a seeded random [0, maxDelayMs] ms after the guest is ready. */
export async function runRepeated(
  opts: BatchOptions & { readonly scenario: ScenarioName; readonly runs: number; readonly maxDelayMs: number; readonly seed: number },
): Promise<{ summary: RepeatSummary; reports: UnplugReport[] }> {
  const delays = drawDelays(opts.seed, opts.runs, opts.maxDelayMs);
  const reports: UnplugReport[] = [];
  for (let i = 0; i < opts.runs; i++) {
    const r = await runUnplugTest({ ...opts, vanishDelayMs: delays[i], workDir: runDir(opts.workDir, opts.scenario, i) });
    reports.push(r);
    opts.onRun?.(r, i, opts.runs);
  }
  return { summary: summarizeRepeat(reports, opts.seed, opts.maxDelayMs), reports };
}
