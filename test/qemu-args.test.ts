// The QEMU command line builder, the printed command line, and the kernel command line for /init.
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { formatCommandLine, qemuArgs, shellQuote } from '../qemu-config/args';
import { guestAppend } from '../guest/kit/image';
import { kernelProblems } from '../guest/kit/guest-log';
import { skipping } from './helpers/skip';

const base = { kernel: '/k/vmlinuz', initrd: '/k/initrd.img', append: 'console=ttyS0' };
const CLI = path.resolve(__dirname, '..', 'src', 'cli.js');

/** The value following a flag, for every occurrence of the flag. */
function values(args: readonly string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag && i + 1 < args.length ? [args[i + 1]] : []));
}

test('guest RAM is a shared memfd backing the q35 machine', (t) => {
  const args = qemuArgs({ ...base, memoryMiB: 768 });
  t.deepEqual(values(args, '-object'), ['memory-backend-memfd,id=mem,size=768M,share=on']);
  t.deepEqual(values(args, '-machine'), ['q35,memory-backend=mem']);
  t.deepEqual(values(args, '-m'), ['768M']);
  t.deepEqual(values(args, '-accel'), ['tcg']);
  t.true(args.includes('-nographic'));
  t.true(args.includes('-no-reboot'));
});

test('the vfio-user device sits on its own PCIe root port and names the socket', (t) => {
  const args = qemuArgs({ ...base, socket: '/run/v.sock', deviceId: 'nicA', rootPortId: 'rpA', slot: 3 });
  const devices = values(args, '-device');
  t.is(devices[0], 'pcie-root-port,id=rpA,slot=3');
  t.deepEqual(JSON.parse(devices[1]), { driver: 'vfio-user-pci', id: 'nicA', bus: 'rpA', socket: { type: 'unix', path: '/run/v.sock' } });
});

test('the pvrdma pairing puts QEMU\'s vmxnet3 at function 0 and the device at function 1 of one port, with writes not posted', (t) => {
  const args = qemuArgs({ ...base, socket: '/run/v.sock', pairedVmxnet3: true });
  const devices = values(args, '-device');
  t.deepEqual(devices.slice(0, 2), ['pcie-root-port,id=rp1,slot=1', 'vmxnet3,id=nic0-net,bus=rp1,addr=0.0,multifunction=on']);
  const dev = JSON.parse(devices[2]!) as Record<string, unknown>;
  t.like(dev, { driver: 'vfio-user-pci', id: 'nic0', bus: 'rp1', addr: '0.1', 'x-no-posted-writes': true });
  t.false(qemuArgs({ ...base, socket: '/run/v.sock' }).some((a) => a.startsWith('vmxnet3')));
});

test('without a socket there is no vfio-user device', (t) => {
  const args = qemuArgs(base);
  t.false(args.some((a) => a.includes('vfio-user-pci')));
});

test('kernel, initrd and command line are passed as given', (t) => {
  const args = qemuArgs({ ...base, append: 'console=ttyS0 vrnic.bug=none' });
  t.deepEqual(values(args, '-kernel'), ['/k/vmlinuz']);
  t.deepEqual(values(args, '-initrd'), ['/k/initrd.img']);
  t.deepEqual(values(args, '-append'), ['console=ttyS0 vrnic.bug=none']);
});

test('QMP listens on a unix socket without waiting for a client', (t) => {
  t.deepEqual(values(qemuArgs({ ...base, qmp: '/tmp/q.sock' }), '-qmp'), ['unix:/tmp/q.sock,server=on,wait=off']);
  t.deepEqual(values(qemuArgs(base), '-qmp'), []);
});

test('the console goes to stdio by default or to a file through a chardev', (t) => {
  t.deepEqual(values(qemuArgs(base), '-serial'), ['stdio']);
  const args = qemuArgs({ ...base, serial: { kind: 'file', path: '/tmp/console.log' } });
  t.deepEqual(values(args, '-chardev'), ['file,id=console0,path=/tmp/console.log']);
  t.deepEqual(values(args, '-serial'), ['chardev:console0']);
  t.deepEqual(values(args, '-monitor'), ['none']);
});

test('-d and -D appear only when asked for', (t) => {
  t.false(qemuArgs(base).includes('-d'));
  const args = qemuArgs({ ...base, logItems: ['invalid_mem', 'guest_errors'], logFile: '/tmp/q.log' });
  t.deepEqual(values(args, '-d'), ['invalid_mem,guest_errors']);
  t.deepEqual(values(args, '-D'), ['/tmp/q.log']);
});

test('a path with a comma is refused because QEMU would split the option there', (t) => {
  t.throws(() => qemuArgs({ ...base, qmp: '/tmp/a,b.sock' }), { message: /comma/ });
  t.throws(() => qemuArgs({ ...base, serial: { kind: 'file', path: '/tmp/a,b' } }), { message: /comma/ });
});

test('native PCIe hotplug turns off ACPI hotplug on q35', (t) => {
  t.deepEqual(values(qemuArgs({ ...base, nativeHotplug: true }), '-global'), ['ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off']);
  t.deepEqual(values(qemuArgs(base), '-global'), []);
});

test('the shell form of the command line gives back exactly the argument vector when a shell reads it', (t) => {
  const args = qemuArgs({ ...base, append: "console=ttyS0 it's \"quoted\" $HOME `x` \\ ; *", socket: '/tmp/with space/v.sock' });
  const text = formatCommandLine('/opt/my qemu/qemu-system-x86_64', args);
  t.true(text.split('\n').length < args.length, 'options and their values share a line');
  const out = spawnSync('sh', ['-c', `printf "%s\\n" ${text}`], { encoding: 'utf8' });
  t.is(out.status, 0, out.stderr);
  t.deepEqual(out.stdout.split('\n').slice(0, -1), ['/opt/my qemu/qemu-system-x86_64', ...args]);
});

test('the args form is one raw argument per line and the json form an array, binary first', (t) => {
  const args = qemuArgs({ ...base, socket: '/tmp/with space/v.sock' });
  t.deepEqual(formatCommandLine('qemu', args, 'args').split('\n'), ['qemu', ...args]);
  t.deepEqual(JSON.parse(formatCommandLine('qemu', args, 'json')), ['qemu', ...args]);
  t.throws(() => formatCommandLine('qemu', ['-append', 'a\nb'], 'args'), { message: /newline.*json/ });
});

test('shell quoting leaves plain words alone and single-quotes the rest', (t) => {
  t.is(shellQuote('-device'), '-device');
  t.is(shellQuote('a b'), "'a b'");
  t.is(shellQuote("it's"), "'it'\\''s'");
  t.is(shellQuote(''), "''");
});

test('the kernel command line carries the driver bug and the test options under vrnic.', (t) => {
  const s = guestAppend({ bug: 'legacy-mmap', scenario: 'fork', watchSeconds: 30, uars: 2, testArgs: ['--doorbells', '4'] });
  const w = s.split(' ');
  t.true(w.includes('console=ttyS0'));
  t.true(w.includes('vrnic.bug=legacy-mmap'));
  t.true(w.includes('vrnic.scenario=fork'));
  t.true(w.includes('vrnic.watch=30'));
  t.true(w.includes('vrnic.uars=2'));
  t.true(w.includes('vrnic.args=--doorbells,4'));
});

test('a test option with a space or comma is refused instead of corrupting the kernel command line', (t) => {
  t.throws(() => guestAppend({ testArgs: ['--x', 'a b'] }), { message: /comma or space/ });
  t.throws(() => guestAppend({ testArgs: ['a,b'] }), { message: /comma or space/ });
});

const cliArgs = ['qemu-args', '--socket', '/tmp/v.sock', '--qmp', '/tmp/q.sock', '--kernel', '/k/vmlinuz', '--initrd', '/k/initrd.img', '--driver-bug', 'no-disassociate', '--qemu', '/opt/qemu'];

test('vrnic qemu-args prints a command line a shell runs as written, and the same vector as args or json', (t) => {
  const out = execFileSync(process.execPath, [CLI, ...cliArgs], { encoding: 'utf8' });
  const lines = out.trimEnd().split('\n');
  t.is(lines[0], '/opt/qemu \\');
  t.true(lines.slice(0, -1).every((l) => l.endsWith(' \\')));
  const device = `-device '{"driver":"vfio-user-pci","id":"nic0","bus":"rp1","socket":{"type":"unix","path":"/tmp/v.sock"}}'`;
  t.true(lines.some((l) => l.trim().replace(/ \\$/, '') === device), 'the device and its value on one line');
  const viaShell = spawnSync('sh', ['-c', `printf "%s\\n" ${out}`], { encoding: 'utf8' }).stdout.split('\n').slice(0, -1);
  const raw = execFileSync(process.execPath, [CLI, ...cliArgs, '--format', 'args'], { encoding: 'utf8' }).trimEnd().split('\n');
  const json = JSON.parse(execFileSync(process.execPath, [CLI, ...cliArgs, '--format', 'json'], { encoding: 'utf8' })) as string[];
  t.deepEqual(viaShell, raw);
  t.deepEqual(json, raw);
  t.is(raw[0], '/opt/qemu');
  t.true(raw.some((a) => a.includes('vrnic.bug=no-disassociate')));
});

test('vrnic qemu-args with a VRNIC_QEMU that names nothing says so in one line and exits 1', (t) => {
  const r = spawnSync(process.execPath, [CLI, ...cliArgs.slice(0, -2)], { encoding: 'utf8', env: { ...process.env, VRNIC_QEMU: '/nonexistent/qemu' } });
  t.is(r.status, 1);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^vrnic qemu-args: .*VRNIC_QEMU=\/nonexistent\/qemu.*\n$/);
  t.is(r.stderr.split('\n').length, 2, 'one line');
});

test('vrnic qemu-args without --socket is a usage error (exit 2)', (t) => {
  const r = spawnSync(process.execPath, [CLI, 'qemu-args', '--kernel', '/k', '--initrd', '/i'], { encoding: 'utf8' });
  t.is(r.status, 2);
  t.regex(r.stderr, /--socket/);
});

test('kernel log problems are found by the kernel\'s own wording, not by any mention of a bug', (t) => {
  const log = [
    '[    0.67] PCI: Using host bridge windows from ACPI; if necessary, use "pci=nocrs" and report a bug',
    '[    0.97] AMD-Vi: AMD IOMMUv2 functionality not available on this system - This is not a bug.',
    '[    2.00] WARNING: CPU: 0 PID: 1 at drivers/infiniband/core/rdma_core.c:940 uverbs_destroy_ufile_hw+0x1/0x2',
    '[    2.10] vrnic: Unknown symbol rdma_user_mmap_io (err -2)',
    '[    2.20] BUG: unable to handle page fault for address: ffffc90000123000',
  ].join('\n');
  t.deepEqual(kernelProblems(log).map((l) => l.slice(0, 14)), ['[    2.00] WAR', '[    2.10] vrn', '[    2.20] BUG']);
});
