/**
 * Station results: the one mapping to journal transitions (online and replayed), the journal
 * with the cache standing in, the cache's files, and the JSON-lines view.
 */
import { mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ProvlineError } from '../../src/core/errors.js';
import {
  FallbackStore,
  JsonLinesView,
  StationCache,
  TtyView,
  interpret,
  transitionFor,
  type DeviceLookup,
  type ResultEntry,
  type StationEvent,
  type StationStore,
} from '../../src/flash/index.js';

const dirs: string[] = [];
const scratch = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'provline-station-unit-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const entry = (to: ResultEntry['to'], over: Partial<ResultEntry> = {}): ResultEntry => ({
  v: 1,
  id: `e-${to}`,
  attempt: 'a1',
  at: 1,
  stationId: 'line-1',
  batchId: 'b1',
  serial: 'S1',
  to,
  fields: { stationId: 'line-1', port: '/dev/ttyUSB0' },
  ...over,
});

describe('results as journal transitions', () => {
  it('never moves a verified device back, and carries the attempt and the error', () => {
    expect(transitionFor(entry('flashed'))).toMatchObject({
      to: 'flashed',
      from: ['registered', 'signed', 'flashed', 'failed', 'accepted'],
      fields: { attempt: 'a1', port: '/dev/ttyUSB0' },
    });
    expect(transitionFor(entry('verified')).from).toEqual(['flashed']);
    const failed = transitionFor(
      entry('failed', { error: { code: 'DEVICE_TIMEOUT', message: 'no answer', stage: 'flash' } }),
    );
    expect(failed).toMatchObject({
      from: ['registered', 'signed', 'flashed'],
      fields: { errorCode: 'DEVICE_TIMEOUT', errorMessage: 'no answer', errorStage: 'flash' },
    });
  });

  it('connected follows verified; only a failed first connect may fail a verified device', () => {
    expect(transitionFor(entry('connected')).from).toEqual(['verified']);
    const connectFailed = transitionFor(
      entry('failed', { error: { code: 'DEVICE_CONNECT_FAILED', message: 'hung up', stage: 'connect' } }),
    );
    expect(connectFailed).toMatchObject({
      to: 'failed',
      from: ['verified'],
      fields: { errorCode: 'DEVICE_CONNECT_FAILED', errorStage: 'connect' },
    });
    // Any other failure still never touches a verified (or connected) device.
    expect(
      transitionFor(entry('failed', { error: { code: 'DEVICE_TIMEOUT', message: 'x', stage: 'flash' } }))
        .from,
    ).not.toContain('verified');
  });

  it('reads the journal answer: moved or already there, gone past, or refused', () => {
    expect(interpret({ status: 'ok', from: 'registered' })).toBe('applied');
    expect(interpret({ status: 'same' })).toBe('applied');
    expect(interpret({ status: 'conflict', current: 'verified' })).toBe('superseded');
    expect(interpret({ status: 'conflict', current: 'connected' })).toBe('superseded');
    expect(interpret({ status: 'conflict', current: 'accepted' })).toBe('rejected');
    expect(interpret({ status: 'missing' })).toBe('rejected');
  });
});

/** A store whose calls succeed, or fail the way an unreachable Redis does. */
function fakeStore(name: string, calls: string[], fail?: () => Error | undefined): StationStore {
  const act = <T>(what: string, v: T): Promise<T> => {
    calls.push(`${name}:${what}`);
    const e = fail?.();
    return e ? Promise.reject(e) : Promise.resolve(v);
  };
  return {
    status: () => 'online',
    lookup: (serial) => act<DeviceLookup>('lookup', { kind: 'unknown', serial }),
    record: () => act('record', { in: name === 'cache' ? 'local' : 'journal', applied: 'applied' }),
    canRegister: () => true,
    register: () => Promise.reject(new Error('unused')),
  };
}

describe('FallbackStore', () => {
  it('uses the cache while Redis is unreachable and tries Redis again after retryMs', async () => {
    const calls: string[] = [];
    let down = true;
    let t = 0;
    const statuses: string[] = [];
    const store = new FallbackStore(
      fakeStore('redis', calls, () => (down ? new Error('Connection is closed.') : undefined)),
      fakeStore('cache', calls),
      { retryMs: 1_000, now: () => t, onStatus: (s) => statuses.push(s) },
    );
    expect((await store.record(entry('flashed'))).in).toBe('local');
    expect(store.status()).toBe('offline');
    expect(store.canRegister()).toBe(false);
    await store.lookup('S1'); // within retryMs: straight to the cache
    down = false;
    t = 1_000;
    expect((await store.record(entry('verified'))).in).toBe('journal');
    expect(calls).toEqual(['redis:record', 'cache:record', 'cache:lookup', 'redis:record']);
    expect(statuses).toEqual(['offline', 'online']);
  });

  it('passes the journal’s own errors through, and without a cache says Redis is unreachable', async () => {
    const refused = new FallbackStore(
      fakeStore('redis', [], () => new ProvlineError('BATCH_NOT_FOUND', 'no batch')),
      fakeStore('cache', []),
    );
    await expect(refused.lookup('S1')).rejects.toMatchObject({ code: 'BATCH_NOT_FOUND' });
    const alone = new FallbackStore(
      fakeStore('redis', [], () => new Error('ECONNREFUSED')),
      undefined,
    );
    await expect(alone.lookup('S1')).rejects.toMatchObject({ code: 'STATION_JOURNAL_UNREACHABLE' });
  });
});

describe('StationCache', () => {
  it('stores lookups by serial (even with a slash) and refuses a damaged file', async () => {
    const cache = new StationCache(scratch());
    const pending: DeviceLookup = {
      kind: 'pending',
      serial: 'A/B',
      batchId: 'b1',
      state: 'keyed',
      profile: 'p',
    };
    await cache.writeDevice(pending, 5);
    expect(await cache.readDevice('A/B')).toEqual(pending);
    expect(await cache.readDevice('nope')).toBeUndefined();
    writeFileSync(join(cache.dir, 'devices', 'BAD.json'), '{"v":1,');
    await expect(cache.readDevice('BAD')).rejects.toMatchObject({ code: 'STATION_CACHE_INVALID' });
  });

  it('reads complete result lines only (a half-written last line waits), and keeps a cursor', async () => {
    const cache = new StationCache(scratch());
    await Promise.all([cache.appendResult(entry('flashed')), cache.appendResult(entry('verified'))]);
    appendFileSync(cache.resultsFile, '{"v":1,"id":"half');
    const read = await cache.readResults(0);
    expect(read.lines.map((l) => l.entry.to)).toEqual(['flashed', 'verified']);
    expect(read.bad).toEqual([]);
    await cache.writeCursor(read.end);
    expect(await cache.readCursor()).toBe(read.end);
    appendFileSync(cache.resultsFile, 'x"}\nnot json\n');
    const more = await cache.readResults(read.end);
    expect(more.lines).toEqual([]);
    expect(more.bad).toHaveLength(2);
  });
});

describe('views', () => {
  const result: StationEvent = {
    event: 'result',
    port: '/dev/ttyUSB0',
    serial: 'SN1',
    outcome: 'failed',
    code: 'DEVICE_TIMEOUT',
    message: 'Station l1 /dev/ttyUSB0: device SN1 failed: no answer [DEVICE_TIMEOUT]',
    ms: 10,
    recorded: 'journal',
  };

  it('JSON lines: one object per event, progress thinned out per port', () => {
    let out = '';
    let t = 0;
    const view = new JsonLinesView({ write: (s: string) => (out += s) } as unknown as NodeJS.WritableStream, {
      progressMs: 100,
      now: () => t,
    });
    const progress = (bytesSent: number): StationEvent => ({
      event: 'progress',
      port: 'p',
      serial: 's',
      object: 'certificate',
      bytesSent,
      bytesTotal: 600,
    });
    for (const [at, sent] of [
      [100, 100],
      [150, 200],
      [250, 300],
      [260, 600],
    ] as const) {
      t = at;
      view.handle(progress(sent));
    }
    view.handle(result);
    const lines = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.bytesSent ?? l.event)).toEqual([100, 300, 600, 'result']);
    expect(lines[3]).toMatchObject({ serial: 'SN1', code: 'DEVICE_TIMEOUT' });
  });

  it('the terminal table shows each port and prints results as permanent lines', () => {
    let out = '';
    const view = new TtyView({ write: (s: string) => (out += s) } as unknown as NodeJS.WritableStream, {
      redrawMs: 1,
    });
    view.handle({
      event: 'station',
      stationId: 'l1',
      profile: 'p',
      driver: 'nordic-at',
      ports: ['/dev/ttyUSB0'],
      journal: 'online',
    });
    view.handle({ event: 'device', port: '/dev/ttyUSB0', serial: 'SN1' });
    view.handle(result);
    view.close();
    expect(out).toContain('device SN1 failed: no answer [DEVICE_TIMEOUT]');
    expect(out).toMatch(/\/dev\/ttyUSB0\s+SN1\s+/);
    expect(out).toContain('failed 1');
  });
});
