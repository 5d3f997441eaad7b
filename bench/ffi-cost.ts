// Benchmark 2a: what the FFI bindings themselves cost, per call into C and per callback from C into JS, with koffi and with ffi-napi.
//
// vrnic binds libc with koffi and libvfio-user with ffi-napi (@2060.io/ffi-napi), so both
// costs sit on a trapped access's path: koffi calls in the native transport's recvmsg/sendmsg,
// ffi-napi calls (vfu_run_ctx) and ffi-napi callbacks (the region access callback) in the
// libvfio-user transport. Measuring the same C functions through both libraries shows how
// much of a transport's time the binding library explains.
import ffi from '@2060.io/ffi-napi';
import ref from '@2060.io/ref-napi';
import koffi from 'koffi';
import { closeQuietly, eventfd, eventfdSignal, FdSocket, poll, pollAsync, POLLIN } from '../ffi/libc';
import { median, nowNs, round } from './common';

export interface FfiCostOptions {
  /** Repetitions of each measurement; the median is reported. */
  readonly repeats: number;
  readonly koffiCalls: number;
  readonly ffiNapiCalls: number;
  /** Elements sorted by qsort (about n log2 n comparator callbacks per sort). */
  readonly sortElements: number;
}

export interface FfiCostRow {
  readonly library: 'koffi' | 'ffi-napi';
  /** abs(3), one int argument: a libc function that does no system call, so the time is the binding's. */
  readonly callUs: number;
  /** getpid(2), no argument: a real system call (glibc no longer caches it). */
  readonly syscallUs: number;
  /** One comparator callback from qsort(3) into JS, averaged over a sort. */
  readonly callbackUs: number;
  readonly callbacksPerSort: number;
}

/**
 * What waiting for a message costs both transports: ffi/libc.ts's pollAsync runs poll(2) on a
 * libuv worker thread and resolves on the main thread; here on an eventfd that is always
 * readable, so the figure is the hop there and back, not any waiting.
 */
export interface PollHop {
  /** One `await pollAsync(...)` on a readable fd. */
  readonly pollAsyncUs: number;
  /** The same poll(2), called synchronously through koffi (what the busy window does per check). */
  readonly pollSyncUs: number;
  /** ffi/libc.ts FdSocket.recv on a Unix socket with nothing to read: one recvmsg that fails with EAGAIN. */
  readonly recvEmptyUs: number;
}

export interface FfiCostResult {
  readonly rows: readonly FfiCostRow[];
  readonly pollHop: PollHop;
  /** ffi-napi / koffi for each measure. */
  readonly ratios: { readonly call: number; readonly syscall: number; readonly callback: number };
}

function perCallUs(fn: () => void, n: number): number {
  const t0 = nowNs();
  for (let i = 0; i < n; i++) fn();
  return Number(nowNs() - t0) / n / 1000;
}

function descending(n: number): Buffer {
  const b = Buffer.alloc(4 * n);
  for (let i = 0; i < n; i++) b.writeInt32LE(n - i, 4 * i);
  return b;
}

function measure(repeats: number, f: () => number): number {
  f(); // warm-up: first calls compile stubs
  const xs: number[] = [];
  for (let r = 0; r < repeats; r++) xs.push(f());
  return round(median(xs), 3);
}

// koffi type names are global to the process: declare the prototype once.
let cmpProto: koffi.IKoffiCType | undefined;

function koffiRow(opts: FfiCostOptions): FfiCostRow {
  const libc = koffi.load('libc.so.6');
  const abs = libc.func('int abs(int)') as (x: number) => number;
  const getpid = libc.func('int getpid()') as () => number;
  cmpProto ??= koffi.proto('int vrnic_bench_cmp(const void *a, const void *b)');
  const qsort = libc.func('void qsort(void *base, size_t nmemb, size_t size, vrnic_bench_cmp *cmp)') as (base: Buffer, n: number, size: number, cmp: unknown) => void;
  let calls = 0;
  const cmp = koffi.register((a: unknown, b: unknown) => {
    calls++;
    return (koffi.decode(a, 'int') as number) - (koffi.decode(b, 'int') as number);
  }, koffi.pointer(cmpProto));
  try {
    const callUs = measure(opts.repeats, () => perCallUs(() => abs(-7), opts.koffiCalls));
    const syscallUs = measure(opts.repeats, () => perCallUs(() => getpid(), opts.koffiCalls));
    let perSort = 0;
    const callbackUs = measure(opts.repeats, () => {
      const data = descending(opts.sortElements);
      calls = 0;
      const t0 = nowNs();
      qsort(data, opts.sortElements, 4, cmp);
      const us = Number(nowNs() - t0) / 1000;
      if (data.readInt32LE(0) !== 1) throw new Error('koffi qsort did not sort');
      perSort = calls;
      return us / calls;
    });
    return { library: 'koffi', callUs, syscallUs, callbackUs, callbacksPerSort: perSort };
  } finally {
    koffi.unregister(cmp);
  }
}

function ffiNapiRow(opts: FfiCostOptions): FfiCostRow {
  const libc = ffi.Library('libc.so.6', {
    abs: ['int', ['int']],
    getpid: ['int', []],
    qsort: ['void', ['pointer', 'size_t', 'size_t', 'pointer']],
  });
  let calls = 0;
  // Pointer arguments reach the callback as zero-length Buffers: reinterpret views the 4 bytes.
  const cmp = ffi.Callback('int', ['pointer', 'pointer'], (a: Buffer, b: Buffer) => {
    calls++;
    return ref.reinterpret(a, 4, 0).readInt32LE(0) - ref.reinterpret(b, 4, 0).readInt32LE(0);
  });
  const callUs = measure(opts.repeats, () => perCallUs(() => libc.abs(-7), opts.ffiNapiCalls));
  const syscallUs = measure(opts.repeats, () => perCallUs(() => libc.getpid(), opts.ffiNapiCalls));
  let perSort = 0;
  const callbackUs = measure(opts.repeats, () => {
    const data = descending(opts.sortElements);
    calls = 0;
    const t0 = nowNs();
    libc.qsort(data as ref.Pointer<unknown>, opts.sortElements, 4, cmp);
    const us = Number(nowNs() - t0) / 1000;
    if (data.readInt32LE(0) !== 1) throw new Error('ffi-napi qsort did not sort');
    perSort = calls;
    return us / calls;
  });
  // Keep the callback alive until the last sort has returned.
  void cmp;
  return { library: 'ffi-napi', callUs, syscallUs, callbackUs, callbacksPerSort: perSort };
}

function recvEmpty(opts: FfiCostOptions): number {
  const libc = koffi.load('libc.so.6');
  const socketpair = libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)') as (d: number, t: number, p: number, sv: number[]) => number;
  const sv = [-1, -1];
  if (socketpair(1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0, sv) < 0) throw new Error(`socketpair: errno ${koffi.errno()}`);
  const sock = new FdSocket(sv[0]);
  try {
    return measure(opts.repeats, () => perCallUs(() => sock.recv(), opts.koffiCalls / 10));
  } finally {
    sock.free();
    closeQuietly(sv[0]);
    closeQuietly(sv[1]);
  }
}

async function pollHop(opts: FfiCostOptions): Promise<PollHop> {
  const efd = eventfd();
  try {
    eventfdSignal(efd);
    const req = [{ fd: efd, events: POLLIN }];
    const n = Math.max(200, Math.floor(opts.ffiNapiCalls / 4));
    const asyncRuns: number[] = [];
    for (let r = 0; r <= opts.repeats; r++) {
      const t0 = nowNs();
      for (let i = 0; i < n; i++) await pollAsync(req, -1);
      if (r > 0) asyncRuns.push(Number(nowNs() - t0) / n / 1000);
    }
    const pollSyncUs = measure(opts.repeats, () => perCallUs(() => poll(req, 0), opts.koffiCalls / 10));
    return { pollAsyncUs: round(median(asyncRuns), 2), pollSyncUs, recvEmptyUs: recvEmpty(opts) };
  } finally {
    closeQuietly(efd);
  }
}

export async function runFfiCost(opts: FfiCostOptions): Promise<FfiCostResult> {
  const k = koffiRow(opts);
  const f = ffiNapiRow(opts);
  return {
    rows: [k, f],
    pollHop: await pollHop(opts),
    ratios: { call: round(f.callUs / k.callUs, 1), syscall: round(f.syscallUs / k.syscallUs, 1), callback: round(f.callbackUs / k.callbackUs, 1) },
  };
}
