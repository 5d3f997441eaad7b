// The vrnic NIC model's public surface: the factory, its config, the trace interface and the wire layouts tests and tools build on.
export { createNic, Nic, UAR_BAR, MSIX_BAR, NIC_CLASS_CODE, type NicStatus, type CreateNicOptions } from './device';
export { IRQ_MODES, NIC_DEFAULTS, NicConfigError, validateNicConfig, nicConfigToJson, type IrqMode, type NicConfig, type NicConfigInput, type NicPollConfig } from './config';
export type { NicTrace, TraceRecord, TraceKind, NicCounters } from './trace';
export { TraceFile } from './trace-file';
export { Reg, REG_NAMES, BAR0_SIZE, CTRL_ENABLE, CTRL_RESET, STATUS_READY, STATUS_FATAL } from './regs';
export { UAR_PAGE_SIZE, UAR_DOORBELL_AREA } from './objects';
export * from './wire';
