// Without the optional ffi-napi packages (a machine with no C toolchain), vrnic still installs and serves natively.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const repo = path.resolve(__dirname, '..', '..');
const dist = path.join(repo, 'dist');

/**
 * A copy of the built package whose node_modules has everything but @2060.io (what npm leaves
 * when the optional packages fail to build). dist is copied, not linked: Node resolves modules
 * from a file's real path, and the real dist would find the real ffi-napi.
 */
function installWithoutFfi(t: { teardown(fn: () => void): void }): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-noffi-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  for (const dir of ['src', 'emulator', 'ffi', 'qemu-config', 'guest']) fs.cpSync(path.join(dist, dir), path.join(root, 'dist', dir), { recursive: true });
  fs.copyFileSync(path.join(repo, 'package.json'), path.join(root, 'package.json'));
  fs.mkdirSync(path.join(root, 'node_modules'));
  for (const e of fs.readdirSync(path.join(repo, 'node_modules'))) {
    if (e === '@2060.io' || e.startsWith('.')) continue;
    fs.symlinkSync(path.join(repo, 'node_modules', e), path.join(root, 'node_modules', e));
  }
  return root;
}

function cli(root: string): string {
  return path.join(root, 'dist', 'src', 'cli.js');
}

test('without the optional ffi-napi packages, --transport libvfio-user says in one line what is missing (exit 1)', (t) => {
  const root = installWithoutFfi(t);
  const r = spawnSync(process.execPath, [cli(root), 'serve', '--transport', 'libvfio-user', '--socket', path.join(root, 'v.sock')], { encoding: 'utf8', timeout: 20_000 });
  t.is(r.status, 1, r.stderr);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('vrnic serve:'));
  t.is(errors.length, 1, r.stderr);
  t.regex(errors[0], /@2060\.io\/ffi-napi.*not installed.*--transport native/);
  t.false(r.stderr.includes('    at '), 'no stack');
});

for (const transport of ['native', 'auto']) {
  test(`without the optional ffi-napi packages, serve --transport ${transport} serves on the built-in transport`, async (t) => {
    const root = installWithoutFfi(t);
    const socket = path.join(root, 'v.sock');
    const child = spawn(process.execPath, [cli(root), 'serve', '--transport', transport, '--socket', socket], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let accepted = false;
    for (const deadline = Date.now() + 20_000; !accepted && Date.now() < deadline && child.exitCode === null; ) {
      accepted = await new Promise<boolean>((resolve) => {
        const s = net.connect(socket, () => (s.destroy(), resolve(true)));
        s.on('error', () => resolve(false));
      });
      if (!accepted) await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGTERM');
    t.is(await exited, 0, stderr);
    t.true(accepted, stderr);
    t.regex(stderr, /"transport":"native"/);
  });
}

test('at --log-level debug the same failure also shows where it was thrown', (t) => {
  const root = installWithoutFfi(t);
  const r = spawnSync(process.execPath, [cli(root), 'serve', '--transport', 'libvfio-user', '--log-level', 'debug', '--socket', path.join(root, 'v.sock')], { encoding: 'utf8', timeout: 20_000 });
  t.is(r.status, 1, r.stderr);
  t.regex(r.stderr, /vrnic serve: Error: the libvfio-user transport needs[^\n]*\n\s+at /);
});

test('a daemon started in a worker thread (as test runners do) serves on the built-in transport and the process exits cleanly', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-worker-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'worker.js');
  // The worker loads the package the way a user's test file does, with the default transport.
  fs.writeFileSync(
    script,
    `const { Worker, isMainThread } = require('node:worker_threads');
if (isMainThread) {
  new Worker(__filename).on('exit', (code) => console.log('worker exited', code));
} else {
  const { createNic, Daemon, VfioUserClient } = require(${JSON.stringify(path.join(dist, 'src', 'index.js'))});
  (async () => {
    const daemon = await Daemon.start({ socketPath: ${JSON.stringify(path.join(dir, 'nic.sock'))}, device: createNic() });
    const client = await VfioUserClient.connect(daemon.socketPath);
    console.log('transport', daemon.status().transport, 'vendor', (await client.configRead(0, 2)).toString(16));
    await client.close();
    await daemon.stop();
  })();
}
`,
  );
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, VRNIC_LIBVFIO_USER: process.env.VRNIC_LIBVFIO_USER ?? '' } });
  t.is(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^transport native vendor 1234$/m);
  t.regex(r.stdout, /^worker exited 0$/m);
});
