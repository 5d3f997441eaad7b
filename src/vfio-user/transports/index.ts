// Picks and builds a transport: the built-in TypeScript one, or libvfio-user through ffi/.
import { isMainThread } from 'node:worker_threads';
import type { Transport, TransportName, TransportOptions } from './transport';

export type { Transport, TransportName, TransportOptions, TransportStats } from './transport';

export type TransportChoice = TransportName | 'auto';

/** The npm packages the libvfio-user binding is built on: optional, as they compile with node-gyp. */
const FFI_PACKAGES = ['@2060.io/ffi-napi', '@2060.io/ref-napi'] as const;

type LibvfioUserModule = typeof import('./libvfio-user/index');

/**
 * The libvfio-user transport's module, or one line saying which optional package is missing.
 * Loaded lazily: the native transport never touches ffi-napi, so vrnic installs and serves on a
 * machine where those packages could not be built (no C toolchain).
 */
function loadLibvfioUser(): LibvfioUserModule | string {
  // ffi-napi loads in a worker thread but takes the whole process down (SIGSEGV) when that worker
  // exits; test runners (ava by default) run each file in one. Never load it there.
  if (!isMainThread) {
    return 'the libvfio-user transport cannot run in a worker thread (its ffi-napi bindings crash the process when the worker exits); use --transport native there, or run in the main thread';
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require('./libvfio-user/index') as LibvfioUserModule;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const missing = FFI_PACKAGES.find((p) => e.code === 'MODULE_NOT_FOUND' && e.message.includes(`'${p}`));
    if (missing === undefined) throw err;
    return (
      `the libvfio-user transport needs the optional npm packages ${FFI_PACKAGES.join(' and ')}, and ${missing} is not installed ` +
      '(they build with node-gyp: install python3, make and g++, then run npm install again); --transport native needs neither'
    );
  }
}

/** Why libvfio-user cannot be used here (one line saying what is missing), or null when it loads. */
export function libvfioUserUnavailable(): string | null {
  const mod = loadLibvfioUser();
  return typeof mod === 'string' ? mod : mod.libvfioUserUnavailable();
}

/** The transports that can run on this machine, native first. */
export function availableTransports(): TransportName[] {
  return libvfioUserUnavailable() === null ? ['native', 'libvfio-user'] : ['native'];
}

/** Resolves 'auto' to libvfio-user when it loads, else native. Throws when the named one cannot run. */
export function resolveTransport(choice: TransportChoice): TransportName {
  if (choice === 'native') return 'native';
  const why = libvfioUserUnavailable();
  if (choice === 'libvfio-user') {
    if (why !== null) throw new Error(why);
    return 'libvfio-user';
  }
  return why === null ? 'libvfio-user' : 'native';
}

export function createTransport(name: TransportName, opts: TransportOptions): Transport {
  if (name === 'native') {
    const mod = require('./native/index') as typeof import('./native/index');
    return new mod.NativeTransport(opts);
  }
  const mod = loadLibvfioUser();
  if (typeof mod === 'string') throw new Error(mod);
  return new mod.LibvfioUserTransport(opts);
}
