// `vanish --when EVENT`: the text syntax and the JSON form of the device events a vanish can be armed at.
import test from 'ava';
import { checkWhen, formatWhen, parseWhen, WhenError, matchesRecord, whenToJson } from '../src/control/when';
import { parseRequest, RequestError } from '../src/control/protocol';
import type { TraceRecord } from '../emulator/nic/trace';

test('admin:CREATE_QP:3 is the third CREATE_QP admin command', (t) => {
  t.deepEqual(parseWhen('admin:CREATE_QP:3'), { event: 'admin-command', opcode: 'CREATE_QP', nth: 3 });
});

test('an admin event without a count means the first, and opcodes are case-insensitive or numeric', (t) => {
  t.deepEqual(parseWhen('admin:alloc_uar'), { event: 'admin-command', opcode: 'ALLOC_UAR', nth: 1 });
  t.deepEqual(parseWhen('admin:0x07:2'), { event: 'admin-command', opcode: 'CREATE_CQ', nth: 2 });
});

test('doorbell:N is the Nth doorbell, doorbell alone the first', (t) => {
  t.deepEqual(parseWhen('doorbell:12'), { event: 'doorbell', nth: 12 });
  t.deepEqual(parseWhen('doorbell'), { event: 'doorbell', nth: 1 });
});

test('reg:1 is the first BAR0 access; a register and a direction narrow it', (t) => {
  t.deepEqual(parseWhen('reg:1'), { event: 'register-access', reg: null, op: null, nth: 1 });
  t.deepEqual(parseWhen('reg:CTRL:write:2'), { event: 'register-access', reg: 'CTRL', op: 'write', nth: 2 });
  t.deepEqual(parseWhen('reg:read'), { event: 'register-access', reg: null, op: 'read', nth: 1 });
});

test('unknown events, opcodes, registers and bad counts are refused with a message naming them', (t) => {
  for (const [text, re] of [
    ['admin:FROB', /unknown admin opcode 'FROB'/],
    ['admin', /expected admin:OPCODE/],
    ['doorbell:0', /count must be an integer/],
    ['doorbell:x', /'x' is not a count/],
    ['reg:NOPE', /unknown BAR0 register 'NOPE'/],
    ['reg:write:CTRL', /expected reg\[:REG\]/],
    ['interrupt:1', /unknown event 'interrupt'/],
  ] as const) {
    const err = t.throws(() => parseWhen(text), { instanceOf: WhenError }, text);
    t.regex(err?.message ?? '', re, text);
  }
});

test('the text form round-trips through formatWhen', (t) => {
  for (const text of ['admin:CREATE_CQ:1', 'doorbell:7', 'reg:1', 'reg:CTRL:write:2']) t.is(formatWhen(parseWhen(text)), text);
});

test('the JSON form from a control request is checked: unknown fields and events are refused', (t) => {
  t.deepEqual(checkWhen({ event: 'admin-command', opcode: 'CREATE_QP', nth: 3 }), { event: 'admin-command', opcode: 'CREATE_QP', nth: 3 });
  t.throws(() => checkWhen({ event: 'admin-command' }), { message: /opcode.*required/ });
  t.throws(() => checkWhen({ event: 'doorbell', opcode: 'X' }), { message: /only "nth"/ });
  t.throws(() => checkWhen({ event: 'doorbell', colour: 'red' }), { message: /when.colour/ });
  t.throws(() => checkWhen({ event: 'register-access', op: 'poke' }), { message: /read" or "write/ });
});

test('the JSON form written by whenToJson is accepted back by checkWhen, for every kind of event', (t) => {
  for (const text of ['admin:CREATE_CQ:1', 'doorbell:7', 'reg:1', 'reg:CTRL:write:2', 'reg:read']) {
    t.deepEqual(checkWhen(whenToJson(parseWhen(text))), parseWhen(text), text);
  }
});

test('a vanish request with wait must give it as a boolean', (t) => {
  const req = parseRequest('{"cmd":"vanish","mode":"orderly","when":{"event":"doorbell"},"wait":true}');
  t.like(req, { cmd: 'vanish', wait: true });
  const err = t.throws(() => parseRequest('{"id":4,"cmd":"vanish","mode":"orderly","when":{"event":"doorbell"},"wait":"yes"}'), { instanceOf: RequestError });
  t.is(err?.id, 4);
});

test('a spec matches only trace records of its event', (t) => {
  const rec = (f: Record<string, string | number | boolean | null>): TraceRecord => ({ t: 1, kind: 'reg', ...f }) as TraceRecord;
  const cq = parseWhen('admin:CREATE_CQ');
  t.true(matchesRecord(cq, rec({ kind: 'admin', op: 'CREATE_CQ' })));
  t.false(matchesRecord(cq, rec({ kind: 'admin', op: 'CREATE_QP' })));
  t.false(matchesRecord(cq, rec({ kind: 'doorbell' })));
  const ctrlWrite = parseWhen('reg:CTRL:write');
  t.true(matchesRecord(ctrlWrite, rec({ kind: 'reg', reg: 'CTRL', op: 'write' })));
  t.false(matchesRecord(ctrlWrite, rec({ kind: 'reg', reg: 'CTRL', op: 'read' })));
  t.false(matchesRecord(ctrlWrite, rec({ kind: 'reg', reg: 'STATUS', op: 'write' })));
});
