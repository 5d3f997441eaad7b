// docs/api.md's examples: each is a file under docs/examples/, shown verbatim in the doc, compiled with the project and run here against the built package.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { requireVfioUserQemu } from '../src/index';
import { skipping } from './helpers/skip';

const repo = path.resolve(__dirname, '..', '..');
const sources = path.join(repo, 'docs', 'examples');
const built = path.join(repo, 'dist', 'docs', 'examples');
const doc = fs.readFileSync(path.join(repo, 'docs', 'api.md'), 'utf8');

/** What each example must print: the lines that show it did its job. */
const expected: Record<string, RegExp[]> = {
  daemon: [/^QEMU arguments: -device pcie-root-port,id=rp1,slot=1 -device '\{"driver":"vfio-user-pci"/m, /^state serving, transport native/m, /^stopped; socket removed: true$/m],
  'create-nic': [/^refused: .*numUars: 3 is not a power of two/m, /^device id 0x7a02$/m, /^NUM_UARS 4, NUM_VECTORS 6$/m],
  'vfio-user-client': [/^BAR2: 65536 bytes, mmappable$/m, /^vendor 0x1234$/m, /^MAGIC VNIC$/m, /^read past BAR0: E[A-Z]+$/m],
  'guest-memory': [/^STATUS READY$/m, /^completion: cmd_id 7, status 0, 128 bytes written$/m],
  'control-client': [/^status: serving, client connected true/m, /^vanished: serving stopped true/m, /^the client sees the device gone$/m],
  'unplug-test': [/^verdict [A-Z]+$/m],
};

/** Runs a built example as a user's program would: `require('vrnic')` finds this package. */
function runExample(name: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string }> {
  const nodePath = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-docs-'));
  fs.symlinkSync(repo, path.join(nodePath, 'vrnic'));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(built, `${name}.js`)], { env: { ...process.env, ...env, NODE_PATH: nodePath }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (code) => {
      fs.rmSync(nodePath, { recursive: true, force: true });
      resolve({ code, out });
    });
  });
}

const names = fs.readdirSync(sources).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3)).sort();

test('every example under docs/examples is shown in docs/api.md exactly as the file holds it', (t) => {
  t.deepEqual(names, Object.keys(expected).sort(), 'each example has its expectations here');
  for (const name of names) {
    const body = fs.readFileSync(path.join(sources, `${name}.ts`), 'utf8');
    t.true(doc.includes(`\`\`\`ts\n${body}\`\`\``), `docs/api.md shows docs/examples/${name}.ts verbatim`);
  }
});

test('docs/api.md covers Daemon, createNic, VfioUserClient, GuestMemory, ControlClient and runUnplugTest', (t) => {
  for (const api of ['Daemon', 'createNic', 'VfioUserClient', 'GuestMemory', 'ControlClient', 'runUnplugTest']) t.regex(doc, new RegExp(`^## ${api}`, 'm'), api);
});

for (const name of names.filter((n) => n !== 'unplug-test')) {
  test(`the ${name} example in docs/api.md runs and prints what it promises`, async (t) => {
    const { code, out } = await runExample(name);
    t.is(code, 0, out);
    for (const re of expected[name]) t.regex(out, re);
  });
}

test('the runUnplugTest example in docs/api.md runs the scenario, or says why it cannot', async (t) => {
  t.timeout(15 * 60_000);
  const why = await requireVfioUserQemu().then(
    () => null,
    (err: Error) => err.message,
  );
  if (why !== null) skipping('the runUnplugTest example (docs/api.md) beyond its refusal', why);
  const { code, out } = await runExample('unplug-test');
  t.is(code, 0, out);
  if (why !== null) {
    t.regex(out, /^skipped: .*vfio-user/m, 'without a vfio-user QEMU the example prints why it skips');
    return;
  }
  for (const re of expected['unplug-test']) t.regex(out, re);
});
