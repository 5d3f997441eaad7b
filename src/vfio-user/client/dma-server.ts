// Answers the server's DMA_READ/DMA_WRITE from the guest memory the client mapped: every address, length and permission checked.
import { Errno, Command, HeaderFlag } from '../protocol/constants';
import { decodeDmaAccess, encodeDmaAccess, encodeErrorReply, encodeMessage } from '../protocol/messages';
import type { RawMessage } from '../protocol/stream';
import type { GuestMemory } from './guest-memory';

export interface ClientDmaRegion {
  readonly addr: bigint;
  readonly size: bigint;
  readonly readable: boolean;
  readonly writable: boolean;
  readonly memory: GuestMemory;
}

/**
 * The DMA regions the client mapped, and the answers to the server's requests for them. A server
 * reaches a region mapped without an fd only this way; it may also use it for one mapped with one.
 */
export class DmaServer {
  private readonly regions: ClientDmaRegion[] = [];

  /** maxTransfer: the largest DMA_READ/DMA_WRITE the client offered (max_data_xfer_size). */
  constructor(private readonly maxTransfer: bigint) {}

  add(region: ClientDmaRegion): void {
    this.regions.push(region);
  }

  /** Forgets exactly the region [addr, addr + size), if mapped. */
  remove(addr: bigint, size: bigint): void {
    const i = this.regions.findIndex((r) => r.addr === addr && r.size === size);
    if (i >= 0) this.regions.splice(i, 1);
  }

  clear(): void {
    this.regions.length = 0;
  }

  /**
   * The reply to one request from the server (a command message): the data or an acknowledgement,
   * else an error reply (EINVAL for a malformed request or fds, ENOSYS for another command,
   * EFAULT outside every region, EPERM against its permissions).
   */
  answer(m: RawMessage): Buffer {
    const h = m.header;
    const fail = (errno: number) => encodeErrorReply(h.msgId, h.command, errno);
    if (m.fds.length > 0) return fail(Errno.EINVAL);
    if (h.command !== Command.DmaRead && h.command !== Command.DmaWrite) return fail(Errno.ENOSYS);
    const write = h.command === Command.DmaWrite;
    let a;
    try {
      a = decodeDmaAccess(m.payload);
    } catch {
      return fail(Errno.EINVAL);
    }
    if (a.count > this.maxTransfer || (write && BigInt(a.data.length) !== a.count) || (!write && a.data.length !== 0)) return fail(Errno.EINVAL);
    const region = this.regions.find((r) => a.addr >= r.addr && a.addr + a.count <= r.addr + r.size);
    if (region === undefined) return fail(Errno.EFAULT);
    if (write ? !region.writable : !region.readable) return fail(Errno.EPERM);
    if (write) {
      region.memory.write(a.addr, a.data);
      return encodeMessage(h.msgId, h.command, HeaderFlag.TypeReply, encodeDmaAccess({ addr: a.addr, count: a.count, data: Buffer.alloc(0) }));
    }
    return encodeMessage(h.msgId, h.command, HeaderFlag.TypeReply, encodeDmaAccess({ addr: a.addr, count: a.count, data: region.memory.read(a.addr, Number(a.count)) }));
  }
}
