// The unplug scenarios: what the guest runs, when the device vanishes, and which checks judge it.
import type { GuestScenario } from '../../guest/kit/image';
import type { NicConfigInput } from '../../emulator/nic/config';
import { DEFAULT_CHECKS, type CheckName } from './checks';

export type ScenarioName =
  | 'single'
  | 'fork'
  | 'fd-passing'
  | 'split'
  | 'many'
  | 'race-close'
  | 'vanish-during-probe'
  | 'vanish-during-alloc-ucontext'
  | 'vanish-during-admin'
  | 'traffic';

/** When the device vanishes: once the guest holds its mappings, or at a device event (`vanish --when`). */
export type VanishMoment = { readonly kind: 'after-ready' } | { readonly kind: 'at-event'; readonly when: string };

export interface Scenario {
  readonly name: ScenarioName;
  /** One line for the help and the docs. */
  readonly summary: string;
  /** What vrnic-test runs (guest/README.md). */
  readonly guest: { readonly scenario: GuestScenario; readonly procs?: number; readonly watchSeconds?: number };
  /** The device's configuration, when the defaults do not fit (many needs 33 UAR pages). */
  readonly nic?: NicConfigInput;
  readonly moment: VanishMoment;
  /**
   * The guest is ready for the vanish once it printed this many `ready` reports and this many
   * `watching` reports (one per watching process).
   */
  readonly ready: { readonly readyReports: number; readonly watching: number };
  /** The checks that judge it; the mapping checks are dropped at run time when no mapping existed. */
  readonly checks: readonly CheckName[];
}

const MAPPING_CHECKS: readonly CheckName[] = ['mapping-moved-off-bar', 'reads-return-zero'];
const WITH_MAPPINGS = DEFAULT_CHECKS;
/**
 * A removal during other work: it must finish in bounds and cleanly (removal-bounded instead of
 * unplug-not-blocked); mappings are judged when one existed.
 */
const DURING_WORK: readonly CheckName[] = DEFAULT_CHECKS.map((c) => (c === 'unplug-not-blocked' ? 'removal-bounded' : c));

export function isMappingCheck(c: CheckName): boolean {
  return MAPPING_CHECKS.includes(c);
}

/** `many` runs 32 processes with a context each plus one more context: 33 UAR pages at least. */
export const MANY_PROCS = 32;

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'single',
    summary: 'one process, one UAR mapping',
    guest: { scenario: 'single' },
    moment: { kind: 'after-ready' },
    ready: { readyReports: 1, watching: 1 },
    checks: WITH_MAPPINGS,
  },
  {
    name: 'fork',
    summary: 'the process maps, then forks; parent and child both watch their copy',
    guest: { scenario: 'fork' },
    moment: { kind: 'after-ready' },
    ready: { readyReports: 2, watching: 2 },
    checks: WITH_MAPPINGS,
  },
  {
    name: 'fd-passing',
    summary: 'the opener passes the uverbs fd over SCM_RIGHTS; a process that never opened the device maps it',
    guest: { scenario: 'fd-passing' },
    moment: { kind: 'after-ready' },
    ready: { readyReports: 2, watching: 2 },
    checks: WITH_MAPPINGS,
  },
  {
    name: 'split',
    summary: 'four UAR pages in one mapping; page 1 unmapped, page 3 made read-only: three VMAs',
    guest: { scenario: 'split' },
    moment: { kind: 'after-ready' },
    ready: { readyReports: 1, watching: 1 },
    checks: WITH_MAPPINGS,
  },
  {
    name: 'many',
    summary: `${MANY_PROCS} processes with a context and mapping each, plus one context mapped three times`,
    // Under TCG the 33 processes take 1-2 s to all be ready (measured): the first must still be
    // watching at the vanish, and a removal that waits for them (20 s) must stay under the
    // device-removed bound so only unplug-not-blocked judges it.
    guest: { scenario: 'many', procs: MANY_PROCS, watchSeconds: 20 },
    nic: { numUars: 64 },
    moment: { kind: 'after-ready' },
    ready: { readyReports: MANY_PROCS + 1, watching: MANY_PROCS + 1 },
    checks: WITH_MAPPINGS,
  },
  {
    name: 'race-close',
    summary: '8 workers keep opening, mapping, unmapping, closing and exiting while the device vanishes; a holder keeps one mapping',
    guest: { scenario: 'race-close', procs: 8 },
    moment: { kind: 'after-ready' },
    // The main process and the holder report ready; only the holder watches a mapping.
    ready: { readyReports: 2, watching: 1 },
    // Nothing may hang, warn or kill a worker; the holder's mapping is judged like any other.
    checks: [...WITH_MAPPINGS, 'removal-bounded'],
  },
  {
    name: 'vanish-during-probe',
    summary: "the device vanishes at the driver probe's first BAR0 register access",
    guest: { scenario: 'single' },
    moment: { kind: 'at-event', when: 'reg:1' },
    ready: { readyReports: 0, watching: 0 },
    checks: DURING_WORK,
  },
  {
    name: 'vanish-during-alloc-ucontext',
    summary: "the device vanishes at the context's ALLOC_UAR (ib alloc_ucontext)",
    guest: { scenario: 'single' },
    moment: { kind: 'at-event', when: 'admin:ALLOC_UAR:1' },
    ready: { readyReports: 0, watching: 0 },
    checks: DURING_WORK,
  },
  {
    name: 'vanish-during-admin',
    summary: 'the device vanishes at the user CQ\'s CREATE_CQ admin command',
    guest: { scenario: 'single' },
    moment: { kind: 'at-event', when: 'admin:CREATE_CQ:1' },
    ready: { readyReports: 0, watching: 0 },
    checks: DURING_WORK,
  },
  {
    name: 'traffic',
    summary: 'two processes run an RC SEND ping-pong through the device when it vanishes; both must end by error completions or EIO',
    guest: { scenario: 'traffic' },
    moment: { kind: 'after-ready' },
    // The requester reports ready and watching after 10 round trips, the responder ready.
    ready: { readyReports: 2, watching: 1 },
    // vrnic-pingpong does not report its UAR mapping, so the mapping checks do not apply; the
    // removal must not wait for it, and its traffic must end visibly.
    checks: ['process-survived', 'removal-bounded', 'no-kernel-warnings', 'device-removed', 'no-bar-access-after-unplug', 'traffic-ended'],
  },
];

export const SCENARIO_NAMES: readonly ScenarioName[] = SCENARIOS.map((s) => s.name);

export function scenarioByName(name: string): Scenario | null {
  return SCENARIOS.find((s) => s.name === name) ?? null;
}
