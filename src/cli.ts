#!/usr/bin/env node
// `vrnic`: the command-line entry point; dispatches to src/commands/.
import { commands } from './commands/index';
import { UsageError } from './commands/command';
import { errorLine, stacksWanted } from './log';
import fs from 'node:fs';
import path from 'node:path';

/** The package's version, from the package.json this build ships with (dist/src/cli.js -> ../../). */
function version(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length), 4);
  return [
    'vrnic: an emulated PCI RDMA NIC over vfio-user, for testing RDMA drivers without hardware',
    '',
    'Usage: vrnic <command> [flags]    (vrnic <command> --help for its flags; vrnic --version)',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Exit codes: 0 success, 1 failure (a test verdict FAIL, a command that could not be carried out),',
    '            2 bad usage (unknown flag, bad value, unreadable or invalid config file).',
  ].join('\n');
}

/** The --log-level a command was given, if any (the command's own parser has not run, or threw). */
function logLevelIn(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--log-level') return args[i + 1];
    if (args[i].startsWith('--log-level=')) return args[i].slice('--log-level='.length);
  }
  return undefined;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    process.stdout.write(`vrnic ${version()}\n`);
    return 0;
  }
  const cmd = commands.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`vrnic: unknown command '${name}' (try vrnic --help)\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(cmd.help.trimEnd() + '\n');
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`vrnic ${name}: ${err.message}\n`);
      return 2;
    }
    // One line a user can act on; the stack is for `--log-level debug` (or VRNIC_LOG_LEVEL=debug).
    process.stderr.write(`vrnic ${name}: ${errorLine(err, stacksWanted(logLevelIn(rest) ?? process.env.VRNIC_LOG_LEVEL))}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`vrnic: ${errorLine(err)}\n`);
    process.exitCode = 1;
  },
);
