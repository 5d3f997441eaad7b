// Encoders of the vfio-user wire layer against bytes built by hand from the spec's tables.
import test from 'ava';
import {
  encodeDeviceInfo,
  encodeDmaAccess,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeErrorReply,
  encodeIrqInfo,
  encodeIrqSet,
  encodeMessage,
  encodeRegionAccess,
  encodeRegionInfo,
  encodeRegionWriteMulti,
  encodeVersion,
} from '../src/vfio-user/protocol/messages';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('a command header carries msg_id, command, total size, flags and error in little-endian order', (t) => {
  const m = encodeMessage(0x1234, 9, 0x10, hex('aabb'));
  t.deepEqual(m, hex('3412 0900 12000000 10000000 00000000 aabb'));
});

test('an error reply is a bare header with the reply and error bits and the errno', (t) => {
  t.deepEqual(encodeErrorReply(7, 5, 22), hex('0700 0500 10000000 21000000 16000000'));
});

test('VERSION carries major, minor and NUL-terminated JSON capabilities', (t) => {
  const b = encodeVersion({ major: 0, minor: 0, capabilities: { max_msg_fds: 8 } });
  t.deepEqual(b, Buffer.concat([hex('0000 0000'), Buffer.from('{"capabilities":{"max_msg_fds":8}}'), hex('00')]));
});

test('DMA_MAP is argsz, flags, fd offset, address and size (32 bytes)', (t) => {
  const b = encodeDmaMap({ argsz: 32, flags: 3, offset: 0x1000n, addr: 0x100000n, size: 0x20000n });
  t.deepEqual(b, hex('20000000 03000000 0010000000000000 0000100000000000 0000020000000000'));
});

test('DMA_UNMAP is argsz, flags, address and size (24 bytes)', (t) => {
  const b = encodeDmaUnmap({ argsz: 24, flags: 2, addr: 0n, size: 0n });
  t.deepEqual(b, hex('18000000 02000000 0000000000000000 0000000000000000'));
});

test('DEVICE_GET_INFO is argsz, flags, num_regions, num_irqs', (t) => {
  t.deepEqual(encodeDeviceInfo({ argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 }), hex('10000000 03000000 09000000 05000000'));
});

test('region info with a sparse-mmap capability puts the cap right after the 32-byte struct', (t) => {
  const b = encodeRegionInfo({
    argsz: 64,
    flags: 0xf,
    index: 2,
    capOffset: 32,
    size: 0x4000n,
    offset: 0n,
    sparseAreas: [{ offset: 0n, size: 0x4000n }],
  });
  const expected = hex(
    '40000000 0f000000 02000000 20000000 0040000000000000 0000000000000000' + // struct
      '0100 0100 00000000' + // cap header: id SPARSE_MMAP, version 1, next 0
      '01000000 00000000' + // nr_areas 1, reserved
      '0000000000000000 0040000000000000', // area: offset 0, size 16 KiB
  );
  t.deepEqual(b, expected);
});

test('IRQ info is argsz, flags, index, count', (t) => {
  t.deepEqual(encodeIrqInfo({ argsz: 16, flags: 1, index: 2, count: 4 }), hex('10000000 01000000 02000000 04000000'));
});

test('SET_IRQS with DATA_BOOL appends one byte per sub-index', (t) => {
  const b = encodeIrqSet({ argsz: 22, flags: 0x22, index: 2, start: 1, count: 2, data: hex('0100') });
  t.deepEqual(b, hex('16000000 22000000 02000000 01000000 02000000 0100'));
});

test('REGION_WRITE is offset, region, count then the data', (t) => {
  const b = encodeRegionAccess({ offset: 0x40n, region: 0, count: 4, data: hex('efbeadde') });
  t.deepEqual(b, hex('4000000000000000 00000000 04000000 efbeadde'));
});

test('DMA_READ is a 64-bit address and a 64-bit count', (t) => {
  t.deepEqual(encodeDmaAccess({ addr: 0x180010n, count: 9n, data: Buffer.alloc(0) }), hex('1000180000000000 0900000000000000'));
});

test('REGION_WRITE_MULTI pads each write to 8 data bytes after wr_cnt', (t) => {
  const b = encodeRegionWriteMulti([{ offset: 4n, region: 0, count: 2, data: hex('3412') }]);
  t.deepEqual(b, hex('0100000000000000 0400000000000000 00000000 02000000 3412000000000000'));
});
