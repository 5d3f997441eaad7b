// The contract between the daemon and a vfio-user transport (built-in TypeScript, or libvfio-user).
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { PciDevice } from '../../../emulator/framework/device';

export type TransportName = 'native' | 'libvfio-user';

export interface TransportOptions {
  /** Path of the vfio-user Unix socket to listen on. The daemon has already cleared the path. */
  readonly socketPath: string;
  /** File mode of the socket (default 0o600). */
  readonly socketMode?: number;
  readonly device: PciDevice;
  readonly log: Logger;
}

export interface TransportStats {
  readonly clientConnected: boolean;
  /** Clients served since start, including the current one. */
  readonly clients: number;
  readonly messages: number;
  readonly errors: number;
  readonly dmaRegions: number;
  /** Guest errors the PCI function counted (bad region accesses, BAR accesses with decoding off); each is logged at most once a second per kind. */
  readonly guestErrors: number;
}

/**
 * Serves one device to one client at a time, and the next client after that one disconnects.
 * Events: 'client' (connected: boolean), 'error' (err) for host failures that stop serving.
 * Guest and client mistakes are logged and answered; they never surface as 'error'.
 */
export interface Transport extends EventEmitter {
  readonly name: TransportName;
  /** Binds and listens; resolves once the socket accepts connections. */
  start(): Promise<void>;
  /** Drops the current client at once (closing its socket and every mapping and fd the transport holds for it), keeps listening. */
  dropClient(): void;
  /** Stops listening, drops the client, removes the socket file. Idempotent. */
  stop(): Promise<void>;
  stats(): TransportStats;
}
