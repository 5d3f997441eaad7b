// The event queue (docs/device.md section 6): asynchronous events written by DMA into a guest ring, then MSI-X vector 1.
import { DmaError } from '../framework/device';
import type { NicCore } from './core';
import { EQ_ENTRY_SIZE, encodeEvent, EVENT_ENTRY, EVENT_NAMES, FatalCode, phaseOf, type NicEvent } from './wire';

export const EQ_VECTOR = 1;

/** The entry's flags field, which carries the phase: written last. */
const PHASE = EVENT_ENTRY.spec.flags;

export class EventQueue {
  private base = 0n;
  private size = 0;
  /** Device's free-running producer index (EQ_TAIL). */
  tail = 0;
  /** Driver's consumer index (EQ_HEAD). */
  head = 0;
  private active = false;
  /** Bumped on stop/reset so writes queued for an old ring are abandoned. */
  private generation = 0;
  /** Posts are written in order; each waits for the previous one. */
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly core: NicCore) {}

  get exists(): boolean {
    return this.active && this.size > 0;
  }

  start(base: bigint, size: number): void {
    this.generation++;
    this.base = base;
    this.size = size;
    this.tail = 0;
    this.head = 0;
    this.active = true;
  }

  stop(): void {
    this.generation++;
    this.active = false;
    this.tail = 0;
    this.head = 0;
  }

  /** EQ_HEAD write; false when it claims entries the device never posted (fatal code 4 for the caller). */
  setHead(v: number): boolean {
    if (((this.tail - v) >>> 0) > this.size) return false;
    this.head = v >>> 0;
    return true;
  }

  /** Reserves the slot now (so order is the call order) and writes it by DMA; never throws. */
  post(ev: NicEvent): void {
    const obs = this.core.obs;
    const name = EVENT_NAMES[ev.type] ?? String(ev.type);
    if (!this.exists || ((this.tail - this.head) >>> 0) >= this.size) {
      obs.counters.eventsDropped++;
      obs.emit('event', { event: name, data0: ev.data0, data1: ev.data1, dropped: true, why: this.exists ? 'EQ full' : 'no EQ' }, 'event dropped');
      return;
    }
    const index = this.tail;
    this.tail = (this.tail + 1) >>> 0;
    const gen = this.generation;
    const addr = this.base + BigInt(EQ_ENTRY_SIZE * (index & (this.size - 1)));
    const phase = phaseOf(index, this.size);
    obs.counters.events++;
    obs.emit('event', { event: name, data0: ev.data0, data1: ev.data1, index }, 'event posted');
    this.chain = this.chain.then(async () => {
      if (gen !== this.generation) return;
      const entry = encodeEvent(ev, phase);
      try {
        // Everything but the phase first, so the driver never sees a valid phase on a torn entry.
        await this.core.dma.write(addr, encodeEvent(ev, phase ^ 1));
        if (gen !== this.generation) return;
        await this.core.dma.write(addr + BigInt(PHASE.at), entry.subarray(PHASE.at, PHASE.at + PHASE.length));
      } catch (err) {
        if (gen !== this.generation) return;
        if (err instanceof DmaError) {
          this.core.fatal(FatalCode.EventQueueAddress, `event queue write failed: ${err.message}`);
          return;
        }
        this.core.obs.log.error({ err }, 'event queue write failed');
        return;
      }
      if (gen === this.generation) this.core.raise(EQ_VECTOR, 'event');
    }).catch((err: unknown) => {
      // A rejected link would skip every later post: log the bug and keep the chain usable.
      this.core.obs.log.error({ err }, 'event post failed');
    });
  }
}
