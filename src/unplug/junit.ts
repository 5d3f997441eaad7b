// JUnit XML for unplug-test verdicts: a test suite per run (scenario), a test case per check, as CI systems read it.
import { checkStatus, verdictOf } from './status';
import type { UnplugReport } from './report';

/** Text escaped for XML attributes and character data; characters XML 1.0 cannot hold are dropped. */
export function xmlEscape(s: string): string {
  return s
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** The name a run goes by: its scenario, and its place in a --repeat series when there is one. */
export function runName(r: UnplugReport, index: number, total: number): string {
  const scenario = r.scenario ?? 'single';
  return total > 1 && r.vanishDelayMs !== undefined ? `${scenario} #${index + 1} (vanish +${r.vanishDelayMs} ms)` : scenario;
}

function testcase(classname: string, name: string, seconds: number, body: string): string {
  return `    <testcase classname="${xmlEscape(classname)}" name="${xmlEscape(name)}" time="${seconds.toFixed(3)}"${body ? `>\n${body}\n    </testcase>` : ' />'}`;
}

/**
 * One <testsuite> per report: a <testcase> per check ('ok' passes, 'FAIL' is a <failure>, 'n/a'
 * is <skipped>, anything else an <error>), plus a 'run' test case with an <error> when the run
 * itself broke (the report's `error`), so a run that never started is not an empty suite.
 */
export function reportsJunit(reports: readonly UnplugReport[]): string {
  const suites = reports.map((r, i) => {
    const name = runName(r, i, reports.length);
    const classname = `vrnic.unplug-test.${r.scenario ?? 'single'}`;
    const seconds = r.timings.totalMs / 1000;
    const cases: string[] = [];
    let failures = 0;
    let errors = 0;
    let skipped = 0;
    for (const c of r.checks) {
      const status = checkStatus(c);
      let body = '';
      if (status === 'FAIL') {
        failures++;
        body = `      <failure message="${xmlEscape(c.detail)}" type="FAIL">${xmlEscape(c.detail)}</failure>`;
      } else if (status === 'n/a') {
        skipped++;
        body = `      <skipped message="${xmlEscape(c.detail)}" />`;
      } else if (status !== 'ok') {
        errors++;
        body = `      <error message="${xmlEscape(c.detail)}" type="${xmlEscape(status)}">${xmlEscape(c.detail)}</error>`;
      }
      cases.push(testcase(classname, c.name, 0, body));
    }
    if (r.error !== undefined) {
      errors++;
      cases.push(testcase(classname, 'run', seconds, `      <error message="${xmlEscape(r.error)}" type="${xmlEscape(verdictOf(r))}">${xmlEscape(r.error)}</error>`));
    }
    const props = [
      ['verdict', verdictOf(r)],
      ['mode', r.mode],
      ['driverBug', r.driverBug],
      ...Object.entries(r.timings).map(([k, v]) => [k, v === null ? '' : String(v)]),
      ...Object.entries(r.artifacts).map(([k, v]) => [`artifact.${k}`, v]),
    ];
    return [
      `  <testsuite name="${xmlEscape(`vrnic unplug-test ${name}: mode ${r.mode}, driver bug ${r.driverBug}`)}" tests="${cases.length}" failures="${failures}" errors="${errors}" skipped="${skipped}" time="${seconds.toFixed(3)}">`,
      '    <properties>',
      ...props.map(([k, v]) => `      <property name="${xmlEscape(k)}" value="${xmlEscape(v)}" />`),
      '    </properties>',
      ...cases,
      '  </testsuite>',
    ].join('\n');
  });
  const count = (re: RegExp) => suites.reduce((n, s) => n + Number(re.exec(s)?.[1] ?? 0), 0);
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="vrnic unplug-test" tests="${count(/ tests="(\d+)"/)}" failures="${count(/ failures="(\d+)"/)}" errors="${count(/ errors="(\d+)"/)}" skipped="${count(/ skipped="(\d+)"/)}">`,
    ...suites,
    '</testsuites>',
    '',
  ].join('\n');
}
