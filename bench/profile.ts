// Summarizes a V8 .cpuprofile (from `node --cpu-prof`): top functions by self time, and time by layer.
import fs from 'node:fs';
import path from 'node:path';
import { round } from './common';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileEntry {
  readonly fn: string;
  readonly where: string;
  readonly selfMs: number;
  /** Share of the busy (non-idle) time. */
  readonly busyPct: number;
}

export interface ProfileSummary {
  readonly label: string;
  readonly totalMs: number;
  readonly idleMs: number;
  readonly busyMs: number;
  /** Busy time per access, when the number of accesses is known. */
  readonly busyUsPerAccess: number | null;
  readonly top: readonly ProfileEntry[];
  /** Busy time by layer: vrnic's code, koffi/ffi-napi calls, Node internals, GC, native (program). */
  readonly layers: Readonly<Record<string, number>>;
}

/** Which part of the stack a frame belongs to, from its script URL and name. */
function layerOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (functionName === '(garbage collector)') return 'gc';
  if (functionName === '(program)') return 'native (program)';
  if (url.includes('/node_modules/koffi/')) return 'koffi';
  if (url.includes('ffi-napi') || url.includes('ref-napi') || url.includes('ref-struct') || url.includes('ref-array')) return 'ffi-napi/ref-napi';
  if (url.includes('/node_modules/pino')) return 'pino';
  if (url.includes('/node_modules/')) return 'other modules';
  if (url.startsWith('node:') || url === '') return url === '' && functionName !== '' ? 'native (builtin or FFI call)' : 'node internals';
  if (url.includes('/dist/')) return 'vrnic';
  return 'other';
}

function shortWhere(frame: CallFrame): string {
  if (frame.url === '') return '(native)';
  let u = frame.url.replace(/^file:\/\//, '');
  const i = u.indexOf('/dist/');
  if (i >= 0) u = u.slice(i + 1);
  const j = u.indexOf('/node_modules/');
  if (j >= 0) u = u.slice(j + '/node_modules/'.length);
  return `${u}:${frame.lineNumber + 1}`;
}

/** A time window in microseconds of CLOCK_MONOTONIC (process.hrtime's clock, which V8's profiler also uses). */
export interface Window {
  readonly fromUs: number;
  readonly toUs: number;
}

/** Reads the newest .cpuprofile in dir and summarizes it (only samples inside window, when given). */
export function summarizeProfileDir(dir: string, label: string, accesses: number | null, window?: Window, topN = 12): ProfileSummary {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) throw new Error(`no .cpuprofile written in ${dir}`);
  const newest = files.map((f) => path.join(dir, f)).sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0];
  const profile = JSON.parse(fs.readFileSync(newest, 'utf8')) as CpuProfile;
  return summarizeProfile(profile, label, accesses, window, topN);
}

export function summarizeProfile(profile: CpuProfile, label: string, accesses: number | null, window?: Window, topN = 12): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  for (const n of profile.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  // timeDeltas[i] is the time before sample i; attribute each interval to the sample that ends it.
  let t = profile.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + (deltas[i] ?? 0));
  }
  const byFn = new Map<string, { fn: string; where: string; us: number }>();
  const layers: Record<string, number> = {};
  let idleUs = 0;
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    totalUs += us;
    const frame = node.callFrame;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const fn = frame.functionName || '(anonymous)';
    const where = shortWhere(frame);
    const key = `${fn}@${where}`;
    const e = byFn.get(key) ?? { fn, where, us: 0 };
    e.us += us;
    byFn.set(key, e);
    const layer = layerOf(frame);
    layers[layer] = (layers[layer] ?? 0) + us;
  }
  const busyUs = totalUs - idleUs;
  const top = [...byFn.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((e) => ({ fn: e.fn, where: e.where, selfMs: round(e.us / 1000), busyPct: round((100 * e.us) / Math.max(busyUs, 1), 1) }));
  const layerMs: Record<string, number> = {};
  for (const [k, v] of Object.entries(layers).sort((a, b) => b[1] - a[1])) layerMs[k] = round(v / 1000);
  return {
    label,
    totalMs: round(totalUs / 1000),
    idleMs: round(idleUs / 1000),
    busyMs: round(busyUs / 1000),
    busyUsPerAccess: accesses ? round(busyUs / accesses) : null,
    top,
    layers: layerMs,
  };
}
