// The initramfs archive writer: newc bytes as the format defines them, and GNU cpio reads them back.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CpioWriter } from '../guest/kit/cpio';
import { skipping } from './helpers/skip';

/** One newc header, built field by field from the format description (not from the writer). */
function header(fields: { ino: number; mode: number; nlink: number; size: number; rmaj?: number; rmin?: number; namesize: number }): string {
  const h = (n: number) => n.toString(16).padStart(8, '0');
  return ['070701', h(fields.ino), h(fields.mode), h(0), h(0), h(fields.nlink), h(0), h(fields.size), h(0), h(0), h(fields.rmaj ?? 0), h(fields.rmin ?? 0), h(fields.namesize), h(0)].join('');
}

test('a one-file archive is the newc header, the NUL-ended name and the data, each padded to 4, then the trailer', (t) => {
  const got = new CpioWriter().file('init', Buffer.from('hi\n'), 0o755).finish();
  const expected = Buffer.concat([
    Buffer.from(header({ ino: 1, mode: 0o100755, nlink: 1, size: 3, namesize: 5 }), 'ascii'),
    Buffer.from('init\0', 'ascii'),
    Buffer.alloc(1), // 110 + 5 = 115 -> 116
    Buffer.from('hi\n'),
    Buffer.alloc(1), // 3 -> 4
    Buffer.from(header({ ino: 2, mode: 0, nlink: 1, size: 0, namesize: 11 }), 'ascii'),
    Buffer.from('TRAILER!!!\0', 'ascii'),
    Buffer.alloc(3), // 110 + 11 = 121 -> 124
  ]);
  t.deepEqual(got, expected);
});

test('a character device carries its major and minor in rdevmajor and rdevminor', (t) => {
  const got = new CpioWriter().charDevice('dev/console', 5, 1).finish();
  t.is(got.subarray(0, 110).toString('ascii'), header({ ino: 1, mode: 0o020600, nlink: 1, size: 0, rmaj: 5, rmin: 1, namesize: 12 }));
});

test('paths that are absolute or climb out of the archive are refused', (t) => {
  t.throws(() => new CpioWriter().file('/init', Buffer.alloc(0)), { message: /bad cpio path/ });
  t.throws(() => new CpioWriter().file('a/../../etc', Buffer.alloc(0)), { message: /bad cpio path/ });
});

const hasCpio = spawnSync('sh', ['-c', 'command -v cpio']).status === 0;
if (!hasCpio) skipping('the GNU cpio round trip', 'cpio is not installed (apt-get install cpio)');
(hasCpio ? test : test.skip)('GNU cpio extracts the directories, files, modes and symlinks the writer packed', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-cpio-'));
  try {
    const archive = new CpioWriter()
      .directory('bin')
      .file('bin/tool', Buffer.from('#!/bin/sh\necho ok\n'), 0o755)
      .file('etc.txt', Buffer.alloc(5000, 0x61), 0o644)
      .symlink('bin/sh', 'tool')
      .finish();
    const r = spawnSync('cpio', ['-i', '-d', '--no-absolute-filenames', '--quiet'], { cwd: dir, input: archive });
    t.is(r.status, 0, r.stderr.toString());
    t.is(fs.readFileSync(path.join(dir, 'bin/tool'), 'utf8'), '#!/bin/sh\necho ok\n');
    t.is(fs.statSync(path.join(dir, 'bin/tool')).mode & 0o777, 0o755);
    t.deepEqual(fs.readFileSync(path.join(dir, 'etc.txt')), Buffer.alloc(5000, 0x61));
    t.is(fs.readlinkSync(path.join(dir, 'bin/sh')), 'tool');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
