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

function main(): void {
  // ava exports no path to its CLI; its main entry sits beside it in entrypoints/.
  const ava = path.join(path.dirname(require.resolve('ava')), 'cli.mjs');
  const child = spawn(process.execPath, [ava, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, TMPDIR: root, [SKIP_LOG_ENV]: skipLog },
  });
  // Ctrl-C reaches ava too (same process group); we stay to clean up after it.
  const ignore = () => undefined;
  process.on('SIGINT', ignore);
  process.on('SIGTERM', (s) => child.kill(s));
  child.on('exit', (code, signal) => {
    const skips = readSkips();
    if (skips.length > 0) process.stdout.write(`\n${groupSkips(skips)}\n`);
    removeRoot();
    process.exitCode = code ?? (signal ? 1 : 0);
  });
}

if (require.main === module) main();
