/**
 * The journal in Redis as a flashing station sees it (`DeviceJournal`, src/batch/journal.ts):
 * records, batch plans and endpoints, and life-cycle transitions. The station maps these to
 * its lookups and results itself; this adapter adds nothing but the wiring.
 */
import type { BatchView, ClaimView, DeviceJournal } from '../batch/index.js';
import { ProvlineError, messageOf } from '../core/index.js';
import type { BatchStore } from './batches.js';
import type { Journal } from './journal.js';

export function stationJournal(
  journal: Journal,
  batches: BatchStore,
  /** Claim batches: the profile's current claim (src/jobs/claim.ts claimViewOf). */
  claimOf?: (profile: string) => Promise<ClaimView | undefined>,
): DeviceJournal {
  return {
    records: (serials) => journal.getMany([...serials]),
    serials: (batchId, start, count) => journal.serials(batchId, start, count),
    batch: async (batchId): Promise<BatchView> => {
      const [plan, meta] = await Promise.all([batches.plan(batchId), batches.meta(batchId)]);
      const claim = plan.profile.strategy === 'claim' ? await claimOf?.(plan.profile.name) : undefined;
      return {
        plan,
        ...(claim ? { claim } : {}),
        ...(meta.endpoint ? { endpoint: meta.endpoint } : {}),
        ...(meta.rootCaPem ? { rootCaPem: meta.rootCaPem } : {}),
      };
    },
    transition: (requests) => journal.transitionMany([...requests]),
    logVisit: (serial, log) => journal.logVisit(serial, log),
  };
}

/** A station (or `station prefetch`/`sync`) that cannot reach the journal's Redis at start. */
export function stationJournalUnreachable(cause: unknown): ProvlineError {
  return new ProvlineError(
    'STATION_JOURNAL_UNREACHABLE',
    `the journal (Redis) is unreachable: ${messageOf(cause)}`,
    {
      cause,
      hint: 'check redis.url and the network, or run `provline stack up` for the local stack',
    },
  );
}
