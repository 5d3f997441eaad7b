// Every `vrnic` subcommand, in the order `vrnic --help` lists them.
import type { Command } from './command';

export const commands: readonly Command[] = [];
