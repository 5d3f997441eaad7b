// What an unplug run saw, gathered from the guest's report, its console, QMP and QEMU's invalid_mem log.
import type { VanishMode } from '../control/protocol';

import type { DriverBug } from '../../guest/kit/image';

export { DRIVER_BUGS, type DriverBug } from '../../guest/kit/image';

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
  /**
   * Which uverbs file (context) it maps, as the program names it (`uarN`: the context's first UAR
   * index, the same for every process that shares the file through fork or SCM_RIGHTS). The core
   * gives every writable mapping of one file the same dummy page; null when not reported.
   */
  readonly file?: string | null;
  /** The program could write through it (a read-only piece of a split is not). */
  readonly writable?: boolean;
  /** Where it pointed once the program had touched it, with the device alive. */
  readonly before: PfnState | null;
  /** Where it pointed at the end of the watch, after the removal (null: never walked after). */
  readonly after: PfnState | null;
  /**
   * What reads showed after the removal: 'zero', 'own-writes', 'device' (the doorbell values
   * written while the device was alive) or 'other'; null if never read after.
   */
  readonly viewAfter: string | null;
  /**
   * Reads after the removal that the helper's walk found served by a frame inside BAR2: the
   * mapping still reached where the device was (QEMU's unassigned space once it removed the BAR).
   */
  readonly barReadsAfterGone: number;
  /** The last read after the removal: the doorbell word and the program's scratch word. */
  readonly lastDoorbell?: bigint | null;
  readonly lastScratch?: bigint | null;
  /** What the program had written to its scratch word before that read (null: it writes nothing here). */
  readonly expectScratch?: bigint | null;
  /**
   * The dummy-page test at the end of the watch: a token written through one mapping of the file
   * and read through another of the same file in the same process (null: no such peer).
   */
  readonly echo?: { readonly peer: string; readonly wrote: bigint; readonly read: bigint; readonly seen: boolean } | null;
  /** The last doorbell and scratch words read, for the detail line. */
  readonly lastRead: string;
}

/** The guest's own account, after the program, of whether the device left it. */
export interface GuestDeviceView {
  /** PCI functions with the device's vendor:device (1234:7a01) still in /sys/bus/pci/devices. */
  readonly pci: readonly string[];
  /** ib devices still in /sys/class/infiniband whose name is the driver's (vrnic*). */
  readonly ib: readonly string[];
  /** How long /init waited for them to leave before listing (ms), when it says. */
  readonly waitedMs: number | null;
}

/** The guest's canary: a read, made on purpose before the vanish, of an address nothing decodes. */
export interface Canary {
  readonly addr: bigint;
  /** What the read returned, as the guest printed it. */
  readonly read: string;
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
  /** The guest's own listing after the program (null: /init printed none). */
  readonly guestView: GuestDeviceView | null;
  /** The guest kernel's lines from the console (at console loglevel: warnings and worse) and /init's dmesg dump. */
  readonly kernelLog: string;
  /** Whether /init's dmesg dump arrived whole (dmesg-end): without it only the console was seen. */
  readonly kernelLogDumped: boolean;
  /** QEMU's -d invalid_mem log lines; null when the log file is missing or unreadable. */
  readonly invalidMem: readonly string[] | null;
  /** How many of those lines were already in the log when the vanish started (only later ones count). */
  readonly invalidMemAtVanish?: number;
  /** How each side of a ping-pong's traffic ended (vrnic-pingpong's traffic-end reports; absent when none ran). */
  readonly trafficEnds?: readonly { readonly label: string; readonly reason: string; readonly roundTrips: number; readonly atMs: number }[];
  /** The guest's canary access, which the log must show (null: the guest made none). */
  readonly canary?: Canary | null;
}
