// `npm test`: runs ava in a private temporary root it removes afterwards, then says once per reason why tests were skipped.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SKIP_LOG_ENV, type SkipRecord } from './skip';

/**
 * Every test, and every daemon or QEMU a test starts, makes its temporary files under os.tmpdir();
 * pointing TMPDIR at one private directory and removing it at the end leaves nothing behind, even
 * from a test that failed halfway or a child that was killed.
 */
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vrnic-test-'));
const skipLog = path.join(root, 'skipped.ndjson');

function removeRoot(): void {
  try {
    fs.rmSync(root, { recursive: true, force: true });
  } catch {
    // A test may leave a directory without write permission: open everything up, then remove.
    const open = (p: string): void => {
      const st = fs.lstatSync(p);
      if (!st.isDirectory()) return;
      fs.chmodSync(p, 0o700);
      for (const e of fs.readdirSync(p)) open(path.join(p, e));
    };
    open(root);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/** The skip reasons, each once, with the tests it skipped. */
export function groupSkips(records: readonly SkipRecord[]): string {
  const byWhy = new Map<string, string[]>();
  for (const r of records) {
    const list = byWhy.get(r.why) ?? [];
    if (!list.includes(r.what)) list.push(r.what);
    byWhy.set(r.why, list);
  }
  const lines = [`Skipped tests, by reason (${byWhy.size}):`];
  for (const [why, whats] of byWhy) {
    lines.push('', `  ${why}`, `    skips: ${whats.join('; ')}`);
  }
  return lines.join('\n');
}

function readSkips(): SkipRecord[] {
  let text = '';
  try {
    text = fs.readFileSync(skipLog, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as SkipRecord);
}

/** Adds one of ava's closing count lines ('  3 tests passed', '  1 test failed', ...) to counts. */
export function countLine(line: string, counts: { passed: number; failed: number; skipped: number }): void {
  // eslint-disable-next-line no-control-regex
  const m = /^\s*(\d+) (tests?|known failures?|uncaught exceptions?|unhandled rejections?) ?(passed|failed|skipped)?\s*$/.exec(line.replace(/\x1b\[[0-9;]*m/g, ''));
  if (!m) return;
  const n = Number(m[1]);
  if (m[3] === 'passed' || m[2].startsWith('known')) counts.passed += n; // a known failure is a test.failing that failed, as it should
  else if (m[3] === 'skipped') counts.skipped += n;
  else counts.failed += n; // failed tests, and uncaught exceptions / unhandled rejections, which fail the run
}

function main(): void {
  // ava exports no path to its CLI; its main entry sits beside it in entrypoints/.
  const ava = path.join(path.dirname(require.resolve('ava')), 'cli.mjs');
  const child = spawn(process.execPath, [ava, ...process.argv.slice(2)], {
    stdio: ['inherit', 'pipe', 'inherit'],
    env: { ...process.env, TMPDIR: root, [SKIP_LOG_ENV]: skipLog },
  });
  // ava's output passes through as it comes; its closing counts are read on the way to end the
  // run with one plain 'N passed, N failed, N skipped' line that any CI can read.
  const counts = { passed: 0, failed: 0, skipped: 0 };
  let ticks = 0;
  let pending = '';
  child.stdout.on('data', (chunk: Buffer) => {
    process.stdout.write(chunk);
    pending += chunk.toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      countLine(line, counts);
      if (/^\s*✔/.test(line.replace(/\x1b\[[0-9;]*m/g, ''))) ticks++;
    }
  });
  // Ctrl-C reaches ava too (same process group); we stay to clean up after it.
  const ignore = () => undefined;
  process.on('SIGINT', ignore);
  process.on('SIGTERM', (s) => child.kill(s));
  child.on('close', (code, signal) => {
    countLine(pending, counts);
    // ava prints its 'N tests passed' line only when nothing failed; otherwise count its ticks.
    if (counts.passed === 0) counts.passed = ticks;
    const skips = readSkips();
    if (skips.length > 0) process.stdout.write(`\n${groupSkips(skips)}\n`);
    process.stdout.write(`\ntests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`);
    removeRoot();
    process.exitCode = code ?? (signal ? 1 : 0);
  });
}

if (require.main === module) main();
