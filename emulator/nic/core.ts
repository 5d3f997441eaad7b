// What the NIC's parts (admin queue, event queue, data path) may ask of the device: guest memory, an interrupt, FATAL, the epoch, the observer and the UAR pages; nothing more.
//
// The parts are handed this interface, not the device itself, so that each part's powers are
// written down in one place and no part imports device.ts (which builds them all). Only types
// are imported here, from files that themselves import no other file of the NIC.
import type { DmaAccess } from '../framework/device';
import type { NicConfig } from './config';
import type { Observer } from './trace';
import type { FatalCode } from './wire';

export interface NicCore {
  /** The validated configuration (limits, fault injection). */
  readonly config: NicConfig;
  /** Logger, counters and trace records in one place (the logger is the device context's). */
  readonly obs: Observer;
  /** Guest memory; rejects with DmaError outside what the client mapped, and before a client attaches. */
  readonly dma: DmaAccess;
  /**
   * Bumped on reset, disable and FATAL. Async work notes the epoch when it starts and drops its
   * result when the epoch has moved on meanwhile: the ring it was writing is gone.
   */
  readonly epoch: number;
  /** STATUS.READY: the queues are enabled and the device is not FATAL. */
  readonly ready: boolean;
  /** Raises interrupt vector `vector` (0 admin, 1 events, 2.. completion vectors) and sets its INT_CAUSE bit. */
  raise(vector: number, reason: string, fields?: Record<string, number>): void;
  /** Enters the FATAL state (docs/device.md 3.2): the queues stop until the driver resets the device. */
  fatal(code: FatalCode, reason: string): void;
  /**
   * Fills UAR pages [first, first + count) without the doorbell poller taking it for doorbells:
   * zeros when ALLOC_UAR hands them out, all-ones when FREE_UAR takes them back.
   */
  fillUarPages(first: number, count: number, value: 0 | 0xff): void;
  /** An admin command ran: doorbells are likely soon, so the poller should stop sleeping now. */
  expectDoorbells(): void;
}
