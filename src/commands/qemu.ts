// `vrnic qemu provision` and `vrnic qemu find`: get a QEMU with the vfio-user client, and say which one every command uses.
import { parseArgs } from 'node:util';
import { findQemu, HOW_TO_GET_QEMU, probeQemu, QemuError } from '../../qemu-config/qemu';
import { DEFAULT_QEMU_SUITE, provisionQemu } from '../../qemu-config/provision';
import { type Command, UsageError } from './command';

const help = `Usage: vrnic qemu provision [--suite S] [--mirror URI] [--force] [--json]
       vrnic qemu find [--qemu PATH] [--json]

provision: puts Debian's own QEMU with the vfio-user client (package qemu-system-x86 from
${DEFAULT_QEMU_SUITE}, QEMU 11.1) into vrnic's cache without touching the host system: mmdebstrap
builds a small root holding only that QEMU and its libraries, from the Debian mirror the host's
apt already uses, and a wrapper runs it with that root's loader. About a minute and 240 MB the
first time; a second run finds it and does nothing. The result is checked for vfio-user-pci.
Needs: mmdebstrap (apt-get install mmdebstrap), root or user namespaces.

find: prints the QEMU that unplug-test, qemu-args and the tests would use, where it came from,
its version and whether it has vfio-user-pci. Every command looks in this order:
  1. --qemu PATH          (the command's flag)
  2. VRNIC_QEMU           (environment)
  3. the provisioned QEMU (vrnic qemu provision; cache in $VRNIC_CACHE or <package>/.vrnic-cache)
  4. qemu-system-x86_64 on PATH
The first one found is used; one without vfio-user-pci is refused, never skipped over.

Flags:
  --suite S      Debian suite to provision from (default ${DEFAULT_QEMU_SUITE}; sid also works)
  --mirror URI   Debian mirror (default: the one in the host's apt sources)
  --force        provision again even if a working copy is there
  --qemu PATH    (find) the candidate a command's --qemu flag would name
  --json         one JSON object on stdout (progress goes to stderr)
  -h, --help     this text

Exit codes: 0 provisioned / found one with vfio-user-pci; 1 failed / none usable; 2 bad flags.`;

export const qemuCommand: Command = {
  name: 'qemu',
  summary: "provision Debian's QEMU with vfio-user into the cache; show which QEMU is used",
  help,
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub !== 'provision' && sub !== 'find') {
      throw new UsageError(sub === undefined ? 'missing subcommand: provision or find' : `unknown subcommand '${sub}' (provision, find)`);
    }
    let v: { suite?: string; mirror?: string; force?: boolean; qemu?: string; json?: boolean };
    try {
      ({ values: v } = parseArgs({
        args: rest,
        options:
          sub === 'provision'
            ? { suite: { type: 'string' }, mirror: { type: 'string' }, force: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } }
            : { qemu: { type: 'string' }, json: { type: 'boolean', default: false } },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const say = (line: string) => (v.json ? process.stderr : process.stdout).write(line + '\n');

    if (sub === 'provision') {
      if (v.mirror !== undefined && !/^(https?|file):\/\/\S+$/.test(v.mirror)) throw new UsageError(`--mirror: '${v.mirror}' is not an http(s) or file URI`);
      const q = await provisionQemu({ suite: v.suite, mirror: v.mirror, force: v.force, progress: say });
      if (v.json) process.stdout.write(JSON.stringify(q) + '\n');
      else say(`use it: nothing to set; every vrnic command finds it (vrnic qemu find)`);
      return 0;
    }

    const found = findQemu({ flag: v.qemu });
    if (!found) throw new QemuError(`no qemu-system-x86_64 found: ${HOW_TO_GET_QEMU}`);
    const info = await probeQemu(found.binary);
    if (v.json) process.stdout.write(JSON.stringify({ ...info, source: found.source }) + '\n');
    else say(`${found.binary}\n  from ${found.source}, QEMU ${info.version}, vfio-user-pci: ${info.hasVfioUser ? 'yes' : 'no'}`);
    if (!info.hasVfioUser) {
      say(`this QEMU cannot attach the vrnic device: ${HOW_TO_GET_QEMU}`);
      return 1;
    }
    return 0;
  },
};
