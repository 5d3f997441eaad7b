// The NIC's data path (docs/device.md 7) as test bodies over two sides, so every case runs on every transport, in loopback and between two devices.
import type { ExecutionContext } from 'ava';
import type { Fabric } from '../emulator/datapath/fabric';
import { ACC, connect, CS, type DpQp, pattern, QPS, QPT, readyUd, type Side, WF, WOP } from '../src/testing/nic-data';

export interface DataEnv {
  /** The requester's side and the responder's side (one device in loopback, two devices otherwise). */
  readonly a: Side;
  readonly b: Side;
  readonly fabric: Fabric;
}

export type DataCase = (t: ExecutionContext, env: DataEnv) => Promise<void>;

/** An RC QP on each side, connected to each other. */
async function rcPair(env: DataEnv, o: Parameters<typeof connect>[4] = {}, bo: Parameters<typeof connect>[4] = o): Promise<{ qa: DpQp; qb: DpQp }> {
  const qa = await env.a.qp(QPT.RC);
  const qb = await env.b.qp(QPT.RC);
  await connect(env.a, qa, env.b.lid, qb.qpn, o);
  await connect(env.b, qb, env.a.lid, qa.qpn, bo);
  return { qa, qb };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export const DATA_CASES: ReadonlyArray<readonly [string, DataCase]> = [
  [
    'RC SEND gathers two SGEs into three receive SGEs byte for byte, with the sender named in the receive CQE',
    async (t, env) => {
      const { a, b } = env;
      const { qa, qb } = await rcPair(env);
      const data = pattern(5000, 1);
      const s0 = a.buffer(3000, data.subarray(0, 3000));
      const s1 = a.buffer(2000, data.subarray(3000));
      const k0 = await a.mr(s0, 3000, 0);
      const k1 = await a.mr(s1, 2000, 0);
      const r = b.buffer(6000, 0xee);
      const rk = await b.mr(r, 6000, ACC.LOCAL_WRITE);
      b.recv(qb, 0xb0b0n, [
        { addr: r, length: 1000, lkey: rk },
        { addr: r + 1000n, length: 1000, lkey: rk },
        { addr: r + 2000n, length: 4000, lkey: rk },
      ]);
      a.post(qa, { opcode: WOP.SEND, wrId: 0xa0a0n, sges: [{ addr: s0, length: 3000, lkey: k0 }, { addr: s1, length: 2000, lkey: k1 }] });
      const sc = await a.poll('the send CQE');
      t.like(sc, { wrId: 0xa0a0n, qpn: qa.qpn, status: CS.OK, opcode: WOP.SEND, byteLen: 5000, send: true, wqeIndex: 0 });
      const rc = await b.poll('the receive CQE');
      t.like(rc, { wrId: 0xb0b0n, qpn: qb.qpn, status: CS.OK, opcode: 0x80, byteLen: 5000, send: false, srcQpn: qa.qpn, slid: a.lid, hasImm: false });
      t.deepEqual(b.dev.memRead(r, 5000), data);
      t.deepEqual(b.dev.memRead(r + 5000n, 1000), Buffer.alloc(1000, 0xee));
    },
  ],
  [
    'SEND_WITH_IMM delivers the immediate and an inline SEND delivers bytes that were never in an MR',
    async (t, env) => {
      const { a, b } = env;
      const { qa, qb } = await rcPair(env);
      const r = b.buffer(256);
      const rk = await b.mr(r, 256, ACC.LOCAL_WRITE);
      b.recv(qb, 1n, [{ addr: r, length: 128, lkey: rk }]);
      b.recv(qb, 2n, [{ addr: r + 128n, length: 128, lkey: rk }]);
      const src = a.buffer(64, pattern(64, 2));
      const k = await a.mr(src, 64, 0);
      a.post(qa, { opcode: WOP.SEND_IMM, wrId: 10n, imm: 0x12345678, flags: WF.SOLICITED, sges: [{ addr: src, length: 64, lkey: k }] });
      const inline = pattern(32, 3);
      a.post(qa, { opcode: WOP.SEND, wrId: 11n, inline });
      const [c1, c2] = await b.pollN(2, 'receive CQEs');
      t.like(c1, { wrId: 1n, status: CS.OK, byteLen: 64, hasImm: true, imm: 0x12345678, solicited: true });
      t.like(c2, { wrId: 2n, status: CS.OK, byteLen: 32, hasImm: false });
      t.deepEqual(b.dev.memRead(r, 64), pattern(64, 2));
      t.deepEqual(b.dev.memRead(r + 128n, 32), inline);
      t.deepEqual((await a.pollN(2, 'send CQEs')).map((c) => [c.wrId, c.status]), [
        [10n, CS.OK],
        [11n, CS.OK],
      ]);
    },
  ],
  [
    'RDMA WRITE places the bytes at the remote address without a receive; WRITE_WITH_IMM consumes one and reports the length',
    async (t, env) => {
      const { a, b } = env;
      const { qa, qb } = await rcPair(env);
      const data = pattern(70_000, 4);
      const src = a.buffer(data.length, data);
      const sk = await a.mr(src, data.length, 0);
      const dst = b.buffer(140_000, 0x11);
      const rkey = await b.mr(dst, 140_000, ACC.LOCAL_WRITE | ACC.REMOTE_WRITE);
      a.post(qa, { opcode: WOP.WRITE, wrId: 20n, sges: [{ addr: src, length: data.length, lkey: sk }], remoteAddr: dst + 4n, rkey });
      t.like(await a.poll('the WRITE CQE'), { wrId: 20n, status: CS.OK, opcode: WOP.WRITE, byteLen: 70_000 });
      t.deepEqual(b.dev.memRead(dst + 4n, data.length), data);
      t.deepEqual(b.dev.memRead(dst, 4), Buffer.alloc(4, 0x11));
      t.is(b.tryPoll(), null, 'a plain WRITE leaves no receive CQE');
      b.recv(qb, 21n, []);
      a.post(qa, { opcode: WOP.WRITE_IMM, wrId: 22n, imm: 0xcafe, sges: [{ addr: src, length: 1000, lkey: sk }], remoteAddr: dst + 80_000n, rkey });
      t.like(await a.poll(), { wrId: 22n, status: CS.OK, opcode: WOP.WRITE_IMM });
      t.like(await b.poll('the WRITE_WITH_IMM receive CQE'), { wrId: 21n, status: CS.OK, opcode: 0x81, byteLen: 1000, hasImm: true, imm: 0xcafe, srcQpn: qa.qpn });
      t.deepEqual(b.dev.memRead(dst + 80_000n, 1000), data.subarray(0, 1000));
    },
  ],
  [
    'RDMA READ brings the remote bytes into the local scatter list',
    async (t, env) => {
      const { a, b } = env;
      const { qa } = await rcPair(env);
      const data = pattern(9000, 5);
      const remote = b.buffer(9000, data);
      const rkey = await b.mr(remote, 9000, ACC.REMOTE_READ);
      const l = a.buffer(9000, 0);
      const lk = await a.mr(l, 9000, ACC.LOCAL_WRITE);
      a.post(qa, { opcode: WOP.READ, wrId: 30n, sges: [{ addr: l, length: 4000, lkey: lk }, { addr: l + 4000n, length: 5000, lkey: lk }], remoteAddr: remote, rkey });
      t.like(await a.poll('the READ CQE'), { wrId: 30n, status: CS.OK, opcode: WOP.READ, byteLen: 9000 });
      t.deepEqual(a.dev.memRead(l, 9000), data);
    },
  ],
  [
    'atomic compare-and-swap swaps only on a match, fetch-and-add adds, and both return the original value',
    async (t, env) => {
      const { a, b } = env;
      const { qa } = await rcPair(env);
      const word = b.buffer(16);
      b.dev.memWrite(word, Buffer.from('0500000000000000ffffffffffffffff', 'hex'));
      const rkey = await b.mr(word, 16, ACC.REMOTE_ATOMIC | ACC.LOCAL_WRITE);
      const res = a.buffer(24, 0xaa);
      const lk = await a.mr(res, 24, ACC.LOCAL_WRITE);
      a.post(qa, { opcode: WOP.CMP_SWP, wrId: 40n, compareAdd: 5n, swap: 77n, sges: [{ addr: res, length: 8, lkey: lk }], remoteAddr: word, rkey });
      a.post(qa, { opcode: WOP.CMP_SWP, wrId: 41n, compareAdd: 5n, swap: 99n, sges: [{ addr: res + 8n, length: 8, lkey: lk }], remoteAddr: word, rkey });
      a.post(qa, { opcode: WOP.FETCH_ADD, wrId: 42n, compareAdd: 3n, sges: [{ addr: res + 16n, length: 8, lkey: lk }], remoteAddr: word + 8n, rkey });
      const cs = await a.pollN(3, 'atomic CQEs');
      t.deepEqual(cs.map((c) => [c.wrId, c.status, c.byteLen]), [
        [40n, CS.OK, 8],
        [41n, CS.OK, 8],
        [42n, CS.OK, 8],
      ]);
      t.is(b.dev.memRead(word, 8).readBigUInt64LE(0), 77n, 'the first swap matched, the second did not');
      t.is(b.dev.memRead(word + 8n, 8).readBigUInt64LE(0), 2n, 'all-ones plus 3 wraps to 2');
      const r = a.dev.memRead(res, 24);
      t.deepEqual([r.readBigUInt64LE(0), r.readBigUInt64LE(8), r.readBigUInt64LE(16)], [5n, 77n, 0xffffffffffffffffn]);
    },
  ],
  [
    'UD SEND through an address handle lands after 40 GRH bytes with the sender named, and a wrong qkey is dropped',
    async (t, env) => {
      const { a, b } = env;
      const qa = await a.qp(QPT.UD);
      const qb = await b.qp(QPT.UD);
      await readyUd(a, qa, 0x1111);
      await readyUd(b, qb, 0x2222);
      const ah = await a.createAh(b.lid);
      const r = b.buffer(200, 0xee);
      const rk = await b.mr(r, 200, ACC.LOCAL_WRITE);
      b.recv(qb, 50n, [{ addr: r, length: 200, lkey: rk }]);
      const msg = pattern(100, 6);
      const src = a.buffer(100, msg);
      const sk = await a.mr(src, 100, 0);
      a.post(qa, { opcode: WOP.SEND, wrId: 51n, ah, remoteQpn: qb.qpn, qkey: 0x3333, sges: [{ addr: src, length: 100, lkey: sk }] });
      t.like(await a.poll(), { wrId: 51n, status: CS.OK }, 'UD: the sender completes OK although nothing was delivered');
      a.post(qa, { opcode: WOP.SEND_IMM, wrId: 52n, imm: 7, ah, remoteQpn: qb.qpn, qkey: 0x2222, sges: [{ addr: src, length: 100, lkey: sk }] });
      t.like(await a.poll(), { wrId: 52n, status: CS.OK });
      t.like(await b.poll('the UD receive'), { wrId: 50n, status: CS.OK, byteLen: 140, srcQpn: qa.qpn, slid: a.lid, hasImm: true, imm: 7 });
      t.deepEqual(b.dev.memRead(r, 40), Buffer.alloc(40));
      t.deepEqual(b.dev.memRead(r + 40n, 100), msg);
      t.is(b.tryPoll(), null, 'the wrong-qkey message consumed no receive');
    },
  ],
  [
    'UC: an RDMA WRITE lands and a SEND without a posted receive is dropped while the sender completes OK',
    async (t, env) => {
      const { a, b } = env;
      const qa = await a.qp(QPT.UC);
      const qb = await b.qp(QPT.UC);
      await connect(a, qa, b.lid, qb.qpn);
      await connect(b, qb, a.lid, qa.qpn);
      const dst = b.buffer(64, 0x77);
      const rkey = await b.mr(dst, 64, ACC.REMOTE_WRITE);
      a.post(qa, { opcode: WOP.WRITE, wrId: 55n, inline: pattern(24, 13), remoteAddr: dst + 8n, rkey });
      t.like(await a.poll(), { wrId: 55n, status: CS.OK, byteLen: 24 });
      t.deepEqual(b.dev.memRead(dst + 8n, 24), pattern(24, 13));
      a.post(qa, { opcode: WOP.SEND, wrId: 56n, inline: Buffer.from([1, 2, 3]) });
      t.like(await a.poll(), { wrId: 56n, status: CS.OK }, 'UC has no RNR: the message is lost, not retried');
      const r = b.buffer(16, 0xee);
      const rk = await b.mr(r, 16, ACC.LOCAL_WRITE);
      b.recv(qb, 57n, [{ addr: r, length: 16, lkey: rk }]);
      // UC does not retry: give b's device time to see the RQ doorbell (it polls at least every 10 ms, docs/device.md 7).
      await sleep(50);
      a.post(qa, { opcode: WOP.SEND, wrId: 58n, inline: Buffer.from([4, 5, 6]) });
      t.like(await a.poll(), { wrId: 58n, status: CS.OK });
      t.like(await b.poll(), { wrId: 57n, status: CS.OK, byteLen: 3, srcQpn: qa.qpn });
      t.deepEqual(b.dev.memRead(r, 4), Buffer.from([4, 5, 6, 0xee]), 'only the SEND sent after the receive arrived');
      a.post(qa, { opcode: WOP.READ, wrId: 59n, sges: [{ addr: r, length: 4, lkey: rk }], remoteAddr: dst, rkey });
      t.like(await a.poll(), { wrId: 59n, status: CS.LOC_QP_OP }, 'UC carries no RDMA READ');
    },
  ],
  [
    'unsignaled WQEs leave no CQE and the next signaled CQE names the later WQE index',
    async (t, env) => {
      const { a, b } = env;
      const { qa } = await rcPair(env);
      const dst = b.buffer(64);
      const rkey = await b.mr(dst, 64, ACC.REMOTE_WRITE);
      for (let i = 0; i < 3; i++) a.post(qa, { opcode: WOP.WRITE, wrId: BigInt(60 + i), flags: WF.UNSIGNALED, inline: Buffer.from([i + 1]), remoteAddr: dst + BigInt(i), rkey });
      a.post(qa, { opcode: WOP.WRITE, wrId: 63n, inline: Buffer.from([4]), remoteAddr: dst + 3n, rkey });
      t.like(await a.poll(), { wrId: 63n, wqeIndex: 3, status: CS.OK });
      t.is(a.tryPoll(), null);
      t.deepEqual(b.dev.memRead(dst, 4), Buffer.from([1, 2, 3, 4]));
    },
  ],
  [
    'LOC_LEN: inline data over 32 bytes fails on the sender, the QP goes to ERR and the next WQE is FLUSHED',
    async (t, env) => {
      const { a, b } = env;
      const { qa } = await rcPair(env);
      const dst = b.buffer(64, 0x55);
      const rkey = await b.mr(dst, 64, ACC.REMOTE_WRITE);
      const w = { opcode: WOP.WRITE, wrId: 70n, inline: pattern(32, 7), remoteAddr: dst, rkey };
      const index = a.post(qa, w, false);
      // The layout caps inline data at 32 bytes; claim 33 in the length byte.
      const wqe = a.dev.memRead(qa.sq + BigInt(64 * index), 64);
      wqe[3] = 33;
      a.dev.memWrite(qa.sq + BigInt(64 * index), wqe);
      a.ringSq(qa);
      a.post(qa, { opcode: WOP.WRITE, wrId: 71n, inline: Buffer.from([1]), remoteAddr: dst, rkey });
      const [c1, c2] = await a.pollN(2);
      t.like(c1, { wrId: 70n, status: CS.LOC_LEN, byteLen: 0 });
      t.like(c2, { wrId: 71n, status: CS.FLUSHED });
      t.deepEqual(b.dev.memRead(dst, 64), Buffer.alloc(64, 0x55), 'nothing reached the remote memory');
    },
  ],
  [
    'a SEND longer than the receive WQE: LOC_LEN at the receiver, REM_INV_REQ at the sender',
    async (t, env) => {
      const { a, b } = env;
      const { qa, qb } = await rcPair(env);
      const r = b.buffer(64, 0xee);
      const rk = await b.mr(r, 64, ACC.LOCAL_WRITE);
      b.recv(qb, 80n, [{ addr: r, length: 16, lkey: rk }]);
      b.recv(qb, 81n, [{ addr: r + 32n, length: 16, lkey: rk }]);
      a.post(qa, { opcode: WOP.SEND, wrId: 82n, inline: pattern(17, 8) });
      t.like(await a.poll(), { wrId: 82n, status: CS.REM_INV_REQ });
      const [r1, r2] = await b.pollN(2, 'the receiver CQEs');
      t.like(r1, { wrId: 80n, status: CS.LOC_LEN });
      t.like(r2, { wrId: 81n, status: CS.FLUSHED }, 'the receiver QP went to ERR and flushed the rest');
      t.deepEqual(b.dev.memRead(r, 64), Buffer.alloc(64, 0xee));
    },
  ],
  [
    'LOC_PROT: an lkey naming no MR, an SGE past the end of its MR, an MR of another PD, a READ into an MR without LOCAL_WRITE',
    async (t, env) => {
      const { a, b } = env;
      const dst = b.buffer(4096);
      const rkey = await b.mr(dst, 4096, ACC.REMOTE_WRITE | ACC.REMOTE_READ);
      const src = a.buffer(4096, 1);
      const k = await a.mr(src, 1024, ACC.LOCAL_WRITE);
      const otherPd = await a.drv.createPd();
      const kOther = await a.mr(src, 1024, ACC.LOCAL_WRITE, otherPd);
      const kRo = await a.mr(src, 1024, 0);
      const bad = [
        { opcode: WOP.WRITE, sge: { addr: src, length: 8, lkey: (k + 0x100) >>> 0 } },
        { opcode: WOP.WRITE, sge: { addr: src + 1000n, length: 25, lkey: k } },
        { opcode: WOP.WRITE, sge: { addr: src, length: 8, lkey: kOther } },
        { opcode: WOP.READ, sge: { addr: src, length: 8, lkey: kRo } },
      ];
      for (const [i, w] of bad.entries()) {
        const { qa } = await rcPair(env);
        a.post(qa, { opcode: w.opcode, wrId: BigInt(90 + i), sges: [w.sge], remoteAddr: dst, rkey });
        t.like(await a.poll(), { wrId: BigInt(90 + i), status: CS.LOC_PROT }, `case ${i}`);
      }
      t.deepEqual(b.dev.memRead(dst, 64), Buffer.alloc(64), 'nothing was written remotely');
    },
  ],
  [
    'REM_ACCESS: an rkey of an MR without REMOTE_WRITE, a write past the MR, a responder QP without remote write access',
    async (t, env) => {
      const { a, b } = env;
      const dst = b.buffer(4096, 0x33);
      const roKey = await b.mr(dst, 4096, ACC.REMOTE_READ);
      const rwKey = await b.mr(dst, 1024, ACC.REMOTE_WRITE);
      const cases: Array<{ rkey: number; addr: bigint; qpAccess?: number }> = [
        { rkey: roKey, addr: dst },
        { rkey: rwKey, addr: dst + 1020n },
        { rkey: rwKey, addr: dst, qpAccess: ACC.REMOTE_READ },
      ];
      for (const [i, c] of cases.entries()) {
        const { qa } = await rcPair(env, {}, { access: c.qpAccess });
        a.post(qa, { opcode: WOP.WRITE, wrId: BigInt(100 + i), inline: pattern(8, 9), remoteAddr: c.addr, rkey: c.rkey });
        t.like(await a.poll(), { wrId: BigInt(100 + i), status: CS.REM_ACCESS }, `case ${i}`);
      }
      t.deepEqual(b.dev.memRead(dst, 4096), Buffer.alloc(4096, 0x33));
    },
  ],
  [
    'REM_INV_REQ: a misaligned atomic; REM_OP: a receive buffer without LOCAL_WRITE at the responder',
    async (t, env) => {
      const { a, b } = env;
      const word = b.buffer(16);
      const rkey = await b.mr(word, 16, ACC.REMOTE_ATOMIC);
      const res = a.buffer(8);
      const lk = await a.mr(res, 8, ACC.LOCAL_WRITE);
      const p1 = await rcPair(env);
      a.post(p1.qa, { opcode: WOP.FETCH_ADD, wrId: 110n, compareAdd: 1n, sges: [{ addr: res, length: 8, lkey: lk }], remoteAddr: word + 4n, rkey });
      t.like(await a.poll(), { wrId: 110n, status: CS.REM_INV_REQ });
      t.deepEqual(b.dev.memRead(word, 16), Buffer.alloc(16));
      const p2 = await rcPair(env);
      const r = b.buffer(64);
      const roKey = await b.mr(r, 64, 0);
      b.recv(p2.qb, 111n, [{ addr: r, length: 64, lkey: roKey }]);
      a.post(p2.qa, { opcode: WOP.SEND, wrId: 112n, inline: pattern(8, 10) });
      t.like(await a.poll(), { wrId: 112n, status: CS.REM_OP });
      t.like(await b.poll(), { wrId: 111n, status: CS.LOC_PROT });
    },
  ],
  [
    'WR_FLUSH: MODIFY_QP to ERR completes every posted receive and every later send as FLUSHED, in order',
    async (t, env) => {
      const { a } = env;
      const { qa } = await rcPair(env);
      const r = a.buffer(64);
      const rk = await a.mr(r, 64, ACC.LOCAL_WRITE);
      a.recv(qa, 120n, [{ addr: r, length: 32, lkey: rk }]);
      a.recv(qa, 121n, [{ addr: r + 32n, length: 32, lkey: rk }]);
      t.is(await a.modify(qa.qpn, QPS.ERR), 0);
      a.post(qa, { opcode: WOP.SEND, wrId: 122n, inline: Buffer.from([1]) });
      const cs = await a.pollN(3);
      t.deepEqual(
        cs.map((c) => [c.wrId, c.status, c.send]),
        [
          [120n, CS.FLUSHED, false],
          [121n, CS.FLUSHED, false],
          [122n, CS.FLUSHED, true],
        ],
      );
    },
  ],
  [
    'RNR: a SEND waits for a receive posted late (rnr_retry 7), and with rnr_retry 1 and none posted ends RNR_RETRY_EXC',
    async (t, env) => {
      const { a, b } = env;
      const { qa, qb } = await rcPair(env, { rnrRetry: 7 });
      a.post(qa, { opcode: WOP.SEND, wrId: 130n, inline: pattern(20, 11) });
      await sleep(30);
      t.is(a.tryPoll(), null, 'no completion while the receiver is not ready');
      const r = b.buffer(32);
      const rk = await b.mr(r, 32, ACC.LOCAL_WRITE);
      b.recv(qb, 131n, [{ addr: r, length: 32, lkey: rk }]);
      t.like(await a.poll(), { wrId: 130n, status: CS.OK });
      t.like(await b.poll(), { wrId: 131n, status: CS.OK, byteLen: 20 });
      t.deepEqual(b.dev.memRead(r, 20), pattern(20, 11));
      const p2 = await rcPair(env, { rnrRetry: 1 });
      a.post(p2.qa, { opcode: WOP.SEND, wrId: 132n, inline: pattern(20, 12) });
      t.like(await a.poll(), { wrId: 132n, status: CS.RNR_RETRY_EXC });
    },
  ],
  [
    'RETRY_EXC: a peer QP that does not exist, and a wire that drops every packet, end after retry_cnt retries',
    async (t, env) => {
      const { a, b, fabric } = env;
      const qa = await a.qp(QPT.RC);
      await connect(a, qa, b.lid, 0xfff0, { timeout: 8, retry: 2 });
      a.post(qa, { opcode: WOP.SEND, wrId: 140n, inline: Buffer.from([1]) });
      t.like(await a.poll(), { wrId: 140n, status: CS.RETRY_EXC });
      const { qa: q2 } = await rcPair(env, { timeout: 8, retry: 3 });
      const before = fabric.stats.dropped;
      fabric.setFaults({ seed: 1, drop: 1 });
      a.post(q2, { opcode: WOP.SEND, wrId: 141n, inline: Buffer.from([1]) });
      t.like(await a.poll(), { wrId: 141n, status: CS.RETRY_EXC });
      fabric.setFaults(null);
      t.is(fabric.stats.dropped - before, 4, 'the first try and three retries');
    },
  ],
  [
    'LOC_QP_OP: an RDMA READ on a UD QP and a send WQE with three SGEs',
    async (t, env) => {
      const { a } = env;
      const ud = await a.qp(QPT.UD);
      await readyUd(a, ud, 1);
      const ah = await a.createAh(a.lid);
      a.post(ud, { opcode: WOP.READ, wrId: 150n, ah, remoteQpn: ud.qpn });
      t.like(await a.poll(), { wrId: 150n, status: CS.LOC_QP_OP });
      const { qa } = await rcPair(env);
      a.post(qa, { opcode: WOP.SEND, wrId: 151n, numSge: 3 });
      t.like(await a.poll(), { wrId: 151n, status: CS.LOC_QP_OP });
    },
  ],
  [
    'a wire that drops, corrupts and delays packets from a seed still delivers every WRITE intact by retransmission, and the same seed gives the same faults',
    async (t, env) => {
      const { a, b, fabric } = env;
      const run = async (seed: number): Promise<{ dropped: number; icrc: number; delayed: number; retries: number }> => {
        // A delay far below the ACK timeout (67 ms), even on a loaded machine, keeps one packet on the wire at a time, so the fault sequence is the seed's alone.
        const { qa } = await rcPair(env, { timeout: 14, retry: 7 });
        const dst = b.buffer(16 * 512);
        const rkey = await b.mr(dst, 16 * 512, ACC.REMOTE_WRITE);
        const src = a.buffer(16 * 512, pattern(16 * 512, seed));
        const sk = await a.mr(src, 16 * 512, 0);
        const s0 = { ...fabric.stats };
        fabric.setFaults({ seed, drop: 0.2, corrupt: 0.2, delay: 0.2, delayMs: 2, jitterMs: 0 });
        for (let i = 0; i < 16; i++) {
          a.post(qa, { opcode: WOP.WRITE, wrId: BigInt(i), sges: [{ addr: src + BigInt(512 * i), length: 512, lkey: sk }], remoteAddr: dst + BigInt(512 * i), rkey, flags: i < 15 ? WF.UNSIGNALED : 0 });
        }
        const c = await a.poll('the last WRITE', 30_000);
        fabric.setFaults(null);
        t.like(c, { wrId: 15n, status: CS.OK });
        t.deepEqual(b.dev.memRead(dst, 16 * 512), pattern(16 * 512, seed));
        const s1 = fabric.stats;
        return { dropped: s1.dropped - s0.dropped, icrc: s1.icrcErrors - s0.icrcErrors, delayed: s1.delayed - s0.delayed, retries: s1.packets - s0.packets - 32 };
      };
      const first = await run(42);
      t.true(first.dropped > 0 && first.icrc > 0 && first.delayed > 0, JSON.stringify(first));
      t.deepEqual(await run(42), first);
    },
  ],
];
