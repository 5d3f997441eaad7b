// Whether the end-to-end tests (a real guest on a QEMU with vfio-user-pci) can run here, and what to do when they cannot.
//
// Locally such a test skips with a printed reason. CI sets VRNIC_REQUIRE_E2E=1: there a missing
// QEMU, guest kernel headers or tool is a failure, so the product's core claim can never silently
// go unchecked by a green run.
import test, { type SerialFn, type SkipFn } from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { defaultKernelRelease } from '../../guest/kit/image';
import { findQemu } from '../../qemu-config/qemu';
import { skipping } from './skip';

export const E2E_REQUIRED = process.env.VRNIC_REQUIRE_E2E === '1';

let decided: { why: string | null; qemu?: string } | undefined;

/** Why a guest cannot be run with the vrnic device here, or null (with the QEMU that will be used). */
export function e2eUnavailable(): string | null {
  decided ??= decide();
  return decided.why;
}

function decide(): { why: string | null; qemu?: string } {
  let qemu: string | undefined;
  try {
    qemu = findQemu()?.binary;
  } catch (err) {
    return { why: (err as Error).message };
  }
  if (!qemu) return { why: 'no QEMU with vfio-user-pci (run `vrnic qemu provision`, or set VRNIC_QEMU)' };
  try {
    const devices = execFileSync(qemu, ['-machine', 'none', '-device', 'help'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
    if (!devices.includes('"vfio-user-pci"')) return { why: `${qemu} has no vfio-user-pci device (run \`vrnic qemu provision\`)` };
  } catch (err) {
    return { why: `${qemu} does not run: ${(err as Error).message.split('\n')[0]}` };
  }
  let release: string;
  try {
    release = defaultKernelRelease();
  } catch (err) {
    return { why: (err as Error).message };
  }
  const headers = `/usr/src/linux-headers-${release}/Makefile`;
  if (!fs.existsSync(headers)) return { why: `no kernel headers for the guest modules (apt-get install linux-headers-${release})` };
  return { why: null, qemu };
}

/**
 * The test function for end-to-end tests of one file: `serial` (guests are heavy; one at a time
 * per file) when they can run; when they cannot, a skip locally and, under VRNIC_REQUIRE_E2E, one
 * failing test that says why.
 */
export function e2eTest(file: string): SerialFn | SkipFn {
  const why = e2eUnavailable();
  if (why === null) return test.serial;
  if (!E2E_REQUIRED) {
    skipping(`${file}: end-to-end tests`, why);
    return test.skip;
  }
  test(`${file}: the end-to-end tests can run here (required by VRNIC_REQUIRE_E2E)`, (t) => t.fail(why));
  return test.skip;
}
