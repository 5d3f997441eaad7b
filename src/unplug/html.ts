// One self-contained HTML page for unplug-test runs: each run's timeline (vanish, zap, ib device gone, DEVICE_DELETED, BAR accesses after removal) and its checks.
import { checkStatus, verdictOf } from './status';
import type { UnplugReport } from './report';
import { runName } from './junit';

export function htmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** A moment of the run, in ms after the vanish; null when it was never seen. */
export interface TimelineEvent {
  readonly id: string;
  readonly label: string;
  readonly atMs: number | null;
}

/** The run's moments from its timings, in the order the page lists them. */
export function timelineOf(r: UnplugReport): TimelineEvent[] {
  const t = r.timings;
  const delSent = t.vanishToDeviceDeletedMs !== null && t.deviceDelToDeviceDeletedMs !== null ? t.vanishToDeviceDeletedMs - t.deviceDelToDeviceDeletedMs : null;
  return [
    { id: 'vanish', label: r.fired ? `vanish (${r.fired.when})` : 'vanish', atMs: 0 },
    { id: 'device-del', label: 'device_del sent', atMs: delSent },
    { id: 'mapping-zapped', label: 'mapping zapped', atMs: t.vanishToMappingZappedMs },
    { id: 'ib-gone', label: 'ib device gone', atMs: t.vanishToGuestRemovedMs },
    { id: 'device-deleted', label: 'DEVICE_DELETED', atMs: t.vanishToDeviceDeletedMs },
  ];
}

const STATUS_CLASS: Record<string, string> = { ok: 'ok', FAIL: 'fail', 'n/a': 'na', PASS: 'ok' };
const statusClass = (s: string): string => STATUS_CLASS[s] ?? 'error';

const CSS = `
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #1f2328; background: #fff; }
main { padding: 0 24px 24px; }
.banner { padding: 16px 24px; color: #fff; font-size: 28px; font-weight: 700; }
.banner small { display: block; font-size: 15px; font-weight: 400; }
.banner.ok { background: #1a7f37; } .banner.fail { background: #cf222e; } .banner.error, .banner.na { background: #9a6700; }
h2 { font-size: 20px; margin: 24px 0 8px; } h3 { font-size: 16px; margin: 16px 0 8px; }
.timeline { position: relative; height: 150px; margin: 8px 48px 8px 8px; }
.axis { position: absolute; left: 0; right: 0; top: 100px; border-top: 2px solid #57606a; }
.marker { position: absolute; top: 0; height: 100px; border-left: 2px solid #0969da; }
.marker span { position: absolute; left: 4px; white-space: nowrap; font-size: 13px; background: #fff; padding: 0 2px; }
.marker.end span { left: auto; right: 4px; }
.marker.vanish { border-color: #8250df; }
.tick { position: absolute; top: 104px; font-size: 12px; color: #57606a; white-space: nowrap; }
.tick.last { transform: translateX(-100%); }
.bar-access { position: absolute; top: 118px; height: 22px; right: 0; color: #fff; font-size: 13px; padding: 2px 6px; box-sizing: border-box; white-space: nowrap; overflow: visible; }
.bar-access.ok { background: #1a7f37; } .bar-access.fail { background: #cf222e; } .bar-access.na, .bar-access.error { background: #9a6700; }
table { border-collapse: collapse; margin: 4px 0; }
td, th { text-align: left; padding: 4px 10px; border-bottom: 1px solid #d0d7de; vertical-align: top; }
.badge { display: inline-block; min-width: 44px; text-align: center; color: #fff; font-weight: 700; border-radius: 4px; padding: 1px 6px; }
.badge.ok { background: #1a7f37; } .badge.fail { background: #cf222e; } .badge.na { background: #6e7781; } .badge.error { background: #9a6700; }
.never { color: #6e7781; }
.run-error { border-left: 4px solid #9a6700; padding: 4px 10px; background: #fff8c5; }
code { font: 13px ui-monospace, monospace; }
.checks code { white-space: nowrap; }
`;

/** The timeline drawn to scale: a marker per moment seen, labels in lanes so close ones stay readable. */
function timelineHtml(r: UnplugReport): string {
  const events = timelineOf(r);
  const seen = events.filter((e): e is TimelineEvent & { atMs: number } => e.atMs !== null);
  const barCheck = r.checks.find((c) => c.name === 'no-bar-access-after-unplug');
  // The removal: from DEVICE_DELETED, else from the guest's removal; accesses after it are the bug.
  const removedAt = events.find((e) => e.id === 'device-deleted')?.atMs ?? events.find((e) => e.id === 'ib-gone')?.atMs ?? null;
  // A third of the axis is left after the last moment: the time after the removal, where any BAR access is a bug.
  const span = Math.max(1, ...seen.map((e) => e.atMs)) * 1.5;
  const pct = (ms: number) => `${((ms / span) * 100).toFixed(2)}%`;
  // Labels take roughly a fifth of the width: a later label that would overlap an earlier one in its lane goes one lane down.
  const laneEnds: number[] = [];
  const markers = [...seen]
    .sort((a, b) => a.atMs - b.atMs)
    .map((e) => {
      const x = e.atMs / span;
      let lane = laneEnds.findIndex((end) => end <= x);
      if (lane < 0) lane = laneEnds.length;
      laneEnds[lane] = x + 0.2;
      // A label near the right end reads leftwards from its marker, so it stays on the page.
      const end = x > 0.75 ? ' end' : '';
      return `<div class="marker ${e.id}${end}" data-event="${e.id}" data-ms="${e.atMs}" style="left: ${pct(e.atMs)}"><span style="top: ${(lane % 5) * 19}px">${htmlEscape(e.label)} <b>${e.atMs} ms</b></span></div>`;
    });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => `<div class="tick${f === 1 ? ' last' : ''}" style="left: ${(f * 100).toFixed(0)}%">${Math.round(f * span)} ms</div>`);
  let band = '';
  if (barCheck) {
    const status = checkStatus(barCheck);
    const from = removedAt === null ? '0%' : pct(removedAt);
    const count = /(\d+) access/.exec(barCheck.detail)?.[1];
    const text =
      status === 'ok' ? 'no BAR access after removal' : status === 'FAIL' ? `${count ?? 'some'} BAR access${count === '1' ? '' : 'es'} after removal` : `BAR accesses after removal: ${status}`;
    band = `<div class="bar-access ${statusClass(status)}" data-status="${htmlEscape(status)}" style="left: ${from}" title="${htmlEscape(barCheck.detail)}">${htmlEscape(text)}</div>`;
  }
  return `<div class="timeline" role="img" aria-label="timeline after the vanish">\n<div class="axis"></div>\n${[...markers, ...ticks, band].join('\n')}\n</div>`;
}

function runHtml(r: UnplugReport, index: number, total: number): string {
  const verdict = verdictOf(r);
  const events = timelineOf(r);
  const rows = events.map((e) => `<tr data-event="${e.id}"><td>${htmlEscape(e.label)}</td><td>${e.atMs === null ? '<span class="never">never seen</span>' : `${e.atMs} ms`}</td></tr>`);
  const checks = r.checks.map((c) => {
    const s = checkStatus(c);
    return `<tr class="check" data-check="${htmlEscape(c.name)}" data-status="${htmlEscape(s)}"><td><span class="badge ${statusClass(s)}">${htmlEscape(s)}</span></td><td><code>${htmlEscape(c.name)}</code></td><td>${htmlEscape(c.detail)}</td></tr>`;
  });
  const t = r.timings;
  const other = [
    ['boot to the program ready', t.bootToReadyMs],
    ['device_del to DEVICE_DELETED', t.deviceDelToDeviceDeletedMs],
    ['whole run', t.totalMs],
  ].map(([k, v]) => `<tr><td>${k}</td><td>${v === null ? '<span class="never">-</span>' : `${v} ms`}</td></tr>`);
  const artifacts = Object.entries(r.artifacts).map(([k, v]) => `<li>${htmlEscape(k)}: <code>${htmlEscape(v)}</code></li>`);
  return `<section class="run" data-verdict="${htmlEscape(verdict)}">
<h2>${htmlEscape(runName(r, index, total))}: <span class="badge ${statusClass(verdict)}">${htmlEscape(verdict)}</span></h2>
<p>mode ${htmlEscape(r.mode)}, driver bug ${htmlEscape(r.driverBug)}${r.vanishDelayMs !== undefined ? `, vanish ${r.vanishDelayMs} ms after the guest was ready` : ''}${r.fired ? `, vanished at ${htmlEscape(r.fired.when)}` : ''}</p>
${r.error !== undefined ? `<p class="run-error">run error: ${htmlEscape(r.error)}</p>` : ''}
<h3>Timeline (ms after the vanish)</h3>
${timelineHtml(r)}
<table class="events">${rows.join('')}</table>
<h3>Checks</h3>
<table class="checks">${checks.join('\n')}</table>
<h3>Timings</h3>
<table>${other.join('')}</table>
${artifacts.length ? `<h3>Files</h3><ul>${artifacts.join('')}</ul>` : ''}
</section>`;
}

/**
 * The page: a banner with the overall verdict (PASS only when every run passed; a run with any
 * other verdict than PASS or FAIL makes it that verdict), then each run. No scripts, no external
 * resources: it opens from a CI artifact as it is.
 */
export function reportsHtml(reports: readonly UnplugReport[], title = 'vrnic unplug-test'): string {
  const verdicts = reports.map(verdictOf);
  const overall = verdicts.find((v) => v !== 'PASS' && v !== 'FAIL') ?? (verdicts.every((v) => v === 'PASS') ? 'PASS' : 'FAIL');
  const first = reports[0];
  const what = reports.length === 1 && first ? `scenario ${first.scenario ?? 'single'}, mode ${first.mode}, driver bug ${first.driverBug}` : `${reports.length} runs`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${htmlEscape(`${title}: ${overall}`)}</title>
<style>${CSS}</style>
</head>
<body>
<div class="banner ${statusClass(overall)}" id="verdict" data-verdict="${htmlEscape(overall)}">${htmlEscape(title)}: ${htmlEscape(overall)}<small>${htmlEscape(what)}</small></div>
<main>
${reports.map((r, i) => runHtml(r, i, reports.length)).join('\n')}
</main>
</body>
</html>
`;
}
