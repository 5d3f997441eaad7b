// The NIC's configuration: typed fields, documented defaults (docs/device.md section 8), and a validator for JSON files.

export interface NicPollConfig {
  /** How long the doorbell poller keeps scanning every few µs after the last activity (emulator/nic/doorbells.ts), in µs. */
  readonly busyWindowUs: number;
  /** Upper bound of the poller's sleep between polls once idle, in ms. */
  readonly maxSleepMs: number;
}

/** How the device interrupts (docs/device.md section 2): the one capability it offers. */
export type IrqMode = 'msix' | 'msi' | 'intx';
export const IRQ_MODES: readonly IrqMode[] = ['msix', 'msi', 'intx'];

export interface NicConfig {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly subsystemVendorId: number;
  readonly subsystemId: number;
  readonly revision: number;
  /** UAR pages in BAR2; a power of two. */
  readonly numUars: number;
  /** Interrupt vectors the device uses: 0 admin, 1 events, 2.. completion vectors (MSI-X table size). */
  readonly msixVectors: number;
  /** msix: MSI-X only; msi: an MSI capability only; intx: neither (the INTx line). */
  readonly irq: IrqMode;
  readonly maxPd: number;
  readonly maxCq: number;
  readonly maxQp: number;
  readonly maxMr: number;
  readonly maxCqe: number;
  readonly maxQpWr: number;
  readonly maxMrSize: bigint;
  readonly nodeGuid: bigint;
  readonly poll: NicPollConfig;
  /**
   * Fault injection for driver tests: commands with this opcode are held stallAdminMs before they
   * run (0: none). A reset meanwhile abandons the command, as for any command in flight.
   */
  readonly stallAdminOpcode: number;
  readonly stallAdminMs: number;
}

/** What callers (and JSON files) may give: any subset; the rest takes the defaults. */
export interface NicConfigInput {
  vendorId?: number;
  deviceId?: number;
  subsystemVendorId?: number;
  subsystemId?: number;
  revision?: number;
  numUars?: number;
  msixVectors?: number;
  irq?: IrqMode;
  maxPd?: number;
  maxCq?: number;
  maxQp?: number;
  maxMr?: number;
  maxCqe?: number;
  maxQpWr?: number;
  maxMrSize?: bigint | number | string;
  nodeGuid?: bigint | number | string;
  poll?: Partial<NicPollConfig>;
  stallAdminOpcode?: number;
  stallAdminMs?: number;
}

export const NIC_DEFAULTS: NicConfig = Object.freeze({
  // 0x1234 is the vendor ID QEMU's own test devices use: experimental, not assigned to vrnic.
  vendorId: 0x1234,
  deviceId: 0x7a01,
  subsystemVendorId: 0x1234,
  subsystemId: 0x0001,
  revision: 0x01,
  numUars: 16,
  msixVectors: 4,
  irq: 'msix',
  maxPd: 256,
  maxCq: 256,
  maxQp: 256,
  maxMr: 1024,
  maxCqe: 4096,
  maxQpWr: 1024,
  maxMrSize: 1n << 32n,
  nodeGuid: 0x02005e0000007a01n,
  poll: Object.freeze({ busyWindowUs: 2000, maxSleepMs: 10 }),
  stallAdminOpcode: 0,
  stallAdminMs: 0,
});

/** A configuration that failed validation; `problems` names each bad field. */
export class NicConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[], source?: string) {
    super(`invalid NIC configuration${source === undefined ? '' : ` in ${source}`}: ${problems.join('; ')}`);
    this.name = 'NicConfigError';
    this.problems = problems;
  }
}

interface IntRule {
  readonly min: number;
  readonly max: number;
  readonly pow2?: boolean;
}

const INT_RULES: Readonly<Record<string, IntRule>> = {
  vendorId: { min: 0, max: 0xffff },
  deviceId: { min: 0, max: 0xffff },
  subsystemVendorId: { min: 0, max: 0xffff },
  subsystemId: { min: 0, max: 0xffff },
  revision: { min: 0, max: 0xff },
  numUars: { min: 1, max: 256, pow2: true },
  msixVectors: { min: 3, max: 64 },
  // CQ and QP handles travel in the 16 high bits of a doorbell word.
  maxPd: { min: 1, max: 65535 },
  maxCq: { min: 1, max: 65535 },
  maxQp: { min: 1, max: 65535 },
  maxMr: { min: 1, max: 65535 },
  // Queue indexes are 16 bits: a ring may hold at most half their range.
  maxCqe: { min: 2, max: 32768, pow2: true },
  maxQpWr: { min: 2, max: 32768, pow2: true },
  stallAdminOpcode: { min: 0, max: 0xff },
  stallAdminMs: { min: 0, max: 600_000 },
};

const POLL_RULES: Readonly<Record<string, IntRule>> = {
  busyWindowUs: { min: 0, max: 1_000_000 },
  maxSleepMs: { min: 1, max: 1000 },
};

function checkInt(name: string, v: unknown, rule: IntRule, problems: string[]): number | undefined {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    problems.push(`${name}: expected an integer, got ${JSON.stringify(v)}`);
    return undefined;
  }
  if (v < rule.min || v > rule.max) {
    problems.push(`${name}: ${v} is outside ${rule.min}..${rule.max}`);
    return undefined;
  }
  if (rule.pow2 === true && (v & (v - 1)) !== 0) {
    problems.push(`${name}: ${v} is not a power of two`);
    return undefined;
  }
  return v;
}

function checkBig(name: string, v: unknown, min: bigint, max: bigint, problems: string[]): bigint | undefined {
  let b: bigint;
  try {
    if (typeof v === 'bigint') b = v;
    else if (typeof v === 'number' && Number.isSafeInteger(v)) b = BigInt(v);
    else if (typeof v === 'string' && /^(0x[0-9a-fA-F]+|[0-9]+)$/.test(v)) b = BigInt(v);
    else throw new Error('not an integer');
  } catch {
    problems.push(`${name}: expected an integer or a decimal/0x-hex string, got ${JSON.stringify(v)}`);
    return undefined;
  }
  if (b < min || b > max) {
    problems.push(`${name}: 0x${b.toString(16)} is outside 0x${min.toString(16)}..0x${max.toString(16)}`);
    return undefined;
  }
  return b;
}

/**
 * Turns untrusted input (a parsed JSON file, or a caller's partial config) into a NicConfig.
 * Throws NicConfigError listing every bad or unknown field.
 */
export function validateNicConfig(input: unknown, source?: string): NicConfig {
  const problems: string[] = [];
  if (input === undefined || input === null) return NIC_DEFAULTS;
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new NicConfigError(['expected a JSON object at the top level'], source);
  }
  const obj = input as Record<string, unknown>;
  const out: Record<string, unknown> = { ...NIC_DEFAULTS };
  for (const [key, value] of Object.entries(obj)) {
    if (key in INT_RULES) {
      const v = checkInt(key, value, INT_RULES[key], problems);
      if (v !== undefined) out[key] = v;
    } else if (key === 'irq') {
      if (typeof value === 'string' && (IRQ_MODES as readonly string[]).includes(value)) out.irq = value;
      else problems.push(`irq: expected one of ${IRQ_MODES.join(', ')}, got ${JSON.stringify(value)}`);
    } else if (key === 'maxMrSize') {
      const v = checkBig(key, value, 4096n, 1n << 48n, problems);
      if (v !== undefined) out[key] = v;
    } else if (key === 'nodeGuid') {
      const v = checkBig(key, value, 0n, (1n << 64n) - 1n, problems);
      if (v !== undefined) out[key] = v;
    } else if (key === 'poll') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        problems.push(`poll: expected an object, got ${JSON.stringify(value)}`);
        continue;
      }
      const poll: Record<string, number> = { ...NIC_DEFAULTS.poll };
      for (const [pk, pv] of Object.entries(value as Record<string, unknown>)) {
        if (!(pk in POLL_RULES)) {
          problems.push(`poll.${pk}: unknown field (known: ${Object.keys(POLL_RULES).join(', ')})`);
          continue;
        }
        const v = checkInt(`poll.${pk}`, pv, POLL_RULES[pk], problems);
        if (v !== undefined) poll[pk] = v;
      }
      out.poll = Object.freeze(poll);
    } else {
      problems.push(`${key}: unknown field`);
    }
  }
  if (problems.length > 0) throw new NicConfigError(problems, source);
  return Object.freeze(out) as unknown as NicConfig;
}

/** A JSON-friendly view (bigints as hex strings), for `vrnic status` and logs. */
export function nicConfigToJson(c: NicConfig): Record<string, unknown> {
  return { ...c, maxMrSize: `0x${c.maxMrSize.toString(16)}`, nodeGuid: `0x${c.nodeGuid.toString(16)}`, poll: { ...c.poll } };
}
