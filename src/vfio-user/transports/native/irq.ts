// The eventfds one client set per IRQ index and sub-index (masks and delivery rules are the PCI function's).
import { readlinkSync } from 'node:fs';
import { closeQuietly, eventfdTrySignal, setNonBlocking } from '../../../../ffi/libc';
import { IrqIndex, PCI_NUM_IRQS } from '../../protocol/constants';

/** True when fd is an eventfd (so signalling it writes a counter, never a file or a pipe). */
export function isEventfd(fd: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]';
  } catch {
    return false;
  }
}

export class IrqState {
  /** Per index: eventfd per sub-index (-1 when none). */
  readonly efds: number[][];

  constructor(readonly counts: readonly number[]) {
    if (counts.length !== PCI_NUM_IRQS) throw new RangeError('one count per IRQ index');
    this.efds = counts.map((n) => new Array<number>(n).fill(-1));
  }

  /** Takes ownership of fd for (index, sub): made non-blocking, the previous one closed. */
  assign(index: number, sub: number, fd: number): void {
    setNonBlocking(fd, true);
    const row = this.efds[index]!;
    closeQuietly(row[sub]);
    row[sub] = fd;
  }

  deassign(index: number, start: number, count: number): void {
    const row = this.efds[index]!;
    const end = count === 0 ? row.length : start + count;
    for (let i = start; i < end; i++) {
      closeQuietly(row[i]);
      row[i] = -1;
    }
  }

  eventfd(index: number, sub: number): number {
    return this.efds[index]?.[sub] ?? -1;
  }

  /** Signals (index, sub); false when the client set no eventfd there. */
  signal(index: number, sub: number): boolean {
    const fd = this.eventfd(index, sub);
    return fd >= 0 && eventfdTrySignal(fd); // never blocks: assign() made the fd non-blocking
  }

  /** Closes every eventfd (client gone). */
  closeAll(): void {
    for (let i = 0; i < this.efds.length; i++) this.deassign(i, 0, 0);
  }
}

export const IRQ_INDEX_NAMES: Readonly<Record<number, string>> = {
  [IrqIndex.Intx]: 'INTx',
  [IrqIndex.Msi]: 'MSI',
  [IrqIndex.Msix]: 'MSI-X',
  [IrqIndex.Err]: 'ERR',
  [IrqIndex.Req]: 'REQ',
};
