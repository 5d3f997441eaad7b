// What `vrnic status` shows of the device: read from the device model's optional status() hook.
import type { PciDevice } from '../../emulator/framework/device';

/**
 * What a device model may offer: `status()` returning its state, the UAR pages handed out and
 * its counters. emulator/nic's Nic says `ready`/`fatal` and `objects.uarPages`; a model may
 * instead say `state` and `uarPagesInUse`. The framework contract does not require the hook, so
 * it is read defensively and anything missing shows as null.
 */
export interface DeviceStatusHook {
  status(): {
    readonly state?: string;
    readonly ready?: boolean;
    readonly fatal?: boolean;
    readonly uarPagesInUse?: number;
    readonly objects?: Readonly<Record<string, number>>;
    readonly counters?: Readonly<Record<string, number | bigint>>;
    readonly [key: string]: unknown;
  };
}

function stateOf(raw: ReturnType<DeviceStatusHook['status']>): string | null {
  if (typeof raw.state === 'string') return raw.state;
  if (raw.fatal === true) return 'fatal';
  if (typeof raw.ready === 'boolean') return raw.ready ? 'ready' : 'not ready (reset or not enabled)';
  return null;
}

export interface DeviceStatusView {
  readonly name: string;
  /** e.g. 'ready', 'fatal', 'reset'; null when the model does not say. */
  readonly state: string | null;
  readonly uarPagesInUse: number | null;
  readonly counters: Readonly<Record<string, number>>;
  /** Everything else the model reported, JSON-safe. */
  readonly extra: Readonly<Record<string, unknown>>;
}

function hasStatus(d: PciDevice): d is PciDevice & DeviceStatusHook {
  return typeof (d as Partial<DeviceStatusHook>).status === 'function';
}

/** A JSON-safe copy: bigints become numbers (counters are u32/u64 and fit a double for display). */
function jsonSafe(v: unknown, depth = 0): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (depth > 4 || v === null || typeof v !== 'object') return typeof v === 'function' ? undefined : v;
  if (Array.isArray(v)) return v.slice(0, 256).map((x) => jsonSafe(x, depth + 1));
  if (Buffer.isBuffer(v)) return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = jsonSafe(x, depth + 1);
  return out;
}

export function deviceStatus(device: PciDevice): DeviceStatusView {
  if (!hasStatus(device)) return { name: device.name, state: null, uarPagesInUse: null, counters: {}, extra: {} };
  let raw: ReturnType<DeviceStatusHook['status']>;
  try {
    raw = device.status();
  } catch (err) {
    return { name: device.name, state: null, uarPagesInUse: null, counters: {}, extra: { statusError: (err as Error).message } };
  }
  const { counters, ...rest } = raw;
  const state = stateOf(raw);
  const uarPagesInUse = typeof raw.uarPagesInUse === 'number' ? raw.uarPagesInUse : raw.objects?.uarPages;
  const outCounters: Record<string, number> = {};
  if (counters && typeof counters === 'object') {
    for (const [k, v] of Object.entries(counters)) {
      if (typeof v === 'number' || typeof v === 'bigint') outCounters[k] = Number(v);
    }
  }
  return {
    name: device.name,
    state,
    uarPagesInUse: typeof uarPagesInUse === 'number' ? uarPagesInUse : null,
    counters: outCounters,
    extra: jsonSafe(rest) as Record<string, unknown>,
  };
}
