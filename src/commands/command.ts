// The shape of a `vrnic` subcommand: its name, its --help text, and what it runs.

export interface Command {
  readonly name: string;
  /** One line for `vrnic --help`. */
  readonly summary: string;
  /** Full text for `vrnic NAME --help`: usage and every flag. */
  readonly help: string;
  /** Runs the command; resolves to the process exit code. */
  run(argv: string[]): Promise<number>;
}

/** Bad flags or files: printed as one line without a stack, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}
