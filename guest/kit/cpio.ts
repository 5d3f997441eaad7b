// Writes "newc" cpio archives (the initramfs format) in memory, so device nodes need no root and output is reproducible.

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;
const S_IFLNK = 0o120000;

interface Entry {
  readonly name: string;
  readonly mode: number;
  readonly data: Buffer;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Collects entries, then `finish()` returns the archive with its trailer. Owner root, mtime 0. */
export class CpioWriter {
  private readonly entries: Entry[] = [];

  directory(name: string, perm = 0o755): this {
    return this.add(name, S_IFDIR | perm, Buffer.alloc(0));
  }

  file(name: string, data: Buffer, perm = 0o644): this {
    return this.add(name, S_IFREG | perm, data);
  }

  symlink(name: string, target: string): this {
    return this.add(name, S_IFLNK | 0o777, Buffer.from(target));
  }

  charDevice(name: string, major: number, minor: number, perm = 0o600): this {
    return this.add(name, S_IFCHR | perm, Buffer.alloc(0), major, minor);
  }

  private add(name: string, mode: number, data: Buffer, rdevMajor = 0, rdevMinor = 0): this {
    if (!name || name.startsWith('/') || name.split('/').includes('..')) throw new Error(`bad cpio path: ${name}`);
    this.entries.push({ name, mode, data, rdevMajor, rdevMinor });
    return this;
  }

  finish(): Buffer {
    const parts: Buffer[] = [];
    let ino = 1;
    const emit = (e: Entry) => {
      const name = Buffer.from(e.name + '\0');
      const header = Buffer.from(
        '070701' +
          hex8(ino++) +
          hex8(e.mode) +
          hex8(0) + // uid
          hex8(0) + // gid
          hex8((e.mode & 0o170000) === S_IFDIR ? 2 : 1) + // nlink
          hex8(0) + // mtime
          hex8(e.data.length) +
          hex8(0) + // devmajor
          hex8(0) + // devminor
          hex8(e.rdevMajor) +
          hex8(e.rdevMinor) +
          hex8(name.length) +
          hex8(0), // check
        'ascii',
      );
      parts.push(header, name, Buffer.alloc(pad4(header.length + name.length)), e.data, Buffer.alloc(pad4(e.data.length)));
    };
    for (const e of this.entries) emit(e);
    emit({ name: 'TRAILER!!!', mode: 0, data: Buffer.alloc(0), rdevMajor: 0, rdevMinor: 0 });
    return Buffer.concat(parts);
  }
}
