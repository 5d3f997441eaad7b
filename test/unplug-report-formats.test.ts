// unplug-test's --junit and --html outputs, built from constructed reports; the HTML page is opened in headless Chromium and looked at.
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Check } from '../src/unplug/checks';
import type { UnplugReport } from '../src/unplug/report';
import { reportsHtml } from '../src/unplug/html';
import { reportsJunit } from '../src/unplug/junit';
import { decodePng } from './helpers/png';
import { skipping } from './helpers/skip';

const CLI = path.resolve(__dirname, '..', 'src', 'cli.js');

const timings = { vanishToDeviceDeletedMs: 42, vanishToMappingZappedMs: 20, vanishToGuestRemovedMs: 21, deviceDelToDeviceDeletedMs: 35, bootToReadyMs: 9365, totalMs: 15012 };

/** A legacy-mmap run as the checks judge one, with a check that could not be judged ('n/a'). */
const failing: UnplugReport = {
  verdict: 'FAIL',
  mode: 'orderly',
  driverBug: 'legacy-mmap',
  scenario: 'single',
  checks: [
    { name: 'process-survived', ok: true, result: 'ok', detail: 'the program exited by itself with status 0' },
    { name: 'mapping-moved-off-bar', ok: false, result: 'FAIL', detail: 'uar0: present at 0xfe800000 (inside BAR2) -> present at 0xfe800000 (inside BAR2)' },
    { name: 'no-kernel-warnings', ok: false, result: 'n/a', detail: 'the guest never dumped its kernel log' } as Check,
    { name: 'device-removed', ok: true, result: 'ok', detail: 'DEVICE_DELETED 42 ms after the vanish' },
    { name: 'no-bar-access-after-unplug', ok: false, result: 'FAIL', detail: 'QEMU logged 265 access(es) to the removed BARs <&> after the removal' },
  ],
  timings: { ...timings, vanishToMappingZappedMs: null },
  artifacts: { workDir: '/tmp/vrnic-unplug-example' },
};

const passing: UnplugReport = {
  verdict: 'PASS',
  mode: 'orderly',
  driverBug: 'none',
  scenario: 'fork',
  checks: [
    { name: 'process-survived', ok: true, result: 'ok', detail: 'the program exited by itself with status 0' },
    { name: 'no-bar-access-after-unplug', ok: true, result: 'ok', detail: 'QEMU logged no access to the BARs after the removal' },
  ],
  timings,
  artifacts: {},
};

/** A run that never reached the guest: no checks, an error, a verdict that is neither PASS nor FAIL. */
const broken = { verdict: 'ERROR', mode: 'surprise', driverBug: 'none', scenario: 'single', checks: [], timings: { ...timings, vanishToDeviceDeletedMs: null, vanishToGuestRemovedMs: null, vanishToMappingZappedMs: null, deviceDelToDeviceDeletedMs: null, bootToReadyMs: null, totalMs: 80 }, artifacts: {}, error: 'no QEMU with vfio-user-pci' } as unknown as UnplugReport;

const testcases = (xml: string) => [...xml.matchAll(/<testcase classname="([^"]*)" name="([^"]*)"[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)].map((m) => ({ classname: m[1], name: m[2], body: m[4] ?? '' }));

test('JUnit XML holds a test case per check per scenario: FAIL a failure, n/a skipped, ok a pass', (t) => {
  const xml = reportsJunit([failing, passing]);
  t.is((xml.match(/<testsuite /g) ?? []).length, 2);
  const cases = testcases(xml);
  t.deepEqual(
    cases.map((c) => `${c.classname}/${c.name}`),
    [...failing.checks.map((c) => `vrnic.unplug-test.single/${c.name}`), ...passing.checks.map((c) => `vrnic.unplug-test.fork/${c.name}`)],
  );
  const by = (name: string, cls = 'vrnic.unplug-test.single') => cases.find((c) => c.name === name && c.classname === cls)!.body;
  t.regex(by('mapping-moved-off-bar'), /<failure message="uar0: present at 0xfe800000 \(inside BAR2\) -&gt; present/);
  t.regex(by('no-kernel-warnings'), /<skipped message="the guest never dumped its kernel log"/);
  t.is(by('process-survived'), '');
  t.regex(by('no-bar-access-after-unplug'), /265 access\(es\) to the removed BARs &lt;&amp;&gt; after/, 'details are escaped');
  t.regex(xml, /<testsuites name="vrnic unplug-test" tests="7" failures="2" errors="0" skipped="1">/);
});

test('in JUnit XML a run that never started is one errored test case, not an empty suite', (t) => {
  const xml = reportsJunit([broken]);
  const cases = testcases(xml);
  t.is(cases.length, 1);
  t.is(cases[0].name, 'run');
  t.regex(cases[0].body, /<error message="no QEMU with vfio-user-pci" type="ERROR">/);
  t.regex(xml, /<testsuite [^>]*tests="1" failures="0" errors="1" skipped="0"/);
});

test('unplug-test refuses a --junit or --html file it cannot write before running anything (exit 2)', (t) => {
  for (const flag of ['--junit', '--html']) {
    const r = spawnSync(process.execPath, [CLI, 'unplug-test', flag, '/nonexistent-dir/out'], { encoding: 'utf8', timeout: 20_000 });
    t.is(r.status, 2, r.stderr);
    t.regex(r.stderr, new RegExp(`^vrnic unplug-test: ${flag} /nonexistent-dir/out: cannot write it \\(ENOENT\\)\\n$`));
  }
});

function chromium(): string | null {
  for (const name of ['chromium', 'chromium-browser']) {
    const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
    if (r.status === 0) return r.stdout.trim();
  }
  return null;
}
const browser = chromium();
if (!browser) skipping('the HTML report in Chromium', 'chromium is not installed (apt-get install chromium)');

/** Chromium's flags for a run that touches nothing outside its own throwaway profile. */
function headless(profile: string): string[] {
  return ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', `--user-data-dir=${profile}`];
}

(browser ? test : test.skip)('headless Chromium shows the HTML report: verdict banner, the timeline in order, the BAR accesses after removal, every check', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-html-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const page = (name: string, reports: UnplugReport[]) => {
    const file = path.join(dir, `${name}.html`);
    fs.writeFileSync(file, reportsHtml(reports));
    return `file://${file}`;
  };
  const failUrl = page('fail', [failing]);
  const passUrl = page('pass', [passing]);
  const run = (args: string[]) => execFileSync(browser as string, [...headless(fs.mkdtempSync(path.join(dir, 'profile-'))), ...args], { encoding: 'utf8', timeout: 90_000, stdio: ['ignore', 'pipe', 'ignore'] });

  // What Chromium parsed: the DOM as it holds it.
  const dom = run(['--dump-dom', failUrl]);
  t.regex(dom, /<div class="banner fail" id="verdict" data-verdict="FAIL">vrnic unplug-test: FAIL/);
  const markers = [...dom.matchAll(/<div class="marker [^"]*" data-event="([^"]+)" data-ms="(\d+)" style="left: ([\d.]+)%;?">/g)].map((m) => ({ event: m[1], ms: Number(m[2]), left: Number(m[3]) }));
  t.deepEqual(markers.map((m) => m.event), ['vanish', 'device-del', 'ib-gone', 'device-deleted'], 'moments seen, in time order (the zap was never seen)');
  t.true(markers.every((m, i) => i === 0 || m.left > markers[i - 1].left), 'each later moment further right');
  t.regex(dom, /<tr data-event="mapping-zapped"><td>mapping zapped<\/td><td><span class="never">never seen<\/span>/);
  t.regex(dom, /class="bar-access fail" data-status="FAIL"[^>]*>265 BAR accesses after removal</);
  const checks = [...dom.matchAll(/<tr class="check" data-check="([^"]+)" data-status="([^"]+)">/g)].map((m) => `${m[1]}=${m[2]}`);
  t.deepEqual(checks, ['process-survived=ok', 'mapping-moved-off-bar=FAIL', 'no-kernel-warnings=n/a', 'device-removed=ok', 'no-bar-access-after-unplug=FAIL']);

  // What Chromium drew: the banner's colour says the verdict; the red of FAIL badges and the BAR band, the green of ok ones.
  const shot = (url: string, name: string) => {
    const png = path.join(dir, `${name}.png`);
    run(['--window-size=1100,900', `--screenshot=${png}`, url]);
    return decodePng(fs.readFileSync(png));
  };
  const near = (p: [number, number, number], q: [number, number, number]) => p.every((v, i) => Math.abs(v - q[i]) <= 8);
  const red: [number, number, number] = [0xcf, 0x22, 0x2e];
  const green: [number, number, number] = [0x1a, 0x7f, 0x37];
  const count = (img: ReturnType<typeof decodePng>, colour: [number, number, number], y0: number) => {
    let n = 0;
    for (let y = y0; y < img.height; y += 2) for (let x = 0; x < img.width; x += 2) if (near(img.pixel(x, y), colour)) n++;
    return n;
  };
  const fail = shot(failUrl, 'fail');
  t.is(fail.width, 1100);
  t.true(near(fail.pixel(5, 5), red), `FAIL banner is red, got ${fail.pixel(5, 5)}`);
  t.true(count(fail, red, 120) > 500, 'red below the banner: FAIL badges and the BAR-access band');
  t.true(count(fail, green, 120) > 100, 'green ok badges');
  const pass = shot(passUrl, 'pass');
  t.true(near(pass.pixel(5, 5), green), `PASS banner is green, got ${pass.pixel(5, 5)}`);
  t.is(count(pass, red, 0), 0, 'nothing red on a passing run');
});
