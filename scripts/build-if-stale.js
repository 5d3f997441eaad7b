#!/usr/bin/env node
// Runs the TypeScript build only when a source file changed since the last successful build, so `npm start` on an unchanged tree starts at once.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
// Written after each successful build; its mtime is the build's time.
const stamp = path.join(root, 'dist', '.build-stamp');

/** Newest mtime under a path, in ms (0 when absent); skips node_modules and dist. */
function newest(p) {
  let st;
  try {
    st = fs.statSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let max = st.mtimeMs; // a deleted file changes its directory's mtime
  for (const e of fs.readdirSync(p)) {
    if (e === 'node_modules' || e === 'dist') continue;
    max = Math.max(max, newest(path.join(p, e)));
  }
  return max;
}

// The inputs are what tsconfig.json compiles, plus the build's own configuration.
const tsconfig = JSON.parse(fs.readFileSync(path.join(root, 'tsconfig.json'), 'utf8'));
const inputs = [...tsconfig.include, 'tsconfig.json', 'package.json', 'package-lock.json'].map((p) => path.join(root, p));
let built = 0;
try {
  built = fs.statSync(stamp).mtimeMs;
} catch {
  // never built
}
if (built > 0 && Math.max(...inputs.map(newest)) < built) process.exit(0);

const tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
const r = spawnSync(process.execPath, [tsc, '-p', root], { stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);
fs.writeFileSync(stamp, '');
