// Which control socket a `vrnic status` / `vrnic vanish` talks to: --control, else --socket's, else the default.
import { controlPathFor } from '../control/server';
import { defaultSocketPath } from '../socket-path';
import { UsageError } from './command';

export function controlTarget(values: { socket?: string; control?: string }): string {
  if (values.socket !== undefined && values.control !== undefined) throw new UsageError('give --socket or --control, not both');
  if (values.control !== undefined) return values.control;
  return controlPathFor(values.socket ?? defaultSocketPath());
}

/** A connection failure as one line a user can act on. */
export function unreachable(path: string, err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `no daemon: ${path} does not exist (is vrnic serve running with that --socket?)`;
  if (code === 'ECONNREFUSED') return `no daemon answers on ${path} (a stale socket?)`;
  return `${path}: ${err.message}`;
}
