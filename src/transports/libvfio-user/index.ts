// The libvfio-user transport through ffi/ (placeholder until the transport lands).
import { EventEmitter } from 'node:events';
import type { Transport, TransportOptions, TransportStats } from '../transport';

export function libvfioUserUnavailable(): string | null {
  return 'libvfio-user transport: not implemented yet';
}

export class LibvfioUserTransport extends EventEmitter implements Transport {
  readonly name = 'libvfio-user' as const;
  constructor(readonly opts: TransportOptions) {
    super();
  }
  async start(): Promise<void> {
    throw new Error('libvfio-user transport: not implemented yet');
  }
  dropClient(): void {}
  async stop(): Promise<void> {}
  stats(): TransportStats {
    return { clientConnected: false, clients: 0, messages: 0, errors: 0, dmaRegions: 0 };
  }
}
