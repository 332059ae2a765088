/**
 * Station results as journal transitions. One pure mapping serves both the online station
 * (straight into Redis) and `provline station sync` (replaying the cache's local results log),
 * so a result means the same whichever way it reaches the journal, and replaying it twice
 * changes nothing:
 *
 *   flashed   ← registered | flashed | failed   (never back from verified or connected)
 *   verified  ← flashed                         (already verified: "same", nothing written)
 *   connected ← verified                        (the device's first MQTT connect, CONNACK 0)
 *   failed    ← registered | flashed            (a verified device is never failed by a station,
 *               verified, for a failed connect   except when its first connect fails; a
 *                                               connected device never is)
 */
import { z } from 'zod';
import type { TransitionOutcome, TransitionRequest } from '../../batch/index.js';

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
  to: z.enum(['flashed', 'verified', 'connected', 'failed']),
  fields: z.record(z.string(), z.string()),
  error: z.object({ code: z.string(), message: z.string(), stage: z.string() }).optional(),
});

export type ResultEntry = z.infer<typeof ResultEntrySchema>;

const FROM = {
  // 'accepted': a claim device gets its claim straight from intake (strategy claim).
  flashed: ['registered', 'signed', 'flashed', 'failed', 'accepted'],
  verified: ['flashed'],
  connected: ['verified'],
  failed: ['registered', 'signed', 'flashed'],
} as const;

/** The error stage of a failed first connect: the only failure that may follow `verified`. */
export const CONNECT_STAGE = 'connect';

export function transitionFor(e: ResultEntry): TransitionRequest {
  const fields = { ...e.fields, attempt: e.attempt };
  const from = e.to === 'failed' && e.error?.stage === CONNECT_STAGE ? (['verified'] as const) : FROM[e.to];
  if (e.to === 'failed' && e.error) {
    Object.assign(fields, {
      errorCode: e.error.code,
      errorMessage: e.error.message,
      errorStage: e.error.stage,
    });
  }
  return { batchId: e.batchId, serial: e.serial, to: e.to, from, fields };
}

/**
 * What a transition outcome means for a station result:
 * - applied: the journal now says what the station found (moved, or already there);
 * - superseded: the journal is further on (verified, connected) and stays so;
 * - rejected: the journal disagrees (unknown device, another batch, a state the result cannot
 *   follow); reported, never forced.
 */
export type Applied = 'applied' | 'superseded' | 'rejected';

export function interpret(outcome: TransitionOutcome): Applied {
  if (outcome.status === 'ok' || outcome.status === 'same') return 'applied';
  if (outcome.status === 'conflict' && (outcome.current === 'verified' || outcome.current === 'connected'))
    return 'superseded';
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
