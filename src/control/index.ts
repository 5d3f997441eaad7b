// The control plane's public API: the server a daemon runs, the client test suites use, and vanish itself.
export { startControlServer, controlPathFor, type ControlServer, type ControlServerOptions, type ControlStatus, type ArmedVanishResult } from './server';
export { TraceVanishArmer, isTraceSource, type VanishArmer, type FiredEvent, type TraceSource } from './armer';
export { parseWhen, checkWhen, formatWhen, matchesRecord, WhenError, WHEN_SYNTAX, type WhenSpec } from './when';
export { ControlClient, ControlError, ControlClosedError } from './client';
export { vanish, VanishError, type VanishOptions, type VanishResult } from './vanish';
export { VANISH_MODES, MAX_REQUEST_LINE, type VanishMode, type VanishWhen, type ControlRequest, type ControlReply } from './protocol';
export { deviceStatus, type DeviceStatusHook, type DeviceStatusView } from './device-status';
