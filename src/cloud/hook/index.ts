/** provline's pre-provisioning hook: the Lambda handler, its allow-list format, its local runner. */
export * from './allow-list.js';
export * from './decide.js';
export {
  depsFromEnv,
  handler,
  iotCertificateStatus,
  leaseFromEnv,
  makeHandler,
  type HookDeps,
  type HookHandler,
  type LambdaContext,
} from './handler.js';
export { mapInStandIn, startHookRunner, type HookRunner } from './runner.js';
