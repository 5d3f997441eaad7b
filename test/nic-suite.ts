// The NIC's behaviours from docs/device.md as test bodies over a DeviceAccess, so the same cases run through every transport (and in-process).
import type { ExecutionContext } from 'ava';
import type { Nic } from '../emulator/nic/device';
import { Reg } from '../emulator/nic/regs';
import { command, type DeviceAccess, type GuestHeap, OP, ST, TestDriver, until } from '../src/testing/nic-driver';

export interface NicEnv {
  readonly nic: Nic;
  readonly access: DeviceAccess;
  readonly heap: GuestHeap;
  readonly drv: TestDriver;
  /** A guest address that is certainly not in any mapped DMA region. */
  readonly unmappedAddr: bigint;
  /** The transport-level reset (vfio-user DEVICE_RESET), or the device's reset() in-process. */
  transportReset(): Promise<void>;
}

export type NicCase = (t: ExecutionContext, env: NicEnv) => Promise<void>;

const cq32 = (drv: TestDriver, buf: bigint, entries: number, vector: number, uar: number): Buffer =>
  command(OP.CREATE_CQ, drv.nextCmdId(), [[8, 'u64', buf], [0x10, 'u32', entries], [0x14, 'u32', vector], [0x18, 'u32', uar]]);

export const NIC_CASES: ReadonlyArray<readonly [string, NicCase]> = [
  [
    'QUERY_DEVICE fills the 128-byte structure with the limits',
    async (t, { drv, heap, nic }) => {
      await drv.bringUp();
      const out = heap.alloc(4096);
      const c = await drv.submit(command(OP.QUERY_DEVICE, 77, [[8, 'u64', out], [0x10, 'u32', 4096]]));
      t.like(c, { cmdId: 77, status: ST.OK, result0: 128, result1: 128 });
      const b = drv.dev.memRead(out, 128);
      const cfg = nic.config;
      t.deepEqual(
        [b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8), b.readUInt32LE(0x28), b.readUInt32LE(0x2c), b.readUInt32LE(0x30), b.readUInt32LE(0x38), b.readUInt32LE(0x40), b.readUInt32LE(0x44), b.readUInt32LE(0x4c), b.readUInt32LE(0x50)],
        [0x00010000, cfg.vendorId, cfg.deviceId, cfg.numUars, 1, cfg.maxPd, cfg.maxQp, cfg.maxCqe, cfg.maxQpWr, cfg.msixVectors - 2, 8],
      );
      t.is(b.readBigUInt64LE(0x10), cfg.nodeGuid);
      t.is(b.readBigUInt64LE(0x20), 0x1000n);
    },
  ],
  [
    'QUERY_DEVICE writes only out_len bytes when the buffer is short',
    async (t, { drv, heap }) => {
      await drv.bringUp();
      const out = heap.alloc(4096);
      drv.dev.memWrite(out, Buffer.alloc(64, 0xee));
      const c = await drv.submit(command(OP.QUERY_DEVICE, 1, [[8, 'u64', out], [0x10, 'u32', 8]]));
      t.like(c, { status: ST.OK, result0: 8, result1: 128 });
      t.is(drv.dev.memRead(out + 8n, 1)[0], 0xee);
    },
  ],
  [
    'QUERY_PORT reports port 1 active on InfiniBand with its GID',
    async (t, { drv, heap, nic }) => {
      await drv.bringUp();
      const out = heap.alloc(64);
      const c = await drv.submit(command(OP.QUERY_PORT, 2, [[8, 'u64', out], [0x10, 'u32', 64], [0x14, 'u32', 1]]));
      t.like(c, { status: ST.OK, result0: 64, result1: 64 });
      const b = drv.dev.memRead(out, 64);
      t.is(b.readUInt32LE(0), 4);
      t.is(b.readUInt32LE(0x28), 1);
      const gid = Buffer.alloc(16);
      gid.writeBigUInt64BE(0xfe80000000000000n, 0);
      gid.writeBigUInt64BE(nic.config.nodeGuid, 8);
      t.deepEqual(b.subarray(0x30, 0x40), gid);
    },
  ],
  [
    'QUERY_PORT on a port other than 1 gets BAD_PARAM',
    async (t, { drv, heap }) => {
      await drv.bringUp();
      const out = heap.alloc(64);
      t.is((await drv.submit(command(OP.QUERY_PORT, 3, [[8, 'u64', out], [0x10, 'u32', 64], [0x14, 'u32', 2]]))).status, ST.BAD_PARAM);
    },
  ],
  [
    'an output buffer outside mapped guest memory gets BAD_ADDRESS and nothing is written',
    async (t, { drv, unmappedAddr, nic }) => {
      await drv.bringUp();
      const c = await drv.submit(command(OP.QUERY_DEVICE, 4, [[8, 'u64', unmappedAddr], [0x10, 'u32', 128]]));
      t.is(c.status, ST.BAD_ADDRESS);
      t.true(nic.status().ready);
    },
  ],
  [
    'an unknown opcode gets BAD_OPCODE and the queue goes on',
    async (t, { drv }) => {
      await drv.bringUp();
      t.is((await drv.submit(command(0x7f, 5))).status, ST.BAD_OPCODE);
      t.is((await drv.submit(command(OP.CREATE_PD, 6))).status, ST.OK);
    },
  ],
  [
    'ALLOC_UAR gives consecutive zeroed pages and FREE_UAR takes them back by their first index, reading all-ones again',
    async (t, { drv, nic, access }) => {
      await drv.bringUp();
      t.is(access.uar.readUInt32LE(0), 0xffffffff, 'a page nobody owns reads all-ones');
      const a = await drv.submit(command(OP.ALLOC_UAR, 7, [[8, 'u32', 2]]));
      const b = await drv.submit(command(OP.ALLOC_UAR, 8, [[8, 'u32', 3]]));
      t.like(a, { status: ST.OK, result0: 0, result1: 2 });
      t.like(b, { status: ST.OK, result0: 2, result1: 3 });
      t.is(access.uar.readUInt32LE(2 * 4096 + 0x800), 0);
      t.is((await drv.submit(command(OP.FREE_UAR, 9, [[8, 'u32', 3]]))).status, ST.BAD_HANDLE);
      t.is((await drv.submit(command(OP.FREE_UAR, 10, [[8, 'u32', 2]]))).status, ST.OK);
      t.is(nic.status().objects.uarPages, 2);
      t.is(access.uar.readUInt32LE(2 * 4096 + 0x800), 0xffffffff);
      t.is(access.uar.readUInt32LE(0x800), 0, 'the run still owned stays as it was');
    },
  ],
  [
    'ALLOC_UAR with a count of 9 gets BAD_PARAM and with no free run NO_RESOURCES',
    async (t, { drv, nic }) => {
      await drv.bringUp();
      t.is((await drv.submit(command(OP.ALLOC_UAR, 11, [[8, 'u32', 9]]))).status, ST.BAD_PARAM);
      const n = nic.config.numUars;
      for (let i = 0; i < n; i++) await drv.allocUar(1);
      t.is((await drv.submit(command(OP.ALLOC_UAR, 12, [[8, 'u32', 1]]))).status, ST.NO_RESOURCES);
    },
  ],
  [
    'CREATE_PD and DESTROY_PD round trip, and a destroyed PD is a bad handle',
    async (t, { drv }) => {
      await drv.bringUp();
      const pd = await drv.createPd();
      t.is(pd, 1);
      t.is((await drv.submit(command(OP.DESTROY_PD, 13, [[8, 'u32', pd]]))).status, ST.OK);
      t.is((await drv.submit(command(OP.DESTROY_PD, 14, [[8, 'u32', pd]]))).status, ST.BAD_HANDLE);
    },
  ],
  [
    'CREATE_CQ returns the CQ doorbell slot 0x008 and DESTROY_CQ frees it',
    async (t, { drv }) => {
      await drv.bringUp();
      const uar = await drv.allocUar();
      const cq = await drv.createCq(uar);
      t.is(cq.cqn, 1);
      t.is(cq.dbOffset, 0x008);
      const cq2 = await drv.createCq(uar);
      t.is(cq2.dbOffset, 0x018);
      t.is((await drv.submit(command(OP.DESTROY_CQ, 15, [[8, 'u32', cq.cqn]]))).status, ST.OK);
      t.is((await drv.submit(command(OP.DESTROY_CQ, 16, [[8, 'u32', cq.cqn]]))).status, ST.BAD_HANDLE);
    },
  ],
  [
    'CREATE_CQ with a buffer outside mapped memory gets BAD_ADDRESS, with an unallocated UAR BAD_HANDLE',
    async (t, { drv, heap, unmappedAddr }) => {
      await drv.bringUp();
      const uar = await drv.allocUar();
      t.is((await drv.submit(cq32(drv, unmappedAddr, 16, 0, uar))).status, ST.BAD_ADDRESS);
      const buf = heap.alloc(16 * 32);
      t.is((await drv.submit(cq32(drv, buf, 16, 0, uar + 1))).status, ST.BAD_HANDLE);
      t.is((await drv.submit(cq32(drv, buf, 12, 0, uar))).status, ST.BAD_PARAM);
      t.is((await drv.submit(cq32(drv, buf + 8n, 16, 0, uar))).status, ST.BAD_PARAM);
      t.is((await drv.submit(cq32(drv, buf, 16, 2, uar))).status, ST.BAD_PARAM);
    },
  ],
  [
    'CREATE_QP returns the QP doorbell slot 0x000, MODIFY_QP follows RESET-INIT-RTR-RTS, DESTROY_QP frees it',
    async (t, { drv }) => {
      await drv.bringUp();
      const uar = await drv.allocUar();
      const pd = await drv.createPd();
      const cq = await drv.createCq(uar);
      const qp = await drv.createQp(pd, cq);
      t.is(qp.dbOffset, 0x000);
      t.is((await drv.modifyQp(qp.qpn, 3)).status, ST.BAD_STATE);
      t.like(await drv.modifyQp(qp.qpn, 1), { status: ST.OK, result0: 1, result1: 0 });
      t.is((await drv.modifyQp(qp.qpn, 2)).status, ST.OK);
      t.like(await drv.modifyQp(qp.qpn, 3), { status: ST.OK, result0: 3, result1: 2 });
      t.is((await drv.modifyQp(qp.qpn, 5)).status, ST.BAD_PARAM);
      t.is((await drv.submit(command(OP.DESTROY_CQ, 17, [[8, 'u32', cq.cqn]]))).status, ST.IN_USE);
      t.is((await drv.submit(command(OP.DESTROY_QP, 18, [[8, 'u32', qp.qpn]]))).status, ST.OK);
      t.is((await drv.submit(command(OP.DESTROY_QP, 19, [[8, 'u32', qp.qpn]]))).status, ST.BAD_HANDLE);
      t.is((await drv.submit(command(OP.DESTROY_CQ, 20, [[8, 'u32', cq.cqn]]))).status, ST.OK);
    },
  ],
  [
    'CREATE_QP with an SQ outside mapped memory gets BAD_ADDRESS, with an unknown CQ BAD_HANDLE',
    async (t, { drv, unmappedAddr, heap }) => {
      await drv.bringUp();
      const uar = await drv.allocUar();
      const pd = await drv.createPd();
      const cq = await drv.createCq(uar);
      const qpCmd = (sq: bigint, cqn: number) =>
        command(OP.CREATE_QP, drv.nextCmdId(), [
          [0x08, 'u32', pd],
          [0x0c, 'u32', cqn],
          [0x10, 'u32', cqn],
          [0x14, 'u32', uar],
          [0x18, 'u64', sq],
          [0x28, 'u32', 16],
          [0x30, 'u32', 2],
        ]);
      t.is((await drv.submit(qpCmd(unmappedAddr, cq.cqn))).status, ST.BAD_ADDRESS);
      t.is((await drv.submit(qpCmd(heap.alloc(1024), 99))).status, ST.BAD_HANDLE);
    },
  ],
  [
    'REG_MR of a contiguous range and of a page list return keys that DEREG_MR takes once',
    async (t, { drv, heap }) => {
      await drv.bringUp();
      const pd = await drv.createPd();
      const range = heap.alloc(3 * 4096);
      const a = await drv.submit(command(OP.REG_MR, 21, [[8, 'u32', pd], [0x0c, 'u32', 1], [0x10, 'u64', 0x7000_0100n], [0x18, 'u64', 8192n], [0x20, 'u64', range]]));
      t.is(a.status, ST.OK);
      t.is(a.result0, a.result1);
      const list = heap.alloc(24, 8);
      const l = Buffer.alloc(24);
      l.writeBigUInt64LE(range + 8192n, 0);
      l.writeBigUInt64LE(range, 8);
      l.writeBigUInt64LE(range + 4096n, 16);
      drv.dev.memWrite(list, l);
      // iova offset 0x100 in the first page + 8192 bytes spans 3 pages.
      const b = await drv.submit(command(OP.REG_MR, 22, [[8, 'u32', pd], [0x0c, 'u32', 7], [0x10, 'u64', 0x7000_0100n], [0x18, 'u64', 8192n], [0x20, 'u64', list], [0x28, 'u32', 3], [0x2c, 'u32', 12]], 1));
      t.is(b.status, ST.OK);
      t.not(b.result0, a.result0);
      t.is((await drv.submit(command(OP.DESTROY_PD, 23, [[8, 'u32', pd]]))).status, ST.IN_USE);
      t.is((await drv.submit(command(OP.DEREG_MR, 24, [[8, 'u32', a.result0]]))).status, ST.OK);
      t.is((await drv.submit(command(OP.DEREG_MR, 25, [[8, 'u32', a.result0]]))).status, ST.BAD_HANDLE);
      t.is((await drv.submit(command(OP.DEREG_MR, 26, [[8, 'u32', b.result0]]))).status, ST.OK);
      t.is((await drv.submit(command(OP.DESTROY_PD, 27, [[8, 'u32', pd]]))).status, ST.OK);
    },
  ],
  [
    'REG_MR over memory the client did not map gets BAD_ADDRESS, and a wrong page count BAD_PARAM',
    async (t, { drv, heap, unmappedAddr }) => {
      await drv.bringUp();
      const pd = await drv.createPd();
      t.is((await drv.submit(command(OP.REG_MR, 28, [[8, 'u32', pd], [0x10, 'u64', 0n], [0x18, 'u64', 4096n], [0x20, 'u64', unmappedAddr]]))).status, ST.BAD_ADDRESS);
      const list = heap.alloc(8, 8);
      const l = Buffer.alloc(8);
      l.writeBigUInt64LE(unmappedAddr, 0);
      drv.dev.memWrite(list, l);
      t.is((await drv.submit(command(OP.REG_MR, 29, [[8, 'u32', pd], [0x10, 'u64', 0n], [0x18, 'u64', 4096n], [0x20, 'u64', list], [0x28, 'u32', 1], [0x2c, 'u32', 12]], 1))).status, ST.BAD_ADDRESS);
      t.is((await drv.submit(command(OP.REG_MR, 30, [[8, 'u32', pd], [0x10, 'u64', 0n], [0x18, 'u64', 4096n], [0x20, 'u64', list], [0x28, 'u32', 2], [0x2c, 'u32', 12]], 1))).status, ST.BAD_PARAM);
      t.is((await drv.submit(command(OP.REG_MR, 31, [[8, 'u32', 9], [0x10, 'u64', 0n], [0x18, 'u64', 4096n], [0x20, 'u64', list]]))).status, ST.BAD_HANDLE);
    },
  ],
  [
    'an admin completion raises MSI-X vector 0',
    async (t, { drv, access }) => {
      await drv.bringUp();
      const before = access.irqCount(0);
      const fired = access.waitIrq(0);
      await drv.createPd();
      await fired;
      t.true(access.irqCount(0) > before);
    },
  ],
  [
    'a doorbell written into the UAR page is seen by the device and completes the NOP on the CQ vector',
    async (t, { drv, access, nic }) => {
      await drv.bringUp();
      const uar = await drv.allocUar();
      const pd = await drv.createPd();
      const cq = await drv.createCq(uar, 16, 0);
      const qp = await drv.createQp(pd, cq);
      for (const s of [1, 2, 3]) await drv.modifyQp(qp.qpn, s);
      const doorbellsBefore = nic.counters().doorbells;
      drv.armCq(cq, 0);
      drv.postNop(qp, 0, 0xfeedn);
      const fired = access.waitIrq(2);
      drv.ringSq(qp, 1);
      await fired;
      t.like(drv.cqe(cq, 0), { wrId: 0xfeedn, qpn: qp.qpn, status: 0, wqeIndex: 0 });
      t.true(nic.counters().doorbells >= doorbellsBefore + 2);
    },
  ],
  [
    'a SQ doorbell naming another QP is a guest error and completes nothing',
    async (t, { drv, nic }) => {
      await drv.bringUp();
      const uar = await drv.allocUar();
      const pd = await drv.createPd();
      const cq = await drv.createCq(uar);
      const qp = await drv.createQp(pd, cq);
      for (const s of [1, 2, 3]) await drv.modifyQp(qp.qpn, s);
      drv.postNop(qp, 0, 1n);
      const before = nic.counters();
      drv.dev.uar.writeUInt32LE(((qp.qpn + 1) << 16) | 1, uar * 4096 + qp.dbOffset);
      await until(() => nic.counters().doorbells > before.doorbells, 'the doorbell');
      t.is(nic.counters().guestErrors, before.guestErrors + 1);
      t.is(drv.cqe(cq, 0), null);
      t.is(nic.counters().completions, before.completions);
    },
  ],
  [
    'CTRL.RESET frees every object, leaves the UAR pages reading all-ones and STATUS 0',
    async (t, { drv, access, nic, heap }) => {
      await drv.bringUp();
      const uar = await drv.allocUar(2);
      const pd = await drv.createPd();
      const cq = await drv.createCq(uar);
      await drv.createQp(pd, cq);
      const range = heap.alloc(4096);
      await drv.ok(command(OP.REG_MR, 32, [[8, 'u32', pd], [0x18, 'u64', 4096n], [0x20, 'u64', range]]));
      access.uar.writeUInt32LE(0x1234, uar * 4096 + 0x800);
      await access.writeReg(Reg.Ctrl, 2);
      t.is(await access.readReg(Reg.Status), 0);
      t.deepEqual(nic.status().objects, { uarPages: 0, pds: 0, cqs: 0, qps: 0, mrs: 0, ahs: 0 });
      t.is(access.uar.readUInt32LE(uar * 4096 + 0x800), 0xffffffff);
      // Power-on again: handles start from 1.
      await drv.bringUp();
      t.is(await drv.createPd(), 1);
    },
  ],
  [
    'a transport reset frees every object like CTRL.RESET',
    async (t, env) => {
      const { drv, nic, access } = env;
      await drv.bringUp();
      const uar = await drv.allocUar();
      await drv.createPd();
      await drv.createCq(uar);
      await env.transportReset();
      t.deepEqual(nic.status().objects, { uarPages: 0, pds: 0, cqs: 0, qps: 0, mrs: 0, ahs: 0 });
      t.is(await access.readReg(Reg.Status), 0);
      t.is(await access.readReg(Reg.AsqSize), 0);
    },
  ],
];
