#!/usr/bin/env node
// `vrnic`: the command-line entry point; dispatches to src/commands/.
import { commands } from './commands/index';
import { UsageError } from './commands/command';

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length), 4);
  return [
    'vrnic: an emulated PCI RDMA NIC over vfio-user, for testing RDMA drivers without hardware',
    '',
    'Usage: vrnic <command> [flags]    (vrnic <command> --help for its flags)',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Exit codes: 0 success, 1 failure (a test verdict FAIL, a command that could not be carried out),',
    '            2 bad usage (unknown flag, bad value, unreadable or invalid config file).',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name === undefined ? 2 : 0;
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
    process.stderr.write(`vrnic ${name}: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`vrnic: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
