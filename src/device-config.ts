// Reads `serve --config FILE`, with errors that name the file and the field.
import fs from 'node:fs';
import { NIC_DEFAULTS, validateNicConfig, type NicConfig } from '../emulator/nic/index';

export interface DeviceConfigResult {
  readonly nic: NicConfig;
  /** The file it came from, or 'built-in defaults'. */
  readonly source: string;
}

/** Loads and validates a JSON device config; throws an Error whose message names the file and each bad field. */
export function loadDeviceConfig(file?: string): DeviceConfigResult {
  if (file === undefined) return { nic: NIC_DEFAULTS, source: 'built-in defaults' };
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`--config ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`--config ${file}: not valid JSON (${(err as Error).message})`);
  }
  return { nic: validateNicConfig(json, file), source: file };
}
