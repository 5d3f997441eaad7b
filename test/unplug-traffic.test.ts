// The traffic scenario on a real guest: a ping-pong in flight when the device vanishes ends by error completions or EIO, and every check passes.
import { e2eTest } from './helpers/e2e';
import { runUnplugTest } from '../src/unplug/runner';

const e2e = e2eTest('unplug-traffic');

for (const mode of ['orderly', 'surprise'] as const) {
  e2e(`with the reference driver, ${mode === 'orderly' ? 'an' : 'a'} ${mode} vanish during a ping-pong ends both sides by EIO or error completions and passes every check`, async (t) => {
    t.timeout(600_000);
    // MSI: QEMU aborts on unplug of a vfio-user device with MSI-X (docs/unplug.md).
    const r = await runUnplugTest({ scenario: 'traffic', mode, driverBug: 'none', irq: 'msi', keep: false });
    t.log(`${mode}: ${r.verdict}${r.error ? ` (${r.error})` : ''}; ${JSON.stringify(r.timings)}`);
    for (const c of r.checks) t.log(`  ${c.name}: ${c.result} ${c.detail}`);
    t.is(r.error, undefined);
    t.deepEqual(
      r.checks.map((c) => c.name),
      ['process-survived', 'removal-bounded', 'no-kernel-warnings', 'device-removed', 'no-bar-access-after-unplug', 'traffic-ended'],
    );
    t.deepEqual(r.checks.filter((c) => c.result !== 'ok').map((c) => c.name), []);
    // Both sides had traffic going and saw it end after the vanish.
    t.regex(r.checks.find((c) => c.name === 'traffic-ended')?.detail ?? '', /requester: (eio|error-cqe) \d+ ms after the vanish after \d+ round trips; responder: (eio|error-cqe)/);
    t.is(r.verdict, 'PASS');
  });
}
