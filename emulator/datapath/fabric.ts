// The wire between data path engines: ports by LID in one process, and faults (drop, delay, corrupt) injected reproducibly from a seed so retry and error paths run.
import type { DmaAccess } from '../framework/device';
import type { Segment } from './memory';
import type { WcStatus } from './model';

export const enum PacketOp {
  Send,
  SendImm,
  RdmaWrite,
  RdmaWriteImm,
  RdmaRead,
  AtomicCmpSwp,
  AtomicFetchAdd,
}

/** One message on the wire; the payload is the whole message (no segmentation). */
export interface Packet {
  readonly transport: number;
  readonly srcLid: number;
  readonly srcQpn: number;
  readonly dstLid: number;
  readonly dstQpn: number;
  readonly psn: number;
  readonly op: PacketOp;
  readonly qkey: number;
  readonly remoteAddr: bigint;
  readonly rkey: number;
  readonly imm: number | null;
  readonly solicited: boolean;
  /** RDMA READ: bytes asked for. */
  readonly readLength: number;
  readonly compareAdd: bigint;
  readonly swap: bigint;
  /** The message bytes, or empty when `source` names them. */
  payload: Buffer;
  /**
   * Where the bytes still are in the sender's guest memory, when the wire is lossless and both
   * ends can see guest memory directly: the receiver copies them guest to guest in one step.
   */
  readonly source: { readonly dma: DmaAccess; readonly segs: readonly Segment[] } | null;
  /** Message length in bytes (payload.length, or the length at `source`). */
  readonly length: number;
  /** Invariant CRC over the payload; set and checked only while a fault plan may corrupt. */
  icrc: number | null;
}

export type Reply =
  | { readonly kind: 'ack' }
  | { readonly kind: 'read'; readonly data: Buffer }
  | { readonly kind: 'atomic'; readonly value: bigint }
  | { readonly kind: 'rnr'; readonly delayMs: number }
  | { readonly kind: 'nak'; readonly status: WcStatus };

/** A port's receive side: the answer, or null when the packet is dropped without one. */
export type Endpoint = (pkt: Packet) => Promise<Reply | null>;

export interface FaultPlan {
  /** PRNG seed: the same seed and the same traffic give the same faults. */
  readonly seed: number;
  /** Probability (0..1) that a packet (request or reply) is lost. */
  readonly drop?: number;
  /** Probability that a request's payload has one bit flipped (the receiver's ICRC check drops it). */
  readonly corrupt?: number;
  /** Probability that a packet is delayed, and by how many ms (uniform in [delayMs, delayMs + jitterMs]). */
  readonly delay?: number;
  readonly delayMs?: number;
  readonly jitterMs?: number;
  /** Only the next `packets` packets are subject to faults (default: all). */
  readonly packets?: number;
}

export interface FabricStats {
  packets: number;
  dropped: number;
  corrupted: number;
  delayed: number;
  icrcErrors: number;
  unreachable: number;
}

/** mulberry32: small, fast, and its sequence is fixed by the seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

export function crc32(b: Buffer): number {
  let c = -1;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The ports of one process. Every device model that attaches gets the lowest free LID (1, 2, ...),
 * so the devices a daemon serves reach each other by LID, and each device reaches itself.
 */
export class Fabric {
  private readonly ports = new Map<number, Endpoint>();
  /** Network addresses (a RoCE device's GIDs) that name a port, for devices that address peers by them instead of by LID. */
  private readonly addresses = new Map<string, number>();
  private plan: FaultPlan | null = null;
  private rand: () => number = Math.random;
  private budget = Infinity;
  readonly stats: FabricStats = { packets: 0, dropped: 0, corrupted: 0, delayed: 0, icrcErrors: 0, unreachable: 0 };

  attach(endpoint: Endpoint): number {
    let lid = 1;
    while (this.ports.has(lid)) lid++;
    this.ports.set(lid, endpoint);
    return lid;
  }

  detach(lid: number): void {
    this.ports.delete(lid);
    for (const [addr, owner] of this.addresses) if (owner === lid) this.addresses.delete(addr);
  }

  /** `address` (e.g. a GID in hex) now names port `lid`; the newest binding of an address wins. */
  bindAddress(lid: number, address: string): void {
    if (this.ports.has(lid)) this.addresses.set(address, lid);
  }

  /** Drops `address` if port `lid` holds it. */
  unbindAddress(lid: number, address: string): void {
    if (this.addresses.get(address) === lid) this.addresses.delete(address);
  }

  /** The port an address names, or undefined. */
  resolve(address: string): number | undefined {
    return this.addresses.get(address);
  }

  /** Starts (or with null, stops) injecting faults; the PRNG restarts from the plan's seed. */
  setFaults(plan: FaultPlan | null): void {
    this.plan = plan;
    this.rand = plan === null ? Math.random : prng(plan.seed);
    this.budget = plan?.packets ?? Infinity;
  }

  get faults(): FaultPlan | null {
    return this.plan;
  }

  /** Decides this packet's fate: lost, delayed by ms, corrupted. */
  private fate(): { drop: boolean; delayMs: number; corrupt: boolean } {
    const p = this.plan;
    if (p === null || this.budget <= 0) return { drop: false, delayMs: 0, corrupt: false };
    this.budget--;
    // Always draw the same number of values per packet, so one fault does not shift the others.
    const d = this.rand();
    const c = this.rand();
    const l = this.rand();
    const j = this.rand();
    const delayMs = l < (p.delay ?? 0) ? (p.delayMs ?? 0) + j * (p.jitterMs ?? 0) : 0;
    return { drop: d < (p.drop ?? 0), delayMs, corrupt: c < (p.corrupt ?? 0) };
  }

  /** Carries a request to its port and the reply back; null when either was lost or nobody answered. */
  async transmit(pkt: Packet): Promise<Reply | null> {
    const st = this.stats;
    st.packets++;
    const out = this.fate();
    if (this.plan !== null) pkt.icrc = crc32(pkt.payload);
    if (out.delayMs > 0) {
      st.delayed++;
      await sleep(out.delayMs);
    }
    if (out.drop) {
      st.dropped++;
      return null;
    }
    if (out.corrupt && pkt.payload.length > 0) {
      st.corrupted++;
      // The wire damages its own copy; the sender's memory is untouched.
      const copy = Buffer.from(pkt.payload);
      const bit = Math.floor(this.rand() * copy.length * 8);
      copy[bit >> 3] ^= 1 << (bit & 7);
      pkt = { ...pkt, payload: copy };
    }
    if (pkt.icrc !== null && crc32(pkt.payload) !== pkt.icrc) {
      st.icrcErrors++;
      return null;
    }
    const port = this.ports.get(pkt.dstLid);
    if (port === undefined) {
      st.unreachable++;
      return null;
    }
    const reply = await port(pkt);
    if (reply === null) return null;
    const back = this.fate();
    if (back.delayMs > 0) {
      st.delayed++;
      await sleep(back.delayMs);
    }
    if (back.drop) {
      st.dropped++;
      return null;
    }
    return reply;
  }
}

let processFabric: Fabric | null = null;

/** The fabric every device of this process shares unless given its own. */
export function sharedFabric(): Fabric {
  processFabric ??= new Fabric();
  return processFabric;
}
