// Benchmark: 4-byte BAR0 reads from inside a guest (QEMU under TCG, sysfs resource0 mmap), vrnic against the C server on libvfio-user.
//
// The socket benchmark (trapped-access.ts) times the server's share alone; this one times what a
// guest driver sees: a load from the mapped BAR that QEMU traps and forwards as REGION_READ. The
// guest is the cached guest image's kernel with a small initramfs overlay: guest/bar-read/bar-read.c
// (built static here) and an rdinit script that enables the device through sysfs (memory decoding
// on, no driver bound) and runs it. Boots alternate between the servers so drift on a shared
// machine lands on both; the ratio is of the medians.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startGuest } from '../src/testing/boot';
import { CpioWriter } from '../guest/kit/cpio';
import { latestGuestImage } from '../guest/kit/image';
import { findQemu } from '../qemu-config/qemu';
import { median, round, stopServer, tempDir } from './common';
import { buildCServer, startCServer, startVrnicServer, type RunningServer, type VrnicTransport } from './trapped-access';

export interface GuestBarOptions {
  readonly reads: number;
  /** Boots per server. */
  readonly boots: number;
  readonly transports: readonly VrnicTransport[];
  readonly log: (line: string) => void;
}

export interface GuestBarRow {
  readonly server: 'c' | VrnicTransport;
  readonly nsPerRead: readonly number[];
  readonly medianUs: number;
  readonly value: string;
  readonly ratioToC: number | null;
}

export interface GuestBarResult {
  readonly reads: number;
  readonly boots: number;
  readonly rows: readonly GuestBarRow[];
  readonly skipped: readonly { server: string; reason: string }[];
  readonly loadAvg: readonly number[];
}

const DEVICE = '/sys/bus/pci/devices/0000:01:00.0';
/** Reads each server answers before the guest boots (see runGuestBar). */
const WARMUP_READS = 20000;

function initScript(reads: number): string {
  return `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo 1 > ${DEVICE}/enable || echo "BAR-READ error: cannot enable the device"
/bin/bar-read ${DEVICE}/resource0 ${reads} || echo "BAR-READ error: bar-read failed"
/bin/busybox poweroff -f
`;
}

/** The guest kernel and an initrd with bar-read added, or why not. */
function prepareGuest(dir: string, reads: number): { kernel: string; initrd: string } | { reason: string } {
  const image = latestGuestImage();
  if (!image) return { reason: 'no guest image in the cache (`vrnic guest build`, or set VRNIC_CACHE)' };
  const source = path.resolve(__dirname, '..', '..', 'guest', 'bar-read', 'bar-read.c');
  const binary = path.join(dir, 'bar-read');
  try {
    execFileSync(process.env.CC ?? 'cc', ['-O2', '-static', '-Wall', '-o', binary, source], { stdio: 'pipe' });
  } catch (err) {
    const e = err as { stderr?: Buffer };
    return { reason: `cannot build guest/bar-read statically: ${e.stderr?.toString().trim().slice(0, 200) ?? String(err)}` };
  }
  // The kernel unpacks concatenated archives in order: the overlay adds two files to the image's.
  // An uncompressed archive must start at a multiple of 4 bytes (zero bytes between are skipped).
  const overlay = new CpioWriter().file('bar-init', Buffer.from(initScript(reads)), 0o755).file('bin/bar-read', fs.readFileSync(binary), 0o755).finish();
  const base = fs.readFileSync(image.initrd);
  const initrd = path.join(dir, 'initrd-bar-read.img');
  fs.writeFileSync(initrd, Buffer.concat([base, Buffer.alloc((4 - (base.length % 4)) % 4), overlay]));
  return { kernel: image.kernel, initrd };
}

/** Boots the guest against a running server; resolves with ns per read and the value read. */
async function bootOnce(qemu: string, guest: { kernel: string; initrd: string }, socket: string): Promise<{ ns: number; value: string }> {
  const g = startGuest({ qemu, kernel: guest.kernel, initrd: guest.initrd, append: 'console=ttyS0 quiet panic=-1 rdinit=/bar-init', socket, timeoutMs: 120_000 });
  const r = await g.done;
  const m = /BAR-READ reads=\d+ ns_per_read=(\d+) value=(0x[0-9a-f]+)/.exec(r.console);
  if (!m) {
    const why = /BAR-READ error: .*/.exec(r.console)?.[0] ?? (r.timedOut ? 'guest timed out' : `no BAR-READ line (exit ${r.exitCode}): ${(r.stderr || r.console).trim().split('\n').slice(-3).join(' | ')}`);
    throw new Error(why);
  }
  return { ns: Number(m[1]), value: m[2]! };
}

/** One boot against a server already listening on socket (for ad hoc measurements); ns per read. */
export async function runGuestBarAgainst(socket: string, reads: number): Promise<{ ns: number; value: string }> {
  const dir = tempDir('vrnic-bench-guest-');
  try {
    const qemu = findQemu()?.binary;
    if (!qemu) throw new Error('no QEMU with vfio-user-pci found');
    const guest = prepareGuest(dir, reads);
    if ('reason' in guest) throw new Error(guest.reason);
    return await bootOnce(qemu, guest, socket);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function runGuestBar(opts: GuestBarOptions): Promise<GuestBarResult> {
  const dir = tempDir('vrnic-bench-guest-');
  const skipped: { server: string; reason: string }[] = [];
  const loadAvg = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  const empty = (reason: string): GuestBarResult => ({ reads: opts.reads, boots: 0, rows: [], skipped: [{ server: 'all', reason }], loadAvg });
  try {
    let qemu: string | undefined;
    try {
      qemu = findQemu()?.binary;
    } catch (err) {
      return empty((err as Error).message);
    }
    if (!qemu) return empty('no QEMU with vfio-user-pci found (VRNIC_QEMU, or `vrnic qemu provision`)');
    const guest = prepareGuest(dir, opts.reads);
    if ('reason' in guest) return empty(guest.reason);
    const starters: { server: 'c' | VrnicTransport; start: () => Promise<RunningServer> }[] = [];
    const built = buildCServer();
    if ('reason' in built) skipped.push({ server: 'c', reason: built.reason });
    else starters.push({ server: 'c', start: () => startCServer(built.binary, dir) });
    for (const t of opts.transports) starters.push({ server: t, start: () => startVrnicServer(t, dir) });
    const samples = new Map<string, { ns: number[]; value: string }>();
    for (let b = 0; b < opts.boots; b++) {
      for (const s of starters) {
        if (skipped.some((x) => x.server === s.server)) continue;
        let running: RunningServer | null = null;
        try {
          running = await s.start();
          // A fresh Node server runs its first thousands of requests unoptimized (V8 compiles
          // hot code as it goes); a device in use has long been warm, and the C server has no
          // such phase. So every server first answers WARMUP_READS from the bench's client.
          for (let i = 0; i < WARMUP_READS; i++) running.client?.read32(0, 0);
          // the bench's own client leaves, so QEMU is the server's one client
          running.client?.close();
          running.client = null;
          const got = await bootOnce(qemu, guest, running.server.socketPath);
          const entry = samples.get(s.server) ?? { ns: [], value: got.value };
          entry.ns.push(got.ns);
          samples.set(s.server, entry);
          opts.log(`  guest BAR0 reads: ${s.server} boot ${b + 1}: ${round(got.ns / 1000)} us/read`);
        } catch (err) {
          const reason = (err as Error).message.split('\n')[0]!.slice(0, 300);
          skipped.push({ server: s.server, reason });
          opts.log(`  guest BAR0 reads: ${s.server} skipped: ${reason}`);
        } finally {
          if (running) await stopServer(running.server);
        }
      }
    }
    const c = samples.get('c');
    const cMedian = c ? median(c.ns) : null;
    const rows: GuestBarRow[] = [...samples.entries()].map(([server, e]) => ({
      server: server as GuestBarRow['server'],
      nsPerRead: e.ns,
      medianUs: round(median(e.ns) / 1000),
      value: e.value,
      ratioToC: cMedian ? round(median(e.ns) / cMedian) : null,
    }));
    return { reads: opts.reads, boots: opts.boots, rows, skipped, loadAvg };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
