// The NIC reached through a vfio-user client (registers by REGION_READ/WRITE, doorbells through the mmapped BAR2, MSI-X by eventfds) as the DeviceAccess the test driver drives; shared by the tests and the benchmarks.
import { type GuestMemory, IrqIndex, type VfioUserClient } from '../vfio-user/client/index';
import type { DeviceAccess } from './nic-driver';

/** Sets MSI-X Enable in the capability's message control, found by walking the capability list. */
export async function enableMsix(c: VfioUserClient): Promise<void> {
  let ptr = (await c.configRead(0x34, 1)) & 0xfc;
  for (let hops = 0; ptr !== 0 && hops < 48; hops++) {
    if ((await c.configRead(ptr, 1)) === 0x11) {
      await c.configWrite(ptr + 2, 0x8000, 2);
      return;
    }
    ptr = (await c.configRead(ptr + 1, 1)) & 0xfc;
  }
  throw new Error('the device has no MSI-X capability');
}

/**
 * The device as the test driver sees it through `c`: guest memory is `mem`, the UAR BAR is `uar`
 * (the client's mapping of BAR2), and MSI-X vectors are counted as the client's eventfds fire.
 */
export function clientAccess(c: VfioUserClient, mem: GuestMemory, uar: Buffer): DeviceAccess {
  const tally = new Map<number, number>();
  const add = (v: number, n: bigint): void => void tally.set(v, (tally.get(v) ?? 0) + Number(n));
  return {
    readReg: (off) => c.barRead32(0, off),
    writeReg: (off, v) => c.barWrite32(0, off, v),
    memRead: (addr, length) => mem.read(addr, length),
    memWrite: (addr, data) => mem.write(addr, data),
    uar,
    waitIrq: (v) => c.waitIrq(IrqIndex.Msix, v).then((n) => add(v, n)),
    irqCount: (v) => {
      add(v, c.takeIrq(IrqIndex.Msix, v));
      return tally.get(v) ?? 0;
    },
  };
}
