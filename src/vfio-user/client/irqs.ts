// The client's IRQ eventfds: one per (IRQ index, vector) it handed the server, and who waits on each.
import { closeQuietly, eventfdConsume } from '../../../ffi/libc';

export interface IrqSlot {
  readonly fd: number;
  waiters: ((count: bigint) => void)[];
}

export class IrqEventfds {
  private readonly slots = new Map<string, IrqSlot>();

  private slot(index: number, vector: number): IrqSlot | undefined {
    return this.slots.get(`${index}:${vector}`);
  }

  /** The server accepted fds for vectors [start, start + fds.length): they replace older ones, keeping their waiters. */
  replace(index: number, start: number, fds: readonly number[]): void {
    fds.forEach((fd, i) => {
      const key = `${index}:${start + i}`;
      const old = this.slots.get(key);
      if (old) closeQuietly(old.fd);
      this.slots.set(key, { fd, waiters: old?.waiters ?? [] });
    });
  }

  /** Closes every eventfd of an IRQ index. */
  removeIndex(index: number): void {
    for (const [key, slot] of [...this.slots]) {
      if (key.startsWith(`${index}:`)) {
        closeQuietly(slot.fd);
        this.slots.delete(key);
      }
    }
  }

  /** How many times (index, vector) fired since last asked, without waiting; 0n when none. */
  take(index: number, vector: number): bigint {
    const s = this.slot(index, vector);
    if (s === undefined) throw new Error(`no eventfd set for IRQ ${index}:${vector}`);
    return eventfdConsume(s.fd);
  }

  /**
   * Resolves with the eventfd count once (index, vector) has fired (immediately if it already
   * has). `wake` tells the connection's loop to start watching the eventfd.
   */
  wait(index: number, vector: number, timeoutMs: number, wake: () => void): Promise<bigint> {
    const s = this.slot(index, vector);
    if (s === undefined) return Promise.reject(new Error(`no eventfd set for IRQ ${index}:${vector}`));
    const now = eventfdConsume(s.fd);
    if (now > 0n) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        s.waiters = s.waiters.filter((w) => w !== done);
        reject(new Error(`IRQ ${index}:${vector} did not fire within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (n: bigint): void => {
        clearTimeout(timer);
        resolve(n);
      };
      s.waiters.push(done);
      wake();
    });
  }

  /** The eventfds someone waits on: what the loop polls. */
  watched(): IrqSlot[] {
    return [...this.slots.values()].filter((s) => s.waiters.length > 0);
  }

  /** The slot's eventfd polled readable: its count goes to the first waiter. */
  deliver(s: IrqSlot): void {
    if (s.waiters.length === 0) return;
    const n = eventfdConsume(s.fd);
    if (n === 0n) return;
    s.waiters.shift()!(n);
  }

  closeAll(): void {
    for (const s of this.slots.values()) closeQuietly(s.fd);
    this.slots.clear();
  }
}
