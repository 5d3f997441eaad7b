// The unplug scenario for the pvrdma model: the upstream vmw_pvrdma driver, a stock rdma-core process holding a context and its UAR mapping, a vanish, and what happened.
//
// The guest runs pvrdma-guest (guest/pvrdma/pvrdma-guest.sh): ibv_devinfo, then the holder, an
// ibv_rc_pingpong server that opens the device (a context, the UAR page mmapped by libvmw_pvrdma,
// a PD, CQ and QP). In the `idle` scenario it waits for a client that never comes; in `traffic` a
// client in the same guest connects and both exchange messages, so both write their UAR doorbells
// all along (each post, and each empty CQ poll, is a UAR write). Either way the holder keeps its
// context for `holdSeconds`. The vanish starts once the holder reports it holds the mapping. The checks are measurements (docs/pvrdma.md says what
// each run showed and which driver lines explain it); they are not vrnic-test's, since the
// stock tools report none of its mapping details.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import type { Logger } from 'pino';
import { DEFAULT_DEVICE_ID as DEVICE_ID, qemuArgs } from '../../qemu-config/args';
import { buildGuestImage, guestAppend } from '../../guest/kit/image';
import { chooseIrq, type IrqChoice, type IrqDecision } from '../../qemu-config/msix-unplug';
import { requireVfioUserQemu } from '../../qemu-config/qemu';
import { ControlClient } from '../control/client';
import type { VanishMode } from '../control/protocol';
import { controlPathFor } from '../control/server';
import { errorLine, moduleLogger } from '../log';
import { QmpClient, type QmpEvent } from '../qmp/client';
import type { TransportChoice } from '../vfio-user/transports/index';
import { runFiles, spawnChild, type Child } from './processes';

/** What the guest's stock processes do when the device vanishes. */
export const PVRDMA_SCENARIOS = ['idle', 'traffic'] as const;
export type PvrdmaScenario = (typeof PVRDMA_SCENARIOS)[number];

export interface PvrdmaUnplugOptions {
  readonly mode: VanishMode;
  /** idle: the holder waits for a client; traffic (default): a ping-pong pair rings doorbells through the vanish. */
  readonly scenario?: PvrdmaScenario;
  readonly qemu?: string;
  readonly transport?: TransportChoice;
  readonly irq?: IrqChoice;
  /** How long the holder keeps its context (default 40 s): longer than a removal that does not wait for it. */
  readonly holdSeconds?: number;
  /** Where the run's files go (kept: each run is evidence for docs/pvrdma.md); default a new directory under the OS temp dir. */
  readonly workDir?: string;
  readonly bootTimeoutMs?: number;
  readonly log?: Logger;
}

export interface PvrdmaCheck {
  readonly name: 'device-removed' | 'paired-function-removed' | 'unplug-not-blocked' | 'process-survived' | 'no-kernel-warnings' | 'no-bar-access-after-unplug';
  readonly ok: boolean;
  readonly detail: string;
}

export interface PvrdmaUnplugReport {
  readonly verdict: 'PASS' | 'FAIL';
  readonly model: 'pvrdma';
  readonly mode: VanishMode;
  readonly scenario: PvrdmaScenario;
  readonly irq?: IrqDecision;
  readonly checks: readonly PvrdmaCheck[];
  readonly timings: {
    /** vanish -> the driver's "detaching from device" line reached the console. */
    readonly vanishToDriverRemoveMs: number | null;
    /** vanish -> DEVICE_DELETED of the pvrdma function. */
    readonly vanishToDeviceDeletedMs: number | null;
    /** vanish -> the holder's exit reported by the guest. */
    readonly vanishToHolderExitMs: number | null;
    readonly totalMs: number;
  };
  /** The device's UAR doorbell counts (send, recv, CQ poll, CQ arm, all) when the vanish began, and 5 s later while the device still answers (orderly). */
  readonly doorbells: {
    readonly atVanish: number | null;
    readonly fiveSecondsLater: number | null;
    readonly completionsAtVanish: number | null;
    readonly completionsFiveSecondsLater: number | null;
    /** UAR writes QEMU failed to forward because the device's server was gone (its log's region2 write failures). */
    readonly droppedByQemu: number;
  };
  readonly artifacts: Readonly<Record<string, string>>;
  readonly error?: string;
}

/** The QEMU ids: the pvrdma function, and its paired vmxnet3 (args.ts names it `<id>-net`). */
const NET_ID = `${DEVICE_ID}-net`;
const CLI = path.resolve(__dirname, '..', 'cli.js');
const KERNEL_WARNING = /WARNING:|BUG:|Oops|blocked for more than|INFO: task .* blocked|general protection/;

class RunError extends Error {}

interface Line {
  readonly text: string;
  readonly atMs: number;
}

export async function runPvrdmaUnplug(opts: PvrdmaUnplugOptions): Promise<PvrdmaUnplugReport> {
  const log = opts.log ?? moduleLogger('unplug-pvrdma');
  const started = Date.now();
  const holdSeconds = opts.holdSeconds ?? 40;
  const scenario = opts.scenario ?? 'traffic';
  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-unplug-pvrdma-'));
  fs.mkdirSync(workDir, { recursive: true, mode: 0o700 });
  const { files, artifacts } = runFiles(workDir);
  const lines: Line[] = [];
  const consoleOut = fs.createWriteStream(files.console, { mode: 0o600 });
  const children: Child[] = [];
  const deleted = new Map<string, QmpEvent & { atMs: number }>();
  let qmp: QmpClient | null = null;
  let control: ControlClient | null = null;
  let irq: IrqDecision | undefined;
  let vanishAt: number | null = null;
  let doorbellsAt: number | null = null;
  let doorbellsLater: number | null = null;
  let completionsAt: number | null = null;
  let completionsLater: number | null = null;
  let droppedByQemu = 0;
  const find = (re: RegExp, after = 0): Line | undefined => lines.find((l) => l.atMs >= after && re.test(l.text));
  const waitFor = async (re: RegExp, timeoutMs: number, gone: () => boolean): Promise<Line | undefined> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const l = find(re);
      if (l || gone() || Date.now() > deadline) return l;
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  try {
    const q = await requireVfioUserQemu({ flag: opts.qemu }).catch((err: Error) => {
      throw new RunError(err.message);
    });
    irq = chooseIrq(opts.irq ?? 'auto', q);
    const image = await buildGuestImage({ model: 'pvrdma', progress: (line) => log.info({ step: line }, 'guest image') }).catch((err: Error) => {
      throw new RunError(`guest image: ${err.message}`);
    });
    const daemonArgs = [CLI, 'serve', '--model', 'pvrdma', '--socket', files.socket, '--qmp', files.qmpDaemon, '--log-level', 'info', '--irq', irq.mode];
    if (opts.transport) daemonArgs.push('--transport', opts.transport);
    const daemon = spawnChild('daemon', process.execPath, daemonArgs, { logFile: files.daemonLog });
    children.push(daemon);
    control = await ControlClient.connect(controlPathFor(files.socket), { timeoutMs: 30_000 });

    // loglevel 7: the driver's dev_info lines ("detaching from device") reach the console as they happen
    const append = guestAppend({ program: 'pvrdma-guest', lingerSeconds: 0, loglevel: 7 }) + ` vrnic.pvrdma=devinfo,${scenario === 'traffic' ? 'traffic' : 'hold'}=${holdSeconds}`;
    const args = [
      ...qemuArgs({ kernel: image.kernel, initrd: image.initrd, append, socket: files.socket, deviceId: DEVICE_ID, pairedVmxnet3: true, serial: { kind: 'stdio' } }),
      '-qmp', `unix:${files.qmpRunner},server=on,wait=off`,
      '-qmp', `unix:${files.qmpDaemon},server=on,wait=off`,
      '-d', 'invalid_mem', '-D', files.invalidMem,
    ];
    fs.writeFileSync(path.join(workDir, 'qemu-cmdline'), [q.binary, ...args].map((a) => JSON.stringify(a)).join(' ') + '\n');
    const vm = spawnChild('qemu', q.binary, args, {
      logFile: files.qemuLog,
      onStdoutLine: (text, atMs) => {
        consoleOut.write(text + '\n');
        if (lines.length < 200_000) lines.push({ text, atMs });
      },
    });
    children.push(vm);
    qmp = await QmpClient.connect(files.qmpRunner, { timeoutMs: 30_000 });
    qmp.on('event', (e: QmpEvent) => {
      const id = String(e.data.device ?? '');
      if (e.event === 'DEVICE_DELETED' && !deleted.has(id)) deleted.set(id, { ...e, atMs: Date.now() });
    });
    const hold = await waitFor(/PVRDMA-STEP \{"step":"hold"/, opts.bootTimeoutMs ?? 300_000, () => vm.hasExited());
    if (!hold) throw new RunError(vm.hasExited() ? `QEMU exited before the holder was ready; see ${files.console}` : 'the guest never reported its holder (boot timeout)');
    if (!/"maps":"[1-9]/.test(hold.text)) throw new RunError(`the holder has no uverbs mapping: ${hold.text}`);
    if (scenario === 'traffic' && !/"peer_maps":"[1-9]/.test(hold.text)) throw new RunError(`the traffic peer has no uverbs mapping: ${hold.text}`);
    log.info({ hold: hold.text }, 'holder ready; vanishing');
    const ctl = control;
    const counters = async () => (await ctl.status().catch(() => null))?.device.counters;
    const before = await counters();
    doorbellsAt = before?.doorbells ?? null;
    completionsAt = before?.completions ?? null;
    vanishAt = Date.now();
    if (opts.mode === 'crash') {
      await control.vanish('crash');
      await qmp.deviceDel(DEVICE_ID).catch((err: Error) => log.error({ err }, 'device_del failed'));
    } else {
      void control.vanish(opts.mode).catch((err: Error) => log.error({ err }, 'vanish request failed'));
    }
    if (opts.mode === 'orderly') {
      // The device answers until QEMU removes it: its counters show whether user space kept ringing.
      await new Promise((r) => setTimeout(r, 5000));
      const later = await counters();
      doorbellsLater = later?.doorbells ?? null;
      completionsLater = later?.completions ?? null;
    }
    await waitFor(/"step":"hold-end"/, (holdSeconds + 90) * 1000, () => vm.hasExited());
    await waitFor(/VRNIC-INIT \{"event":"dmesg-end"/, 60_000, () => vm.hasExited());
    if (!deleted.has(DEVICE_ID)) await qmp.waitEvent('DEVICE_DELETED', (e) => e.data.device === DEVICE_ID, 10_000, vanishAt).catch(() => undefined);
    await Promise.race([vm.exited, new Promise((r) => setTimeout(r, 30_000).unref())]);
    await qmp.quit().catch(() => undefined);
    await vm.stop(5000);
    await daemon.stop(3000);
    droppedByQemu = await countLines(files.qemuLog, /vfio_region_write\(.*:region2\+.*failed/);
    return judge();
  } catch (err) {
    log.debug({ err }, 'pvrdma unplug run broke');
    return judge(err instanceof RunError ? err.message : errorLine(err, false));
  } finally {
    control?.close();
    qmp?.close();
    for (const c of children.reverse()) await c.stop(2000);
    consoleOut.end();
  }

  function judge(error?: string): PvrdmaUnplugReport {
    const v = vanishAt ?? Date.now();
    const since = (t: number | undefined) => (t === undefined || vanishAt === null ? null : t - vanishAt);
    const remove = find(/vmw_pvrdma .*detaching from device/, v);
    const holdEnd = find(/"step":"hold-end"/, v);
    const dev = deleted.get(DEVICE_ID);
    const net = deleted.get(NET_ID);
    const warnings = lines.filter((l) => KERNEL_WARNING.test(l.text));
    const invalid = readLines(files.invalidMem).filter((l) => /Invalid (read|write)/.test(l));
    const holdCode = holdEnd ? Number(/"code":(\d+)/.exec(holdEnd.text)?.[1]) : NaN;
    const peerCode = holdEnd && scenario === 'traffic' ? Number(/"peer_code":(\d+)/.exec(holdEnd.text)?.[1]) : 143;
    const ended = (c: number) => c === 143 || c === 0;
    const checks: PvrdmaCheck[] = [
      { name: 'device-removed', ok: dev !== undefined, detail: dev ? `DEVICE_DELETED ${DEVICE_ID} ${since(dev.atMs)} ms after the vanish` : `no DEVICE_DELETED for ${DEVICE_ID}` },
      { name: 'paired-function-removed', ok: net !== undefined, detail: net ? `DEVICE_DELETED ${NET_ID} (vmxnet3, function 0) ${since(net.atMs)} ms after the vanish` : `no DEVICE_DELETED for ${NET_ID}` },
      {
        name: 'unplug-not-blocked',
        ok: dev !== undefined && (holdEnd === undefined || dev.atMs < holdEnd.atMs),
        detail:
          dev === undefined ? 'the function was never removed' : holdEnd && dev.atMs >= holdEnd.atMs ? `removal finished ${dev.atMs - holdEnd.atMs} ms after the holder exited (${since(holdEnd.atMs)} ms after the vanish): it waited for user space` : 'removal finished with the context still open',
      },
      // 143: the holder ended by pvrdma-guest's SIGTERM at the end of its hold, not by a fault
      {
        name: 'process-survived',
        ok: ended(holdCode) && ended(peerCode),
        detail: holdEnd ? `holder exit status ${holdCode}${scenario === 'traffic' ? `, traffic peer ${peerCode}` : ''}` : 'the guest reported no holder exit',
      },
      { name: 'no-kernel-warnings', ok: warnings.length === 0, detail: warnings.length ? warnings.slice(0, 3).map((l) => l.text.trim()).join(' | ') : 'none on the console' },
      { name: 'no-bar-access-after-unplug', ok: invalid.length === 0, detail: `${invalid.length} invalid_mem accesses logged by QEMU` },
    ];
    return {
      verdict: !error && checks.every((c) => c.ok) ? 'PASS' : 'FAIL',
      model: 'pvrdma',
      mode: opts.mode,
      scenario,
      ...(irq ? { irq } : {}),
      checks,
      doorbells: { atVanish: doorbellsAt, fiveSecondsLater: doorbellsLater, completionsAtVanish: completionsAt, completionsFiveSecondsLater: completionsLater, droppedByQemu },
      timings: { vanishToDriverRemoveMs: since(remove?.atMs), vanishToDeviceDeletedMs: since(dev?.atMs), vanishToHolderExitMs: since(holdEnd?.atMs), totalMs: Date.now() - started },
      artifacts,
      ...(error ? { error } : {}),
    };
  }
}

/** One line per check, as `unplug-test` prints a vrnic run. */
export function pvrdmaReportHuman(r: PvrdmaUnplugReport): string {
  const out = [`vrnic unplug-test --model pvrdma --scenario ${r.scenario} --mode ${r.mode}${r.irq ? ` (irq ${r.irq.mode})` : ''}: ${r.verdict}`];
  for (const c of r.checks) out.push(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name.padEnd(28)} ${c.detail}`);
  const t = r.timings;
  out.push(`  timings: driver remove ${t.vanishToDriverRemoveMs ?? '-'} ms, DEVICE_DELETED ${t.vanishToDeviceDeletedMs ?? '-'} ms, holder exit ${t.vanishToHolderExitMs ?? '-'} ms after the vanish; total ${t.totalMs} ms`);
  const d = r.doorbells;
  out.push(
    `  doorbells: ${d.atVanish ?? '-'} at the vanish, ${d.fiveSecondsLater ?? '-'} 5 s later (completions ${d.completionsAtVanish ?? '-'} -> ${d.completionsFiveSecondsLater ?? '-'}); ${d.droppedByQemu} UAR writes QEMU could not forward to a gone device`,
  );
  if (r.error) out.push(`  error: ${r.error}`);
  if (r.artifacts.workDir) out.push(`  files: ${r.artifacts.workDir}`);
  return out.join('\n');
}

/** Lines of a possibly huge log matching `re`, read as a stream (a dead device's doorbell failures run to millions). */
async function countLines(file: string, re: RegExp): Promise<number> {
  if (!fs.existsSync(file)) return 0;
  let n = 0;
  const lines = readline.createInterface({ input: fs.createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  for await (const l of lines) if (re.test(l)) n++;
  return n;
}

function readLines(file: string): string[] {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0);
  } catch {
    return [];
  }
}
