// The data path seen from guests: two processes in one guest, and two guests on one `vrnic serve`, connect RC QPs and exchange verified bytes.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { bootGuest, startGuest, type BootResult } from '../src/testing/boot';
import { guestEvents, kernelProblems, type GuestEvent } from '../guest/kit/guest-log';
import { buildGuestImage, guestAppend } from '../guest/kit/image';
import { requireVfioUserQemu } from '../qemu-config/qemu';
import { parseReportLine } from '../src/unplug/guest-report';
import { e2eTest } from './helpers/e2e';
import { startServe } from './helpers/serve-process';

const maybe = e2eTest('guest-datapath');
/** Round trips of the in-guest ping-pong: enough for a mean under TCG, few enough for a 2-core host. */
const ITERS = 200;
const SIZE = 1024;

interface Run {
  readonly boot: BootResult;
  readonly events: GuestEvent[];
}

let shared: Promise<Run> | undefined;
function run(): Promise<Run> {
  shared ??= (async () => {
    const qemu = await requireVfioUserQemu();
    const image = await buildGuestImage({ progress: (l) => console.log(l) });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-datapath-'));
    const socket = path.join(dir, 'vrnic.sock');
    const serve = await startServe([socket]);
    try {
      const boot = await bootGuest({
        qemu: qemu.binary,
        kernel: image.kernel,
        initrd: image.initrd,
        append: guestAppend({ scenario: 'pingpong', testArgs: ['--iters', String(ITERS), '--size', String(SIZE)] }),
        socket,
        qmp: path.join(dir, 'qmp.sock'),
        consoleFile: path.join(dir, 'console.log'),
        timeoutMs: 300_000,
      });
      console.log(`guest-datapath artifacts in ${dir} (QEMU ran ${(boot.elapsedMs / 1000).toFixed(1)} s)`);
      return { boot, events: guestEvents(boot.console) };
    } finally {
      serve.child.kill('SIGTERM');
      await new Promise((r) => (serve.child.exitCode !== null ? r(null) : serve.child.once('exit', r)));
    }
  })();
  return shared;
}

function report(r: Run, event: string, label: string): GuestEvent | undefined {
  return r.events.find((e) => e.source === 'test' && e.event === event && e.fields.label === label);
}

maybe('two processes in one guest connect their RC QPs to each other through the device', async (t) => {
  t.timeout(600_000);
  const r = await run();
  const req = report(r, 'connected', 'requester');
  const rsp = report(r, 'connected', 'responder');
  t.is(req?.fields.errno, 0, JSON.stringify(req?.fields));
  t.is(rsp?.fields.errno, 0, JSON.stringify(rsp?.fields));
  // One device: both ends have its LID, and each names the other's QP.
  t.is(req?.fields.lid, 1);
  t.is(req?.fields.peer_qpn, rsp?.fields.qpn);
  t.is(rsp?.fields.peer_qpn, req?.fields.qpn);
});

maybe('a SEND ping-pong between two guest processes returns every byte it sent', async (t) => {
  t.timeout(600_000);
  const r = await run();
  const pp = report(r, 'pingpong', 'requester');
  t.truthy(pp, 'no pingpong report');
  t.is(pp?.fields.round_trips, ITERS);
  t.is(pp?.fields.bytes_verified, ITERS * SIZE);
  t.is(pp?.fields.bad_bytes, 0);
  t.log(`${ITERS} round trips of ${SIZE} bytes under TCG: first ${String(pp?.fields.first_rtt_ms)} ms, mean ${String(pp?.fields.mean_rtt_ms)} ms`);
});

maybe("RDMA WRITE lands in the peer process's MR and RDMA READ brings back the peer's bytes, verified", async (t) => {
  t.timeout(600_000);
  const r = await run();
  t.deepEqual(report(r, 'rdma-write-landed', 'responder')?.fields.bad_bytes, 0);
  t.is(report(r, 'rdma-write-landed', 'responder')?.fields.bytes, SIZE);
  t.is(report(r, 'rdma-read', 'requester')?.fields.bytes, SIZE);
  t.is(report(r, 'rdma-read', 'requester')?.fields.bad_bytes, 0);
  for (const label of ['requester', 'responder']) {
    const v = report(r, 'verified', label);
    t.is(v?.fields.ok, true, `${label}: ${JSON.stringify(v?.fields)}`);
    t.is(v?.fields.error_cqes, 0);
  }
  t.is(r.events.find((e) => e.source === 'init' && e.event === 'test-exit')?.fields.code, 0);
  t.deepEqual(kernelProblems(r.boot.console), []);
});

/**
 * Two guests, each with its own socket of one `vrnic serve` process (so their devices share the
 * fabric): guest A runs the requester, guest B the responder. The test is the out-of-band channel
 * a real deployment has (a TCP connection, a CM): it reads each side's `endpoint` report from its
 * console and writes it to the other guest's second serial line, then tells the requester to go
 * once the responder is connected.
 */
let twoShared: Promise<Record<'requester' | 'responder', Run>> | undefined;
function twoGuests(): Promise<Record<'requester' | 'responder', Run>> {
  twoShared ??= (async () => {
    const qemu = await requireVfioUserQemu();
    const image = await buildGuestImage({ progress: (l) => console.log(l) });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-two-guests-'));
    const roles = ['requester', 'responder'] as const;
    const sockets = roles.map((r) => path.join(dir, `${r}.sock`));
    const serve = await startServe(sockets);
    const lines = new Map<string, net.Socket>();
    const said: Record<string, Record<string, unknown>> = {};
    // Lines for a guest wait here until its serial line is connected and its program listens on
    // ttyS1 (it opens it before reporting its endpoint): a UART nobody opened drops what it gets.
    const pending = new Map<string, string[]>();
    const flush = (role: string) => {
      const line = lines.get(role);
      if (!line || !said[`${role}/endpoint`]) return;
      for (const text of pending.get(role) ?? []) line.write(`${text}\n`);
      pending.delete(role);
    };
    const relay = (role: string, text: string) => {
      pending.set(role, [...(pending.get(role) ?? []), text]);
      flush(role);
    };
    const maybeGo = () => {
      if (said['responder/connected']?.errno === 0 && said['requester/connected']?.errno === 0 && !said.go) {
        said.go = {};
        relay('requester', 'GO');
      }
    };
    try {
      const guests = roles.map((role, i) =>
        startGuest({
          qemu: qemu.binary,
          kernel: image.kernel,
          initrd: image.initrd,
          append: guestAppend({ scenario: 'pingpong', testArgs: ['--iters', String(ITERS), '--size', String(SIZE), '--role', role, '--peer-tty', '/dev/ttyS1'] }),
          socket: sockets[i],
          qmp: path.join(dir, `${role}.qmp`),
          serial2: { kind: 'unix', path: path.join(dir, `${role}.tty`) },
          consoleFile: path.join(dir, `${role}.console.log`),
          timeoutMs: 300_000,
          onLine: (line) => {
            const r = parseReportLine(line, Date.now());
            if (!r || r.source !== 'test') return;
            said[`${role}/${r.event}`] = r.fields;
            const other = role === 'requester' ? 'responder' : 'requester';
            if (r.event === 'endpoint') {
              flush(role);
              const f = r.fields;
              relay(other, `PEER ${String(f.lid)} ${String(f.qpn)} ${String(f.psn)} ${String(f.rkey)} ${String(f.addr)}`);
            }
            if (r.event === 'connected') maybeGo();
          },
        }),
      );
      // QEMU listens on each second serial line; connect as soon as it does.
      for (const role of roles) {
        const tty = path.join(dir, `${role}.tty`);
        const deadline = Date.now() + 60_000;
        while (!lines.has(role) && Date.now() < deadline) {
          const sock = await new Promise<net.Socket | null>((resolve) => {
            const c = net.connect(tty);
            c.once('connect', () => resolve(c));
            c.once('error', () => resolve(null));
          });
          if (sock) {
            sock.on('error', () => undefined);
            sock.on('data', () => undefined);
            lines.set(role, sock);
            flush(role);
          } else await new Promise((r) => setTimeout(r, 100));
        }
      }
      const [a, b] = await Promise.all(guests.map((g) => g.done));
      console.log(`two-guest artifacts in ${dir} (QEMU ran ${(a.elapsedMs / 1000).toFixed(1)} s, ${(b.elapsedMs / 1000).toFixed(1)} s)`);
      return { requester: { boot: a, events: guestEvents(a.console) }, responder: { boot: b, events: guestEvents(b.console) } };
    } finally {
      for (const s of lines.values()) s.destroy();
      serve.child.kill('SIGTERM');
      await new Promise((r) => (serve.child.exitCode !== null ? r(null) : serve.child.once('exit', r)));
    }
  })();
  return twoShared;
}

maybe("two guests on one daemon connect RC QPs across the fabric, each naming the other's LID and QPN", async (t) => {
  t.timeout(600_000);
  const g = await twoGuests();
  const req = report(g.requester, 'connected', 'requester');
  const rsp = report(g.responder, 'connected', 'responder');
  t.is(req?.fields.errno, 0, JSON.stringify(req?.fields));
  t.is(rsp?.fields.errno, 0, JSON.stringify(rsp?.fields));
  // LIDs follow the order of --socket: the requester's device was created first.
  t.is(req?.fields.lid, 1);
  t.is(rsp?.fields.lid, 2);
  t.is(req?.fields.peer_lid, 2);
  t.is(rsp?.fields.peer_lid, 1);
  t.is(req?.fields.peer_qpn, rsp?.fields.qpn);
  t.is(rsp?.fields.peer_qpn, req?.fields.qpn);
});

maybe('a SEND ping-pong, RDMA WRITE and RDMA READ between two guests deliver every byte intact', async (t) => {
  t.timeout(600_000);
  const g = await twoGuests();
  const pp = report(g.requester, 'pingpong', 'requester');
  t.is(pp?.fields.round_trips, ITERS);
  t.is(pp?.fields.bad_bytes, 0);
  t.is(report(g.responder, 'rdma-write-landed', 'responder')?.fields.bad_bytes, 0);
  t.is(report(g.requester, 'rdma-read', 'requester')?.fields.bad_bytes, 0);
  for (const [role, run] of Object.entries(g)) {
    const v = report(run, 'verified', role);
    t.is(v?.fields.ok, true, `${role}: ${JSON.stringify(v?.fields)}`);
    t.is(run.events.find((e) => e.source === 'init' && e.event === 'test-exit')?.fields.code, 0);
    t.deepEqual(kernelProblems(run.boot.console), []);
  }
  t.log(`two guests, ${ITERS} round trips of ${SIZE} bytes under TCG: first ${String(pp?.fields.first_rtt_ms)} ms, mean ${String(pp?.fields.mean_rtt_ms)} ms; bytes verified: requester ${String(report(g.requester, 'verified', 'requester')?.fields.bytes_verified)}, responder ${String(report(g.responder, 'verified', 'responder')?.fields.bytes_verified)}`);
});
