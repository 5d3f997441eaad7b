// The device events a vanish can be armed at (`vanish --when`): the text syntax, the JSON form, and matching trace records.
import { OPCODE_NAMES } from '../../emulator/nic/wire';
import { REG_NAMES } from '../../emulator/nic/regs';
import type { TraceRecord } from '../../emulator/nic/trace';
import type { VanishWhen } from './protocol';

/**
 * A checked event spec. The JSON form on the control socket is
 *   {"event":"admin-command","opcode":"CREATE_QP","nth":3}
 *   {"event":"doorbell","nth":5}
 *   {"event":"register-access","reg":"CTRL","op":"write","nth":1}   (reg and op optional)
 * Counting starts when the vanish is armed; nth defaults to 1.
 */
export type WhenSpec =
  | { readonly event: 'admin-command'; readonly opcode: string; readonly nth: number }
  | { readonly event: 'doorbell'; readonly nth: number }
  | { readonly event: 'register-access'; readonly reg: string | null; readonly op: 'read' | 'write' | null; readonly nth: number };

export const WHEN_SYNTAX = `admin:OPCODE[:N]   the Nth admin command of that type, counted when the
                   device completes it (before its interrupt); OPCODE one of
                   ${Object.values(OPCODE_NAMES).join(' ')}
doorbell[:N]       the Nth doorbell write to a UAR page
reg[:REG][:read|write][:N]
                   the Nth BAR0 register access (of REG, e.g. CTRL, when given);
                   reg:1 armed before the guest boots is the driver probe's first access
N defaults to 1 and counts from the moment the vanish is armed.`;

const OPCODES = new Set(Object.values(OPCODE_NAMES));
const REGS = new Set(Object.values(REG_NAMES));
const MAX_NTH = 1_000_000_000;

export class WhenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WhenError';
  }
}

function nthOf(v: unknown, where: string): number {
  if (v === undefined) return 1;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 && v <= MAX_NTH) return v;
  throw new WhenError(`${where}: the count must be an integer in 1..${MAX_NTH}`);
}

function opcodeOf(v: unknown): string {
  if (typeof v === 'number' && OPCODE_NAMES[v] !== undefined) return OPCODE_NAMES[v];
  if (typeof v === 'string') {
    const name = v.toUpperCase().replace(/-/g, '_');
    if (OPCODES.has(name)) return name;
    if (/^(0x[0-9a-f]{1,2}|\d{1,3})$/i.test(v) && OPCODE_NAMES[Number(v)] !== undefined) return OPCODE_NAMES[Number(v)];
  }
  throw new WhenError(`unknown admin opcode '${String(v).slice(0, 40)}' (known: ${[...OPCODES].join(', ')})`);
}

function regOf(v: unknown): string {
  if (typeof v === 'string') {
    const name = v.toUpperCase();
    if (REGS.has(name)) return name;
    if (/^0x[0-9a-f]{1,4}$/i.test(v) && REG_NAMES[Number(v)] !== undefined) return REG_NAMES[Number(v)];
  }
  throw new WhenError(`unknown BAR0 register '${String(v).slice(0, 40)}' (known: ${[...REGS].join(', ')})`);
}

/** Checks the JSON form (from a control request); throws WhenError with a message for the client. */
export function checkWhen(when: VanishWhen): WhenSpec {
  const known = new Set(['event', 'nth', 'opcode', 'reg', 'op']);
  for (const k of Object.keys(when)) if (!known.has(k)) throw new WhenError(`"when.${k.slice(0, 40)}" is not a field of an event spec`);
  switch (when.event) {
    case 'admin-command':
      if (when.opcode === undefined) throw new WhenError('"when.opcode" is required for admin-command');
      return { event: 'admin-command', opcode: opcodeOf(when.opcode), nth: nthOf(when.nth, 'when.nth') };
    case 'doorbell':
      if (when.opcode !== undefined || when.reg !== undefined || when.op !== undefined) throw new WhenError('a doorbell event takes only "nth"');
      return { event: 'doorbell', nth: nthOf(when.nth, 'when.nth') };
    case 'register-access': {
      if (when.opcode !== undefined) throw new WhenError('a register-access event takes "reg", "op" and "nth"');
      // null is 'any', as undefined: the checked form writes them so.
      const op = when.op === undefined || when.op === null ? null : when.op === 'read' || when.op === 'write' ? when.op : undefined;
      if (op === undefined) throw new WhenError('"when.op" must be "read" or "write"');
      return { event: 'register-access', reg: when.reg === undefined || when.reg === null ? null : regOf(when.reg), op, nth: nthOf(when.nth, 'when.nth') };
    }
    default:
      throw new WhenError(`unknown event '${String(when.event).slice(0, 40)}' (known: admin-command, doorbell, register-access)`);
  }
}

function countOf(text: string, spec: string): number {
  if (!/^\d{1,10}$/.test(text)) throw new WhenError(`${spec}: '${text}' is not a count`);
  return nthOf(Number(text), spec);
}

/** Parses the text syntax of `vrnic vanish --when` (see WHEN_SYNTAX) into the JSON form. */
export function parseWhen(text: string): WhenSpec {
  const parts = text.trim().split(':');
  const kind = parts.shift()?.toLowerCase();
  switch (kind) {
    case 'admin': {
      if (parts.length < 1 || parts.length > 2 || parts[0] === '') throw new WhenError(`${text}: expected admin:OPCODE[:N]`);
      return { event: 'admin-command', opcode: opcodeOf(parts[0]), nth: parts.length === 2 ? countOf(parts[1], text) : 1 };
    }
    case 'doorbell':
      if (parts.length > 1) throw new WhenError(`${text}: expected doorbell[:N]`);
      return { event: 'doorbell', nth: parts.length === 1 ? countOf(parts[0], text) : 1 };
    case 'reg': {
      let reg: string | null = null;
      let op: 'read' | 'write' | null = null;
      let nth = 1;
      const rest = [...parts];
      if (rest.length > 0 && /^\d+$/.test(rest[rest.length - 1])) nth = countOf(rest.pop() as string, text);
      for (const p of rest) {
        const low = p.toLowerCase();
        if ((low === 'read' || low === 'write') && op === null) op = low;
        else if (reg === null && op === null) reg = regOf(p);
        else throw new WhenError(`${text}: expected reg[:REG][:read|write][:N]`);
      }
      return { event: 'register-access', reg, op, nth };
    }
    default:
      throw new WhenError(`${text}: unknown event '${kind ?? ''}' (admin:OPCODE[:N], doorbell[:N], reg[:REG][:read|write][:N])`);
  }
}

/** The text form of a spec, as `vanish --when` takes it. */
export function formatWhen(s: WhenSpec): string {
  switch (s.event) {
    case 'admin-command':
      return `admin:${s.opcode}:${s.nth}`;
    case 'doorbell':
      return `doorbell:${s.nth}`;
    case 'register-access':
      return ['reg', ...(s.reg ? [s.reg] : []), ...(s.op ? [s.op] : []), String(s.nth)].join(':');
  }
}

/** The JSON form for a control request. */
export function whenToJson(s: WhenSpec): VanishWhen {
  return Object.fromEntries(Object.entries(s).filter(([, v]) => v !== null)) as VanishWhen;
}

/** Whether a NIC trace record is one occurrence of the spec's event (the count is the caller's). */
export function matchesRecord(s: WhenSpec, r: TraceRecord): boolean {
  switch (s.event) {
    case 'admin-command':
      return r.kind === 'admin' && r.op === s.opcode;
    case 'doorbell':
      return r.kind === 'doorbell';
    case 'register-access':
      return r.kind === 'reg' && (s.reg === null || r.reg === s.reg) && (s.op === null || r.op === s.op);
  }
}
