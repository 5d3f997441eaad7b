// Every `vrnic` subcommand, in the order `vrnic --help` lists them.
import type { Command } from './command';
import { statusCommand } from './status';
import { vanishCommand } from './vanish';
import { guestCommand } from './guest';
import { qemuArgsCommand } from './qemu-args';

export const commands: readonly Command[] = [
  statusCommand,
  vanishCommand,
  guestCommand,
  qemuArgsCommand,
];
