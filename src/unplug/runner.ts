// The unplug scenario end to end: daemon, guest, QEMU, vanish, the guest's report, and the verdict.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { ControlClient } from '../control/client';
import { controlPathFor } from '../control/server';
import type { VanishMode } from '../control/protocol';
import { errorLine, moduleLogger } from '../log';
import { flattenPci, QmpClient, type QmpEvent } from '../qmp/client';
import type { TransportChoice } from '../vfio-user/transports/index';
import { computeChecks, driverRemoveMs, verdictOf, type CheckName } from './checks';
import { formatWhen, parseWhen, whenToJson } from '../control/when';
import type { ArmedVanishResult } from '../control/server';
import { isMappingCheck, scenarioByName, type Scenario, type ScenarioName } from './scenarios';
import type { Canary, DriverBug, GuestDeviceView, PhysRange, UnplugEvidence } from './evidence';
import { prepareGuest, type GuestMachine } from './guest';
import { DEFAULT_DEVICE_ID as DEVICE_ID } from '../../qemu-config/args';
import { requireVfioUserQemu } from '../../qemu-config/qemu';
import { chooseIrq, MSIX_TEARDOWN_ABORT, recordMsixUnplug, type IrqChoice, type IrqDecision } from '../../qemu-config/msix-unplug';
import { GuestConsole, guestBar2, parseNumber, type ReportLine } from './guest-report';
import { runFiles, spawnChild, type Child } from './processes';
import { timingsFrom, type UnplugReport } from './report';

export interface UnplugTestOptions {
  readonly mode: VanishMode;
  /** What the guest runs and when the device vanishes (src/unplug/scenarios.ts; default single). */
  readonly scenario?: ScenarioName;
  /** For a scenario that vanishes once the guest is ready: wait this long after ready first (default 0). */
  readonly vanishDelayMs?: number;
  readonly driverBug?: DriverBug;
  /** QEMU >= 10.1 with vfio-user-pci; default as qemu-config/qemu.ts finds it (VRNIC_QEMU, provisioned, PATH). */
  readonly qemu?: string;
  readonly transport?: TransportChoice;
  /** The device's interrupt mode; auto (default) picks one the QEMU survives (qemu-config/msix-unplug.ts). */
  readonly irq?: IrqChoice;
  /**
   * How the platform removes the device: q35's ACPI hotplug (default), or native PCIe hotplug
   * (pciehp: QEMU presses the slot's attention button and the guest powers the slot off).
   */
  readonly hotplug?: HotplugKind;
  /** Where the run's files go; default a new private directory under the OS temp dir. */
  readonly workDir?: string;
  /** Keep the work directory (console, logs) after a PASS too; a FAIL always keeps it. */
  readonly keep?: boolean;
  /** Boot to the program's ready line (default 300 s: TCG on a busy 2-core host). */
  readonly bootTimeoutMs?: number;
  /** Vanish to the guest's final report (default 90 s). */
  readonly reportTimeoutMs?: number;
  readonly log?: Logger;
}

export const HOTPLUG_KINDS = ['acpi', 'native'] as const;
export type HotplugKind = (typeof HOTPLUG_KINDS)[number];

/** The QEMU device id the runner gives the vfio-user-pci device. */

const CLI = path.resolve(__dirname, '..', 'cli.js');

class RunError extends Error {}

/**
 * Runs one unplug scenario and returns its report. Never throws for what the guest or driver
 * did (that is the verdict); a broken setup (no QEMU, no image, daemon not starting) ends in an
 * ERROR report with `error` set, and with no checks when QEMU never started.
 */
export async function runUnplugTest(opts: UnplugTestOptions): Promise<UnplugReport> {
  const report = await runOnce(opts);
  if (report.verdict === 'PASS' && !opts.keep && opts.workDir === undefined && report.artifacts.workDir) {
    fs.rmSync(report.artifacts.workDir, { recursive: true, force: true });
    return { ...report, artifacts: {} };
  }
  return report;
}

async function runOnce(opts: UnplugTestOptions): Promise<UnplugReport> {
  const log = opts.log ?? moduleLogger('unplug');
  const mode = opts.mode;
  const driverBug = opts.driverBug ?? 'none';
  const scenario: Scenario | null = scenarioByName(opts.scenario ?? 'single');
  if (!scenario) throw new Error(`unknown scenario '${opts.scenario}'`);
  const startedAtMs = Date.now();
  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-unplug-'));
  fs.mkdirSync(workDir, { recursive: true, mode: 0o700 });
  const { files, artifacts } = runFiles(workDir);
  const guest = new GuestConsole();
  const consoleOut = fs.createWriteStream(files.console, { mode: 0o600 });
  const children: Child[] = [];
  let qmp: QmpClient | null = null;
  let control: ControlClient | null = null;
  let readyAtMs: number | null = null;
  let vanishAtMs: number | null = null;
  let deviceDelSentAtMs: number | null = null;
  let deviceDeleted: QmpEvent | null = null;
  let bars: PhysRange[] = [];
  let fired: ArmedVanishResult | null = null;
  let invalidMemAtVanish: number | undefined;
  let vmStarted = false;
  const hotplug = opts.hotplug ?? 'acpi';
  const base = {
    mode,
    driverBug,
    scenario: scenario.name,
    ...(opts.hotplug !== undefined ? { hotplug } : {}),
    ...(opts.vanishDelayMs !== undefined ? { vanishDelayMs: opts.vanishDelayMs } : {}),
  };
  let irq: IrqDecision | null = null;

  // A run that broke is ERROR. Once the guest ran, what it showed is judged and printed too; a
  // run that never started (no QEMU, no image, no daemon) has nothing to judge and shows no checks.
  const fail = (error: string): UnplugReport => {
    const e = evidence(guest, { mode, driverBug, vanishAtMs: vanishAtMs ?? Date.now(), deviceDelSentAtMs, deviceDeleted, invalidMem: readLinesOrNull(files.invalidMem), invalidMemAtVanish, qemuBars: bars });
    const checks = vmStarted ? computeChecks(e, checksFor(scenario, e)) : [];
    return { verdict: 'ERROR', ...base, ...(irq ? { irq } : {}), checks, timings: timingsFrom(e, startedAtMs, readyAtMs, Date.now()), artifacts, error };
  };

  try {
    let qemuInfo: Awaited<ReturnType<typeof requireVfioUserQemu>>;
    try {
      qemuInfo = await requireVfioUserQemu({ flag: opts.qemu });
    } catch (err) {
      throw new RunError((err as Error).message);
    }
    const qemu = qemuInfo.binary;
    irq = chooseIrq(opts.irq ?? 'auto', qemuInfo);
    log.info({ qemu, version: qemuInfo.version, source: qemuInfo.source, irq: irq.mode, why: irq.reason }, 'QEMU and interrupt mode');
    let machine: GuestMachine;
    try {
      machine = await prepareGuest({ driverBug, scenario: scenario.guest.scenario, procs: scenario.guest.procs, watchSeconds: scenario.guest.watchSeconds, hotplug, log });
    } catch (err) {
      throw new RunError(`guest image: ${(err as Error).message}`);
    }

    // The daemon runs as a child: the crash mode kills it with SIGKILL.
    const daemonArgs = [CLI, 'serve', '--socket', files.socket, '--qmp', files.qmpDaemon, '--log-level', 'info', '--irq', irq.mode];
    if (opts.transport) daemonArgs.push('--transport', opts.transport);
    if (scenario.nic) {
      const config = path.join(workDir, 'device.json');
      fs.writeFileSync(config, JSON.stringify(scenario.nic) + '\n', { mode: 0o600 });
      daemonArgs.push('--config', config);
    }
    const daemon = spawnChild('daemon', process.execPath, daemonArgs, { logFile: files.daemonLog });
    children.push(daemon);
    control = await Promise.race([
      ControlClient.connect(controlPathFor(files.socket), { timeoutMs: 30_000 }),
      daemon.exited.then(() => {
        throw new RunError(`the daemon exited before serving; see ${files.daemonLog}`);
      }),
    ]);
    log.info({ socket: files.socket }, 'daemon serving');

    // A vanish at a device event is armed before the guest boots, so probe's first access counts.
    let firedBy: Promise<ArmedVanishResult | null> | null = null;
    if (scenario.moment.kind === 'at-event') {
      const when = parseWhen(scenario.moment.when);
      firedBy = (await control.armVanish(mode, whenToJson(when))).fired;
      log.info({ when: formatWhen(when), mode }, 'vanish armed');
    }

    // Two monitors: the daemon's (it issues device_del on orderly/surprise) and ours (events, crash's device_del).
    const qemuArgs = [
      ...machine.qemuArgs({ socketPath: files.socket, deviceId: DEVICE_ID, nativeHotplug: hotplug === 'native' }),
      '-qmp', `unix:${files.qmpRunner},server=on,wait=off`,
      '-qmp', `unix:${files.qmpDaemon},server=on,wait=off`,
      '-d', 'invalid_mem', '-D', files.invalidMem,
    ];
    fs.writeFileSync(path.join(workDir, 'qemu-cmdline'), [qemu, ...qemuArgs].map((a) => JSON.stringify(a)).join(' ') + '\n');
    const vm = spawnChild('qemu', qemu, qemuArgs, {
      logFile: files.qemuLog,
      onStdoutLine: (line, at) => {
        consoleOut.write(line + '\n');
        guest.push(line, at);
      },
    });
    children.push(vm);
    vmStarted = true;
    qmp = await QmpClient.connect(files.qmpRunner, { timeoutMs: 30_000 });
    qmp.on('event', (e: QmpEvent) => {
      if (e.event === 'DEVICE_DELETED' && e.data.device === DEVICE_ID && !deviceDeleted) deviceDeleted = e;
    });

    // vm.exited resolves once QEMU's stdout is read to its end (src/unplug/processes.ts).
    const vmGone = vm.exited.then(() => null);
    const bootMs = opts.bootTimeoutMs ?? 300_000;
    const ctl = control;
    if (firedBy !== null) {
      // The guest boots into the armed event; its BARs are read while it runs (after the
      // removal QEMU no longer lists the device), and the vanish's account says when it fired.
      const deviceSettled = guest.wait('dmesg-end', bootMs, vmGone);
      let polling = true;
      const poll = (async () => {
        while (polling) {
          const b = await qemuBars(qmp, DEVICE_ID).catch(() => []);
          if (b.length > 0) bars = b;
          await new Promise((r) => setTimeout(r, 250));
        }
      })();
      const crashGone = mode === 'crash' ? ctl.whenClosed().then(() => 'closed' as const) : new Promise<never>(() => undefined);
      const outcome = await Promise.race([
        firedBy.then((r) => ({ r }), (err: Error) => ({ err })),
        crashGone.then(() => ({ r: null })),
        deviceSettled.then(() => ({ settled: true as const })),
      ]);
      polling = false;
      await poll;
      if ('err' in outcome) throw new RunError(`the armed vanish failed: ${outcome.err.message}`);
      if ('settled' in outcome) {
        const end = vm.hasExited() ? await vm.exited : null;
        throw new RunError(
          end
            ? end.signal !== null && end.signal !== 'SIGTERM' && end.signal !== 'SIGKILL'
              ? `${qemuDiagnosis(files.qemuLog, end.signal)} (before the armed vanish finished)`
              : `QEMU exited (code ${end.code}) before the armed vanish finished; see ${files.qemuLog}`
            : `the armed event (${(scenario.moment as { when: string }).when}) never happened: the guest finished without it`,
        );
      }
      fired = outcome.r;
      vanishAtMs = fired ? fired.fired.atMs : Date.now();
      if (fired?.deviceDelSentAtMs) deviceDelSentAtMs = fired.deviceDelSentAtMs;
      readyAtMs = guest.first('ready')?.atMs ?? null;
      log.info({ fired: fired?.fired ?? 'crash' }, 'armed vanish fired');
      if (mode === 'crash') {
        deviceDelSentAtMs = Date.now();
        await qmp.deviceDel(DEVICE_ID).catch((err: Error) => log.error({ err }, 'device_del failed'));
      }
    } else {
      // Ready: every process holds its context with its UARs mapped and written, and watches them.
      const failed = guest.wait('exit', bootMs, vmGone);
      const counted = (event: string, n: number) =>
        n === 0 ? Promise.resolve(true) : waitCount(guest, event, n, bootMs, Promise.race([vmGone, failed]));
      const ready = await counted('ready', scenario.ready.readyReports);
      const watching = ready ? await counted('watching', scenario.ready.watching) : false;
      if (!ready || !watching) {
        const why = guest.last('error') ?? guest.last('no-device') ?? guest.last('exit');
        throw new RunError(
          why
            ? `the guest program stopped before watching its mapping: ${JSON.stringify(why.fields)}`
            : vm.hasExited()
              ? `QEMU exited before the guest program was ready; see ${files.qemuLog} and ${files.console}`
              : `the guest program never reported ready (${guest.reports.filter((r) => r.event === 'ready').length} of ${scenario.ready.readyReports} ready reports; boot timeout)`,
        );
      }
      readyAtMs = guest.last('ready')?.atMs ?? Date.now();
      bars = await qemuBars(qmp, DEVICE_ID);
      if (opts.vanishDelayMs) await new Promise((r) => setTimeout(r, opts.vanishDelayMs));
      log.info({ bars: bars.map((b) => `${b.name} 0x${b.start.toString(16)}`), delayMs: opts.vanishDelayMs ?? 0 }, 'guest program watching its UAR mappings; vanishing');

      // Only what QEMU logs from here on counts against the driver (the canary came before).
      invalidMemAtVanish = readLinesOrNull(files.invalidMem)?.length ?? 0;
      vanishAtMs = Date.now();
      if (mode === 'crash') {
        await ctl.vanish('crash');
        // The daemon said no goodbye: the platform's removal is ours to ask for.
        deviceDelSentAtMs = Date.now();
        await qmp.deviceDel(DEVICE_ID).catch((err: Error) => log.error({ err }, 'device_del failed'));
      } else {
        // The daemon issues device_del itself; its reply comes after DEVICE_DELETED (orderly) or
        // after it stopped serving and QEMU removed the device (surprise).
        void ctl.vanish(mode).then(
          (r) => {
            if (r?.deviceDelSentAtMs) deviceDelSentAtMs = r.deviceDelSentAtMs;
          },
          (err: Error) => log.error({ err }, 'vanish request failed'),
        );
      }
    }

    // The program's exit, then /init's kernel log dump (warnings are judged on it), then poweroff.
    const reportMs = opts.reportTimeoutMs ?? 90_000;
    // The program's own exit line, or /init's test-exit (the no-device path prints no exit line).
    const exited = await Promise.race([guest.wait('exit', reportMs, vmGone), guest.wait('test-exit', reportMs, vmGone)]);
    const dmesg = await guest.wait('dmesg-end', 60_000, vmGone);
    if (!exited || !dmesg) log.warn({ programExited: exited !== null, kernelLog: dmesg !== null, vmExited: vm.hasExited() }, 'the guest did not finish its report');
    if (!deviceDeleted) await qmp.waitEvent('DEVICE_DELETED', (ev) => ev.data.device === DEVICE_ID, 5000, vanishAtMs).then((ev) => (deviceDeleted ??= ev), () => undefined);
    // Give the guest its poweroff; an unref'd timer, so a finished run does not linger for it.
    await Promise.race([vm.exited, new Promise((r) => setTimeout(r, 30_000).unref())]);
    await qmp.quit().catch(() => undefined);
    await vm.stop(5000);
    await daemon.stop(3000);
    const vmEnd = await vm.exited;
    const qemuAbort = vmEnd.signal !== null && vmEnd.signal !== 'SIGTERM' && vmEnd.signal !== 'SIGKILL' ? qemuDiagnosis(files.qemuLog, vmEnd.signal) : null;
    // What an MSI-X unplug did to this QEMU is evidence for later `--irq auto` choices.
    if (irq.mode === 'msix') {
      if (qemuAbort && MSIX_TEARDOWN_ABORT.test(qemuAbort)) recordMsixUnplug(qemuInfo, false);
      else if (!qemuAbort && deviceDeleted) recordMsixUnplug(qemuInfo, true);
    }

    const invalidMem = readLinesOrNull(files.invalidMem);
    const e = evidence(guest, { mode, driverBug, vanishAtMs, deviceDelSentAtMs, deviceDeleted, invalidMem, invalidMemAtVanish, qemuBars: bars });
    const checks = computeChecks(e, checksFor(scenario, e));
    // Each of these leaves the verdict without evidence it needs: ERROR, whatever the checks say.
    const errors = [
      ...(qemuAbort ? [qemuAbort] : []),
      ...(exited ? [] : ['the guest program never exited; checks judged on what it printed']),
      ...(dmesg ? [] : ["the guest never dumped its kernel log (no dmesg-end); no-kernel-warnings saw the console only"]),
      ...(invalidMem === null ? [`QEMU's -d invalid_mem log ${files.invalidMem} is missing or unreadable`] : []),
    ];
    const error = errors.length > 0 ? errors.join('; ') : undefined;
    return {
      verdict: verdictOf(checks, error),
      ...base,
      irq,
      ...(fired ? { fired: fired.fired } : {}),
      checks,
      timings: timingsFrom(e, startedAtMs, readyAtMs, Date.now()),
      artifacts,
      ...(error !== undefined ? { error } : {}),
    };
  } catch (err) {
    // The report carries the error as one line; the stack only when debugging vrnic itself.
    log.debug({ err }, 'unplug run broke');
    return fail(err instanceof RunError ? err.message : errorLine(err, log.isLevelEnabled('debug')));
  } finally {
    control?.close();
    qmp?.close();
    for (const c of children.reverse()) await c.stop(2000);
    consoleOut.end();
  }
}

/**
 * The checks a scenario is judged by. A removal during other work is judged on the mappings only
 * when the program had made one before the device left.
 */
export function checksFor(s: Scenario, e: UnplugEvidence): CheckName[] {
  if (s.moment.kind === 'at-event' && e.mappings.length === 0) return s.checks.filter((c) => !isMappingCheck(c));
  return [...s.checks];
}

/** Resolves true once `n` reports of `event` have arrived, false on timeout or when `abort` settles. */
async function waitCount(g: GuestConsole, event: string, n: number, timeoutMs: number, abort: Promise<unknown>): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let aborted = false;
  void abort.then(() => (aborted = true), () => (aborted = true));
  for (;;) {
    if (g.reports.filter((r) => r.source === 'test' && r.event === event).length >= n) return true;
    if (aborted || Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * QEMU died by a signal of its own (an assertion's SIGABRT): say so with its last words. QEMU
 * 10.1's vfio-user-pci aborts on hot-unplug of any device with MSI-X
 * (vfio_user_msix_teardown: "memory_region_del_subregion: Assertion `subregion->container == mr'"),
 * before it sends DEVICE_DELETED; the guest has removed the device by then.
 */
function qemuDiagnosis(logFile: string, signal: NodeJS.Signals): string {
  const last = readLines(logFile).filter((l) => /Assertion|abort|error/i.test(l)).slice(-1)[0];
  const known = last?.includes('memory_region_del_subregion')
    ? ' (QEMU vfio-user-pci bug on hot-unplug with MSI-X: see docs/unplug.md)'
    : last?.includes('error_setv')
      ? ' (QEMU vfio-user client bug on a connection reset by the server, as a killed server resets it: see docs/unplug.md)'
      : '';
  return `QEMU died by ${signal} during the run${last ? `: ${last.trim()}` : ''}${known}`;
}

function readLines(file: string): string[] {
  return readLinesOrNull(file) ?? [];
}

/** A log's non-empty lines; null when the file is missing or unreadable (evidence the verdict lacks). */
export function readLinesOrNull(file: string): string[] | null {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0);
  } catch {
    return null;
  }
}

interface HostSide {
  readonly mode: VanishMode;
  readonly driverBug: DriverBug;
  readonly vanishAtMs: number;
  readonly deviceDelSentAtMs: number | null;
  readonly deviceDeleted: QmpEvent | null;
  readonly invalidMem: readonly string[] | null;
  /** Lines of that log already written when the vanish started (undefined: an armed vanish; the canary marks the start). */
  readonly invalidMemAtVanish?: number;
  /** The device's memory BARs as QEMU placed them (query-pci before the vanish). */
  readonly qemuBars: readonly PhysRange[];
}

/** Turns the guest's report lines and the host's observations into the checks' evidence. */
export function evidence(g: GuestConsole, h: HostSide): UnplugEvidence {
  const stamp = (l: ReportLine | null) => (l ? { atMs: l.atMs } : null);
  const bar2 = guestBar2(g.first('device'));
  const bars = [...h.qemuBars];
  if (bar2 && !bars.some((b) => b.start === bar2.start)) bars.push(bar2);
  const gone = g.first('device-gone');
  const closed = g.first('closed');
  // vrnic-test's exit line; when it has none (it gave up finding a device), /init's test-exit.
  const exit = g.first('exit', (r) => r.source === 'test') ?? g.first('test-exit', (r) => r.source === 'init');
  const signal = g.first('signal');
  const zapped = g.first('change', (r) => r.fields.frame_before === 'bar' && r.fields.frame !== 'bar');
  const devices = g.last('devices', (r) => r.source === 'init');
  const code = exit ? parseNumber(exit.fields.code) : null;
  return {
    mode: h.mode,
    driverBug: h.driverBug,
    bars,
    mappings: g.mappings(),
    programEnd: signal
      ? { kind: 'signal', signal: String(signal.fields.signal), addr: String(signal.fields.addr) }
      : code !== null
        ? { kind: 'exit', code: Number(code) }
        : { kind: 'unknown' },
    vanishAtMs: h.vanishAtMs,
    guestRemoved: gone ? { atMs: gone.atMs, contextOpen: closed === null || closed.atMs > gone.atMs } : null,
    mappingZapped: stamp(zapped),
    contextClosed: stamp(closed),
    deviceDelSent: h.deviceDelSentAtMs !== null ? { atMs: h.deviceDelSentAtMs } : null,
    deviceDeleted: h.deviceDeleted ? { atMs: h.deviceDeleted.receivedAtMs } : null,
    guestView: guestView(devices),
    kernelLog: g.kernelLog(),
    trafficEnds: g.reports
      .filter((r) => r.source === 'test' && r.event === 'traffic-end')
      .map((r) => ({ label: r.label, reason: String(r.fields.reason), roundTrips: Number(r.fields.round_trips), atMs: r.atMs })),
    kernelLogDumped: g.first('dmesg-end', (r) => r.source === 'init') !== null,
    invalidMem: h.invalidMem,
    ...(h.invalidMemAtVanish !== undefined ? { invalidMemAtVanish: h.invalidMemAtVanish } : {}),
    canary: canaryOf(g.first('canary')),
    processFailures: g.processFailures(),
    driverRemoveMs: driverRemoveMs(g.text()),
  };
}

/**
 * The guest's own view of the device after the program: /init's `devices` report lists the PCI
 * functions with the device's vendor:device and the ib devices still present (after waiting a
 * bounded while for them to go). Null when the guest printed none or printed it malformed.
 */
export function guestView(devices: ReportLine | null): GuestDeviceView | null {
  if (!devices) return null;
  const strings = (v: unknown): string[] | null => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : null);
  const pci = strings(devices.fields.vrnic_pci);
  const ib = strings(devices.fields.ib);
  if (pci === null || ib === null) return null;
  const waited = devices.fields.waited_ms;
  return { pci, ib: ib.filter((d) => d.startsWith('vrnic')), waitedMs: typeof waited === 'number' && Number.isFinite(waited) ? waited : null };
}

/** The guest's canary report: the address it read and what it got. */
export function canaryOf(line: ReportLine | null): Canary | null {
  const addr = parseNumber(line?.fields.addr);
  if (!line || addr === null || addr === 0n) return null;
  return { addr, read: String(line.fields.read ?? '?') };
}

/** The memory BARs of device `id` from query-pci. */
export async function qemuBars(qmp: QmpClient, id: string): Promise<PhysRange[]> {
  const dev = flattenPci(await qmp.queryPci()).find((d) => d.qdev_id === id);
  if (!dev) return [];
  return dev.regions
    .filter((r) => r.type === 'memory' && r.address > 0 && r.size > 0)
    .map((r) => ({ name: `BAR${r.bar}`, start: BigInt(r.address), end: BigInt(r.address) + BigInt(r.size) }));
}
