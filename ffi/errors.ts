// Typed errors for failed C calls: what a -1 plus errno becomes once it leaves ffi/.
import { constants } from 'node:os';

/**
 * errno values under their C names, from Node's own table (os.constants.errno): the one errno
 * table of the project. vrnic runs on Linux, and vfio-user replies carry Linux's values.
 */
export const Errno = Object.freeze({
  ...constants.errno,
  /** Missing from Node's table (libuv has no name for it); libvfio-user reports a gone client with it. */
  ESHUTDOWN: 108,
});

const errnoNames = new Map<number, string>(
  Object.entries(Errno).map(([name, value]) => [value as number, name]),
);

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/** A C call failed: `call` names it, `errno` is the C errno, `code` its symbolic name. */
export class SysError extends Error {
  readonly call: string;
  readonly errno: number;
  readonly code: string;

  constructor(call: string, errno: number) {
    super(`${call} failed: ${errnoName(errno)}`);
    this.name = 'SysError';
    this.call = call;
    this.errno = errno;
    this.code = errnoName(errno);
  }
}

/** A shared library vrnic needs could not be loaded; the message says how to get it. */
export class LibraryMissingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LibraryMissingError';
  }
}
