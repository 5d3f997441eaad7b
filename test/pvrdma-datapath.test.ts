// The pvrdma model's data path driven with WQEs, ring indices and page directories built here byte by byte from vmw_pvrdma-abi.h and pvrdma_ring.h, not from the model's own constants.
import test from 'ava';
import { Fabric } from '../emulator/datapath/fabric';
import { pvrdmaAbi as abi } from '../emulator/pvrdma';
import { activate, BASE, command, PAGE, setup, tick, type Setup } from './pvrdma-support';

const page = (n: number) => BASE + BigInt(n) * PAGE;
const GID_A = Buffer.from('fe80000000000000505400fffe123457', 'hex');
const GID_B = Buffer.from('fe80000000000000505400fffe123458', 'hex');

// The QP_SEND/QP_RECV doorbell bits and CQ layout, from vmw_pvrdma-abi.h.
const UAR_QP_SEND = 1 << 30;
const UAR_QP_RECV = 2 ** 31;

interface Queues {
  handle: number;
  qpn: number;
  ring: bigint;
  sq: bigint;
  rq: bigint;
}

async function createPd(s: Setup): Promise<number> {
  return (await command(s, abi.Cmd.CreatePd)).readUInt32LE(16);
}

async function bindGid(s: Setup, gid: Buffer) {
  await command(s, abi.Cmd.CreateBind, (b) => {
    b.writeUInt32LE(0, 24);
    gid.copy(b, 28);
  });
}

/** A CQ of 64 entries: page directory at page `at`, ring state at page at+2, CQEs in page at+3. */
async function createCq(s: Setup, at: number): Promise<{ handle: number; ring: bigint; cqes: bigint }> {
  const ring = page(at + 2);
  const cqes = page(at + 3);
  s.pdir(page(at), [ring, cqes]);
  const r = await command(s, abi.Cmd.CreateCq, (b) => {
    b.writeBigUInt64LE(page(at), 16);
    b.writeUInt32LE(64, 28);
    b.writeUInt32LE(2, 32);
  });
  if (r.readUInt8(12) !== 0) throw new Error('CREATE_CQ failed');
  return { handle: r.readUInt32LE(16), ring, cqes };
}

/** CREATE_QP for `sendWr` send WQEs of 128 bytes (1 SGE) and 4 receive WQEs of 32 bytes in three pages (ring, send, receive) at page at+2; the response. */
async function createQpCommand(s: Setup, at: number, pd: number, cq: number, type: number, sendWr = 4): Promise<Buffer> {
  s.pdir(page(at), [page(at + 2), page(at + 3), page(at + 4)]);
  return command(s, abi.Cmd.CreateQp, (b) => {
    b.writeBigUInt64LE(page(at), 16);
    b.writeUInt32LE(pd, 24);
    b.writeUInt32LE(cq, 28);
    b.writeUInt32LE(cq, 32);
    b.writeUInt32LE(sendWr, 40);
    b.writeUInt32LE(4, 44);
    b.writeUInt32LE(1, 48);
    b.writeUInt32LE(1, 52);
    b.writeUInt16LE(3, 68);
    b.writeUInt16LE(1, 70);
    b.writeUInt8(type, 75);
  });
}

async function createQp(s: Setup, at: number, pd: number, cq: number, type: number): Promise<Queues> {
  const r = await createQpCommand(s, at, pd, cq, type);
  if (r.readUInt8(12) !== 0) throw new Error('CREATE_QP failed');
  return { qpn: r.readUInt32LE(16), handle: r.readUInt32LE(20), ring: page(at + 2), sq: page(at + 3), rq: page(at + 4) };
}

/** MODIFY_QP with the given mask; `fill` writes struct pvrdma_qp_attr (offsets relative to it). */
async function modifyQp(s: Setup, qp: Queues, mask: number, fill: (a: Buffer) => void) {
  const r = await command(s, abi.Cmd.ModifyQp, (b) => {
    b.writeUInt32LE(qp.handle, 16);
    b.writeUInt32LE(mask, 20);
    fill(b.subarray(24));
  });
  if (r.readUInt8(12) !== 0) throw new Error('MODIFY_QP failed');
}

/** RESET -> INIT -> RTR -> RTS toward `destQpn` at `dgid` (an RC QP), or just to RTS (a UD QP). */
async function connect(s: Setup, qp: Queues, rc: boolean, destQpn: number, dgid: Buffer) {
  await modifyQp(s, qp, 1 | 8 | 64, (a) => {
    a.writeUInt32LE(1, 0);
    a.writeUInt32LE(0x7, 32); // LOCAL_WRITE | REMOTE_WRITE | REMOTE_READ
    a.writeUInt32LE(0x11111111, 16);
  });
  await modifyQp(s, qp, 1 | (rc ? 128 | 4096 | (1 << 20) : 0), (a) => {
    a.writeUInt32LE(2, 0);
    a.writeUInt32LE(destQpn, 28);
    a.writeUInt32LE(100, 20);
    dgid.copy(a, 80);
  });
  await modifyQp(s, qp, 1 | 65536, (a) => {
    a.writeUInt32LE(3, 0);
    a.writeUInt32LE(100, 24);
  });
}

/** A user MR over `pages` (one page-list chunk each) starting at IOVA `iova`; returns its lkey (= rkey). */
async function createMr(s: Setup, at: number, pd: number, iova: bigint, length: number, pages: bigint[]): Promise<number> {
  s.pdir(page(at), pages);
  const r = await command(s, abi.Cmd.CreateMr, (b) => {
    b.writeBigUInt64LE(iova, 16);
    b.writeBigUInt64LE(BigInt(length), 24);
    b.writeBigUInt64LE(page(at), 32);
    b.writeUInt32LE(pd, 40);
    b.writeUInt32LE(0x7, 44);
    b.writeUInt32LE(pages.length, 52);
  });
  if (r.readUInt8(12) !== 0) throw new Error('CREATE_MR failed');
  return r.readUInt32LE(20);
}

/** Writes receive WQE number `i` (struct pvrdma_rq_wqe_hdr + one pvrdma_sge), bumps rx.prod_tail, rings QP_RECV. */
function postRecv(s: Setup, qp: Queues, i: number, wrId: bigint, addr: bigint, length: number, lkey: number) {
  const w = s.mem(qp.rq + BigInt(32 * i));
  w.writeBigUInt64LE(wrId, 0);
  w.writeUInt32LE(1, 8);
  w.writeBigUInt64LE(addr, 16);
  w.writeUInt32LE(length, 24);
  w.writeUInt32LE(lkey, 28);
  s.mem(qp.ring).writeUInt32LE(i + 1, 8);
  s.uar(0, UAR_QP_RECV + qp.handle);
}

/** Writes send WQE number `i` (struct pvrdma_sq_wqe_hdr, 80 bytes, + SGEs), bumps tx.prod_tail, rings QP_SEND. */
function postSend(s: Setup, qp: Queues, i: number, w: { wrId: bigint; opcode: number; sges: [bigint, number, number][]; numSge?: number; remote?: [bigint, number]; ud?: [number, number, Buffer] }) {
  const b = s.mem(qp.sq + BigInt(128 * i));
  b.fill(0, 0, 128);
  b.writeBigUInt64LE(w.wrId, 0);
  b.writeUInt32LE(w.numSge ?? w.sges.length, 8);
  b.writeUInt32LE(w.opcode, 16);
  b.writeUInt32LE(2, 20); // IB_SEND_SIGNALED
  if (w.remote) {
    b.writeBigUInt64LE(w.remote[0], 32);
    b.writeUInt32LE(w.remote[1], 40);
  }
  if (w.ud) {
    b.writeUInt32LE(w.ud[0], 32);
    b.writeUInt32LE(w.ud[1], 36);
    w.ud[2].copy(b, 48); // pvrdma_av.dgid
  }
  for (const [k, [addr, len, lkey]] of w.sges.entries()) {
    b.writeBigUInt64LE(addr, 80 + 16 * k);
    b.writeUInt32LE(len, 88 + 16 * k);
    b.writeUInt32LE(lkey, 92 + 16 * k);
  }
  s.mem(qp.ring).writeUInt32LE(i + 1, 0);
  s.uar(0, UAR_QP_SEND + qp.handle);
}

/** Waits until the CQ's rx.prod_tail reaches `n`, then returns CQE `i` as the guest reads it. */
async function cqe(s: Setup, cq: { ring: bigint; cqes: bigint }, n: number, i = n - 1) {
  for (let k = 0; k < 500 && s.mem(cq.ring).readUInt32LE(8) < n; k++) await tick();
  const c = s.mem(cq.cqes + BigInt(64 * i));
  return {
    produced: s.mem(cq.ring).readUInt32LE(8),
    wrId: c.readBigUInt64LE(0),
    qp: Number(c.readBigUInt64LE(8)),
    opcode: c.readUInt32LE(16),
    status: c.readUInt32LE(20),
    byteLen: c.readUInt32LE(24),
    srcQp: c.readUInt32LE(32),
    wcFlags: c.readUInt32LE(36),
  };
}

async function twoRcQps(s: Setup) {
  await activate(s);
  await bindGid(s, GID_A);
  const pd = await createPd(s);
  const cq = await createCq(s, 40);
  const a = await createQp(s, 50, pd, cq.handle, 2);
  const b = await createQp(s, 60, pd, cq.handle, 2);
  await connect(s, a, true, b.qpn, GID_A);
  await connect(s, b, true, a.qpn, GID_A);
  const key = await createMr(s, 70, pd, 0x7000_0800n, 2 * 4096, [page(80), page(81), page(82)]);
  return { pd, cq, a, b, key };
}

test('an RC SEND between two QPs of one device lands in the posted receive buffer, with a receive and a send CQE', async (t) => {
  const s = setup();
  const { cq, a, b, key } = await twoRcQps(s);
  // The MR's IOVA 0x70000800 is offset 0x800 of page 80; IOVA + 0x1000 is in page 81.
  s.mem(page(80) + 0x800n).write('hello from QP a', 'utf8');
  postRecv(s, b, 0, 0xbbn, 0x7000_1800n, 64, key);
  postSend(s, a, 0, { wrId: 0xaan, opcode: 2, sges: [[0x7000_0800n, 15, key]] });
  const first = await cqe(s, cq, 2, 0);
  const second = await cqe(s, cq, 2, 1);
  t.is(first.produced, 2);
  const [recv, send] = first.opcode === 128 ? [first, second] : [second, first];
  t.like(recv, { wrId: 0xbbn, qp: b.handle, opcode: 128, status: 0, byteLen: 15, srcQp: a.qpn });
  t.like(send, { wrId: 0xaan, qp: a.handle, opcode: 0, status: 0, byteLen: 15 });
  t.is(s.mem(page(81) + 0x800n).toString('utf8', 0, 15), 'hello from QP a');
  // the device consumed one WQE of each ring: tx.cons_head and rx.cons_head are 1
  t.is(s.mem(a.ring).readUInt32LE(4), 1);
  t.is(s.mem(b.ring).readUInt32LE(12), 1);
});

test('an RC RDMA WRITE through an rkey lands across the MR pages without a receive CQE', async (t) => {
  const s = setup();
  const { cq, a, key } = await twoRcQps(s);
  s.mem(page(80) + 0x800n).fill(0x5a, 0, 0x900);
  postSend(s, a, 0, { wrId: 1n, opcode: 0, sges: [[0x7000_0800n, 0x900, key]], remote: [0x7000_1700n, key] });
  const c = await cqe(s, cq, 1);
  t.like(c, { produced: 1, status: 0, opcode: 1, byteLen: 0x900 });
  // IOVA 0x70001700 is page 81 offset 0x700; 0x900 bytes run into page 82 by 0x0
  t.is(s.mem(page(81) + 0x700n).readUInt8(0), 0x5a);
  t.is(s.mem(page(81) + 0xfffn).readUInt8(0), 0x5a);
  t.is(s.mem(page(82)).readUInt8(0), 0x00);
});

test('a UD SEND to another device on the fabric, addressed by its GID, arrives after a 40-byte GRH space with the GRH flag', async (t) => {
  const fabric = new Fabric();
  const s = setup('msix', fabric);
  const r = setup('msix', fabric);
  const ends = [];
  for (const [dev, gid] of [[s, GID_A], [r, GID_B]] as const) {
    await activate(dev);
    await bindGid(dev, gid);
    const pd = await createPd(dev);
    const cq = await createCq(dev, 40);
    const qp = await createQp(dev, 50, pd, cq.handle, 4);
    await connect(dev, qp, false, 0, gid);
    const key = await createMr(dev, 70, pd, 0x4000_0000n, 4096, [page(80)]);
    ends.push({ cq, qp, key });
  }
  const [tx, rx] = ends;
  postRecv(r, rx.qp, 0, 7n, 0x4000_0000n, 40 + 32, rx.key);
  s.mem(page(80)).write('datagram', 'utf8');
  postSend(s, tx.qp, 0, { wrId: 9n, opcode: 2, sges: [[0x4000_0000n, 8, tx.key]], ud: [rx.qp.qpn, 0x11111111, GID_B] });
  const c = await cqe(r, rx.cq, 1);
  t.like(c, { produced: 1, wrId: 7n, opcode: 128, status: 0, byteLen: 48, srcQp: tx.qp.qpn });
  t.is(c.wcFlags & 1, 1);
  t.is(r.mem(page(80) + 40n).toString('utf8', 0, 8), 'datagram');
});

test('a send WQE claiming more SGEs than the QP holds completes LOC_LEN_ERR, and the next WQE is flushed', async (t) => {
  const s = setup();
  const { cq, a, key } = await twoRcQps(s);
  postSend(s, a, 0, { wrId: 1n, opcode: 2, sges: [[0x7000_0800n, 4, key]], numSge: 200 });
  t.like(await cqe(s, cq, 1), { wrId: 1n, status: 1 });
  postSend(s, a, 1, { wrId: 2n, opcode: 2, sges: [[0x7000_0800n, 4, key]] });
  t.like(await cqe(s, cq, 2), { wrId: 2n, status: 5 });
  t.is(s.dev.objects.qps.get(a.handle)?.state, 6);
});

test('a send ring index beyond twice the ring size puts the QP in error with QP_FATAL instead of reading outside the ring', async (t) => {
  const s = setup();
  const { a } = await twoRcQps(s);
  const events = s.dev.counters.events;
  s.mem(a.ring).writeUInt32LE(0x1000, 0);
  s.uar(0, UAR_QP_SEND + a.handle);
  for (let k = 0; k < 50 && s.dev.objects.qps.get(a.handle)?.state !== 6; k++) await tick();
  t.is(s.dev.objects.qps.get(a.handle)?.state, 6);
  t.is(s.dev.counters.events, events + 1);
  t.true(s.dev.guestErrors.count() > 0);
});

test('a send whose lkey names no MR completes LOC_PROT_ERR', async (t) => {
  const s = setup();
  const { cq, a, key } = await twoRcQps(s);
  postSend(s, a, 0, { wrId: 3n, opcode: 2, sges: [[0x7000_0800n, 4, key ^ 0xff00]] });
  t.like(await cqe(s, cq, 1), { wrId: 3n, status: 4 });
});

test('CREATE_MR whose page directory is outside guest memory gets err set and no MR', async (t) => {
  const s = setup();
  await activate(s);
  const pd = await createPd(s);
  const r = await command(s, abi.Cmd.CreateMr, (b) => {
    b.writeBigUInt64LE(0x1000n, 16);
    b.writeBigUInt64LE(4096n, 24);
    b.writeBigUInt64LE(0xdead_0000_0000n, 32);
    b.writeUInt32LE(pd, 40);
    b.writeUInt32LE(1, 52);
  });
  t.not(r.readUInt8(12), 0);
  t.is(s.dev.objects.mrs.size, 0);
});

test('CREATE_QP whose send WQEs do not fit its send pages gets err set and no QP', async (t) => {
  const s = setup();
  await activate(s);
  const pd = await createPd(s);
  const cq = await createCq(s, 40);
  // 64 WQEs of 128 bytes need 2 pages, but send_chunks is 1
  const r = await createQpCommand(s, 50, pd, cq.handle, 2, 64);
  t.not(r.readUInt8(12), 0);
  t.is(s.dev.objects.qps.size, 0);
});
