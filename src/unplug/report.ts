// The unplug-test report: one JSON object (--json) or a human summary, built from the checks and timings.
import type { IrqDecision } from '../../qemu-config/msix-unplug';
import type { VanishMode } from '../control/protocol';
import type { Check, Verdict } from './checks';
import type { DriverBug, UnplugEvidence } from './evidence';
import type { FiredEvent } from '../control/armer';
import type { ScenarioName } from './scenarios';

export interface UnplugTimings {
  /** From the vanish to QEMU's DEVICE_DELETED (host clock). */
  readonly vanishToDeviceDeletedMs: number | null;
  /** From the vanish to the guest program first seeing its mapping off the BAR. */
  readonly vanishToMappingZappedMs: number | null;
  /** From the vanish to the guest seeing its ib device leave. */
  readonly vanishToGuestRemovedMs: number | null;
  /** From device_del to DEVICE_DELETED. */
  readonly deviceDelToDeviceDeletedMs: number | null;
  /** Guest boot: QEMU start to the test program's first report. */
  readonly bootToReadyMs: number | null;
  /** The whole run. */
  readonly totalMs: number;
}

export interface UnplugReport {
  /** PASS, FAIL, or ERROR (the run broke or could not judge; see `error` and the n/a checks). */
  readonly verdict: Verdict;
  readonly mode: VanishMode;
  readonly driverBug: DriverBug;
  /** The scenario (src/unplug/scenarios.ts) the run played. */
  readonly scenario?: ScenarioName;
  /** How the platform removed the device (acpi or native), when chosen. */
  readonly hotplug?: 'acpi' | 'native';
  /** How long after the guest was ready the vanish was started (a --random-delay run). */
  readonly vanishDelayMs?: number;
  /** For a vanish armed at a device event: what fired it. */
  readonly fired?: FiredEvent;
  /** The device's interrupt mode and why it was chosen (`--irq`). */
  readonly irq?: IrqDecision;
  readonly checks: readonly Check[];
  readonly timings: UnplugTimings;
  /** Where the run's logs are (console, QEMU's invalid_mem log, the daemon's log), when kept. */
  readonly artifacts: Readonly<Record<string, string>>;
  /** Set when the run itself broke or lacks evidence a check needs (the verdict is then ERROR). */
  readonly error?: string;
}

export function timingsFrom(e: UnplugEvidence, startedAtMs: number, readyAtMs: number | null, endedAtMs: number): UnplugTimings {
  const since = (t: { atMs: number } | null, from: number | null) => (t && from !== null ? t.atMs - from : null);
  return {
    vanishToDeviceDeletedMs: since(e.deviceDeleted, e.vanishAtMs),
    vanishToMappingZappedMs: since(e.mappingZapped, e.vanishAtMs),
    vanishToGuestRemovedMs: since(e.guestRemoved, e.vanishAtMs),
    deviceDelToDeviceDeletedMs: e.deviceDelSent ? since(e.deviceDeleted, e.deviceDelSent.atMs) : null,
    bootToReadyMs: readyAtMs !== null ? readyAtMs - startedAtMs : null,
    totalMs: endedAtMs - startedAtMs,
  };
}

/** The --json object: verdict, checks and timings first, so a reader of the file sees the outcome at once. */
export function reportJson(r: UnplugReport): string {
  return JSON.stringify({
    verdict: r.verdict,
    checks: r.checks,
    timings: r.timings,
    mode: r.mode,
    driverBug: r.driverBug,
    ...(r.scenario !== undefined ? { scenario: r.scenario } : {}),
    ...(r.hotplug !== undefined ? { hotplug: r.hotplug } : {}),
    ...(r.vanishDelayMs !== undefined ? { vanishDelayMs: r.vanishDelayMs } : {}),
    ...(r.fired !== undefined ? { fired: r.fired } : {}),
    artifacts: r.artifacts,
    ...(r.error !== undefined ? { error: r.error } : {}),
  });
}

export function reportHuman(r: UnplugReport): string {
  const width = Math.max(...r.checks.map((c) => c.name.length), 10);
  const fmt = (v: number | null) => (v === null ? '-' : `${v} ms`);
  const lines = [
    `vrnic unplug-test: ${r.scenario ? `scenario ${r.scenario}, ` : ''}mode ${r.mode}${r.hotplug ? `, ${r.hotplug} hotplug` : ''}, driver bug ${r.driverBug}: ${r.verdict}`,
    ...(r.irq ? [`  interrupts: ${r.irq.mode} (${r.irq.reason})`] : []),
    ...(r.fired ? [`  vanished at ${r.fired.when}: ${JSON.stringify(r.fired.record)}`] : []),
    ...(r.vanishDelayMs !== undefined ? [`  vanish ${r.vanishDelayMs} ms after the guest was ready`] : []),
    ...(r.error ? [`  run error: ${r.error}`] : []),
  ];
  // A run that never started has nothing to judge: no table, only the error.
  if (r.checks.length === 0) return lines.join('\n');
  lines.push(
    '',
    ...r.checks.map((c) => `  ${c.result.padEnd(4)}  ${c.name.padEnd(width)}  ${c.detail}`),
    '',
    `  vanish -> DEVICE_DELETED   ${fmt(r.timings.vanishToDeviceDeletedMs)}`,
    `  vanish -> mapping zapped   ${fmt(r.timings.vanishToMappingZappedMs)}`,
    `  vanish -> guest removed    ${fmt(r.timings.vanishToGuestRemovedMs)}`,
    `  device_del -> DELETED      ${fmt(r.timings.deviceDelToDeviceDeletedMs)}`,
    `  boot -> program ready      ${fmt(r.timings.bootToReadyMs)}`,
    `  whole run                  ${fmt(r.timings.totalMs)}`,
  );
  const arts = Object.entries(r.artifacts);
  if (arts.length > 0) lines.push('', ...arts.map(([k, v]) => `  ${k}: ${v}`));
  return lines.join('\n');
}
