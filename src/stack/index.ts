/**
 * The src/stack room's public face (the local stack (Redis, SoftHSM token, the stand-in) and runtime resolution).
 * Other rooms import from here only; files inside the room import each other directly.
 */
export { AWS_ACCOUNT, AWS_PROFILE, AWS_REGION, awsStatus } from './aws.js';
export type { StandInScope } from './aws.js';
export { readState, stackPaths } from './home.js';
export { requireRedis, resolveRuntime } from './runtime.js';
export type { HsmSettings, Runtime } from './runtime.js';
export { ensureLocalToken, stackDown, stackStatus, stackUp } from './stack.js';
export type { StackStatus } from './stack.js';
