// Where vrnic keeps what it fetches and builds for the guest side: the guest images and the provisioned QEMU.
//
// One root for every cache, so a user who wants the space back removes one directory, and CI can
// keep or drop it as a whole. VRNIC_CACHE moves it (a shared or faster disk); by default it sits in
// the package's own directory, beside guest/, which is where the guest kit's sources are anyway.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The package root: the directory holding guest/driver/vrnic_main.c (from dist/ or from the sources). */
export function packageRoot(): string {
  for (const up of [path.resolve(__dirname, '..', '..'), path.resolve(__dirname, '..')]) {
    if (fs.existsSync(path.join(up, 'guest', 'driver', 'vrnic_main.c'))) return up;
  }
  throw new Error(`cannot find the vrnic package (guest/driver/vrnic_main.c) above ${__dirname}`);
}

/** The cache root: $VRNIC_CACHE, else <package root>/.vrnic-cache. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.VRNIC_CACHE;
  if (fromEnv) return path.resolve(fromEnv);
  return path.join(packageRoot(), '.vrnic-cache');
}

/** One named cache under the root (`guest`, `qemu`). */
export function cacheDir(name: 'guest' | 'qemu', env: NodeJS.ProcessEnv = process.env): string {
  return path.join(cacheRoot(env), name);
}
