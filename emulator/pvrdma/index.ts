// The PVRDMA model's public surface: the factory, its config and the ABI constants.
export { createPvrdma, Pvrdma, type PvrdmaStatus, type CreatePvrdmaOptions } from './device';
export { PVRDMA_DEFAULTS, validatePvrdmaConfig, type PvrdmaConfig, type PvrdmaConfigInput } from './config';
export * as pvrdmaAbi from './abi';
