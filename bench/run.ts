// `npm run bench`: runs every benchmark, prints a table with the project's goals (MET/MISSED), and writes the results as JSON.
//
// Usage: node dist/bench/run.js [--out FILE] [--quick] [--only trapped,ffi,doorbell,startup,datapath,guest]
// Env: VRNIC_LIBVFIO_USER (libvfio-user.so.0: the libvfio-user transport and the C server),
//      VRNIC_LIBVFIO_USER_INCLUDE (libvfio-user.h's directory, when not at <prefix>/include/vfio-user), CC,
//      VRNIC_QEMU and VRNIC_CACHE (QEMU and the guest image, for the guest section).
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { machineInfo, repoRoot, round, tempDir, type MachineInfo, runMain } from './common';
import { runDatapathBench, type DatapathBenchResult } from './datapath';
import { runFfiCost, type FfiCostResult } from './ffi-cost';
import { runGuestBar, type GuestBarResult } from './guest-bar';
import { summarizeProfileDir, type ProfileSummary } from './profile';
import { runStartup, type StartupResult } from './startup';
import { runTrappedAccess, vrnicTransportsToTry, type TrappedAccessResult, type VrnicTransport } from './trapped-access';

type Section = 'trapped' | 'ffi' | 'doorbell' | 'startup' | 'datapath' | 'guest';
const SECTIONS: readonly Section[] = ['trapped', 'ffi', 'doorbell', 'startup', 'datapath', 'guest'];

export type GoalStatus = 'MET' | 'MISSED' | 'NOT MEASURED';

export interface GoalResult {
  readonly goal: string;
  readonly transport: VrnicTransport;
  readonly limit: string;
  readonly measured: string;
  readonly status: GoalStatus;
  readonly note?: string;
}

/** What bench/doorbell.ts's runDoorbellBench gives back, as far as run.ts reads it. */
export interface DoorbellFigures {
  readonly p50Us: number;
  readonly p99Us: number;
  readonly idleCpuPct: number;
}

export interface DoorbellSection {
  /** design: how the device process waits (block: the default; spin: VRNIC_WAIT=spin, the design before, for comparison). */
  readonly rows: readonly ({ transport: VrnicTransport; design: 'block' | 'spin'; raw: unknown } & DoorbellFigures)[];
  readonly skipped: readonly { transport: VrnicTransport | 'all'; reason: string }[];
  /** The device process's CPU profile during a second, profiled doorbell run (its figures are not the ones reported). */
  readonly profiles: readonly ProfileSummary[];
}

type DoorbellModule = { runDoorbellBench?: (opts: Record<string, unknown>) => Promise<unknown> };

export interface BenchReport {
  readonly machine: MachineInfo;
  readonly env: { readonly VRNIC_LIBVFIO_USER: string | null; readonly quick: boolean };
  readonly trappedAccess?: TrappedAccessResult;
  readonly ffiCost?: FfiCostResult;
  readonly doorbell?: DoorbellSection;
  readonly startup?: StartupResult;
  readonly datapath?: DatapathSection;
  readonly guest?: GuestBarResult;
  readonly goals: readonly GoalResult[];
}

export interface DatapathSection {
  readonly rows: readonly DatapathBenchResult[];
  readonly skipped: readonly { transport: VrnicTransport; reason: string }[];
}

const log = (line: string) => process.stderr.write(line + '\n');

async function runDatapath(transports: readonly VrnicTransport[], quick: boolean): Promise<DatapathSection> {
  const rows: DatapathBenchResult[] = [];
  const skipped: DatapathSection['skipped'][number][] = [];
  for (const transport of transports) {
    try {
      rows.push(await runDatapathBench({ transport, quick, log }));
    } catch (err) {
      const reason = (err as Error).message.split('\n')[0].slice(0, 300);
      skipped.push({ transport, reason });
      log(`  datapath: ${transport} skipped: ${reason}`);
    }
  }
  return { rows, skipped };
}

async function runDoorbell(transports: readonly VrnicTransport[], quick: boolean): Promise<DoorbellSection> {
  const modPath = path.join(__dirname, 'doorbell.js');
  if (!fs.existsSync(modPath)) return { rows: [], profiles: [], skipped: [{ transport: 'all', reason: 'bench/doorbell.ts is not there yet (the NIC model provides it)' }] };
  const mod = require(modPath) as DoorbellModule;
  if (typeof mod.runDoorbellBench !== 'function') return { rows: [], profiles: [], skipped: [{ transport: 'all', reason: 'bench/doorbell.ts exports no runDoorbellBench' }] };
  const rows: DoorbellSection['rows'][number][] = [];
  const skipped: DoorbellSection['skipped'][number][] = [];
  const profiles: ProfileSummary[] = [];
  for (const transport of transports) {
    try {
      const raw = await mod.runDoorbellBench({ transport, quick, log });
      const figures = doorbellFigures(raw);
      rows.push({ transport, design: 'block', raw, ...figures });
      if (!quick) {
        // the same with the spinning design it replaced, in the same run: the two compare under the same load
        const saved = process.env.VRNIC_WAIT;
        process.env.VRNIC_WAIT = 'spin';
        try {
          const spinRaw = await mod.runDoorbellBench({ transport, quick, log: (line: string) => log(line.replace(`doorbell ${transport}:`, `doorbell ${transport} (VRNIC_WAIT=spin):`)) });
          rows.push({ transport, design: 'spin', raw: spinRaw, ...doorbellFigures(spinRaw) });
        } finally {
          if (saved === undefined) delete process.env.VRNIC_WAIT;
          else process.env.VRNIC_WAIT = saved;
        }
      }
    } catch (err) {
      const reason = (err as Error).message.split('\n')[0].slice(0, 300);
      skipped.push({ transport, reason });
      log(`  doorbell: ${transport} skipped: ${reason}`);
      continue;
    }
    try {
      profiles.push(await profileDoorbell(mod, transport, quick));
    } catch (err) {
      log(`  doorbell: no profile for ${transport}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return { rows, skipped, profiles };
}

/**
 * Runs the doorbell benchmark again with its device process under the inspector's profiler
 * (bench/cpu-prof-preload.ts through NODE_OPTIONS) and summarizes the samples of the measured
 * loops only: the window ends when runDoorbellBench reports its latencies and is as long as
 * the measured round trips took (iterations x mean, both modes), so start-up and set-up stay out.
 */
async function profileDoorbell(mod: DoorbellModule, transport: VrnicTransport, quick: boolean): Promise<ProfileSummary> {
  const dir = tempDir('vrnic-bench-doorbell-prof-');
  const saved = { opts: process.env.NODE_OPTIONS, dir: process.env.VRNIC_BENCH_CPU_PROF_DIR };
  process.env.NODE_OPTIONS = `${saved.opts ?? ''} --require ${path.join(__dirname, 'cpu-prof-preload.js')}`.trim();
  process.env.VRNIC_BENCH_CPU_PROF_DIR = dir;
  try {
    const iterations = quick ? 500 : 2000;
    let endUs = 0;
    const raw = (await mod.runDoorbellBench!({
      transport,
      iterations,
      warmup: 100,
      idleSeconds: 1,
      log: (line: string) => {
        if (endUs === 0 && /p50/.test(line)) endUs = Number(process.hrtime.bigint() / 1000n);
      },
    })) as Record<string, unknown>;
    if (endUs === 0) throw new Error('runDoorbellBench reported no latencies');
    const spin = typeof raw.spinP50Us === 'number' ? raw.spinP50Us : 0;
    const mean = typeof raw.meanUs === 'number' ? raw.meanUs : (raw.p50Us as number);
    const window = { fromUs: endUs - iterations * (mean + spin), toUs: endUs };
    return summarizeProfileDir(dir, `${transport} device process during ${2 * iterations} doorbell round trips (profiled run)`, 2 * iterations, window);
  } finally {
    if (saved.opts === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = saved.opts;
    if (saved.dir === undefined) delete process.env.VRNIC_BENCH_CPU_PROF_DIR;
    else process.env.VRNIC_BENCH_CPU_PROF_DIR = saved.dir;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Picks p50, p99 and idle CPU out of runDoorbellBench's result. */
function doorbellFigures(raw: unknown): DoorbellFigures {
  const r = raw as Record<string, unknown>;
  const num = (...keys: string[]): number => {
    for (const k of keys) if (typeof r[k] === 'number') return r[k] as number;
    throw new Error(`runDoorbellBench result has none of ${keys.join('/')}: ${JSON.stringify(raw).slice(0, 200)}`);
  };
  return { p50Us: num('p50Us'), p99Us: num('p99Us'), idleCpuPct: num('idleCpuPct') };
}

/** The issue's limits for a trapped BAR0 read, as a ratio to the C server on libvfio-user. */
const TRAPPED_LIMITS: Record<VrnicTransport, { quiet: number; busy: number }> = {
  native: { quiet: 1.3, busy: 1.5 },
  // its region callback through ffi-napi costs ~5 us a read that no wait design removes
  'libvfio-user': { quiet: 1.5, busy: 2 },
};

function evaluateGoals(report: Omit<BenchReport, 'goals'>, transports: readonly VrnicTransport[]): GoalResult[] {
  const goals: GoalResult[] = [];
  const status = (ok: boolean): GoalStatus => (ok ? 'MET' : 'MISSED');
  for (const t of transports) {
    const trap = report.trappedAccess?.servers.find((s) => s.name === t);
    const c = report.trappedAccess?.servers.find((s) => s.name === 'c');
    for (const mode of ['quiet', 'busy'] as const) {
      const limit = TRAPPED_LIMITS[t][mode];
      const goal = `trapped access vs C server, ${mode === 'quiet' ? 'quiet' : 'one core busy'}`;
      const fig = mode === 'quiet' ? trap : trap?.busy;
      const cFig = mode === 'quiet' ? c : c?.busy;
      goals.push(
        fig && fig.ratioToC !== null && cFig
          ? { goal, transport: t, limit: `<= ${limit}x`, measured: `${fig.ratioToC}x (${fig.medianUs} us vs ${cFig.medianUs} us)`, status: status(fig.ratioToC <= limit) }
          : { goal, transport: t, limit: `<= ${limit}x`, measured: '-', status: 'NOT MEASURED', note: notMeasured(report, t, 'trapped') },
      );
    }
    const door = report.doorbell?.rows.find((r) => r.transport === t && r.design === 'block');
    goals.push(
      door
        ? { goal: 'doorbell-to-completion p50', transport: t, limit: '<= 30 us', measured: `${round(door.p50Us, 1)} us`, status: status(door.p50Us <= 30) }
        : { goal: 'doorbell-to-completion p50', transport: t, limit: '<= 30 us', measured: '-', status: 'NOT MEASURED', note: notMeasured(report, t, 'doorbell') },
    );
    goals.push(
      door
        ? { goal: 'doorbell-to-completion p99', transport: t, limit: '<= 200 us', measured: `${round(door.p99Us, 1)} us`, status: status(door.p99Us <= 200) }
        : { goal: 'doorbell-to-completion p99', transport: t, limit: '<= 200 us', measured: '-', status: 'NOT MEASURED', note: notMeasured(report, t, 'doorbell') },
    );
    goals.push(
      door
        ? { goal: 'idle CPU', transport: t, limit: '<= 2% of a core', measured: `${round(door.idleCpuPct, 2)}%`, status: status(door.idleCpuPct <= 2) }
        : { goal: 'idle CPU', transport: t, limit: '<= 2% of a core', measured: '-', status: 'NOT MEASURED', note: notMeasured(report, t, 'doorbell') },
    );
    const st = report.startup?.rows.find((r) => r.transport === t);
    goals.push(
      st
        ? { goal: 'start to accepting socket', transport: t, limit: '<= 500 ms', measured: `${st.startMs.median} ms`, status: status(st.startMs.median <= 500) }
        : { goal: 'start to accepting socket', transport: t, limit: '<= 500 ms', measured: '-', status: 'NOT MEASURED', note: notMeasured(report, t, 'startup') },
    );
    goals.push(
      st
        ? { goal: 'resident memory, 1 device', transport: t, limit: '<= 100 MB', measured: `${st.rss1MB} MB`, status: status(st.rss1MB <= 100) }
        : { goal: 'resident memory, 1 device', transport: t, limit: '<= 100 MB', measured: '-', status: 'NOT MEASURED', note: notMeasured(report, t, 'startup') },
    );
    const g = report.guest?.rows.find((r) => r.server === t);
    const gc = report.guest?.rows.find((r) => r.server === 'c');
    goals.push(
      g && g.ratioToC !== null && gc
        ? { goal: 'BAR0 read from the guest vs C server', transport: t, limit: '<= 1.15x', measured: `${g.ratioToC}x (${g.medianUs} us vs ${gc.medianUs} us)`, status: status(g.ratioToC <= 1.15) }
        : { goal: 'BAR0 read from the guest vs C server', transport: t, limit: '<= 1.15x', measured: '-', status: 'NOT MEASURED', note: report.guest ? (report.guest.skipped.map((x) => `${x.server}: ${x.reason}`).join('; ') || (report.env.quick ? 'not run with --quick' : 'not run')) : 'section not run' },
    );
    const dp = report.datapath?.rows.find((r) => r.transport === t);
    for (const bytes of [65536, 1 << 20]) {
      const row = dp?.rows.find((r) => r.bytes === bytes);
      const goal = `RDMA WRITE ${bytes >= 1 << 20 ? '1 MiB' : '64 KiB'} vs memcpy`;
      goals.push(
        row
          ? { goal, transport: t, limit: '>= 0.5x', measured: `${row.ratio}x (${row.deviceMBps} vs ${row.memcpyMBps} MB/s)`, status: status(row.ratio >= 0.5) }
          : { goal, transport: t, limit: '>= 0.5x', measured: '-', status: 'NOT MEASURED', note: report.datapath ? (report.datapath.skipped.find((x) => x.transport === t)?.reason ?? 'not run') : 'section not run' },
      );
    }
  }
  return goals;
}

function notMeasured(report: Omit<BenchReport, 'goals'>, t: VrnicTransport, section: Section): string {
  if (section === 'trapped') {
    if (!report.trappedAccess) return 'section not run';
    const s = report.trappedAccess.skipped.find((x) => x.name === t) ?? report.trappedAccess.skipped.find((x) => x.name === 'c');
    return s ? `${s.name}: ${s.reason}` : 'not run';
  }
  if (section === 'doorbell') {
    if (!report.doorbell) return 'section not run';
    return report.doorbell.skipped.find((x) => x.transport === t || x.transport === 'all')?.reason ?? 'not run';
  }
  if (!report.startup) return 'section not run';
  return report.startup.skipped.find((x) => x.transport === t)?.reason ?? 'not run';
}

// ---- the printed table ----

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |';
  return [line(header), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.map(line)].join('\n');
}

function profileFootnote(p: ProfileSummary): string {
  const top = p.top
    .slice(0, 8)
    .map((e) => `    ${e.busyPct.toFixed(1).padStart(5)}%  ${e.fn}  (${e.where})`)
    .join('\n');
  const layers = Object.entries(p.layers)
    .map(([k, v]) => `${k} ${round((100 * v) / Math.max(p.busyMs, 0.001), 1)}%`)
    .join(', ');
  return `  ${p.label}\n  busy ${p.busyMs} ms of ${p.totalMs} ms sampled = ${p.busyUsPerAccess} us of server CPU per read\n  by layer: ${layers}\n  top self time:\n${top}`;
}

export function renderReport(r: BenchReport): string {
  const out: string[] = [];
  const m = r.machine;
  out.push(`vrnic bench, ${m.date}: ${m.cpuModel} x${m.cpus}, ${m.memTotalMiB} MiB, ${m.kernel}, node ${m.node}, load ${m.loadAvg.join(' ')}`);
  if (r.trappedAccess) {
    const ta = r.trappedAccess;
    out.push('', `1. Trapped register access: 4-byte REGION_READ of BAR0 offset 0, round trip (${ta.rounds} interleaved rounds x ${ta.readsPerRound} reads; client: ${ta.client})`);
    out.push(`   quiet: load average ${ta.loadQuiet.join(' ')} at the start; busy: another process spinning on one core${ta.loadBusy ? `, load average ${ta.loadBusy.join(' ')} at the start` : ' (not run)'}`);
    const ratio = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${x.toFixed(2)}x`);
    out.push(
      table(
        ['server', 'quiet median us', 'p10..p90', 'ratio to C', 'busy median us', 'p10..p90', 'ratio to C', 'value read', 'started as'],
        ta.servers.map((s) => [
          s.name,
          s.medianUs.toFixed(2),
          `${s.p10Us.toFixed(1)}..${s.p90Us.toFixed(1)}`,
          ratio(s.ratioToC),
          s.busy ? s.busy.medianUs.toFixed(2) : '-',
          s.busy ? `${s.busy.p10Us.toFixed(1)}..${s.busy.p90Us.toFixed(1)}` : '-',
          ratio(s.busy?.ratioToC),
          s.valueAtOffset0,
          s.via,
        ]),
      ),
    );
    if (ta.cClientSkipped) out.push(`  C client not used: ${ta.cClientSkipped}`);
    for (const s of ta.skipped) out.push(`  skipped ${s.name}: ${s.reason}`);
    if (ta.syscalls.length > 0) {
      out.push('  System calls per read in each server (strace -c -f, all threads; failed calls in brackets):');
      for (const c of ta.syscalls) out.push(`    ${c.name.padEnd(13)} ${c.perRead.toFixed(2).padStart(6)} total: ${c.top.map((t) => `${t.syscall} ${t.perRead}${t.errorsPerRead > 0 ? ` [${t.errorsPerRead}]` : ''}`).join(', ')}`);
    }
    if (ta.syscallsSkipped) out.push(`  system calls not counted: ${ta.syscallsSkipped}`);
    if (ta.profiles.length > 0) {
      out.push('  Where a trapped access spends its time in the server (node --cpu-prof, 50 us sampling, read loop only):');
      for (const p of ta.profiles) out.push(profileFootnote(p));
    }
    for (const s of ta.profileSkipped) out.push(`  no profile for ${s.name}: ${s.reason}`);
  }
  if (r.ffiCost) {
    const f = r.ffiCost;
    out.push('', '2. FFI cost per call and per callback (median of repeats)');
    out.push(
      table(
        ['library', 'abs(int) us/call', 'getpid() us/call', 'qsort comparator us/callback'],
        f.rows.map((x) => [x.library, x.callUs.toFixed(3), x.syscallUs.toFixed(3), x.callbackUs.toFixed(3)]),
      ),
    );
    out.push(`  ffi-napi / koffi: call ${f.ratios.call}x, syscall ${f.ratios.syscall}x, callback ${f.ratios.callback}x`);
    out.push(`  waiting for a message (ffi/libc.ts pollAsync: poll(2) on a libuv worker, result on the main thread), fd already readable: ${f.pollHop.pollAsyncUs} us per wait; the same poll(2) called synchronously: ${f.pollHop.pollSyncUs} us; a recvmsg that finds nothing (FdSocket.recv, EAGAIN): ${f.pollHop.recvEmptyUs} us`);
  }
  if (r.doorbell) {
    out.push('', '3. Doorbell to completion (UAR doorbell write -> CQE in guest memory and MSI-X eventfd), and idle CPU');
    if (r.doorbell.rows.length > 0) {
      out.push(table(['transport', 'wait design', 'p50 us', 'p99 us', 'idle CPU % of a core'], r.doorbell.rows.map((d) => [d.transport, d.design === 'block' ? 'block (default)' : 'spin (VRNIC_WAIT=spin)', d.p50Us.toFixed(1), d.p99Us.toFixed(1), d.idleCpuPct.toFixed(2)])));
    }
    for (const s of r.doorbell.skipped) out.push(`  skipped ${s.transport}: ${s.reason}`);
    if (r.doorbell.profiles.length > 0) {
      out.push('  Where the device process spends its time between doorbell and completion (inspector profiler, 50 us sampling, measured loops only):');
      for (const p of r.doorbell.profiles) out.push(profileFootnote(p).replace('us of server CPU per read', 'us of device CPU per round trip (the poller\'s busy-window spinning included)'));
    }
  }
  if (r.startup) {
    out.push('', '4. Start time (spawn -> connect succeeds, median) and resident memory (VmRSS after a client read registers)');
    out.push(
      table(
        ['transport', 'start ms (median)', 'min..max', 'RSS 1 device', 'RSS N processes (sum; per device)', 'RSS 1 process, N devices (total; per device; each added device)'],
        r.startup.rows.map((s) => [
          s.transport,
          s.startMs.median.toFixed(1),
          `${s.startMs.min}..${s.startMs.max}`,
          `${s.rss1MB} MB`,
          s.rssManyProcessesMB ? `N=${s.rssManyProcessesMB.devices}: ${s.rssManyProcessesMB.total} MB; ${s.rssManyProcessesMB.perDevice} MB` : '-',
          s.rssOneProcessMB ? `N=${s.rssOneProcessMB.devices}: ${s.rssOneProcessMB.total} MB; ${s.rssOneProcessMB.perDevice} MB; ${s.rssOneProcessMB.marginalPerDevice} MB` : '-',
        ]),
      ),
    );
    for (const s of r.startup.rows) out.push(`  ${s.transport} started as: ${s.via}`);
    if (r.startup.nodeBaselineMs !== null) out.push(`  a Node process that only listens on a Unix socket starts in ${r.startup.nodeBaselineMs} ms (median): Node's own share`);
    for (const s of r.startup.skipped) out.push(`  skipped ${s.transport}: ${s.reason}`);
  }
  if (r.datapath) {
    out.push('', '5. Data path: RDMA WRITE between two MRs through the device (loopback RC, device in its own process, guest RAM a memfd), against memcpy of the same sizes; 64-byte SENDs per second');
    for (const d of r.datapath.rows) {
      out.push(`  ${d.transport}: bytes verified ${d.verified ? 'yes' : 'NO'}; 64-byte SEND rate ${d.sendRate}/s (${d.sends} SENDs, a receive each)`);
      out.push(table(['size', 'WRITEs', 'device MB/s', 'memcpy MB/s', 'ratio'], d.rows.map((x) => [x.bytes >= 1 << 20 ? `${x.bytes >> 20} MiB` : `${x.bytes >> 10} KiB`, String(x.writes), x.deviceMBps.toFixed(1), x.memcpyMBps.toFixed(1), `${x.ratio}x`])));
    }
    for (const s of r.datapath.skipped) out.push(`  skipped ${s.transport}: ${s.reason}`);
  }
  if (r.guest) {
    const g = r.guest;
    out.push('', `6. BAR0 read from the guest: ${g.reads} 4-byte loads of the sysfs resource0 mapping under QEMU TCG (guest/bar-read), ${g.boots} boot(s) per server, alternating; load average ${g.loadAvg.join(' ')} at the start`);
    if (g.rows.length > 0) out.push(table(['server', 'median us/read', 'per boot us', 'ratio to C', 'value read'], g.rows.map((x) => [x.server, x.medianUs.toFixed(2), x.nsPerRead.map((n) => (n / 1000).toFixed(1)).join(' '), x.ratioToC === null ? '-' : `${x.ratioToC.toFixed(2)}x`, x.value])));
    for (const s of g.skipped) out.push(`  skipped ${s.server}: ${s.reason}`);
  }
  out.push('', 'Goals');
  out.push(table(['goal', 'transport', 'limit', 'measured', 'status'], r.goals.map((g) => [g.goal, g.transport, g.limit, g.measured, g.status + (g.note ? ` (${g.note.slice(0, 120)})` : '')])));
  return out.join('\n');
}

/** The one-line usage, for --help and after a bad flag. */
function usage(): string {
  return `Usage: npm run bench -- [--out FILE] [--quick] [--only ${SECTIONS.join(',')}]\n`;
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        out: { type: 'string' },
        quick: { type: 'boolean', default: false },
        only: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    });
  } catch (err) {
    // A bad flag is the user's mistake, not the bench's: one line and the usage, no stack.
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n${usage()}`);
    return 2;
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write(usage());
    return 0;
  }
  const only = values.only ? (values.only.split(',') as Section[]) : SECTIONS;
  for (const s of only) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section '${s}' (${SECTIONS.join(', ')})`);
  const quick = values.quick ?? false;
  const transports = vrnicTransportsToTry().try;

  const partial: { -readonly [K in keyof Omit<BenchReport, 'goals'>]: Omit<BenchReport, 'goals'>[K] } = {
    machine: machineInfo(),
    env: { VRNIC_LIBVFIO_USER: process.env.VRNIC_LIBVFIO_USER ?? null, quick },
  };
  if (only.includes('trapped')) {
    log('trapped register access...');
    partial.trappedAccess = await runTrappedAccess({
      // Many short rounds: on a shared machine a burst of someone else's work spoils one round, not a column.
      rounds: quick ? 7 : 41,
      readsPerRound: quick ? 500 : 1000,
      warmupReads: quick ? 200 : 2000,
      profileReads: quick ? 3000 : 20000,
      straceReads: quick ? 500 : 2000,
      variants: quick ? ['spin'] : ['spin', 'no-busy-window'],
      busyCore: true,
      log,
    });
  }
  if (only.includes('ffi')) {
    log('FFI cost...');
    partial.ffiCost = await runFfiCost({ repeats: quick ? 3 : 9, koffiCalls: quick ? 50000 : 200000, ffiNapiCalls: quick ? 5000 : 20000, sortElements: 1000 });
  }
  if (only.includes('doorbell')) {
    log('doorbell to completion...');
    partial.doorbell = await runDoorbell(transports, quick);
  }
  if (only.includes('startup')) {
    log('start time and memory...');
    partial.startup = await runStartup({ runs: quick ? 3 : 7, transports, readsBeforeRss: 1000, manyDevices: 16, log });
  }
  if (only.includes('datapath')) {
    log('data path throughput...');
    partial.datapath = await runDatapath(transports, quick);
  }
  if (only.includes('guest')) {
    log('BAR0 reads from a guest...');
    partial.guest = await runGuestBar({ reads: 2000, boots: quick ? 1 : 3, transports: quick ? ['native'] : transports, log });
  }
  const report: BenchReport = { ...partial, goals: evaluateGoals(partial, transports) };

  process.stdout.write(renderReport(report) + '\n');
  const outFile = values.out ?? path.join(repoRoot, 'bench', 'results', `bench-${report.machine.date.replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(`\nJSON written to ${path.relative(process.cwd(), outFile) || outFile}\n`);
  return 0;
}

runMain(module, 'bench', main, { stack: true });
