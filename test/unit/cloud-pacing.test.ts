/** Pacer (token bucket on a fake clock), backoff, and which AWS errors withRetries repeats. */
import { describe, expect, it } from 'vitest';
import { isProvlineError } from '../../src/core/errors.js';
import { Pacer, backoff, withRetries, type Clock } from '../../src/cloud/pacing.js';

/** A clock whose sleeps are recorded and resolve at once, without moving time. */
function fakeClock(): Clock & { t: number; slept: number[] } {
  const clock = {
    t: 0,
    slept: [] as number[],
    now: () => clock.t,
    sleep(ms: number, signal?: AbortSignal): Promise<void> {
      clock.slept.push(ms);
      if (signal?.aborted) return Promise.reject(new Error('aborted'));
      return Promise.resolve();
    },
  };
  return clock;
}

/** A clock whose sleeps never end until their signal aborts. */
function stuckClock(): Clock {
  return {
    now: () => 0,
    sleep: (_ms, signal) =>
      new Promise((_res, rej) => signal?.addEventListener('abort', () => rej(new Error('aborted')))),
  };
}

const throttled = (): Error =>
  Object.assign(new Error('Rate exceeded'), {
    name: 'ThrottlingException',
    $metadata: { httpStatusCode: 400 },
  });

describe('Pacer', () => {
  it('spreads concurrent callers over successive slots', async () => {
    const clock = fakeClock();
    const pacer = new Pacer({ perSecond: 10, clock });
    await Promise.all(Array.from({ length: 5 }, () => pacer.take()));
    expect(clock.slept.map(Math.round)).toEqual([100, 200, 300, 400]);
  });

  it('refills with time, up to the burst', async () => {
    const clock = fakeClock();
    const pacer = new Pacer({ perSecond: 10, burst: 3, clock });
    await Promise.all([pacer.take(), pacer.take(), pacer.take()]);
    expect(clock.slept).toEqual([]);
    clock.t = 10_000; // long idle: only `burst` calls go at once
    await Promise.all(Array.from({ length: 4 }, () => pacer.take()));
    expect(clock.slept.map(Math.round)).toEqual([100]);
  });

  it('gives an aborted slot back and reports ABORTED', async () => {
    const pacer = new Pacer({ perSecond: 1, clock: stuckClock() });
    await pacer.take();
    const ac = new AbortController();
    const waiting = pacer.take(ac.signal);
    ac.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'ABORTED' });
    const clock = fakeClock();
    const again = new Pacer({ perSecond: 1, clock });
    await again.take();
    await expect(again.take(AbortSignal.abort())).rejects.toMatchObject({ code: 'ABORTED' });
  });

  it('refuses a rate that is not positive', () => {
    expect(() => new Pacer({ perSecond: 0 })).toThrow(RangeError);
    expect(() => new Pacer({ perSecond: Number.NaN })).toThrow(RangeError);
  });
});

describe('backoff', () => {
  it('is full jitter under an exponential cap', () => {
    expect(backoff(0, { random: () => 0.999 })).toBe(99);
    expect(backoff(3, { random: () => 0.5 })).toBe(400);
    expect(backoff(30, { random: () => 0.999, capMs: 5000 })).toBe(4995);
    expect(backoff(5, { random: () => 0 })).toBe(0);
  });
});

describe('withRetries', () => {
  const clock = fakeClock();

  it('repeats throttling, then succeeds', async () => {
    let calls = 0;
    const out = await withRetries(() => (++calls < 3 ? Promise.reject(throttled()) : Promise.resolve('ok')), {
      retry: 'throttling',
      what: 'x',
      clock,
      random: () => 0,
    });
    expect([out, calls]).toEqual(['ok', 3]);
  });

  it('does not repeat a 5xx under the throttling policy, but does under transient', async () => {
    const unavailable = Object.assign(new Error('down'), {
      name: 'ServiceUnavailableException',
      $metadata: {},
    });
    let calls = 0;
    const fail = (): Promise<never> => (calls++, Promise.reject(unavailable));
    await expect(withRetries(fail, { retry: 'throttling', what: 'x', clock })).rejects.toBe(unavailable);
    expect(calls).toBe(1);
    await expect(
      withRetries(fail, { retry: 'transient', what: 'x', maxAttempts: 3, clock, random: () => 0 }),
    ).rejects.toBe(unavailable);
    expect(calls).toBe(4);
  });

  it('stops at an abort with ABORTED', async () => {
    const e = await withRetries(() => Promise.reject(throttled()), {
      retry: 'throttling',
      what: 'RegisterThing',
      signal: AbortSignal.abort(),
    }).catch((x: unknown) => x);
    expect(isProvlineError(e) && e.code).toBe('ABORTED');
  });
});
