// The vfio-user fuzzer, bounded for CI: each transport present survives mutated messages from a seeded run.
import test from 'ava';
import { availableTransports, libvfioUserUnavailable } from '../src/vfio-user/transports/index';
import { fuzzTransport, type FuzzResult } from './fuzz/vfio-user-fuzz';
import { skipping } from './helpers/skip';

const SEED = Number(process.env.VRNIC_FUZZ_SEED ?? 20261125);
/** Native answers in microseconds: a few thousand messages take seconds. */
const NATIVE_COUNT = 4000;
/**
 * libvfio-user drops or desynchronises many malformed messages (see docs/hardening-results.md),
 * and every reconnect is a blocking negotiation, so it gets fewer messages in the same time.
 */
const LIBVFIO_USER_COUNT = 150;

const transports = availableTransports();
const why = libvfioUserUnavailable();
if (why !== null) skipping('fuzz on libvfio-user', why);

function summary(r: FuzzResult): string {
  return `${r.transport}: ${r.messages} messages, ${r.answered} answered, ${r.connections} connections, ${r.crashes} crashes, fds ${r.before.fds} -> ${r.after.fds}, RSS ${r.before.rssKiB} -> ${r.after.rssKiB} KiB`;
}

test.serial(`the native transport survives ${NATIVE_COUNT} fuzzed messages: every one answered or the connection closed, no leak, and a fresh client still works`, async (t) => {
  const r = await fuzzTransport({ transport: 'native', seed: SEED, count: NATIVE_COUNT });
  t.log(summary(r));
  t.is(r.messages, NATIVE_COUNT);
  t.is(r.crashes, 0);
  t.deepEqual(r.findings.map((f) => `${f.kind} at ${f.index}: ${f.detail} ${f.message ?? ''}`), []);
  t.true(r.freshClientOk);
  t.deepEqual(r.newFds, [], 'the daemon holds exactly the fds it held before the run');
  t.true(r.after.rssKiB - r.before.rssKiB < 64 * 1024, `RSS grew from ${r.before.rssKiB} to ${r.after.rssKiB} KiB`);
});

(transports.includes('libvfio-user') ? test.serial : test.serial.skip)(
  `the libvfio-user transport survives ${LIBVFIO_USER_COUNT} fuzzed messages without a crash, an error log or a leaked fd, and a fresh client still works`,
  async (t) => {
    const r = await fuzzTransport({ transport: 'libvfio-user', seed: SEED, count: LIBVFIO_USER_COUNT });
    t.log(summary(r));
    // libvfio-user's own protocol handling leaves some malformed messages unanswered on an open
    // connection and blocks the daemon on a withheld body; those are upstream findings, reported
    // in docs/hardening-results.md, and logged here rather than failed.
    for (const f of r.findings.filter((x) => x.kind === 'unanswered' || x.kind === 'stall')) t.log(`libvfio-user finding: ${f.kind} at ${f.index}: ${f.detail}`);
    t.is(r.crashes, 0);
    t.deepEqual(r.findings.filter((f) => f.kind === 'crash' || f.kind === 'error-log' || f.kind === 'fresh-client').map((f) => f.detail), []);
    t.true(r.freshClientOk);
    t.deepEqual(r.newFds, [], 'the daemon holds exactly the fds it held before the run');
    t.true(r.after.rssKiB - r.before.rssKiB < 64 * 1024, `RSS grew from ${r.before.rssKiB} to ${r.after.rssKiB} KiB`);
  },
);
