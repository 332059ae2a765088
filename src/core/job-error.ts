/**
 * What a BullMQ job processor throws when its work fails. A ProvlineError that says it is not
 * retryable (a batch that does not exist, an invalid plan, an HSM that refuses the PIN) would
 * fail the same way on every attempt, so it becomes BullMQ's UnrecoverableError: the job fails
 * at once instead of being retried with backoff. Everything else (retryable codes, and errors
 * that are not ours, such as a Redis connection dropping) is thrown as it is and retried.
 */
import { UnrecoverableError } from 'bullmq';
import { isProvlineError } from './errors.js';

export function toJobError(e: unknown): unknown {
  if (!isProvlineError(e) || e.retryable) return e;
  const failure = new UnrecoverableError(`${e.message} [${e.code}]`);
  failure.cause = e;
  return failure;
}
