// The built-in vfio-user server in TypeScript (placeholder until the transport lands).
import { EventEmitter } from 'node:events';
import type { Transport, TransportOptions, TransportStats } from '../transport';

export class NativeTransport extends EventEmitter implements Transport {
  readonly name = 'native' as const;
  constructor(readonly opts: TransportOptions) {
    super();
  }
  async start(): Promise<void> {
    throw new Error('native transport: not implemented yet');
  }
  dropClient(): void {}
  async stop(): Promise<void> {}
  stats(): TransportStats {
    return { clientConnected: false, clients: 0, messages: 0, errors: 0, dmaRegions: 0 };
  }
}
