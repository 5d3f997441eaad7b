// `vrnic guest build`: builds (or reuses) the guest kit: kernel, initramfs, vrnic.ko, vrnic_pfn.ko, vrnic-test.
import { parseArgs } from 'node:util';
import { buildGuestImage, KERNEL_METAPACKAGE } from '../../guest/kit/image';
import { GUEST_MODELS, type GuestModel } from '../../guest/kit/pvrdma-kit';
import { type Command, UsageError } from './command';

const help = `Usage: vrnic guest build [--out DIR] [--force] [--kernel-release REL] [--headers DIR] [--model vrnic|pvrdma] [--json]

Builds the guest a vrnic test boots: Debian's kernel and busybox-static (fetched with apt-get
download and unpacked with dpkg-deb, nothing is installed on the host), the reference driver
vrnic.ko and the page-table helper vrnic_pfn.ko (Kbuild against the installed linux-headers), and
the static test program vrnic-test, packed into an initramfs whose /init loads ib_core, ib_uverbs,
vrnic_pfn and vrnic and runs vrnic-test as the kernel command line says (vrnic.bug=, vrnic.scenario=,
vrnic.watch=, ...). The result is cached under DIR/<hash of the inputs> and reused while the
sources, package versions and builder are unchanged.

Flags:
  --out DIR             cache directory (default $VRNIC_CACHE/guest, else <package>/.vrnic-cache/guest)
  --force               rebuild even if a cached image matches
  --kernel-release REL  Debian kernel release to pin, e.g. 6.1.0-56-amd64 (default: the one
                        ${KERNEL_METAPACKAGE} depends on now, or VRNIC_KERNEL_RELEASE)
  --headers DIR         Kbuild directory (default /usr/src/linux-headers-REL)
  --model M             vrnic (default) or pvrdma: adds vmxnet3, VMware's vmw_pvrdma built unmodified
                        from Debian's linux-source-6.1, and Debian's rdma-core tools and libraries
  --json                print the result as one JSON object on stdout (progress goes to stderr)
  -h, --help            this text

Needs: apt-get, dpkg-deb, modinfo (kmod), make, gcc, linux-headers-REL.
Exit codes: 0 built or reused; 1 the build failed; 2 bad flags.`;

export const guestCommand: Command = {
  name: 'guest',
  summary: 'build the guest kit (kernel, initramfs, driver, test program), cached',
  help,
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub !== 'build') throw new UsageError(sub === undefined ? 'missing subcommand: build' : `unknown subcommand '${sub}' (only: build)`);
    let values: { out?: string; force?: boolean; 'kernel-release'?: string; headers?: string; model?: string; json?: boolean };
    try {
      ({ values } = parseArgs({
        args: rest,
        options: {
          out: { type: 'string' },
          force: { type: 'boolean', default: false },
          'kernel-release': { type: 'string' },
          headers: { type: 'string' },
          model: { type: 'string', default: 'vrnic' },
          json: { type: 'boolean', default: false },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    if (!(GUEST_MODELS as readonly string[]).includes(values.model ?? '')) throw new UsageError(`--model ${values.model}: one of ${GUEST_MODELS.join(', ')}`);
    const progressTo = values.json ? process.stderr : process.stdout;
    const image = await buildGuestImage({
      outDir: values.out,
      force: values.force,
      kernelRelease: values['kernel-release'],
      headersDir: values.headers,
      model: values.model as GuestModel,
      progress: (line) => progressTo.write(line + '\n'),
    });
    if (values.json) {
      process.stdout.write(JSON.stringify(image) + '\n');
    } else {
      process.stdout.write(
        [`kernel   ${image.kernel}`, `initrd   ${image.initrd}`, `modules  ${image.modules.vrnic} ${image.modules.pfnHelper}`, `test     ${image.testProgram}`, `key      ${image.key}${image.cached ? ' (reused)' : ''}`].join('\n') + '\n',
      );
    }
    return 0;
  },
};
