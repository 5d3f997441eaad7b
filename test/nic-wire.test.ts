// The NIC's layouts (emulator/nic/wire.ts) on bytes built by hand from docs/device.md's tables.
import test from 'ava';
import * as wire from '../emulator/nic/wire';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A record of `size` bytes with the given hex strings at the given offsets; every other byte 0. */
function record(size: number, parts: Readonly<Record<number, string>>): Buffer {
  const buf = Buffer.alloc(size);
  for (const [at, bytes] of Object.entries(parts)) hex(bytes).copy(buf, Number(at));
  return buf;
}

/** A 64-byte admin submission entry. */
const entry = (parts: Readonly<Record<number, string>>): Buffer => record(64, parts);

test('an admin entry header decodes opcode, flags and cmd_id, and keeps the whole entry', (t) => {
  const raw = entry({ 0x00: '0c 01 0000 efbeadde' });
  const cmd = wire.decodeAdminCommand(raw);
  t.like(cmd, { opcode: 0x0c, flags: 1, cmdId: 0xdeadbeef });
  t.is(cmd.raw, raw);
});

test('an admin entry shorter than 64 bytes is refused, not read past its end', (t) => {
  t.throws(() => wire.ADMIN_COMMAND.decode(Buffer.alloc(63)), { instanceOf: RangeError });
  t.throws(() => wire.CREATE_QP_CMD.decode(Buffer.alloc(0x30)), { instanceOf: RangeError });
});

test('QUERY_DEVICE decodes out_addr at 0x08 and out_len at 0x10', (t) => {
  t.deepEqual(wire.QUERY_DEVICE_CMD.decode(entry({ 0x08: '0010 2000 0000 0000', 0x10: '80000000' })), { outAddr: 0x201000n, outLen: 128 });
});

test('QUERY_PORT decodes out_addr, out_len and port', (t) => {
  t.deepEqual(wire.QUERY_PORT_CMD.decode(entry({ 0x08: '0020 0000 0100 0000', 0x10: '40000000 01000000' })), { outAddr: 0x1_0000_2000n, outLen: 64, port: 1 });
});

test('ALLOC_UAR, FREE_UAR, DESTROY_PD, DESTROY_CQ, DESTROY_QP, DEREG_MR and DESTROY_AH each decode their u32 at 0x08', (t) => {
  const raw = entry({ 0x08: '78563412', 0x0c: 'ffffffff' });
  t.deepEqual(wire.ALLOC_UAR_CMD.decode(raw), { count: 0x12345678 });
  t.deepEqual(wire.FREE_UAR_CMD.decode(raw), { index: 0x12345678 });
  t.deepEqual(wire.DESTROY_PD_CMD.decode(raw), { pdn: 0x12345678 });
  t.deepEqual(wire.DESTROY_CQ_CMD.decode(raw), { cqn: 0x12345678 });
  t.deepEqual(wire.DESTROY_QP_CMD.decode(raw), { qpn: 0x12345678 });
  t.deepEqual(wire.DEREG_MR_CMD.decode(raw), { lkey: 0x12345678 });
  t.deepEqual(wire.DESTROY_AH_CMD.decode(raw), { ah: 0x12345678 });
});

test('CREATE_CQ decodes buf_addr, entries, comp_vector and uar_index', (t) => {
  t.deepEqual(wire.CREATE_CQ_CMD.decode(entry({ 0x08: '4000 3000 0000 0000', 0x10: '00010000 02000000 05000000' })), {
    bufAddr: 0x300040n,
    entries: 256,
    compVector: 2,
    uarIndex: 5,
  });
});

test('CREATE_QP decodes its nine fields at their offsets', (t) => {
  const raw = entry({
    0x08: '01000000 02000000 03000000 04000000',
    0x18: '0000 5000 0000 0000',
    0x20: '0000 6000 0000 0000',
    0x28: '40000000 00000000 04000000',
  });
  t.deepEqual(wire.CREATE_QP_CMD.decode(raw), {
    pdn: 1,
    sendCqn: 2,
    recvCqn: 3,
    uarIndex: 4,
    sqAddr: 0x500000n,
    rqAddr: 0x600000n,
    sqEntries: 64,
    rqEntries: 0,
    qpType: 4,
  });
});

test('MODIFY_QP decodes the u32 attributes, then dlid and pkey_index as u16 and the one-byte attributes in between', (t) => {
  const raw = entry({
    0x08: '07000000 03000000 39150100',
    0x14: '0e000000 11111111 2a000000 563412ff 33221100',
    0x28: '0300 01 05 0e 07 06 0c',
    0x30: '0000',
  });
  t.deepEqual(wire.MODIFY_QP_CMD.decode(raw), {
    qpn: 7,
    state: 3,
    attrMask: 0x11539,
    accessFlags: 0xe,
    qkey: 0x11111111,
    destQpn: 42,
    rqPsn: 0xff123456,
    sqPsn: 0x00112233,
    dlid: 3,
    portNum: 1,
    pathMtu: 5,
    timeout: 14,
    retryCnt: 7,
    rnrRetry: 6,
    minRnrTimer: 12,
    pkeyIndex: 0,
  });
});

test('REG_MR decodes pdn, access, iova, length, the address and the page list fields', (t) => {
  const raw = entry({
    0x00: '0c 01',
    0x08: '02000000 07000000',
    0x10: '0010 0000 0080 0000',
    0x18: '0030 0000 0000 0000',
    0x20: '0000 7000 0000 0000',
    0x28: '04000000 0c000000',
  });
  t.deepEqual(wire.REG_MR_CMD.decode(raw), {
    pdn: 2,
    access: 7,
    iova: 0x0000_8000_0000_1000n,
    length: 0x3000n,
    addr: 0x700000n,
    pageCount: 4,
    pageShift: 12,
  });
});

test('CREATE_AH decodes pdn, a u16 dlid and the one-byte port_num and sl', (t) => {
  t.deepEqual(wire.CREATE_AH_CMD.decode(entry({ 0x08: '09000000 0201 01 03' })), { pdn: 9, dlid: 0x102, portNum: 1, sl: 3 });
});

test('an admin completion is cmd_id, status, the phase in the flags, result0 and result1', (t) => {
  t.deepEqual(wire.encodeAdminCompletion({ cmdId: 0xcafe, status: 5, result0: 0x10, result1: 0xffffffff }, 1), hex('feca0000 0500 0100 10000000 ffffffff'));
  t.deepEqual(wire.encodeAdminCompletion({ cmdId: 1, status: 0, result0: 0, result1: 0 }, 0), hex('01000000 0000 0000 00000000 00000000'));
});

test('an event entry is type, the phase in the flags, data0, data1 and four reserved zero bytes', (t) => {
  t.deepEqual(wire.encodeEvent({ type: 3, data0: 12, data1: 1 }, 1), hex('0300 0100 0c000000 01000000 00000000'));
});

test('a receive CQE carries imm_data, src_qpn and the slid in the flags word\'s upper half', (t) => {
  const cqe = wire.encodeCqe(
    { wrId: 0x1122334455667788n, qpn: 4, byteLen: 100, opcode: 0x81, status: 0, wqeIndex: 0x1_0003, send: false, imm: 0xdeadbeef, srcQpn: 9, solicited: true, slid: 2 },
    1,
  );
  // flags: phase 1, IMM 4, SOLICITED 8, slid 2 << 16; wqe_index keeps its low 16 bits.
  t.deepEqual(cqe, hex('8877665544332211 04000000 64000000 81 00 0300 efbeadde 09000000 0d000200'));
});

test('a send CQE sets the SEND flag and leaves imm_data and src_qpn zero', (t) => {
  t.deepEqual(wire.encodeCqe({ wrId: 5n, qpn: 1, byteLen: 0, opcode: 3, status: 2, wqeIndex: 7, send: true }, 0), hex('0500000000000000 01000000 00000000 03 02 0700 00000000 00000000 02000000'));
});

test('QUERY_DEVICE output puts every attribute at the offset of the datasheet and leaves 0x6C..0x7F zero', (t) => {
  // Every value differs, so two fields swapped in the layout would show.
  const out = wire.QUERY_DEVICE_OUT.encode({
    ifVersion: 0x00010000,
    vendorId: 0x1de5,
    deviceId: 0x7a01,
    hwRev: 0x21,
    nodeGuid: 0x02005e0000007a01n,
    maxMrSize: 1n << 32n,
    pageSizeCap: 0x1000n,
    numUars: 0x40,
    numPorts: 0x22,
    maxPd: 0x11,
    maxCq: 0x12,
    maxQp: 0x13,
    maxMr: 0x14,
    maxCqe: 0x15,
    maxQpWr: 0x16,
    maxSge: 0x17,
    numCompVectors: 0x18,
    maxUarsPerAlloc: 0x19,
    maxMrPages: 0x10000,
    maxRecvSge: 0x1a,
    maxInlineData: 0x1b,
    maxAh: 0x1c,
    atomicCap: 0x1d,
    maxQpRdAtom: 0x1e,
  });
  const want = record(128, {
    0x00: '00000100 e51d0000 017a0000 21000000',
    0x10: '017a0000005e0002 0000000001000000 0010000000000000',
    0x28: '40000000 22000000 11000000 12000000 13000000 14000000 15000000 16000000',
    0x48: '17000000 18000000 19000000 00000100 1a000000 1b000000 1c000000 1d000000 1e000000',
  });
  t.deepEqual(out, want);
});

test('QUERY_PORT output puts the twelve port attributes first and the 16 GID bytes at 0x30 as given', (t) => {
  const gid = hex('fe80000000000000 02005e0000007a01');
  const out = wire.QUERY_PORT_OUT.encode({
    state: 0x31,
    physState: 0x32,
    maxMtu: 0x33,
    activeMtu: 0x34,
    lid: 0x35,
    smLid: 0x36,
    gidTblLen: 0x37,
    pkeyTblLen: 0x38,
    activeWidth: 0x39,
    activeSpeed: 0x3a,
    linkLayer: 0x3b,
    maxMsgSz: 0x80000000,
    gid0: gid,
  });
  t.deepEqual(out, hex('31000000 32000000 33000000 34000000 35000000 36000000 37000000 38000000 39000000 3a000000 3b000000 00000080' + 'fe80000000000000 02005e0000007a01'));
});

test('a send WQE decodes its header, both readings of 0x10..0x1F, the atomic operands and the 32-byte body', (t) => {
  const raw = entry({
    0x00: '06 09 01 00 01020304 2a00000000000000',
    0x10: '0800 0100 0000 0000 78563412 00000000',
    0x20: '0500000000000000 0600000000000000',
    0x30: '0800 0100 0000 0000 08000000 01020000',
  });
  const w = wire.decodeWqe(raw);
  t.like(w, {
    opcode: 6,
    flags: 9,
    numSge: 1,
    inlineLen: 0,
    imm: 0x04030201,
    wrId: 42n,
    remoteAddr: 0x1_0008n,
    rkey: 0x12345678,
    ah: 0x1_0008,
    remoteQpn: 0,
    remoteQkey: 0x12345678,
    compareAdd: 5n,
    swap: 6n,
  });
  t.deepEqual(w.body, raw.subarray(0x20, 0x40));
  t.deepEqual(wire.decodeSges(w.body, 0x10, 1), [{ addr: 0x1_0008n, length: 8, lkey: 0x201 }]);
});

test('a receive WQE decodes num_sge and wr_id, and its SGEs from 0x10 on', (t) => {
  const raw = entry({
    0x00: '00 00 02',
    0x08: 'efcdab8967452301',
    0x10: '0010000000000000 00010000 01010000',
    0x20: '0020000000000000 00020000 02020000',
  });
  t.deepEqual(wire.RECV_WQE.decode(raw), { numSge: 2, wrId: 0x0123456789abcdefn });
  t.deepEqual(wire.decodeSges(raw, 0x10, 2), [
    { addr: 0x1000n, length: 0x100, lkey: 0x101 },
    { addr: 0x2000n, length: 0x200, lkey: 0x202 },
  ]);
});

test('SGEs that would run past the end of the bytes are refused', (t) => {
  t.throws(() => wire.decodeSges(Buffer.alloc(32), 0x10, 2), { instanceOf: RangeError });
});
