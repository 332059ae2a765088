/**
 * Pacing and retries for AWS calls: a token bucket shared by concurrent callers (`Pacer`),
 * full-jitter exponential backoff (`backoff`), an abortable sleep, and `withRetries`, which
 * repeats a call while its error is one the caller's policy deems safe to repeat.
 *
 * Which errors are safe to repeat depends on the call: throttling happens before any side
 * effect, so every call may be repeated after it; a 5xx or a broken connection may come after
 * the side effect, so only reads are repeated after those ('transient'). The clock, the sleep
 * and the random source are injectable for unit tests.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { ProvlineError } from '../core/index.js';
import { awsErrorName, isRetryableAwsError, isThrottlingAwsError } from './aws-errors.js';

export interface Clock {
  /** Milliseconds on a monotonic scale. */
  now(): number;
  /** Resolves after `ms`; rejects (with anything) when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) => delay(ms, undefined, signal ? { signal } : undefined),
};

export function abortedError(signal: AbortSignal | undefined, what: string): ProvlineError {
  return new ProvlineError('ABORTED', `${what} was abandoned`, {
    retryable: false,
    details: { operation: what },
    cause: signal?.reason,
  });
}

/** Sleeps `ms`; an abort becomes ProvlineError ABORTED. */
export async function sleepFor(
  ms: number,
  signal: AbortSignal | undefined,
  what: string,
  clock: Clock = systemClock,
): Promise<void> {
  if (signal?.aborted) throw abortedError(signal, what);
  try {
    await clock.sleep(ms, signal);
  } catch (e) {
    if (signal?.aborted) throw abortedError(signal, what);
    throw e;
  }
}

export interface PacerOptions {
  /** Target calls per second (> 0), shared by everyone who takes from this pacer. */
  perSecond: number;
  /** Calls that may go at once after an idle spell; default 1 (evenly spaced calls). */
  burst?: number;
  clock?: Clock;
}

/**
 * A token bucket. `take()` resolves when the caller may make its call. Concurrent callers
 * reserve successive slots synchronously, so N callers at once are spread over N / perSecond
 * seconds; an aborted wait gives its slot back.
 */
export class Pacer {
  readonly perSecond: number;
  readonly burst: number;
  private readonly clock: Clock;
  private tokens: number;
  private last: number;

  constructor(opts: PacerOptions) {
    if (!(opts.perSecond > 0) || !Number.isFinite(opts.perSecond))
      throw new RangeError(`Pacer: perSecond must be a positive number, not ${opts.perSecond}`);
    this.perSecond = opts.perSecond;
    this.burst = Math.max(1, opts.burst ?? 1);
    this.clock = opts.clock ?? systemClock;
    this.tokens = this.burst;
    this.last = this.clock.now();
  }

  async take(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw abortedError(signal, 'waiting for a call slot');
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.perSecond) / 1000);
    this.last = now;
    this.tokens -= 1;
    if (this.tokens >= 0) return;
    const waitMs = (-this.tokens * 1000) / this.perSecond;
    try {
      await sleepFor(waitMs, signal, 'waiting for a call slot', this.clock);
    } catch (e) {
      this.tokens += 1;
      throw e;
    }
  }
}

export interface BackoffOptions {
  baseMs?: number;
  capMs?: number;
  random?: () => number;
}

/** Full-jitter exponential backoff: a random delay in [0, min(cap, base · 2^attempt)). */
export function backoff(attempt: number, opts: BackoffOptions = {}): number {
  const { baseMs = 100, capMs = 5000, random = Math.random } = opts;
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** Math.max(0, attempt)));
}

/**
 * - `throttling`: repeat only after throttling (no side effect happened); for writes.
 * - `transient`: also after 5xx and network errors; for reads and idempotent writes.
 * - a function: decides by the error's name (awsErrorName).
 */
export type RetryPolicy = 'throttling' | 'transient' | ((errorName: string) => boolean);

export interface RetryOptions extends BackoffOptions {
  retry: RetryPolicy;
  /** Attempts in all, the first included; default 6. */
  maxAttempts?: number;
  signal?: AbortSignal;
  /** Taken before every attempt. */
  pacer?: Pacer;
  /** Names the call in ABORTED errors. */
  what: string;
  clock?: Clock;
}

export function shouldRetry(policy: RetryPolicy, e: unknown): boolean {
  const name = awsErrorName(e);
  if (typeof policy === 'function') return policy(name);
  return policy === 'throttling' ? isThrottlingAwsError(name) : isRetryableAwsError(name);
}

/** Runs `call` until it succeeds, fails in a way the policy does not repeat, or runs out. */
export async function withRetries<T>(call: (attempt: number) => Promise<T>, o: RetryOptions): Promise<T> {
  const maxAttempts = o.maxAttempts ?? 6;
  for (let attempt = 0; ; attempt++) {
    if (o.signal?.aborted) throw abortedError(o.signal, o.what);
    await o.pacer?.take(o.signal);
    try {
      return await call(attempt);
    } catch (e) {
      if (o.signal?.aborted) throw abortedError(o.signal, o.what);
      if (attempt + 1 >= maxAttempts || !shouldRetry(o.retry, e)) throw e;
      await sleepFor(backoff(attempt, o), o.signal, o.what, o.clock);
    }
  }
}
