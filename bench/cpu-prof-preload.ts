// Preloaded with `node --require` (through NODE_OPTIONS) to CPU-profile a process bench/ does not spawn itself, such as bench/doorbell.ts's device process.
//
// Node 20 refuses --cpu-prof in NODE_OPTIONS; --require is allowed, and the inspector's
// in-process session gives the same profile. It writes PID.cpuprofile into
// VRNIC_BENCH_CPU_PROF_DIR when the process exits; without that variable it does nothing.
import fs from 'node:fs';
import inspector from 'node:inspector';
import path from 'node:path';

const dir = process.env.VRNIC_BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 50 });
  session.post('Profiler.start');
  process.on('exit', () => {
    // The in-process session answers synchronously, so the profile is written before exit.
    session.post('Profiler.stop', (err, res) => {
      if (!err) fs.writeFileSync(path.join(dir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
