/**
 * Station results as journal transitions. One pure mapping serves both the online station
 * (straight into Redis) and `provline station sync` (replaying the cache's local results log),
 * so a result means the same whichever way it reaches the journal, and replaying it twice
 * changes nothing:
 *
 *   flashed   ← registered | flashed | failed   (never back from verified)
 *   verified  ← flashed                         (already verified: "same", nothing written)
 *   failed    ← registered | flashed            (a verified device is never failed by a station)
 */
import { z } from 'zod';
import type { TransitionOutcome, TransitionRequest } from '../../batch/journal.js';

export const RESULT_VERSION = 1;

export const ResultEntrySchema = z.object({
  v: z.literal(RESULT_VERSION),
  /** Unique per entry. */
  id: z.string().min(1),
  /** One per device visit (flashed and verified of one visit share it). */
  attempt: z.string().min(1),
  /** Epoch ms when the station decided the result. */
  at: z.number(),
  stationId: z.string(),
  batchId: z.string().min(1),
  serial: z.string().min(1),
  to: z.enum(['flashed', 'verified', 'failed']),
  fields: z.record(z.string(), z.string()),
  error: z.object({ code: z.string(), message: z.string(), stage: z.string() }).optional(),
});

export type ResultEntry = z.infer<typeof ResultEntrySchema>;

const FROM = {
  flashed: ['registered', 'flashed', 'failed'],
  verified: ['flashed'],
  failed: ['registered', 'flashed'],
} as const;

export function transitionFor(e: ResultEntry): TransitionRequest {
  const fields = { ...e.fields, attempt: e.attempt };
  if (e.to === 'failed' && e.error) {
    Object.assign(fields, {
      errorCode: e.error.code,
      errorMessage: e.error.message,
      errorStage: e.error.stage,
    });
  }
  return { batchId: e.batchId, serial: e.serial, to: e.to, from: FROM[e.to], fields };
}

/**
 * What a transition outcome means for a station result:
 * - applied: the journal now says what the station found (moved, or already there);
 * - superseded: the journal is further on (verified) and stays so;
 * - rejected: the journal disagrees (unknown device, another batch, a state the result cannot
 *   follow); reported, never forced.
 */
export type Applied = 'applied' | 'superseded' | 'rejected';

export function interpret(outcome: TransitionOutcome): Applied {
  if (outcome.status === 'ok' || outcome.status === 'same') return 'applied';
  if (outcome.status === 'conflict' && outcome.current === 'verified') return 'superseded';
  return 'rejected';
}

/** The journal's answer in words, for operator messages and sync reports. */
export function describeOutcome(o: TransitionOutcome): string {
  switch (o.status) {
    case 'conflict':
      return `the device is ${o.current}`;
    case 'unmet':
      return `a condition of the transition is unmet (state ${o.current})`;
    case 'missing':
      return 'the device is not in that batch';
    default:
      return o.status;
  }
}
