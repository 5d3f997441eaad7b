// `vrnic unplug-test`: boots a guest on the emulator, makes the device vanish, prints the verdict.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { VANISH_MODES, type VanishMode } from '../control/protocol';
import { configureLogging } from '../log';
import { DRIVER_BUGS, type DriverBug } from '../unplug/evidence';
import { reportHuman, reportJson } from '../unplug/report';
import { HOTPLUG_KINDS, runUnplugTest, type HotplugKind } from '../unplug/runner';
import { PVRDMA_SCENARIOS, pvrdmaReportHuman, runPvrdmaUnplug, type PvrdmaScenario } from '../unplug/pvrdma-runner';
import { BOUNDS, type Verdict } from '../unplug/checks';
import { SCENARIOS, SCENARIO_NAMES, type ScenarioName } from '../unplug/scenarios';
import { matrixHuman, repeatHuman } from '../unplug/matrix';
import { runAllScenarios, runRepeated } from '../unplug/batch';
import type { UnplugReport } from '../unplug/report';
import { IRQ_CHOICES, type IrqChoice } from '../../qemu-config/msix-unplug';
import { requireVfioUserQemu } from '../../qemu-config/qemu';
import { type Command, UsageError } from './command';
import fs from 'node:fs';
import { reportsJunit } from '../unplug/junit';
import { reportsHtml } from '../unplug/html';

/** The command's exit code for each verdict (README and the help say the same). */
export const EXIT_CODES: Readonly<Record<Verdict, number>> = { PASS: 0, FAIL: 1, ERROR: 3 };

const help = `Usage: vrnic unplug-test [--mode M] [--hotplug acpi|native] [--driver-bug B] [--scenario NAME|all]
                         [--repeat N --random-delay MAX_MS [--seed S]] [--json] [flags]

Starts the emulator (vrnic serve, as a child process), builds or reuses the guest image, boots
it in QEMU with QMP and -d invalid_mem, waits until the guest's vrnic-test holds a context and a
mapped UAR page, makes the device vanish, waits for the guest's report and prints a verdict.

Checks (each ok, FAIL, or n/a when it could not judge, with what was seen):
  process-survived            the guest program was not killed by a signal
  mapping-moved-off-bar       after removal every mapping is on the core's dummy page: RAM, on no
                              BAR, one frame shared by every mapping of one uverbs file
  reads-return-zero           reads after removal are the dummy page's: zeros, the program's own
                              writes read back, a write through one mapping seen through another
                              of the same file; never all-ones, never a read served by a BAR
  unplug-not-blocked          removal finished within ${BOUNDS.unplugMs} ms with the context still open
  no-kernel-warnings          no WARN, BUG, Oops, Call Trace, panic, hung task, lockdep, KASAN,
                              UBSAN or Unknown symbol in the guest's kernel log
  device-removed              DEVICE_DELETED within ${BOUNDS.deviceDeletedMs} ms; the guest's own listing after
                              the program shows no vrnic PCI function and no vrnic ib device
  no-bar-access-after-unplug  QEMU's invalid_mem log, which must show the guest's canary read made
                              before the vanish, has no access to the BARs after it
  removal-bounded             (removal during other work, race-close) DEVICE_DELETED within
                              ${BOUNDS.unplugMs} ms of the vanish: the driver's removal path did not hang
  traffic-ended               (traffic) both sides of the ping-pong ended after the vanish by an
                              error completion or EIO, not by silence or a hang
The mapping checks look at every mapping of every process and name the one that failed; they
say n/a when the removal waited for the program (no mapping outlived it).

Scenarios (--scenario; 'all' runs each and prints one scenario x check table):
${SCENARIOS.map((s) => `  ${s.name.padEnd(30)}${s.summary}${s.moment.kind === 'at-event' ? ` (vanish --when ${s.moment.when})` : ''}`).join('\n')}

Flags:
  --mode M          orderly | surprise | crash (default surprise)
  --hotplug H       acpi | native (default acpi): q35's ACPI hotplug, or native PCIe hotplug
                    (pciehp; QEMU presses the slot's attention button, the guest waits 5 s)
  --driver-bug B    ${DRIVER_BUGS.join(' | ')} (default none): a planted driver
                    bug, the driver's bug= module parameter; the verdict must then FAIL
                    (destroy-error only with a gone device: --mode surprise or crash)
  --scenario NAME   one of the scenarios above, or all (default single)
  --repeat N        run the scenario N times and report the pass rate and each distinct
                    failure (grouped by check and detail)
  --random-delay MS with --repeat: start each vanish a random [0, MS] ms after the guest is
                    ready (default 0)
  --seed S          the seed for those delays (default: drawn and printed, to replay a run)
  --json            print one JSON object: {"verdict", "checks", "timings", ...}; with
                    all: {"verdict", "rows", "reports"}; with --repeat: the summary and reports
  --junit FILE      also write JUnit XML to FILE: a test suite per run (scenario), a test
                    case per check, for CI systems
  --html FILE       also write one self-contained HTML page to FILE: each run's timeline
                    (vanish, zap, ib device gone, DEVICE_DELETED, BAR accesses after
                    removal) and its checks
  --qemu PATH       QEMU >= 10.1 with vfio-user-pci (default: as \`vrnic qemu find\` says:
                    VRNIC_QEMU, then the provisioned QEMU, then PATH)
  --irq I           the device's interrupts: auto | msix | msi | intx (default auto: MSI-X
                    only on a QEMU on record as surviving an MSI-X unplug, else MSI; every
                    QEMU release so far aborts on it, see docs/unplug.md)
  --transport T     auto | libvfio-user | native, for the emulator (default auto)
  --work-dir DIR    keep the run's files (console, QEMU and daemon logs) in DIR
  --keep            keep the work directory after a PASS (a FAIL always keeps it)
  --log-level L     progress logs on stderr (default warn)
  --model M         vrnic (default) | pvrdma: VMware's upstream vmw_pvrdma driver and a stock
                    ibv_rc_pingpong holding its context (docs/pvrdma.md); its own checks and
                    scenarios: traffic (the default; a ping-pong pair ringing doorbells through
                    the vanish), idle (the holder waits for a client), or all
  -h, --help        this text

Exit codes: 0 PASS; 1 FAIL (a check failed); 2 bad flags; 3 ERROR (the run broke, a log the
verdict needs is missing, or a check could not judge: see "error" and the n/a checks). With
all or --repeat: 1 if any run FAILed, else 3 if any run was an ERROR, else 0.`;

export const unplugTestCommand: Command = {
  name: 'unplug-test',
  summary: 'hot-unplug a running guest\'s device and judge its driver: PASS or FAIL with checks',
  help,
  async run(argv) {
    let values: {
      mode?: string;
      hotplug?: string;
      'driver-bug'?: string;
      json?: boolean;
      qemu?: string;
      transport?: string;
      'work-dir'?: string;
      keep?: boolean;
      'log-level'?: string;
      scenario?: string;
      repeat?: string;
      'random-delay'?: string;
      seed?: string;
      junit?: string;
      html?: string;
      irq?: string;
      model?: string;
    };
    try {
      ({ values } = parseArgs({
        args: argv,
        options: {
          mode: { type: 'string', default: 'surprise' },
          hotplug: { type: 'string' },
          'driver-bug': { type: 'string', default: 'none' },
          json: { type: 'boolean', default: false },
          qemu: { type: 'string' },
          transport: { type: 'string' },
          'work-dir': { type: 'string' },
          keep: { type: 'boolean', default: false },
          'log-level': { type: 'string', default: 'warn' },
          scenario: { type: 'string', default: 'single' },
          repeat: { type: 'string' },
          'random-delay': { type: 'string' },
          seed: { type: 'string' },
          junit: { type: 'string' },
          html: { type: 'string' },
          irq: { type: 'string', default: 'auto' },
          model: { type: 'string', default: 'vrnic' },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const mode = values.mode as VanishMode;
    if (!VANISH_MODES.includes(mode)) throw new UsageError(`--mode: '${values.mode}' is not one of ${VANISH_MODES.join(', ')}`);
    const driverBug = values['driver-bug'] as DriverBug;
    if (!DRIVER_BUGS.includes(driverBug)) throw new UsageError(`--driver-bug: '${values['driver-bug']}' is not one of ${DRIVER_BUGS.join(', ')}`);
    const hotplug = values.hotplug as HotplugKind | undefined;
    if (hotplug !== undefined && !HOTPLUG_KINDS.includes(hotplug)) throw new UsageError(`--hotplug: '${values.hotplug}' is not one of ${HOTPLUG_KINDS.join(', ')}`);
    const transport = values.transport;
    if (transport !== undefined && !['auto', 'libvfio-user', 'native'].includes(transport)) {
      throw new UsageError(`--transport: '${transport}' is not one of auto, libvfio-user, native`);
    }
    const irq = values.irq as IrqChoice;
    if (!IRQ_CHOICES.includes(irq)) throw new UsageError(`--irq: '${values.irq}' is not one of ${IRQ_CHOICES.join(', ')}`);
    const level = values['log-level'] as 'warn';
    if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) throw new UsageError(`--log-level: '${level}' is not a level`);
    const scenarioArg = values.scenario ?? 'single';
    // pvrdma's scenarios are its own (checked where it runs)
    if (values.model !== 'pvrdma' && scenarioArg !== 'all' && !SCENARIO_NAMES.includes(scenarioArg as ScenarioName)) {
      throw new UsageError(`--scenario: '${scenarioArg}' is not one of ${SCENARIO_NAMES.join(', ')}, all`);
    }
    const count = (flag: string, v: string | undefined, min: number, max: number): number | undefined => {
      if (v === undefined) return undefined;
      if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--${flag}: '${v}' is not an integer in ${min}..${max}`);
      return Number(v);
    };
    const repeat = count('repeat', values.repeat, 1, 10_000);
    const maxDelay = count('random-delay', values['random-delay'], 0, 600_000);
    const seedArg = count('seed', values.seed, 0, 0xffffffff);
    if (repeat === undefined && (maxDelay !== undefined || seedArg !== undefined)) throw new UsageError('--random-delay and --seed go with --repeat');
    if (repeat !== undefined && scenarioArg === 'all') throw new UsageError('--repeat runs one scenario, not all');
    // The output files are checked before the run, not after minutes of it.
    for (const flag of ['junit', 'html'] as const) {
      const file = values[flag];
      if (file === undefined) continue;
      try {
        fs.writeFileSync(file, '', { flag: 'a' });
      } catch (err) {
        throw new UsageError(`--${flag} ${file}: cannot write it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
    }
    const writeFiles = (reports: readonly UnplugReport[]): void => {
      if (values.junit !== undefined) fs.writeFileSync(values.junit, reportsJunit(reports));
      if (values.html !== undefined) fs.writeFileSync(values.html, reportsHtml(reports));
    };
    const log = configureLogging({ level });
    const common = {
      mode,
      driverBug,
      ...(hotplug !== undefined ? { hotplug } : {}),
      // Found once for every run; when there is none, each run says so itself (ERROR, exit 3).
      qemu: await requireVfioUserQemu({ flag: values.qemu }).then((q) => q.binary, () => values.qemu),
      irq,
      transport: transport as 'auto' | 'libvfio-user' | 'native' | undefined,
      workDir: values['work-dir'],
      keep: values.keep,
      log: log.child({ module: 'unplug' }),
    };
    const json = (r: UnplugReport): unknown => JSON.parse(reportJson(r)) as unknown;

    if (values.model === 'pvrdma') {
      // The upstream driver with stock tools: its own scenarios (a holder with its UAR mapped, idle or with traffic), its own checks.
      if (repeat !== undefined || driverBug !== 'none' || values.junit !== undefined || values.html !== undefined || (hotplug !== undefined && hotplug !== 'acpi')) {
        throw new UsageError('--model pvrdma runs the upstream driver on ACPI hotplug: no --repeat, --driver-bug, --junit, --html or --hotplug native');
      }
      const wanted = scenarioArg === 'single' ? ['traffic'] : scenarioArg === 'all' ? [...PVRDMA_SCENARIOS] : [scenarioArg];
      const scenarios = wanted.filter((x): x is PvrdmaScenario => (PVRDMA_SCENARIOS as readonly string[]).includes(x));
      if (scenarios.length !== wanted.length) throw new UsageError(`--scenario with --model pvrdma: one of ${PVRDMA_SCENARIOS.join(', ')} or all`);
      const codes: number[] = [];
      for (const scenario of scenarios) {
        const workDir = common.workDir === undefined || scenarios.length === 1 ? common.workDir : path.join(common.workDir, scenario);
        const r = await runPvrdmaUnplug({ mode, scenario, qemu: common.qemu, irq, transport: common.transport, workDir, log: common.log });
        process.stdout.write((values.json ? JSON.stringify(r) : pvrdmaReportHuman(r)) + '\n');
        // as a vrnic run: 3 when the run itself broke, so no verdict about the driver was reached
        codes.push(r.error !== undefined ? 3 : r.verdict === 'PASS' ? 0 : 1);
      }
      return codes.includes(1) ? 1 : codes.includes(3) ? 3 : 0;
    }
    if (values.model !== 'vrnic') throw new UsageError(`--model: '${values.model}' is not one of vrnic, pvrdma`);

    if (repeat !== undefined) {
      const scenario = scenarioArg as ScenarioName;
      const seed = seedArg ?? Math.floor(Math.random() * 0x100000000);
      process.stderr.write(`vrnic unplug-test: ${repeat} runs of ${scenario}, delays in [0, ${maxDelay ?? 0}] ms, seed ${seed}\n`);
      const { summary, reports } = await runRepeated({
        ...common,
        scenario,
        runs: repeat,
        maxDelayMs: maxDelay ?? 0,
        seed,
        onRun: (r, i, n) =>
          process.stderr.write(`  run ${i + 1}/${n} (delay ${r.vanishDelayMs ?? 0} ms): ${r.verdict}${r.verdict !== 'PASS' ? ` (${r.error ?? r.checks.filter((c) => !c.ok).map((c) => `${c.name} ${c.result}`).join(', ')})` : ''}\n`),
      });
      writeFiles(reports);
      process.stdout.write((values.json ? JSON.stringify({ ...summary, mode, driverBug, reports: reports.map(json) }) : repeatHuman(summary, mode, driverBug)) + '\n');
      return EXIT_CODES[summary.verdict];
    }

    if (scenarioArg === 'all') {
      const { matrix: m, reports } = await runAllScenarios({ ...common, onRun: (r) => process.stderr.write(`  ${r.scenario}: ${r.verdict}\n`) });
      writeFiles(reports);
      process.stdout.write((values.json ? JSON.stringify({ verdict: m.verdict, mode, driverBug, checks: m.checks, rows: m.rows, reports: reports.map(json) }) : matrixHuman(m, mode, driverBug)) + '\n');
      return EXIT_CODES[m.verdict];
    }

    const report = await runUnplugTest({ ...common, scenario: scenarioArg as ScenarioName });
    writeFiles([report]);
    process.stdout.write((values.json ? reportJson(report) : reportHuman(report)) + '\n');
    return EXIT_CODES[report.verdict];
  },
};
