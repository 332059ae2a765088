/** The station daemon: ports, visits, the stores it looks devices up in and records to, views. */
export { runStation, type StationOptions, type StationRun } from './station.js';
export type { KeyUnwrapper } from './visit.js';
export {
  allVerified,
  emptySummary,
  type DeviceResult,
  type JournalStatus,
  type Outcome,
  type RecordedIn,
  type StationEvent,
  type StationStep,
  type StationSummary,
} from './events.js';
export {
  FallbackStore,
  JournalStore,
  type FallbackOptions,
  type RecordResult,
  type RegisterRequest,
  type StationStore,
} from './store.js';
export { CacheStore, StationCache, prefetch, type PrefetchSummary } from './cache.js';
export { syncResults, type SyncRejection, type SyncSummary } from './sync.js';
export { JsonLinesView, TtyView, type StationView } from './view.js';
export {
  csrSubject,
  decide,
  lookupFromRecord,
  type BundleLookup,
  type Decision,
  type DeviceLookup,
  type RegisterLookup,
  type StationIdentity,
} from './lookup.js';
export {
  RESULT_VERSION,
  ResultEntrySchema,
  describeOutcome,
  interpret,
  transitionFor,
  type Applied,
  type ResultEntry,
} from './results.js';
