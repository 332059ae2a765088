/**
 * Log noise during a Redis outage and `status` during a stall (issue 16, item 2), as pure
 * units: the watch logs one line per change of state, and a batch that has not moved for
 * STALL_MS is reported stalled, with no ETA.
 */
import { describe, expect, it } from 'vitest';
import type { Logger } from '../../src/core/log.js';
import type { BatchMeta } from '../../src/jobs/batches.js';
import { isConnectionError, REDIS_SETTLE_MS, RedisWatch, redactUrl } from '../../src/jobs/redis-watch.js';
import { STALL_MS, summarise } from '../../src/jobs/status.js';
import { STATES, type DeviceState } from '../../src/batch/states.js';

function recorder(): {
  log: Logger;
  lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }>;
} {
  const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  const at =
    (level: string) =>
    (obj: Record<string, unknown>, msg: string): void => {
      lines.push({ level, obj, msg });
    };
  const log = { warn: at('warn'), error: at('error'), info: at('info') } as unknown as Logger;
  return { log, lines };
}

const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });

describe('Redis outage logging', () => {
  it('log noise during a Redis outage: one line when it goes, one when it is back, however many errors between', () => {
    const { log, lines } = recorder();
    let t = Date.parse('2026-11-30T10:00:00Z');
    const watch = new RedisWatch({ log, target: 'redis://127.0.0.1:6379', now: () => t });
    for (let i = 0; i < 200; i++) watch.error(refused, 'journal');
    watch.error(new Error("Stream isn't writeable and enableOfflineQueue options is false"), 'commands');
    expect(watch.unreachableSince).toBe(t);
    t += 25_000;
    watch.reachable();
    watch.reachable();
    expect(lines).toEqual([
      {
        level: 'warn',
        obj: {
          event: 'redis-unreachable',
          target: 'redis://127.0.0.1:6379',
          since: '2026-11-30T10:00:00.000Z',
          retryEveryMs: 1000,
          reason: 'ECONNREFUSED',
        },
        msg: 'Redis at redis://127.0.0.1:6379 unreachable since 2026-11-30T10:00:00.000Z, retrying every 1 s',
      },
      {
        level: 'warn',
        obj: { event: 'redis-reachable', target: 'redis://127.0.0.1:6379', downMs: 25_000 },
        msg: 'Redis at redis://127.0.0.1:6379 reachable again after 25.0 s',
      },
    ]);
  });

  it('two unreachable lines for one outage (seen in CI): errors of clients still reconnecting just after another came back are not a new outage; a real one after that is', () => {
    const { log, lines } = recorder();
    let t = Date.parse('2026-11-30T10:00:00Z');
    const watch = new RedisWatch({ log, target: 'redis://127.0.0.1:6379', now: () => t });
    watch.error(refused, 'journal');
    t += 20_000;
    watch.reachable(); // the first client is back
    t += 500;
    watch.error(new Error('Connection is closed.'), 'queue register'); // a straggler's dead socket
    watch.error(refused, 'worker hsm');
    expect(watch.unreachableSince).toBeUndefined();
    expect(lines.map((l) => l.obj.event)).toEqual(['redis-unreachable', 'redis-reachable']);
    t += REDIS_SETTLE_MS;
    watch.error(refused, 'journal'); // errors past the window: Redis went away again
    expect(watch.unreachableSince).toBe(t);
    expect(lines.map((l) => l.obj.event)).toEqual([
      'redis-unreachable',
      'redis-reachable',
      'redis-unreachable',
    ]);
  });

  it('an outage that starts just after a reconnect is dated from its first error once its errors go on past the window', () => {
    const { log, lines } = recorder();
    let t = Date.parse('2026-11-30T10:00:00Z');
    const watch = new RedisWatch({ log, target: 'redis://127.0.0.1:6379', now: () => t });
    watch.reachable(); // a client connects
    t += 1000;
    const first = t;
    for (let i = 0; i < 4; i++, t += 900) watch.error(refused, 'journal'); // Redis killed: retries fail
    expect(watch.unreachableSince).toBe(first);
    expect(lines.map((l) => l.obj.event)).toEqual(['redis-unreachable']);
  });

  it('other errors are one line each, message only, and a repeating one is not repeated within a minute', () => {
    const { log, lines } = recorder();
    let t = 0;
    const watch = new RedisWatch({ log, target: 'r', now: () => t });
    const oops = new Error('ERR unknown command');
    watch.error(oops, 'worker hsm');
    watch.error(oops, 'worker hsm');
    t += 61_000;
    watch.error(oops, 'worker hsm');
    expect(lines.map((l) => [l.level, l.obj.err, l.obj.stack])).toEqual([
      ['error', 'ERR unknown command', undefined],
      ['error', 'ERR unknown command', undefined],
    ]);
  });

  it('tells connection errors from others, and keeps passwords out of the target', () => {
    expect(isConnectionError(refused)).toBe(true);
    expect(isConnectionError(new Error('Connection is closed.'))).toBe(true);
    expect(isConnectionError(new Error('ERR wrong number of arguments'))).toBe(false);
    expect(isConnectionError('ECONNREFUSED')).toBe(false);
    expect(redactUrl('redis://user:secret@10.0.0.5:6380/2')).toBe('redis://10.0.0.5:6380/2');
  });
});

describe('status of a stalled batch', () => {
  const meta: BatchMeta = {
    id: 'b1',
    profile: 'demo',
    createdAt: 1_000_000,
    total: 100,
    rejected: 0,
    source: 'a.csv',
    keyDelivery: 'wrapped',
    registrationMode: 'bulk',
    strategy: 'bulk',
  };
  const counts = (c: Partial<Record<DeviceState, number>>): Record<DeviceState, number> =>
    Object.fromEntries(STATES.map((s) => [s, c[s] ?? 0])) as Record<DeviceState, number>;

  it('status showed a rate and an ETA as if work went on: nothing moved for STALL_MS makes it stalled, without ETA', () => {
    const progressAt = meta.createdAt + 10_000;
    const s = summarise(
      meta,
      counts({ registered: 50, registering: 50 }),
      {},
      progressAt + STALL_MS + 5000,
      progressAt,
    );
    expect(s.stalled).toEqual({
      seconds: STALL_MS / 1000 + 5,
      lastActivity: new Date(progressAt).toISOString(),
    });
    expect(s.etaSeconds).toBeNull();
  });

  it('a registrar that still beats (a long bulk task) is not a stall', () => {
    const now = meta.createdAt + 10 * STALL_MS;
    const s = summarise(
      { ...meta, registrarAt: now - 1000 },
      counts({ registered: 50, registering: 50 }),
      {},
      now,
      meta.createdAt + 1000,
    );
    expect(s.stalled).toBeUndefined();
    expect(s.etaSeconds).toBeGreaterThan(0);
  });

  it('a finished batch is never stalled', () => {
    const s = summarise(
      meta,
      counts({ registered: 100 }),
      {},
      meta.createdAt + 10 * STALL_MS,
      meta.createdAt,
    );
    expect(s.stalled).toBeUndefined();
    expect(s.registrationDone).toBe(true);
  });
});
