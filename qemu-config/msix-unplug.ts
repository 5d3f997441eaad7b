// Which interrupt mode a QEMU survives on unplug: what `--irq auto` decides, and the evidence it decides on.
//
// Every QEMU release seen so far (10.1 through Debian's 11.1.3) aborts when a vfio-user-pci
// device that has MSI-X is unplugged: its MSI-X teardown deletes the PBA subregion a second time
// and trips an assertion. The fix was posted upstream in Oct 2025 and is in no release. A device
// with MSI (or INTx) only is unplugged cleanly by the same QEMU. A version number cannot tell a
// fixed build from a broken one (distributions backport, developers patch), so vrnic goes by
// evidence: a run with `--irq msix` on a given QEMU records whether that QEMU lived through the
// unplug, and `auto` picks MSI-X only for a QEMU on record as surviving it, MSI otherwise.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cacheDir } from './cache';

export const IRQ_MODES = ['msix', 'msi', 'intx'] as const;
export type IrqMode = (typeof IRQ_MODES)[number];
export const IRQ_CHOICES = ['auto', ...IRQ_MODES] as const;
export type IrqChoice = (typeof IRQ_CHOICES)[number];

/** QEMU's words when the MSI-X teardown trips (hw/vfio-user/pci.c, memory_region_del_subregion). */
export const MSIX_TEARDOWN_ABORT = /memory_region_del_subregion: Assertion `subregion->container == mr' failed/;

export interface IrqDecision {
  readonly mode: IrqMode;
  /** Why this mode, in one line for the report. */
  readonly reason: string;
}

interface Record_ {
  readonly survives: boolean;
  readonly version: string;
  readonly at: string;
}

const FILE = 'msix-unplug.json';

/** The identity of a QEMU build on this machine: the file that runs, its size and time, its version. */
export function qemuKey(binary: string, version: string): string {
  let real = binary;
  let stamp = '';
  try {
    real = fs.realpathSync(binary);
    const st = fs.statSync(real);
    stamp = `${st.size}:${Math.floor(st.mtimeMs)}`;
  } catch {
    // a binary that vanished has no record worth keeping
  }
  return `${real}|${stamp}|${version}`;
}

function load(dir: string): Record<string, Record_> {
  try {
    const parsed = JSON.parse(fs.readFileSync(path.join(dir, FILE), 'utf8')) as unknown;
    return parsed !== null && typeof parsed === 'object' ? (parsed as Record<string, Record_>) : {};
  } catch {
    return {};
  }
}

/** Resolves `auto` for this QEMU; an explicit mode is taken as given. */
export function chooseIrq(choice: IrqChoice, qemu: { binary: string; version: string }, dir: string = cacheDir('qemu')): IrqDecision {
  if (choice !== 'auto') return { mode: choice, reason: `--irq ${choice}` };
  const rec = load(dir)[qemuKey(qemu.binary, qemu.version)];
  if (rec?.survives) return { mode: 'msix', reason: `auto: this QEMU ${qemu.version} survived an MSI-X unplug on ${rec.at}` };
  return {
    mode: 'msi',
    reason: rec
      ? `auto: this QEMU ${qemu.version} aborted on an MSI-X unplug on ${rec.at} (its MSI-X teardown bug), so MSI`
      : `auto: QEMU ${qemu.version} is not on record as surviving an MSI-X unplug (no release does yet), so MSI`,
  };
}

/** Records what an MSI-X unplug did to this QEMU, for later `auto` choices. Never throws. */
export function recordMsixUnplug(qemu: { binary: string; version: string }, survives: boolean, dir: string = cacheDir('qemu')): void {
  try {
    const all = load(dir);
    all[qemuKey(qemu.binary, qemu.version)] = { survives, version: qemu.version, at: new Date().toISOString() };
    fs.mkdirSync(dir, { recursive: true });
    const tmp = path.join(dir, `.${FILE}.${process.pid}`);
    fs.writeFileSync(tmp, JSON.stringify(all, null, 2) + '\n');
    fs.renameSync(tmp, path.join(dir, FILE));
  } catch {
    // The record is a convenience: without it, auto keeps choosing MSI, which is safe.
  }
}
