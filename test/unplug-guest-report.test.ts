// Reading vrnic-test's console reports into unplug evidence, with lines as the real program prints them.
import test from 'ava';
import { GuestConsole, guestBar2, parseReportLine } from '../src/unplug/guest-report';
import { canaryOf, guestView } from '../src/unplug/runner';

// Taken from a real run's console (surprise mode, reference driver), trimmed to the fields read.
const RUN = [
  'VRNIC-INIT {"event":"boot","kernel":"6.1.0-56-amd64","cmdline":"console=ttyS0 vrnic.bug=none"}',
  'VRNIC-TEST {"event":"device","t_ms":13.283,"pid":149,"label":"main","device":"/dev/infiniband/uverbs0","ibdev":"vrnic0","bar2":["0xfe800000","0xfe80ffff"]}',
  'VRNIC-TEST {"event":"frame","t_ms":356.490,"pid":149,"label":"uar0","addr":"0x7f93997a6000","frame":"bar","pfn":"0xfe800","file":"uar0","writable":true}',
  'VRNIC-TEST {"event":"ready","t_ms":356.855,"pid":149,"label":"main","mappings":1}',
  'VRNIC-TEST {"event":"watch-start","t_ms":357.463,"pid":149,"label":"uar0","view":"device","frame":"bar","pfn":"0xfe800","device_gone":false}',
  'VRNIC-TEST {"event":"change","t_ms":384.390,"pid":149,"label":"uar0","view":"zero","view_before":"device","frame":"ram","pfn":"0x1fdce","frame_before":"bar","pfn_before":"0xfe800","device_gone":false}',
  'VRNIC-TEST {"event":"device-gone","t_ms":385.966,"pid":149,"label":"main","ibdev":"vrnic0"}',
  'VRNIC-TEST {"event":"change","t_ms":407.358,"pid":149,"label":"uar0","view":"own-writes","view_before":"zero","frame":"ram","pfn":"0x1fdce","frame_before":"ram","device_gone":true}',
  'VRNIC-TEST {"event":"summary","t_ms":2400.1,"pid":149,"label":"uar0","view":"own-writes","frame":"ram","pfn":"0x1fdce","file":"uar0","writable":true,"reads":250,"writes":130,"changes":2,"bar_reads_after_gone":0,"last_doorbell":"0x00000000","last_scratch":"0x5c000070","expect_scratch":"0x5c000070","echo":"seen","echo_peer":"uar0-twin","echo_wrote":"0xec000095","echo_read":"0xec000095","device_gone":true}',
  'VRNIC-TEST {"event":"closed","t_ms":2401.0,"pid":149,"label":"main","close_ms":0.4}',
  'VRNIC-TEST {"event":"exit","t_ms":2401.2,"pid":149,"label":"main","code":0}',
  '[    9.1] WARNING: CPU: 0 PID: 1 at drivers/infiniband/core/rdma_core.c:940 x+0x1/0x2',
];

function feed(lines: readonly string[]): GuestConsole {
  const g = new GuestConsole();
  lines.forEach((l, i) => g.push(l, 1000 + i));
  return g;
}

test('a mapping is read as its frame with the device alive and its summary after removal', (t) => {
  const [m, ...rest] = feed(RUN).mappings();
  t.deepEqual(rest, []);
  t.is(m.label, 'uar0');
  t.deepEqual(m.before, { kind: 'present', phys: 0xfe800000n });
  t.deepEqual(m.after, { kind: 'present', phys: 0x1fdce000n });
  t.is(m.viewAfter, 'own-writes');
  t.is(m.barReadsAfterGone, 0);
  t.is(m.file, 'uar0');
  t.is(m.lastScratch, 0x5c000070n);
  t.is(m.expectScratch, 0x5c000070n);
  t.deepEqual(m.echo, { peer: 'uar0-twin', wrote: 0xec000095n, read: 0xec000095n, seen: true });
});

test("the guest's canary and its device listing are read from /init's and the program's reports", (t) => {
  const g = feed([
    'VRNIC-TEST {"event":"canary","t_ms":1.0,"pid":80,"label":"main","addr":"0xfe812000","read":"0x00000000","window":["0xfe800000","0xfe9fffff"],"function":"0000:01:00.0"}',
    'VRNIC-INIT {"event":"devices","vrnic_pci":["0000:01:00.0"],"ib":["vrnic0","rxe0"],"waited_ms":10000}',
  ]);
  t.deepEqual(canaryOf(g.first('canary')), { addr: 0xfe812000n, read: '0x00000000' });
  t.deepEqual(guestView(g.first('devices')), { pci: ['0000:01:00.0'], ib: ['vrnic0'], waitedMs: 10000 });
  t.is(guestView(feed(['VRNIC-INIT {"event":"devices","vrnic_pci":"0000:01:00.0","ib":[]}']).first('devices')), null, 'a malformed listing is no listing');
});

test('BAR2 comes from the device report with its inclusive end made exclusive', (t) => {
  t.deepEqual(guestBar2(feed(RUN).first('device')), { name: 'BAR2', start: 0xfe800000n, end: 0xfe810000n });
});

test('/init lines and program lines are told apart, and neither counts as kernel log', (t) => {
  const g = feed(RUN);
  t.is(g.first('boot')?.source, 'init');
  t.is(g.first('exit')?.source, 'test');
  t.false(g.kernelLog().includes('VRNIC-'));
  t.true(g.kernelLog().includes('WARNING: CPU: 0'));
});

test('a mapping never seen after the device left has no after-state', (t) => {
  const m = feed(RUN.slice(0, 6)).mappings()[0];
  t.is(m.after, null);
  t.is(m.viewAfter, null);
});

test('a report line cut by other console output is ignored, not half-read', (t) => {
  t.is(parseReportLine('VRNIC-TEST {"event":"change","t_ms":3[   12.1] vrnic 0000:01:00.0: remove', 0), null);
  t.is(parseReportLine('VRNIC-TEST ["event"]', 0), null);
  t.is(parseReportLine('plain kernel line', 0), null);
});

test('waiting for an event resolves with a line that arrives later', async (t) => {
  const g = new GuestConsole();
  const waiting = g.wait('ready', 10_000);
  g.push(RUN[3], 42);
  const r = await waiting;
  t.is(r?.event, 'ready');
  t.is(r?.atMs, 42);
});
