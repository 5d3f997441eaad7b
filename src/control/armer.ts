// The VanishArmer of a daemon whose device traces its events (the NIC): counts matching trace records and fires at the Nth.
import type { NicTrace, TraceRecord } from '../../emulator/nic/trace';
import type { VanishWhen } from './protocol';
import { checkWhen, formatWhen, matchesRecord, type WhenSpec } from './when';

/** What made an armed vanish fire. */
export interface FiredEvent {
  /** The spec in its text form, e.g. admin:CREATE_CQ:1. */
  readonly when: string;
  /** When the device saw the event (the trace record's time, ms since the epoch). */
  readonly atMs: number;
  /** The record's kind and naming fields (op, reg, uar, offset), for the report. */
  readonly record: Readonly<Record<string, string | number | boolean | null>>;
}

/**
 * Arms a vanish at a device event. `arm` calls `fire` when the event happens and returns a way to
 * cancel; it throws (with a message for the client) for events it does not know.
 */
export interface VanishArmer {
  arm(when: VanishWhen, fire: (event: FiredEvent) => void): { disarm(): void };
}

/** A device that takes trace sinks (emulator/nic's Nic does). */
export interface TraceSource {
  addTrace(sink: NicTrace): void;
  removeTrace(sink: NicTrace): void;
}

export function isTraceSource(v: unknown): v is TraceSource {
  return typeof v === 'object' && v !== null && typeof (v as TraceSource).addTrace === 'function' && typeof (v as TraceSource).removeTrace === 'function';
}

const NAMING = ['op', 'opcode', 'cmdId', 'reg', 'offset', 'uar', 'target', 'status', 'statusName'] as const;

/**
 * Subscribes to the device's trace while armed (a sink makes the NIC build its debug records, so
 * it is attached only until the event). The vanish itself starts on the next event-loop turn:
 * the record is emitted inside the device's handling of a transport request, and tearing the
 * transport down from inside its own callback is not safe; the access that was the event is
 * answered, the next one finds the device vanishing.
 */
export class TraceVanishArmer implements VanishArmer {
  constructor(private readonly device: TraceSource) {}

  arm(when: VanishWhen, fire: (event: FiredEvent) => void): { disarm(): void } {
    const spec: WhenSpec = checkWhen(when);
    let seen = 0;
    let done = false;
    const sink: NicTrace = {
      record: (r: TraceRecord) => {
        if (done || !matchesRecord(spec, r)) return;
        seen++;
        if (seen < spec.nth) return;
        done = true;
        this.device.removeTrace(sink);
        const record: Record<string, string | number | boolean | null> = { kind: r.kind };
        for (const k of NAMING) if (r[k] !== undefined) record[k] = r[k];
        const event: FiredEvent = { when: formatWhen(spec), atMs: Math.round(r.t), record };
        setImmediate(() => fire(event));
      },
    };
    this.device.addTrace(sink);
    return {
      disarm: () => {
        if (done) return;
        done = true;
        this.device.removeTrace(sink);
      },
    };
  }
}
