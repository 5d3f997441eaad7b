// The NIC's data path through vfio-user on every transport present: every WQE type and every error class, in loopback on one device and between two devices on one fabric.
import test from 'ava';
import { Fabric } from '../emulator/datapath/fabric';
import { availableTransports, libvfioUserUnavailable, type TransportName } from '../src/vfio-user/transports/index';
import { type ClientEnv, open } from './nic-client-env';
import { skipping } from './helpers/skip';
import { Side } from '../src/testing/nic-data';
import { DATA_CASES, type DataEnv } from './nic-datapath-suite';

type Topology = 'loopback' | 'two devices';

async function setUp(name: TransportName, topology: Topology): Promise<{ env: DataEnv; close(): Promise<void> }> {
  const fabric = new Fabric();
  const envs: ClientEnv[] = [];
  const close = async (): Promise<void> => {
    fabric.setFaults(null);
    for (const e of envs) await e.close();
  };
  try {
    // Two devices are served as one daemon process serves several: a Daemon per device, each on its own socket.
    const daemon = topology === 'two devices';
    envs.push(await open(name, { fabric, daemon }));
    if (daemon) envs.push(await open(name, { fabric, daemon }));
    for (const e of envs) if ((await e.drv.bringUp()) !== 1) throw new Error('device not READY');
    const first = envs[0];
    const second = envs[envs.length - 1];
    const a = await Side.create(first.drv, first.nic.datapath.lid);
    const b = await Side.create(second.drv, second.nic.datapath.lid);
    return { env: { a, b, fabric }, close };
  } catch (err) {
    await close();
    throw err;
  }
}

const present = availableTransports();
const all: TransportName[] = ['native', 'libvfio-user'];
for (const name of all) {
  const run = present.includes(name);
  if (!run) skipping(`nic-datapath on ${name}`, (name === 'libvfio-user' ? libvfioUserUnavailable() : null) ?? 'not available');
  const reg = run ? test.serial : test.serial.skip;
  for (const topology of ['loopback', 'two devices'] as const) {
    for (const [title, body] of DATA_CASES) {
      reg(`${name}, ${topology}: ${title}`, async (t) => {
        const { env, close } = await setUp(name, topology);
        try {
          await body(t, env);
        } finally {
          await close();
        }
      });
    }
  }

  reg(`${name}: two devices get distinct LIDs and QUERY_PORT reports each one`, async (t) => {
    const { env, close } = await setUp(name, 'two devices');
    try {
      t.deepEqual([env.a.lid, env.b.lid], [1, 2]);
      for (const side of [env.a, env.b]) {
        const out = side.buffer(64);
        const c = await side.drv.submit(Buffer.from([0x02, 0, 0, 0, 9, 0, 0, 0, ...u64(out), 64, 0, 0, 0, 1, 0, 0, 0, ...Buffer.alloc(40)]));
        t.is(c.status, 0);
        t.is(side.dev.memRead(out + 0x10n, 4).readUInt32LE(0), side.lid);
      }
    } finally {
      await close();
    }
  });
}

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}
