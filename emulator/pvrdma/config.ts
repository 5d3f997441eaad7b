// The PVRDMA model's configuration: its interrupt mode and the limits it reports in the shared region's capabilities.
import type { IrqMode } from '../nic/config';

export interface PvrdmaConfig {
  /** msix: three MSI-X vectors in BAR0; msi: one MSI vector; intx: neither (the driver takes what it finds). */
  readonly irq: IrqMode;
  /** UAR pages in BAR2; a power of two (pvrdma_uar_table_init refuses anything else). */
  readonly numUars: number;
  readonly maxQp: number;
  readonly maxQpWr: number;
  readonly maxSge: number;
  readonly maxCq: number;
  readonly maxCqe: number;
  readonly maxMr: number;
  readonly maxPd: number;
  readonly maxAh: number;
  readonly maxMrSize: bigint;
  readonly gidTableLength: number;
  readonly nodeGuid: bigint;
  /** The MAC registers' power-on value (48 bits). */
  readonly mac: number;
}

export type PvrdmaConfigInput = Partial<PvrdmaConfig>;

export const PVRDMA_DEFAULTS: PvrdmaConfig = Object.freeze({
  irq: 'msix',
  numUars: 16,
  maxQp: 256,
  maxQpWr: 1024,
  maxSge: 4,
  maxCq: 256,
  maxCqe: 4096,
  maxMr: 1024,
  maxPd: 256,
  maxAh: 256,
  maxMrSize: 1n << 32n,
  gidTableLength: 16,
  nodeGuid: 0x02005e0000000820n,
  mac: 0x0000005e0002,
});

const LIMITS: Record<string, [number, number]> = {
  maxQp: [2, 1 << 16],
  maxQpWr: [1, 1 << 15],
  maxSge: [1, 16],
  maxCq: [1, 1 << 16],
  maxCqe: [1, 1 << 16],
  maxMr: [1, 1 << 20],
  maxPd: [1, 1 << 16],
  maxAh: [1, 1 << 16],
  gidTableLength: [1, 128],
};

/** Checks a partial config and fills the defaults; throws naming each bad field. */
export function validatePvrdmaConfig(input: unknown): PvrdmaConfig {
  if (input === null || typeof input !== 'object') throw new Error('pvrdma config: not an object');
  const cfg = { ...PVRDMA_DEFAULTS, ...(input as PvrdmaConfigInput) };
  const problems: string[] = [];
  if (!['msix', 'msi', 'intx'].includes(cfg.irq)) problems.push(`irq: ${String(cfg.irq)} is not msix, msi or intx`);
  if (!Number.isInteger(cfg.numUars) || cfg.numUars < 1 || cfg.numUars > 1024 || (cfg.numUars & (cfg.numUars - 1)) !== 0) problems.push(`numUars: ${cfg.numUars} is not a power of two in 1..1024`);
  for (const [k, [lo, hi]] of Object.entries(LIMITS)) {
    const v = (cfg as unknown as Record<string, number>)[k];
    if (!Number.isInteger(v) || (v as number) < lo || (v as number) > hi) problems.push(`${k}: ${v} is not an integer in ${lo}..${hi}`);
  }
  if (problems.length) throw new Error(`pvrdma config: ${problems.join('; ')}`);
  return Object.freeze(cfg);
}
