// `vrnic serve` as a user runs it: flags, config files, socket paths and signals.
import test from 'ava';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const CLI = path.resolve(__dirname, '../src/cli.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function privateDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-serve-'));
}

function runCli(args: string[], timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`vrnic ${args.join(' ')} did not exit; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Starts `vrnic serve` and resolves once its socket accepts a connection. */
async function startServe(args: string[], socket: string): Promise<{ child: ChildProcess; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--transport', 'native', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}: ${stderr}`);
    if (fs.existsSync(socket)) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect(socket, () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
      if (ok) return { child, stderr: () => stderr };
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`serve never accepted on ${socket}: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve({ code: child.exitCode, signal: child.signalCode });
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

test('vrnic --help lists serve and the exit codes', async (t) => {
  const r = await runCli(['--help']);
  t.is(r.code, 0);
  t.regex(r.stdout, /serve/);
  t.regex(r.stdout, /Exit codes/);
});

test('vrnic --version prints the version of the installed package', async (t) => {
  const r = await runCli(['--version']);
  t.is(r.code, 0);
  const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../package.json'), 'utf8')) as { version: string };
  t.is(r.stdout, `vrnic ${pkg.version}\n`);
});

test('serve --help documents every flag', async (t) => {
  const r = await runCli(['serve', '--help']);
  t.is(r.code, 0);
  for (const flag of ['--socket', '--transport', '--config', '--irq', '--trace', '--log-level', '--pretty', '--socket-mode', '--force']) {
    t.true(r.stdout.includes(flag), `help mentions ${flag}`);
  }
});

test('an unknown flag is refused with exit code 2', async (t) => {
  const r = await runCli(['serve', '--no-such-flag']);
  t.is(r.code, 2);
  t.regex(r.stderr, /no-such-flag/);
});

test('a config file that is not JSON is refused with a clear error and exit code 2', async (t) => {
  const dir = privateDir();
  const config = path.join(dir, 'bad.json');
  fs.writeFileSync(config, '{ "numUars": 16, ');
  const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), '--config', config]);
  t.is(r.code, 2);
  t.regex(r.stderr, /bad\.json/);
  t.false(r.stderr.includes('    at '), 'no stack trace for a bad file');
  t.false(fs.existsSync(path.join(dir, 's.sock')));
});

test('a config file with a bad value names the field and exits 2', async (t) => {
  const dir = privateDir();
  const config = path.join(dir, 'bad-value.json');
  fs.writeFileSync(config, JSON.stringify({ numUars: 3 }));
  const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), '--config', config]);
  t.is(r.code, 2);
  t.regex(r.stderr, /numUars: 3 is not a power of two/);
});

test('a missing config file is refused with exit code 2', async (t) => {
  const dir = privateDir();
  const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), '--config', path.join(dir, 'nope.json')]);
  t.is(r.code, 2);
  t.regex(r.stderr, /nope\.json/);
});

test('an unknown --irq mode is refused with exit code 2, naming the modes', async (t) => {
  const dir = privateDir();
  const r = await runCli(['serve', '--socket', path.join(dir, 's.sock'), '--irq', 'msi-x']);
  t.is(r.code, 2);
  t.regex(r.stderr, /--irq: 'msi-x' is not one of msix, msi, intx/);
});

test('--irq overrides the config file and the daemon logs the mode it serves', async (t) => {
  const dir = privateDir();
  const config = path.join(dir, 'nic.json');
  fs.writeFileSync(config, JSON.stringify({ irq: 'intx' }));
  const s = await startServe(['--config', config, '--irq', 'msi'], path.join(dir, 'vrnic.sock'));
  s.child.kill('SIGTERM');
  await exited(s.child);
  const line = s.stderr().split('\n').find((l) => l.includes('"device configured"'));
  t.is(JSON.parse(line!).irq, 'msi');
});

test('serve prints the QEMU arguments that attach it as one plain line a shell takes as written', async (t) => {
  const dir = privateDir();
  const socket = path.join(dir, 'vrnic.sock');
  const child = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--transport', 'native', '--pretty'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.resume();
  const deadline = Date.now() + 20_000;
  while (!stdout.includes('\n') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
  child.kill('SIGTERM');
  await exited(child);
  const lines = stdout.split('\n').filter(Boolean);
  t.is(lines.length, 1, stdout);
  // The shell reads the line back into exactly the arguments QEMU needs.
  const out = spawnSync('sh', ['-c', `printf '%s\\n' ${lines[0]}`], { encoding: 'utf8' });
  t.deepEqual(out.stdout.split('\n').slice(0, -1), [
    '-device',
    'pcie-root-port,id=rp1,slot=1',
    '-device',
    JSON.stringify({ driver: 'vfio-user-pci', id: 'nic0', bus: 'rp1', socket: { type: 'unix', path: socket } }),
  ]);
});

test('SIGTERM stops serve with exit code 0 and removes its socket', async (t) => {
  const dir = privateDir();
  const socket = path.join(dir, 'vrnic.sock');
  const s = await startServe([], socket);
  s.child.kill('SIGTERM');
  const { code } = await exited(s.child);
  t.is(code, 0);
  t.false(fs.existsSync(socket));
});

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  test(`after a failed vanish, ${signal} stops serve within a second with exit 0 and removes both sockets`, async (t) => {
    const dir = privateDir();
    const socket = path.join(dir, 'vrnic.sock');
    const s = await startServe([], socket);
    // Orderly needs QMP, which this daemon was not given: the vanish fails and the daemon serves on.
    const v = await runCli(['vanish', '--mode', 'orderly', '--socket', socket]);
    t.is(v.code, 1, v.stderr);
    t.regex(v.stderr, /QMP/);
    t.true(fs.existsSync(socket) && fs.existsSync(`${socket}.ctl`), 'still serving after the failed vanish');
    const sentAt = Date.now();
    s.child.kill(signal);
    const end = await Promise.race([exited(s.child), new Promise<null>((r) => setTimeout(() => r(null), 5_000))]);
    if (end === null) s.child.kill('SIGKILL');
    t.deepEqual(end, { code: 0, signal: null }, s.stderr());
    t.true(Date.now() - sentAt < 1000, `exited ${Date.now() - sentAt} ms after ${signal}`);
    t.false(fs.existsSync(socket), 'vfio-user socket removed');
    t.false(fs.existsSync(`${socket}.ctl`), 'control socket removed');
    t.regex(s.stderr(), /vanish failed/);
    t.false(s.stderr().includes('    at '), 'the logged error carries no stack below --log-level debug');
  });
}

test('a socket held by a live server is refused with a clear error', async (t) => {
  const dir = privateDir();
  const socket = path.join(dir, 'vrnic.sock');
  const first = await startServe([], socket);
  try {
    const r = await runCli(['serve', '--socket', socket, '--transport', 'native']);
    t.is(r.code, 2);
    t.regex(r.stderr, /live server/);
    t.true(fs.existsSync(socket), 'the live server keeps its socket');
  } finally {
    first.child.kill('SIGTERM');
    await exited(first.child);
  }
});

test('a stale socket left by a dead server is replaced', async (t) => {
  const dir = privateDir();
  const socket = path.join(dir, 'vrnic.sock');
  const first = await startServe([], socket);
  first.child.kill('SIGKILL');
  await exited(first.child);
  t.true(fs.existsSync(socket), 'SIGKILL leaves the socket behind');
  const second = await startServe([], socket);
  second.child.kill('SIGTERM');
  t.is((await exited(second.child)).code, 0);
});

test('a path that is not a socket is refused and left alone', async (t) => {
  const dir = privateDir();
  const file = path.join(dir, 'precious.txt');
  fs.writeFileSync(file, 'keep me');
  const r = await runCli(['serve', '--socket', file, '--transport', 'native']);
  t.is(r.code, 2);
  t.regex(r.stderr, /not a socket/);
  t.is(fs.readFileSync(file, 'utf8'), 'keep me');
});

test('the socket is created with mode 0600 by default', async (t) => {
  const dir = privateDir();
  const socket = path.join(dir, 'vrnic.sock');
  const s = await startServe([], socket);
  try {
    t.is(fs.statSync(socket).mode & 0o777, 0o600);
  } finally {
    s.child.kill('SIGTERM');
    await exited(s.child);
  }
});

test('a socket directory writable by others is refused unless forced', async (t) => {
  const dir = privateDir();
  fs.chmodSync(dir, 0o777);
  const r = await runCli(['serve', '--socket', path.join(dir, 'vrnic.sock'), '--transport', 'native']);
  t.is(r.code, 2);
  t.regex(r.stderr, /writable by others/);
  const s = await startServe(['--force'], path.join(dir, 'forced.sock'));
  s.child.kill('SIGTERM');
  t.is((await exited(s.child)).code, 0);
});

test('serve with two --socket flags serves one device on each, and status answers for each device on its own control socket', async (t) => {
  const dir = privateDir();
  const a = path.join(dir, 'a.sock');
  const b = path.join(dir, 'b.sock');
  const s = await startServe(['--socket', b], a);
  try {
    for (const socket of [a, b]) {
      const st = await runCli(['status', '--socket', socket, '--json']);
      t.is(st.code, 0, st.stderr);
      const status = JSON.parse(st.stdout) as Record<string, unknown>;
      t.is(status.socketPath, socket, st.stdout);
    }
  } finally {
    s.child.kill('SIGTERM');
  }
  t.deepEqual(await exited(s.child), { code: 0, signal: null });
  for (const f of [a, b, `${a}.ctl`, `${b}.ctl`]) t.false(fs.existsSync(f), `${f} removed`);
});

test('with two devices, a vanish takes only the device it names; the process ends once both are gone', async (t) => {
  const dir = privateDir();
  const a = path.join(dir, 'a.sock');
  const b = path.join(dir, 'b.sock');
  const s = await startServe(['--socket', b], a);
  const va = await runCli(['vanish', '--mode', 'surprise', '--socket', a]);
  t.is(va.code, 0, va.stderr);
  await new Promise((r) => setTimeout(r, 1500));
  t.false(fs.existsSync(a), 'the vanished device\'s socket is gone');
  t.is(s.child.exitCode, null, 'the process still serves the other device');
  const st = await runCli(['status', '--socket', b, '--json']);
  t.is(st.code, 0, st.stderr);
  const vb = await runCli(['vanish', '--mode', 'surprise', '--socket', b]);
  t.is(vb.code, 0, vb.stderr);
  const end = await Promise.race([exited(s.child), new Promise<null>((r) => setTimeout(() => r(null), 5_000))]);
  if (end === null) s.child.kill('SIGKILL');
  t.deepEqual(end, { code: 0, signal: null }, s.stderr());
  t.false(fs.existsSync(b));
});

test('--qmp given a different number of times than --socket is refused with exit code 2', async (t) => {
  const dir = privateDir();
  const r = await runCli(['serve', '--socket', path.join(dir, 'a.sock'), '--socket', path.join(dir, 'b.sock'), '--qmp', path.join(dir, 'q')]);
  t.is(r.code, 2);
  t.regex(r.stderr, /--qmp: give it once per --socket \(2\)/);
});
