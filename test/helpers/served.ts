// Starts a transport serving the test device on a fresh socket, with a connected VfioUserClient.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { createTransport, type Transport, type TransportName } from '../../src/vfio-user/transports/index';
import { VfioUserClient, type ClientOptions } from '../../src/vfio-user/client/index';
import { TestDevice } from './test-device';

export interface Served {
  readonly transport: Transport;
  readonly device: TestDevice;
  readonly client: VfioUserClient;
  readonly socketPath: string;
  /** Connects another client (the first must be gone for it to be served). */
  connect(opts?: ClientOptions): Promise<VfioUserClient>;
  close(): Promise<void>;
}

export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

export interface ServeOptions {
  /** The test device's interrupt capability (default msix). */
  readonly irq?: 'msix' | 'msi' | 'intx';
  /** The transport's logger (default: silent unless VRNIC_TEST_LOG names a level). */
  readonly log?: Logger;
}

export async function serve(name: TransportName, clientOpts: ClientOptions = {}, opts: ServeOptions = {}): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), 'vrnic-conf-'));
  const socketPath = join(dir, 'dev.sock');
  const device = new TestDevice(opts.irq);
  const log = opts.log ?? pino({ level: process.env.VRNIC_TEST_LOG ?? 'silent' });
  const transport = createTransport(name, { socketPath, device, log });
  await transport.start();
  const client = await VfioUserClient.connect(socketPath, clientOpts);
  return {
    transport,
    device,
    client,
    socketPath,
    connect: (opts) => VfioUserClient.connect(socketPath, opts ?? clientOpts),
    close: async () => {
      await client.close();
      await transport.stop();
      device.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
