// The guest-side NIC fuzzer, bounded for CI: a hostile guest never crashes the daemon or pushes the device into an undocumented state.
import test from 'ava';
import { availableTransports, libvfioUserUnavailable } from '../src/vfio-user/transports/index';
import { fuzzDevice } from './fuzz/device-fuzz';
import { skipping } from './helpers/skip';

const SEED = Number(process.env.VRNIC_FUZZ_SEED ?? 20261125);
const COUNT = 2500;

const transports = availableTransports();
const why = libvfioUserUnavailable();
if (why !== null) skipping('device-fuzz on libvfio-user', why);

for (const transport of ['native', 'libvfio-user'] as const) {
  (transports.includes(transport) ? test.serial : test.serial.skip)(
    `over ${transport}, ${COUNT} random guest operations leave the daemon alive, the device in a documented state, the read-only window untouched, and RESET recovers it`,
    async (t) => {
      const r = await fuzzDevice({ transport, seed: SEED, count: COUNT });
      t.log(`${transport}: ${r.commands} admin commands (${r.adminCompleted} completed), ${r.doorbells} doorbells, ${r.recoveries} recoveries, states ${JSON.stringify(r.states)}`);
      t.deepEqual(r.problems, []);
      t.is(r.operations, COUNT);
      t.true(r.recoveries >= COUNT / 200, 'the run recovered the device with RESET at every checkpoint');
      // the fuzzer must have driven the device through more than one documented state
      t.true(Object.keys(r.states).length >= 2, `states seen: ${JSON.stringify(r.states)}`);
    },
  );
}
