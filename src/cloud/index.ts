/**
 * The src/cloud room's public face (AWS IoT and S3 adapters, templates, CA registration, the JITR activator, claims and the hook).
 * Other rooms import from here only; files inside the room import each other directly.
 */
export { findTaskByInputKey, putInput, readReports, renderInputFile, startTask, waitTask } from './bulk.js';
export type { BulkReports, TaskOutcome } from './bulk.js';
export * as caModule from './ca.js';
export { describeCa, jitpTemplateBody } from './ca.js';
export { describeCertificate } from './certificates.js';
export type { IssuedCertificate } from './certificates.js';
export {
  HOOK_PREFIX,
  accountOf,
  attachPolicy,
  ensureFleetTemplate,
  issueTemporaryClaim,
  listThingNames,
  publishAllowList,
  readHookRecords,
  readLots,
  registerClaimCertificate,
  setCertificateStatus,
} from './claim/aws.js';
export type { FleetTemplateResult, HookRecords, TemporaryClaim } from './claim/aws.js';
export { outsideAllowList, serialOutcome } from './claim/outcomes.js';
export type { SerialOutcome } from './claim/outcomes.js';
export { claimPolicy, claimPolicyGaps, clientIdPrefixOf } from './claim/policy.js';
export { deactivated, dueForDeactivation, revoked, rotated } from './claim/state.js';
export type { ClaimCredential, ClaimState } from './claim/state.js';
export { claimTemplateProblems } from './claim/template.js';
export { makeClients, requireBucket, requireRoleArn } from './clients.js';
export type { CloudClients } from './clients.js';
export { setDeviceCertificateStatus } from './device-certificate.js';
export type { DeviceCertificateStatus } from './device-certificate.js';
export { hookKeys, publicKeysFromPem, rowsDigest, sealAllowList } from './hook/allow-list.js';
export type { AllowList, AllowedDevice } from './hook/allow-list.js';
export { lintPolicy } from './policy-lint.js';
export { arnScope } from './arn-scope.js';
export type { ArnScope, Named, ScopeSource } from './arn-scope.js';
export { checkDevices, findOrphans, removeOrphan } from './registry.js';
export type { DeviceCheck, Orphan } from './registry.js';
export { describeDataEndpoint, ensureResources } from './resources.js';
export { Pacer, findCertificateForKey, registerThing } from './single.js';
export { HOOK_HANDLER, hookPackage } from './hook/package.js';
