// The one root pino logger; every module and device takes a child of it.
import pino, { type Logger } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface LogOptions {
  level?: LogLevel;
  /** Human-readable output; by default only when stderr is a TTY. */
  pretty?: boolean;
}

let root: Logger = pino({ level: process.env.VRNIC_LOG_LEVEL ?? 'silent' });

/** Configures the root logger (the CLI does this once); library users may skip it. Logs go to stderr. */
export function configureLogging(opts: LogOptions = {}): Logger {
  const level = opts.level ?? 'info';
  const pretty = opts.pretty ?? process.stderr.isTTY === true;
  const options = { level, serializers: { err: stacksWanted(level) ? pino.stdSerializers.err : briefError } };
  root = pretty
    ? pino(options, pino.transport({ target: 'pino-pretty', options: { destination: 2, colorize: true } }))
    : pino(options, pino.destination({ dest: 2, sync: true }));
  return root;
}

/** Stacks are for whoever debugs vrnic itself: shown at debug and trace, never by default. */
export function stacksWanted(level: string | undefined): boolean {
  return level === 'debug' || level === 'trace';
}

/** An error as a user reads it: its message on one line, with a stack only when asked for (stacksWanted). */
export function errorLine(err: unknown, withStack = false): string {
  if (!(err instanceof Error)) return String(err);
  if (withStack && err.stack) return err.stack;
  return err.message.split('\n').map((l) => l.trim()).filter(Boolean).join(' | ');
}

function briefError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const code = (err as NodeJS.ErrnoException).code;
  return { type: err.name, message: errorLine(err), ...(code !== undefined ? { code } : {}) };
}

export function rootLogger(): Logger {
  return root;
}

/** A child logger for a module (`{ module: name }`); call it when the module starts work, not at import. */
export function moduleLogger(name: string, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ module: name, ...bindings });
}
