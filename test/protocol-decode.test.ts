// Decoders of the vfio-user wire layer on bytes built by hand from the spec's tables.
import test from 'ava';
import {
  decodeDmaAccess,
  decodeDmaMap,
  decodeDmaUnmap,
  decodeHeader,
  decodeIrqSet,
  decodeRegionAccess,
  decodeRegionInfo,
  decodeRegionWriteMulti,
  decodeVersion,
  parseCapabilities,
} from '../src/vfio-user/protocol/messages';
import { ShortMessageError } from '../src/vfio-user/protocol/reader';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('a header decodes into msg_id, command, size, flags and error', (t) => {
  t.deepEqual(decodeHeader(hex('0200 0a00 24000000 01000000 00000000')), { msgId: 2, command: 10, size: 36, flags: 1, error: 0 });
});

test('a header shorter than 16 bytes is reported as a short message', (t) => {
  t.throws(() => decodeHeader(hex('0200 0a00 2400')), { instanceOf: ShortMessageError });
});

test('VERSION yields the JSON text without its NUL, and its capabilities object', (t) => {
  const v = decodeVersion(Buffer.concat([hex('0000 0000'), Buffer.from('{"capabilities":{"max_msg_fds":16,"pgsizes":4096}}'), hex('00')]));
  t.is(v.major, 0);
  t.is(v.minor, 0);
  t.deepEqual(parseCapabilities(v.json), { max_msg_fds: 16, pgsizes: 4096 });
});

test('VERSION data without a terminating NUL is rejected', (t) => {
  t.throws(() => decodeVersion(Buffer.concat([hex('0000 0000'), Buffer.from('{}')])), { instanceOf: SyntaxError });
});

test('capabilities that are not an object are rejected', (t) => {
  t.throws(() => parseCapabilities('{"capabilities":[1]}'), { instanceOf: SyntaxError });
  t.throws(() => parseCapabilities('not json'), { instanceOf: SyntaxError });
});

test('DMA_MAP decodes argsz, flags, offset, address and size', (t) => {
  t.deepEqual(decodeDmaMap(hex('20000000 01000000 0000000000000000 00000cfd00000000 0000000100000000')), {
    argsz: 32,
    flags: 1,
    offset: 0n,
    addr: 0xfd0c0000n,
    size: 0x1000000n,
  });
});

test('DMA_UNMAP decodes argsz, flags, address and size', (t) => {
  t.deepEqual(decodeDmaUnmap(hex('18000000 00000000 0010000000000000 0020000000000000')), { argsz: 24, flags: 0, addr: 0x1000n, size: 0x2000n });
});

test('region info decodes the sparse-mmap areas by following cap_offset', (t) => {
  const info = decodeRegionInfo(
    hex('50000000 0f000000 02000000 20000000 0000010000000000 0000000000000000' + '0100 0100 00000000 02000000 00000000' + '0000000000000000 0010000000000000' + '0080000000000000 0080000000000000'),
  );
  t.is(info.index, 2);
  t.is(info.size, 0x10000n);
  t.deepEqual(info.sparseAreas, [
    { offset: 0n, size: 0x1000n },
    { offset: 0x8000n, size: 0x8000n },
  ]);
});

test('region info without capabilities has no sparse areas', (t) => {
  const info = decodeRegionInfo(hex('20000000 03000000 07000000 00000000 0010000000000000 0000000000000000'));
  t.is(info.sparseAreas, undefined);
  t.is(info.size, 4096n);
});

test('SET_IRQS decodes its fixed part and the bool data after it', (t) => {
  const s = decodeIrqSet(hex('17000000 22000000 02000000 00000000 03000000 010001'));
  t.deepEqual({ ...s, data: [...s.data] }, { argsz: 23, flags: 0x22, index: 2, start: 0, count: 3, data: [1, 0, 1] });
});

test('REGION_READ reply decodes offset, region, count and data', (t) => {
  const a = decodeRegionAccess(hex('0400000000000000 00000000 04000000 0d f0 fe ca'));
  t.is(a.offset, 4n);
  t.is(a.count, 4);
  t.is(a.data.readUInt32LE(0), 0xcafef00d);
});

test('DMA_WRITE decodes a 64-bit address, 64-bit count and the data', (t) => {
  const a = decodeDmaAccess(hex('0000100000000000 0200000000000000 abcd'));
  t.is(a.addr, 0x100000n);
  t.is(a.count, 2n);
  t.deepEqual([...a.data], [0xab, 0xcd]);
});

test('REGION_WRITE_MULTI decodes each write and keeps only count data bytes', (t) => {
  const m = decodeRegionWriteMulti(hex('0200000000000000' + '0800000000000000 00000000 04000000 0102030400000000' + '1000000000000000 07000000 01000000 ff00000000000000'));
  t.is(m.wrCnt, 2n);
  t.deepEqual(
    m.writes.map((w) => ({ o: w.offset, r: w.region, d: [...w.data] })),
    [
      { o: 8n, r: 0, d: [1, 2, 3, 4] },
      { o: 16n, r: 7, d: [0xff] },
    ],
  );
});
