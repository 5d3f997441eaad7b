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
  root = pretty
    ? pino({ level }, pino.transport({ target: 'pino-pretty', options: { destination: 2, colorize: true } }))
    : pino({ level }, pino.destination({ dest: 2, sync: true }));
  return root;
}

export function rootLogger(): Logger {
  return root;
}

/** A child logger for a module (`{ module: name }`); call it when the module starts work, not at import. */
export function moduleLogger(name: string, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ module: name, ...bindings });
}
