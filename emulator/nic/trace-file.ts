// A NicTrace that appends every record to a file as ndjson with ISO timestamps (`vrnic serve --trace FILE`).
import * as fs from 'node:fs';
import type { NicTrace, TraceRecord } from './trace';

/**
 * Buffers lines and writes them with one synchronous append per flush: the device calls
 * record() on its hot path, so it must not wait on the disk, and a crash loses at most
 * `flushMs` worth of records.
 */
export class TraceFile implements NicTrace {
  private readonly fd: number;
  private lines: string[] = [];
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  records = 0;

  constructor(
    readonly path: string,
    private readonly flushMs = 100,
  ) {
    // 'a': a trace survives daemon restarts; the caller truncates if it wants a fresh file.
    this.fd = fs.openSync(path, 'a', 0o644);
  }

  record(rec: TraceRecord): void {
    if (this.closed) return;
    const { t, ...rest } = rec;
    this.lines.push(JSON.stringify({ t: new Date(t).toISOString(), tMs: Math.round(t * 1000) / 1000, ...rest }));
    this.records++;
    if (this.lines.length >= 1024) this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(() => this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.lines.length === 0) return;
    const data = this.lines.join('\n') + '\n';
    this.lines = [];
    try {
      fs.writeSync(this.fd, data);
    } catch (err) {
      // Runs from a timer: a full disk must cost the trace, not the daemon.
      process.emitWarning(`vrnic trace ${this.path}: ${(err as Error).message}; tracing stopped`);
      this.shut();
    }
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.shut();
  }

  private shut(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}
