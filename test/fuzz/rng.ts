// A small seeded PRNG (sfc32) so every fuzz run is reproducible from its seed.

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    // splitmix32 spreads a small integer seed over the whole state
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** A uniform u32. */
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** A u32 that is often a boundary value (0, 1, powers of two and their neighbours, all-ones). */
  interestingU32(): number {
    switch (this.below(6)) {
      case 0:
        return this.pick([0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 20, 24, 31, 32, 33, 63, 64, 255, 256, 4095, 4096, 4097, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff]);
      case 1: {
        const p = 2 ** this.below(32);
        return (p + this.pick([-1, 0, 1])) >>> 0;
      }
      case 2:
        return this.below(64);
      default:
        return this.u32();
    }
  }

  /** A u64 that is often a boundary value (page edges, 2^63, 2^64-1, values near BAR and memory sizes). */
  interestingU64(): bigint {
    switch (this.below(6)) {
      case 0:
        return this.pick([0n, 1n, 8n, 0xfffn, 0x1000n, 0x1001n, 0x10000n, 0x100000n, 0xffffffffn, 0x100000000n, 1n << 63n, (1n << 64n) - 1n, (1n << 64n) - 0x1000n]);
      case 1: {
        const p = 1n << BigInt(this.below(64));
        return (p + BigInt(this.pick([-1, 0, 1]))) & ((1n << 64n) - 1n);
      }
      case 2:
        return BigInt(this.below(0x20000)) & ~3n;
      default:
        return this.u64();
    }
  }
}
