// The test runner wrapper: skip reasons grouped once, and one plain closing line that any CI reads.
import test from 'ava';
import { countLine, groupSkips } from './helpers/run-tests';

test("the closing line adds up ava's own counts, uncaught exceptions as failures and known failures as passes", (t) => {
  const c = { passed: 0, failed: 0, skipped: 0 };
  for (const l of ['  ✔ a test named 3 tests passed', '  306 tests passed', '  1 test failed', '\x1b[33m  95 tests skipped\x1b[39m', '  2 uncaught exceptions', '  1 known failure']) countLine(l, c);
  t.deepEqual(c, { passed: 307, failed: 3, skipped: 95 });
});

test('a skip reason shared by several tests is printed once, with every test it skipped', (t) => {
  const text = groupSkips([
    { why: 'no QEMU', what: 'a' },
    { why: 'no QEMU', what: 'b' },
    { why: 'no libvfio-user', what: 'c' },
  ]);
  t.is(text.split('no QEMU').length - 1, 1);
  t.regex(text, /skips: a; b/);
  t.regex(text, /by reason \(2\)/);
});
