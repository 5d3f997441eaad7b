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

/** What one watched mapping showed. */
export interface MappingEvidence {
  /** The program's name for it: uar0, parent, child, page0, ... */
  readonly label: string;
  /** The guest process that watched it (-1 when the report had no pid). */
  readonly pid?: number;
  /** Where it pointed once the program had touched it, with the device alive. */
  readonly before: PfnState | null;
  /** Where it pointed at the end of the watch, after the removal (null: never walked after). */
  readonly after: PfnState | null;
  /**
   * What reads showed after the removal: 'zero', 'own-writes' (what the program wrote after the
   * removal), 'device' (the doorbell values the device page held) or 'other'; null if never read after.
   */
  readonly viewAfter: string | null;
  /**
   * The doorbell word the last read after the removal gave (null when unknown). When it is zero,
   * a 'device' view cannot be told from 'own-writes': the program expected zero because the
   * mapping was already zapped when it read its expectation (a vanish during setup).
   */
  readonly doorbellAfter?: bigint | null;
  /** Probes after the removal that still read the device's contents. */
  readonly deviceDataAfterGone: number;
  /** The last doorbell and scratch words read, for the detail line. */
  readonly lastRead: string;
}

/** One timed observation, on the host clock (ms since the epoch). */
export interface Stamp {
  readonly atMs: number;
}

export interface UnplugEvidence {
  readonly mode: VanishMode;
  readonly driverBug: DriverBug;
  /** The device's memory BARs as the guest's PCI core placed them. */
  readonly bars: readonly PhysRange[];
  /** Every UAR mapping the guest program watched (one per process and piece), before and after the removal. */
  readonly mappings: readonly MappingEvidence[];
  /** How the guest program ended: an exit code, a fatal signal on the mapping, or not at all within the bound. */
  readonly programEnd:
    | { readonly kind: 'exit'; readonly code: number }
    | { readonly kind: 'signal'; readonly signal: string; readonly addr: string }
    | { readonly kind: 'unknown' };
  /**
   * Processes other than the program's main one that died by a signal (a forked child, a
   * receiver, a race-close worker), each named with its pid and label; empty when none did.
   */
  readonly processFailures?: readonly string[];
  /** What the driver's remove printed ("remove: done in N ms"), when it ran. */
  readonly driverRemoveMs?: number | null;
  /** When the host started the vanish (for a vanish armed at a device event: when the device saw the event). */
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
  /** How pciGone and ibGone were found out (a guest listing, or inferred from the events). */
  readonly goneHow: string;
  /** The guest kernel log (console), for warnings. */
  readonly kernelLog: string;
  /** QEMU's -d invalid_mem log lines. */
  readonly invalidMem: readonly string[];
}
