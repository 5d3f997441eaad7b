// A NIC served through vfio-user to the TypeScript client, for the tests that drive it: registers by REGION_READ/WRITE, guest memory a memfd, doorbells through the mmapped BAR2, MSI-X through eventfds.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Fabric } from '../emulator/datapath/fabric';
import { createNic } from '../emulator/nic';
import type { Nic } from '../emulator/nic/device';
import { GuestMemory, IrqIndex, VfioUserClient, type Mapping } from '../src/vfio-user/client/index';
import { Daemon } from '../src/daemon';
import { createTransport, type Transport, type TransportName } from '../src/vfio-user/transports/index';
import type { NicEnv } from './nic-suite';
import { GuestHeap, TestDriver } from '../src/testing/nic-driver';
import { clientAccess, enableMsix } from '../src/testing/client-access';

export const GUEST_BASE = 0x10_0000n;
export const GUEST_SIZE = 4 << 20;

export interface ClientEnv extends NicEnv {
  readonly client: VfioUserClient;
  readonly mem: GuestMemory;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Map guest memory with its fd (QEMU's way); false: the device reaches it through DMA messages. */
  readonly withFd?: boolean;
  /** The wire the device's port joins; default: the process's shared fabric. */
  readonly fabric?: Fabric;
  /** Serve it as `vrnic serve` does (a Daemon on its own socket) instead of a bare transport. */
  readonly daemon?: boolean;
}

/** A device on `name`'s transport with one client connected, guest memory mapped and MSI-X wired. */
export async function open(name: TransportName, opts: OpenOptions = {}): Promise<ClientEnv> {
  const withFd = opts.withFd ?? true;
  const dir = mkdtempSync(join(tmpdir(), 'vrnic-nic-'));
  const socketPath = join(dir, 'nic.sock');
  const log = pino({ level: process.env.VRNIC_TEST_LOG ?? 'silent' });
  const nic: Nic = createNic({ numUars: 8 }, { log, fabric: opts.fabric });
  let transport: Transport | null = null;
  let daemon: Daemon | null = null;
  let client: VfioUserClient | null = null;
  let uarMap: Mapping | null = null;
  const mem = new GuestMemory(GUEST_SIZE, GUEST_BASE);
  const close = async (): Promise<void> => {
    uarMap?.unmap();
    await client?.close();
    if (daemon !== null) await daemon.stop();
    else await transport?.stop();
    nic.close();
    mem.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (opts.daemon === true) {
      daemon = await Daemon.start({ socketPath, transport: name, device: nic, log });
      transport = daemon.transport;
    } else {
      transport = createTransport(name, { socketPath, device: nic, log });
      await transport.start();
    }
    client = await VfioUserClient.connect(socketPath);
    await client.enableDevice();
    await enableMsix(client);
    await client.setIrqEventfds(IrqIndex.Msix, 0, nic.config.msixVectors);
    await client.dmaMap(mem, { withFd });
    uarMap = await client.mmapSparseArea(2);
    const c = client;
    const access = clientAccess(c, mem, uarMap.buffer);
    const heap = new GuestHeap(GUEST_BASE, BigInt(GUEST_SIZE));
    return {
      nic,
      access,
      heap,
      drv: new TestDriver(access, heap),
      unmappedAddr: GUEST_BASE + BigInt(GUEST_SIZE) + 0x10_0000n,
      // A DEVICE_RESET also resets the PCI command register: turn memory decoding back on, as a driver's resume would.
      transportReset: async () => {
        await c.reset();
        await c.enableDevice();
      },
      client: c,
      mem,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

