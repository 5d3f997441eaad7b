// A check's and a run's status as the strings every output prints ('ok', 'FAIL', 'n/a'; 'PASS', 'FAIL', 'ERROR'), whatever fields the report carries.
import type { Check } from './checks';
import type { UnplugReport } from './report';

/**
 * The status of one check: its `result` string when the report has one ('ok', 'FAIL', or 'n/a'
 * for a check that could not be judged), else 'ok' or 'FAIL' from `ok`. Outputs treat any other
 * string as an error.
 */
export function checkStatus(c: Check): string {
  const r = (c as Check & { readonly result?: unknown }).result;
  return typeof r === 'string' ? r : c.ok ? 'ok' : 'FAIL';
}

/** The run's verdict as printed: 'PASS', 'FAIL', or another word (such as 'ERROR') for a run that never reached one. */
export function verdictOf(r: UnplugReport): string {
  return String(r.verdict);
}
