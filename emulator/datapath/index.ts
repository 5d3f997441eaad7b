// The device-independent data path: what a device model imports to carry RDMA traffic.
export * from './model';
export { DataPathEngine, opcodeAllowed, type DataPathHost, type EngineStats } from './engine';
export { Fabric, sharedFabric, crc32, type FaultPlan, type FabricStats } from './fabric';
export { checkLocal, checkRemote, translate } from './memory';
