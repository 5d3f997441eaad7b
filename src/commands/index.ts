// Every `vrnic` subcommand, in the order `vrnic --help` lists them.
import type { Command } from './command';
import { serveCommand } from './serve';
import { statusCommand } from './status';
import { vanishCommand } from './vanish';
import { unplugTestCommand } from './unplug-test';
import { guestCommand } from './guest';
import { qemuArgsCommand } from './qemu-args';
import { qemuCommand } from './qemu';

export const commands: readonly Command[] = [
  serveCommand,
  statusCommand,
  vanishCommand,
  unplugTestCommand,
  guestCommand,
  qemuArgsCommand,
  qemuCommand,
];
