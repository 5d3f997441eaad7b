// Picks and builds a transport: the built-in TypeScript one, or libvfio-user through ffi/.
import type { Transport, TransportName, TransportOptions } from './transport';

export type { Transport, TransportName, TransportOptions, TransportStats } from './transport';

export type TransportChoice = TransportName | 'auto';

/**
 * Why libvfio-user cannot be used here, or null when it loads.
 * Loaded lazily: the native transport never touches ffi-napi.
 */
export function libvfioUserUnavailable(): string | null {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require('./libvfio-user/index') as typeof import('./libvfio-user/index');
  return mod.libvfioUserUnavailable();
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
  const mod = require('./libvfio-user/index') as typeof import('./libvfio-user/index');
  return new mod.LibvfioUserTransport(opts);
}
