// Splits text that arrives in chunks (a socket, a child's stdout) into whole lines.

/**
 * Buffers chunks and hands out each complete line, without its "\n" and a "\r" before it. What
 * is left after the last newline waits for the next chunk; `pending` says how much that is, so a
 * caller reading an untrusted peer can refuse a line that never ends.
 */
export class LineSplitter {
  private buf = '';

  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.onLine(line.endsWith('\r') ? line.slice(0, -1) : line);
    }
  }

  /** Characters received after the last newline. */
  get pending(): number {
    return this.buf.length;
  }

  /** The stream ended: hands out the last line when it had no newline. */
  end(): void {
    if (this.buf.length > 0) this.push('\n');
  }

  /** Drops the unfinished line (e.g. one that grew past what the caller accepts). */
  dropPending(): void {
    this.buf = '';
  }
}
