// vrnic's TypeScript API, for integration test suites: the daemon, the device, a vfio-user client, the control plane, QEMU and the unplug scenario.

// The emulator and how to serve it.
export { Daemon, qemuDeviceArg, qemuAttachLine, type DaemonOptions, type DaemonStatus } from './daemon';
export { defaultSocketPath, claimSocketPath, SocketPathError } from './socket-path';
export { availableTransports, resolveTransport, libvfioUserUnavailable, type TransportChoice, type TransportName } from './vfio-user/transports/index';
export { configureLogging, rootLogger, type LogLevel, type LogOptions } from './log';
export { loadDeviceConfig } from './device-config';
export { createNic, validateNicConfig, NIC_DEFAULTS, NicConfigError, TraceFile, type Nic, type NicConfig, type NicConfigInput, type NicStatus, type TraceRecord } from '../emulator/nic/index';
export type { PciDevice, DeviceContext, DmaAccess, InterruptSink, BarDecl } from '../emulator/framework/device';

// Playing QEMU's part without QEMU: a vfio-user client and guest memory it owns.
export * from './vfio-user/client/index';

// Making the device vanish, and asking QEMU to remove it.
export * from './control/index';
export { QmpClient, QmpCommandError, QmpClosedError, QmpTimeoutError, type QmpEvent } from './qmp/client';

// The guest and QEMU.
export { buildGuestImage, latestGuestImage, guestAppend, GUEST_SCENARIOS, type GuestImage, type GuestBuildOptions, type GuestScenario } from '../guest/kit/image';
export { qemuArgs, formatCommandLine, shellQuote, vfioUserDeviceJson, COMMAND_LINE_FORMATS, type CommandLineFormat, type QemuOptions } from '../qemu-config/args';
export { findQemu, probeQemu, requireVfioUserQemu, QemuError, type FoundQemu, type QemuSource } from '../qemu-config/qemu';
export { provisionQemu, provisionedQemu, type ProvisionedQemu } from '../qemu-config/provision';

// The unplug scenario and its verdict.
export { runUnplugTest, type UnplugTestOptions } from './unplug/runner';
export { reportHuman, reportJson, type UnplugReport, type UnplugTimings } from './unplug/report';
export { DRIVER_BUGS, type DriverBug } from './unplug/evidence';
