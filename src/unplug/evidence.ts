// What an unplug run saw, gathered from the guest's report, its console, QMP and QEMU's invalid_mem log.
import type { VanishMode } from '../control/protocol';

export type DriverBug = 'none' | 'legacy-mmap' | 'no-disassociate';
export const DRIVER_BUGS: readonly DriverBug[] = ['none', 'legacy-mmap', 'no-disassociate'];

/** A guest-physical address range [start, end). */
export interface PhysRange {
  readonly name: string;
  readonly start: bigint;
  readonly end: bigint;
}

/** What the helper module's page-table walk said about the mapping. */
export type PfnState =
  | { readonly kind: 'present'; readonly phys: bigint }
  | { readonly kind: 'not-present' }
  | { readonly kind: 'no-vma' }
  | { readonly kind: 'unknown'; readonly text: string };

/** One timed observation, on the host clock (ms since the epoch). */
export interface Stamp {
  readonly atMs: number;
}

export interface UnplugEvidence {
  readonly mode: VanishMode;
  readonly driverBug: DriverBug;
  /** The device's memory BARs as the guest's PCI core placed them. */
  readonly bars: readonly PhysRange[];
  /** The UAR mapping in the guest program, before the vanish. */
  readonly mappingBefore: { readonly vaddr: bigint; readonly pfn: PfnState } | null;
  /** The same mapping after the removal (the last walk the guest program made). */
  readonly mappingAfter: PfnState | null;
  /** Words read through the mapping after the removal, and what the program wrote there after it, if anything. */
  readonly readsAfter: { readonly values: readonly bigint[]; readonly ownWrites: readonly bigint[] } | null;
  /** A value the device held before the vanish (the program wrote it through the mapping while the device lived). */
  readonly deviceData: readonly bigint[];
  /** How the guest program ended: an exit code, a signal, or not at all within the bound. */
  readonly programEnd: { readonly kind: 'exit'; readonly code: number } | { readonly kind: 'signal'; readonly signal: number } | { readonly kind: 'unknown' };
  /** When the host started the vanish. */
  readonly vanishAtMs: number;
  /** When the guest saw its ib device leave (/sys/class/infiniband entry gone), and whether its context was still open then. */
  readonly guestRemoved: (Stamp & { readonly contextOpen: boolean }) | null;
  /** When the guest program first saw its mapping off the BAR (host time of the console line). */
  readonly mappingZapped: Stamp | null;
  /** When the guest program closed its context (it does so only after removal, or when it gives up waiting). */
  readonly contextClosed: Stamp | null;
  readonly deviceDelSent: Stamp | null;
  readonly deviceDeleted: Stamp | null;
  /** After the run: the device's PCI function and ib device were gone from the guest. */
  readonly pciGone: boolean | null;
  readonly ibGone: boolean | null;
  /** The guest kernel log (console), for warnings. */
  readonly kernelLog: string;
  /** QEMU's -d invalid_mem log lines. */
  readonly invalidMem: readonly string[];
}
