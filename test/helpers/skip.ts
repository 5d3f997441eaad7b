// Says why tests are skipped: once per reason at the end of `npm test` (test/helpers/run-tests.ts groups them), or at once when ava runs alone.
import fs from 'node:fs';

/** The file run-tests.ts collects skip reasons in, one JSON line each. */
export const SKIP_LOG_ENV = 'VRNIC_SKIP_LOG';

export interface SkipRecord {
  /** Which tests are skipped, e.g. "qmp tests" or "faults on libvfio-user". */
  readonly what: string;
  /** Why, in words a user can act on (what to install or set). */
  readonly why: string;
}

/** Records that `what` is skipped because of `why`. Call it where the test is declared skipped. */
export function skipping(what: string, why: string): void {
  const file = process.env[SKIP_LOG_ENV];
  if (!file) {
    console.log(`${what} skipped: ${why}`);
    return;
  }
  const record: SkipRecord = { what, why };
  fs.appendFileSync(file, `${JSON.stringify(record)}\n`);
}
