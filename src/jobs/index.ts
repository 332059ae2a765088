/**
 * The src/jobs room's public face (queues, the journal, batches, submit, the HSM stage, the registrar, claims).
 * Other rooms import from here only; files inside the room import each other directly.
 */
export { BatchStore } from './batches.js';
export { checkFactoryCa } from './ca-preflight.js';
export type { CaPreflightProfile } from './ca-preflight.js';
export {
  ClaimStore,
  HOOK_PREFIX,
  allowListRows,
  checkClaimProfile,
  checkLotUnchanged,
  claimOf,
  claimPolicyProblems,
  claimStatus,
  createClaim,
  issueClaim,
  publishLot,
  retireDueClaims,
  revokeClaim,
  rotateClaim,
} from './claim.js';
export type { ClaimDeps, ClaimState } from './claim.js';
export { deviceHistory, deviceVisits } from './device-history.js';
export type { BatchHistory, DeviceHistory } from './device-history.js';
export { Journal } from './journal.js';
export { PipelineQueues, ROLES, connectionFromUrl } from './queues.js';
export type { Role } from './queues.js';
export { RedisWatch, isConnectionError, redactUrl, redisRetryStrategy } from './redis-watch.js';
export { reportRows } from './report.js';
export { startRunner, sweepActive } from './runner.js';
export type { Runner } from './runner.js';
export { stationJournal, stationJournalUnreachable } from './station-store.js';
export { RateMeter, batchStatus } from './status.js';
export type { BatchStatus } from './status.js';
export { submitBatch } from './submit.js';
export type { SubmitDeps } from './submit.js';
export { registerCsr, signCsrWithFactoryCa } from './registrar/index.js';
export { BulkSlot, slotOwner } from './slot.js';
