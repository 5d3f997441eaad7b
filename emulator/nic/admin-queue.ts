// The admin queue's rings (docs/device.md section 5): commands read by DMA one at a time, in order, handed to their handler (admin-commands.ts); completions then vector 0.
import { DmaError } from '../framework/device';
import type { AdminHandler, Outcome } from './admin-commands';
import { fail } from './admin-commands';
import type { NicCore } from './core';
import {
  ACQ_ENTRY_SIZE,
  ADMIN_COMPLETION,
  ASQ_ENTRY_SIZE,
  decodeAdminCommand,
  encodeAdminCompletion,
  FatalCode,
  OPCODE_NAMES,
  phaseOf,
  Status,
  STATUS_NAMES,
  type AdminCommand,
  type AdminCompletion,
} from './wire';

export const ADMIN_VECTOR = 0;

/** The completion's flags field, which carries the phase: written last. */
const PHASE = ADMIN_COMPLETION.spec.flags;

export class AdminQueue {
  private asqBase = 0n;
  private asqSize = 0;
  private acqBase = 0n;
  private acqSize = 0;
  /** ASQ_HEAD: the device's consumer index. */
  head = 0;
  /** The driver's producer index from ASQ_TAIL. */
  tail = 0;
  /** ACQ_TAIL: the device's producer index. */
  acqTail = 0;
  /** ACQ_HEAD: the driver's consumer index. */
  acqHead = 0;
  private active = false;
  /** One command at a time: a doorbell during processing only moves `tail`. */
  private running = false;

  constructor(
    private readonly core: NicCore,
    /** The command handlers by opcode (admin-commands.ts). */
    private readonly handlers: Readonly<Record<number, AdminHandler>>,
  ) {}

  start(asqBase: bigint, asqSize: number, acqBase: bigint, acqSize: number): void {
    this.asqBase = asqBase;
    this.asqSize = asqSize;
    this.acqBase = acqBase;
    this.acqSize = acqSize;
    this.head = this.tail = this.acqTail = this.acqHead = 0;
    this.active = true;
  }

  stop(): void {
    this.active = false;
    this.head = this.tail = this.acqTail = this.acqHead = 0;
  }

  /** ASQ_TAIL write. False when it claims more entries than the ring holds (fatal code 3 for the caller). */
  setTail(v: number): boolean {
    if (((v - this.head) >>> 0) > this.asqSize) return false;
    this.tail = v >>> 0;
    this.kick();
    return true;
  }

  /** ACQ_HEAD write. False when it is beyond what the device posted (fatal code 3 for the caller). */
  setAcqHead(v: number): boolean {
    if (((this.acqTail - v) >>> 0) > this.acqSize) return false;
    this.acqHead = v >>> 0;
    this.kick();
    return true;
  }

  private kick(): void {
    if (!this.running && this.active) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    const epoch = this.core.epoch;
    let posted = 0;
    try {
      while (this.active && epoch === this.core.epoch && this.head !== this.tail) {
        // Never more completions outstanding than the ACQ holds: wait for ACQ_HEAD instead.
        if (((this.acqTail - this.acqHead) >>> 0) >= this.acqSize) break;
        const addr = this.asqBase + BigInt(ASQ_ENTRY_SIZE * (this.head & (this.asqSize - 1)));
        let raw: Buffer;
        try {
          raw = await this.core.dma.read(addr, ASQ_ENTRY_SIZE);
        } catch (err) {
          if (epoch !== this.core.epoch) break;
          if (!(err instanceof DmaError)) throw err;
          this.core.fatal(FatalCode.AdminQueueAddress, `admin submission queue read failed: ${err.message}`);
          break;
        }
        if (epoch !== this.core.epoch) break;
        this.head = (this.head + 1) >>> 0;
        const cmd = decodeAdminCommand(raw);
        const outcome = await this.execute(cmd, epoch);
        if (outcome === null || epoch !== this.core.epoch) break;
        if (!(await this.complete(cmd, outcome, epoch))) break;
        posted++;
      }
    } catch (err) {
      // Only a bug gets here; the queue must keep working for the next doorbell.
      this.core.obs.log.error({ err }, 'admin queue processing failed');
    } finally {
      this.running = false;
    }
    try {
      if (posted > 0 && epoch === this.core.epoch) this.core.raise(ADMIN_VECTOR, 'admin-completion', { completions: posted });
    } catch (err) {
      this.core.obs.log.error({ err }, 'raising the admin completion vector failed');
    }
    // A doorbell or an ACQ_HEAD that arrived while the last command ran, possibly after a reset and
    // re-enable under a newer epoch (kick() refused to start a second loop while this one ran).
    if (this.active && this.head !== this.tail && ((this.acqTail - this.acqHead) >>> 0) < this.acqSize) {
      this.kick();
    }
  }

  private async execute(cmd: AdminCommand, epoch: number): Promise<Outcome> {
    const handler = this.handlers[cmd.opcode];
    if (handler === undefined) return fail(Status.BadOpcode, `unknown opcode 0x${cmd.opcode.toString(16)}`);
    const { stallAdminOpcode, stallAdminMs } = this.core.config;
    if (stallAdminMs > 0 && cmd.opcode === stallAdminOpcode) {
      // Fault injection (config stallAdminOpcode/stallAdminMs): a command the device sits on, so a
      // driver's timeout path can be tested. A reset meanwhile abandons it like any command.
      const fields = { opcode: cmd.opcode, op: OPCODE_NAMES[cmd.opcode] ?? 'UNKNOWN', cmdId: cmd.cmdId, ms: stallAdminMs };
      this.core.obs.log.warn(fields, 'stalling admin command (fault injection)');
      this.core.obs.emit('admin-stall', { ...fields, phase: 'start' }, 'admin command stalled');
      await new Promise((r) => setTimeout(r, stallAdminMs));
      const abandoned = epoch !== this.core.epoch;
      this.core.obs.emit('admin-stall', { ...fields, phase: abandoned ? 'abandoned' : 'resumed' }, 'admin command stall over');
      if (abandoned) return null;
    }
    this.core.expectDoorbells();
    try {
      return await handler(cmd, epoch);
    } catch (err) {
      if (err instanceof DmaError) return fail(Status.BadAddress, err.message);
      this.core.obs.log.error({ err, opcode: cmd.opcode, cmdId: cmd.cmdId }, 'admin command handler failed');
      return fail(Status.BadParam, 'internal error');
    }
  }

  /** Writes the completion (flags with the phase last); false when the ACQ is gone (fatal). */
  private async complete(cmd: AdminCommand, o: NonNullable<Outcome>, epoch: number): Promise<boolean> {
    const c: AdminCompletion = { cmdId: cmd.cmdId, status: o.status, result0: o.result0 ?? 0, result1: o.result1 ?? 0 };
    const index = this.acqTail;
    const phase = phaseOf(index, this.acqSize);
    const addr = this.acqBase + BigInt(ACQ_ENTRY_SIZE * (index & (this.acqSize - 1)));
    const entry = encodeAdminCompletion(c, phase);
    const stale = encodeAdminCompletion(c, phase ^ 1);
    try {
      await this.core.dma.write(addr, stale);
      if (epoch !== this.core.epoch) return false;
      // The phase write hands the entry to the guest, which may write ACQ_HEAD past it before this
      // DMA's completion reaches us (DMA through client messages): count it posted first.
      this.acqTail = (this.acqTail + 1) >>> 0;
      await this.core.dma.write(addr + BigInt(PHASE.at), entry.subarray(PHASE.at, PHASE.at + PHASE.length));
    } catch (err) {
      if (epoch !== this.core.epoch) return false;
      if (!(err instanceof DmaError)) throw err;
      this.core.fatal(FatalCode.AdminQueueAddress, `admin completion queue write failed: ${err.message}`);
      return false;
    }
    if (epoch !== this.core.epoch) return false;
    const obs = this.core.obs;
    obs.counters.adminCommands++;
    const fields = {
      opcode: cmd.opcode,
      op: OPCODE_NAMES[cmd.opcode] ?? 'UNKNOWN',
      cmdId: cmd.cmdId,
      status: c.status,
      statusName: STATUS_NAMES[c.status],
      result0: c.result0,
      result1: c.result1,
      why: o.why ?? null,
    };
    if (c.status !== Status.Ok) {
      obs.counters.adminErrors++;
      // A failed command is the driver's mistake: worth a warning, not only a debug line.
      obs.log.warn({ guestError: true, ...fields }, 'admin command failed');
      obs.emit('admin', fields, 'admin command failed');
    } else {
      obs.emit('admin', fields, 'admin command');
    }
    return true;
  }
}
