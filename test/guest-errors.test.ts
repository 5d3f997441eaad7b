// A guest that repeats a mistake cannot flood the log: guest errors are counted exactly and logged at most once a second per kind.
import test from 'ava';
import { Writable } from 'node:stream';
import pino from 'pino';
import { availableTransports } from '../src/vfio-user/transports/index';
import { serve } from './helpers/served';

const READS = 20_000;
const KIND = 'BAR access while memory decoding is disabled';

/** A pino logger whose lines land in `lines`, parsed. */
function capturingLogger(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'warn' }, sink), lines };
}

for (const name of availableTransports()) {
  test.serial(`${name}: ${READS} BAR0 reads with memory decoding off write a few summary lines whose counts add up to exactly ${READS}`, async (t) => {
    t.timeout(120_000);
    const { log, lines } = capturingLogger();
    const s = await serve(name, {}, { log });
    try {
      // memory decoding stays off (power-on command register): every read is a guest error
      const started = Date.now();
      const batch = 100;
      for (let i = 0; i < READS; i += batch) {
        const reads = [];
        for (let j = 0; j < batch; j++) reads.push(s.client.barRead32(0, 0));
        t.true((await Promise.all(reads)).every((v) => v === 0xffffffff));
      }
      const elapsedS = (Date.now() - started) / 1000;
      t.is(s.transport.stats().guestErrors, READS, 'every read counted');
      // the last summary comes from a timer once the kind has been quiet for the interval
      await new Promise((r) => setTimeout(r, 1300));
      const ours = lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(KIND));
      const logged = ours.reduce((n, l) => n + (typeof l.repeated === 'number' ? l.repeated : 1), 0);
      t.log(`${READS} reads in ${elapsedS.toFixed(1)} s: ${ours.length} log lines, counts adding up to ${logged}`);
      t.true(ours.length <= Math.ceil(elapsedS) + 2, `${ours.length} lines for ${elapsedS.toFixed(1)} s`);
      t.is(logged, READS);
      t.true(ours.every((l) => l.guestError === true));
    } finally {
      await s.close();
    }
  });
}
