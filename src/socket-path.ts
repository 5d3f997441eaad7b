// Claiming a Unix socket path safely: refuse a live server's socket or a non-socket file, replace a stale socket.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export class SocketPathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SocketPathError';
  }
}

/** The default vfio-user socket: in a private directory of ours, never directly in a shared /tmp. */
export function defaultSocketPath(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  const dir = runtime ? path.join(runtime, 'vrnic') : path.join(os.tmpdir(), `vrnic-${uid}`);
  return path.join(dir, 'vrnic.sock');
}

/** Resolves true when something accepts connections on the socket at `p`. */
function answers(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    const done = (live: boolean) => {
      s.destroy();
      resolve(live);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(1000, () => done(true)); // a server too busy to accept is still alive
  });
}

export interface ClaimOptions {
  /** Accept a parent directory that others can write to. */
  readonly force?: boolean;
  /** Create the parent directory (mode 0700) when missing. */
  readonly createDir?: boolean;
}

/**
 * Makes `p` free for bind(): creates the parent directory if asked, refuses a directory others
 * may write to (they could swap the socket under us) unless forced, refuses a path held by a
 * live server or by a non-socket file, and removes a stale socket left by a dead server.
 */
export async function claimSocketPath(p: string, opts: ClaimOptions = {}): Promise<string> {
  const abs = path.resolve(p);
  const dir = path.dirname(abs);
  if (opts.createDir) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  let dirStat: fs.Stats;
  try {
    dirStat = fs.statSync(dir);
  } catch {
    throw new SocketPathError(`${abs}: directory ${dir} does not exist`);
  }
  if (!dirStat.isDirectory()) throw new SocketPathError(`${abs}: ${dir} is not a directory`);
  if ((dirStat.mode & 0o002) !== 0 && !opts.force) {
    throw new SocketPathError(
      `${abs}: directory ${dir} is writable by others, who could replace the socket; use a private directory or --force`,
    );
  }
  if (Buffer.byteLength(abs) > 107) throw new SocketPathError(`${abs}: longer than a Unix socket path may be (107 bytes)`);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(abs);
  } catch {
    return abs; // free
  }
  if (!st.isSocket()) throw new SocketPathError(`${abs} exists and is not a socket; refusing to replace it`);
  if (await answers(abs)) throw new SocketPathError(`${abs} is held by a live server; stop it first or pick another --socket`);
  fs.unlinkSync(abs);
  return abs;
}
