/**
 * The station's stores over the journal interface (`DeviceJournal`, src/batch/journal.ts), with
 * the journal held in memory: lookups, results, registration, prefetch and sync, all without
 * Redis. The Redis journal behind the same interface is exercised by the station integration
 * tests.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type {
  BatchView,
  DeviceJournal,
  DeviceRecord,
  TransitionOutcome,
  TransitionRequest,
  VisitLog,
} from '../../src/batch/journal.js';
import { VISIT_LINE_CHARS, VISIT_LINES_MAX } from '../../src/batch/journal.js';
import { buildPlan } from '../../src/batch/plan.js';
import { ALLOWED_FROM } from '../../src/batch/states.js';
import { getProfile, loadConfig } from '../../src/config/load.js';
import {
  JournalStore,
  RESULT_VERSION,
  StationCache,
  prefetch,
  syncResults,
  type ResultEntry,
} from '../../src/flash/index.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const scratch = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'provline-station-store-'));
  dirs.push(d);
  return d;
};

const loaded = loadConfig({ env: {} });
const batchView = (batchId: string, profile: string): BatchView => ({
  plan: buildPlan({
    batchId,
    now: new Date(0),
    profile: getProfile(loaded, profile),
    templateBody: '{}',
    source: { file: 'x.csv', sha256: '0'.repeat(64), rows: 0 },
    rows: [],
  }),
  endpoint: 'e.iot',
  rootCaPem: 'ROOT',
});

/** The journal's life cycle in memory, behind the interface a station sees. */
class MemoryJournal implements DeviceJournal {
  readonly devices = new Map<string, DeviceRecord>();
  readonly batches = new Map<string, BatchView>();
  readonly applied: TransitionRequest[] = [];

  add(rec: Partial<DeviceRecord> & { serial: string; batch: string }): void {
    this.devices.set(rec.serial, {
      thingName: `t-${rec.serial}`,
      line: 2,
      state: 'registered',
      createdAt: 0,
      updatedAt: 0,
      at: {},
      fields: { certificatePem: 'CERT', certificateId: 'c1', wrappedKey: 'd3JhcA==' },
      ...rec,
    });
  }

  records(serials: readonly string[]): Promise<(DeviceRecord | undefined)[]> {
    return Promise.resolve(serials.map((s) => this.devices.get(s)));
  }

  serials(batchId: string, start: number, count: number): Promise<string[]> {
    const all = [...this.devices.values()].filter((d) => d.fields.listedIn === batchId);
    return Promise.resolve(all.slice(start, start + count).map((d) => d.serial));
  }

  batch(batchId: string): Promise<BatchView> {
    const b = this.batches.get(batchId);
    return b ? Promise.resolve(b) : Promise.reject(new Error(`no batch ${batchId}`));
  }

  transition(requests: readonly TransitionRequest[]): Promise<TransitionOutcome[]> {
    return Promise.resolve(
      requests.map((r): TransitionOutcome => {
        const rec = this.devices.get(r.serial);
        if (!rec || rec.batch !== r.batchId) return { status: 'missing' };
        if (rec.state === r.to) return { status: 'same' };
        const from = (r.from ?? ALLOWED_FROM[r.to]).filter((s) => ALLOWED_FROM[r.to].includes(s));
        if (!from.includes(rec.state)) return { status: 'conflict', current: rec.state };
        this.applied.push(r);
        const before = rec.state;
        Object.assign(rec, { state: r.to, fields: { ...rec.fields, ...r.fields } });
        return { status: 'ok', from: before };
      }),
    );
  }
}

const result = (serial: string, to: ResultEntry['to'], batchId = 'b1'): ResultEntry => ({
  v: RESULT_VERSION,
  id: `${serial}-${to}`,
  attempt: 'a1',
  at: 1,
  stationId: 'line-1',
  batchId,
  serial,
  to,
  fields: { stationId: 'line-1', port: '/dev/ttyUSB0' },
});

function journalWithOneDevice(): MemoryJournal {
  const j = new MemoryJournal();
  j.batches.set('b1', batchView('b1', 'mcu-wrapped'));
  j.add({ serial: 'S1', batch: 'b1' });
  return j;
}

describe('JournalStore over the journal interface', () => {
  it('looks a device up with its batch: a bundle with the batch root CA and endpoint, or unknown', async () => {
    const store = new JournalStore(journalWithOneDevice());
    expect(await store.lookup('S1')).toMatchObject({
      kind: 'bundle',
      batchId: 'b1',
      bundle: { rootCaPem: 'ROOT', endpoint: 'e.iot', certificatePem: 'CERT', wrappedKey: 'd3JhcA==' },
      kekLabel: 'provline-mcu-kek',
    });
    expect(await store.lookup('nobody')).toEqual({ kind: 'unknown', serial: 'nobody' });
  });

  it('records results as life-cycle moves: applied, gone past (superseded), or refused with the reason', async () => {
    const j = journalWithOneDevice();
    const store = new JournalStore(j);
    expect(await store.record(result('S1', 'flashed'))).toEqual({ in: 'journal', applied: 'applied' });
    expect(await store.record(result('S1', 'verified'))).toEqual({ in: 'journal', applied: 'applied' });
    expect(j.devices.get('S1')).toMatchObject({ state: 'verified', fields: { attempt: 'a1' } });
    // A late `failed` for a verified device never moves it back.
    expect(await store.record(result('S1', 'failed'))).toEqual({ in: 'journal', applied: 'superseded' });
    expect(await store.record(result('S1', 'flashed', 'b2'))).toEqual({
      in: 'journal',
      applied: 'rejected',
      reason: 'the device is not in that batch',
    });
    expect(j.applied.map((r) => r.to)).toEqual(['flashed', 'verified']);
  });

  it('registers device-key devices only when a registrar is wired, and only returns a bundle', async () => {
    const j = new MemoryJournal();
    j.batches.set('b9', batchView('b9', 'nrf91-device'));
    j.add({ serial: '352656100000001', batch: 'b9', state: 'accepted', fields: {} });
    const lookup = await new JournalStore(j).lookup('352656100000001');
    expect(lookup.kind).toBe('register');
    if (lookup.kind !== 'register') return;
    const req = { lookup, csrPem: 'CSR' };
    await expect(new JournalStore(j).register(req)).rejects.toMatchObject({ code: 'STATION_OFFLINE' });

    const registered = new JournalStore(j, (r) =>
      Promise.resolve({
        ...j.devices.get(r.serial)!,
        state: 'registered' as const,
        fields: { csrPem: r.csrPem, certificatePem: 'CERT', certificateId: 'c9' },
      }),
    );
    expect(registered.canRegister()).toBe(true);
    expect(await registered.register(req)).toMatchObject({ kind: 'bundle', bundle: { certificateId: 'c9' } });

    const stuck = new JournalStore(j, (r) =>
      Promise.resolve({ ...j.devices.get(r.serial)!, state: 'registering' as const }),
    );
    await expect(stuck.register(req)).rejects.toMatchObject({ code: 'STATION_REGISTRATION_INCOMPLETE' });
  });
});

describe('prefetch and sync over the journal interface', () => {
  it("prefetches a batch's devices into the cache, and sync replays local results into the journal", async () => {
    const j = new MemoryJournal();
    j.batches.set('b1', batchView('b1', 'mcu-wrapped'));
    j.add({
      serial: 'S1',
      batch: 'b1',
      fields: { listedIn: 'b1', certificatePem: 'C', certificateId: 'c1' },
    });
    j.add({ serial: 'S2', batch: 'b1', state: 'keyed', fields: { listedIn: 'b1' } });
    j.add({ serial: 'S3', batch: 'b2', fields: { listedIn: 'b1' } }); // moved to another batch since
    const cache = new StationCache(scratch());
    const summary = await prefetch({ journal: j, batchId: 'b1', cache, now: () => 0, pageSize: 2 });
    expect(summary).toMatchObject({ batchId: 'b1', bundles: 1, pending: 1, register: 0, moved: 1 });
    expect(await cache.readDevice('S1')).toMatchObject({ kind: 'bundle', serial: 'S1' });
    expect(await cache.readDevice('S3')).toBeUndefined();

    await cache.appendResult(result('S1', 'flashed'));
    await cache.appendResult(result('S1', 'verified'));
    await cache.appendResult(result('S2', 'flashed'));
    const synced = await syncResults({ cache, journal: j });
    expect(synced).toMatchObject({ applied: 2, superseded: 0 });
    expect(synced.rejected).toEqual([
      { serial: 'S2', batchId: 'b1', to: 'flashed', reason: 'the device is keyed' },
    ]);
    expect(j.devices.get('S1')?.state).toBe('verified');
    // Replaying again changes nothing: the cursor remembers how far sync got.
    expect(await syncResults({ cache, journal: j })).toMatchObject({ applied: 0, rejected: [] });
  });
});

describe('offline visit logs in the station cache', () => {
  const visit = (at: number, lines: number): VisitLog => ({
    v: 1,
    at,
    stationId: 'st',
    port: '/dev/pts/9',
    driver: 'provline-serial-v1',
    outcome: 'verified',
    ms: 10,
    recorded: ['flashed', 'verified'],
    lines: Array.from({ length: lines }, (_, i) => ({
      t: i,
      dir: '>' as const,
      text: `CMD ${i} ${'x'.repeat(300)}`,
    })),
    omitted: 0,
  });

  it('keeps each visit capped like the journal, the file within its bound, and syncs each log once through the journal', async () => {
    const cache = new StationCache(scratch(), 40_000);
    expect(await cache.appendVisit('S1', visit(1, 1000))).toBe(true);
    const [first] = (await cache.readVisits(0)).lines;
    expect(first!.log.lines).toHaveLength(VISIT_LINES_MAX);
    expect(first!.log.omitted).toBe(1000 - VISIT_LINES_MAX);
    for (const l of first!.log.lines) expect(l.text.length).toBeLessThanOrEqual(VISIT_LINE_CHARS);
    // The file is full at 40 000 bytes: later logs are dropped, the ones kept are whole.
    let kept = 1;
    while (await cache.appendVisit('S2', visit(2 + kept, 1000))) kept++;
    expect(kept).toBeLessThan(4);
    expect((await cache.readVisits(0)).lines).toHaveLength(kept);

    const logged: Array<[string, number]> = [];
    const journal = {
      transition: () => Promise.resolve([]),
      logVisit: (serial: string, log: VisitLog) => {
        logged.push([serial, log.at]);
        return Promise.resolve();
      },
    };
    expect(await syncResults({ cache, journal })).toMatchObject({ visits: kept, damagedVisits: [] });
    expect(logged[0]).toEqual(['S1', 1]);
    expect(await syncResults({ cache, journal })).toMatchObject({ visits: 0 });
    expect(logged).toHaveLength(kept);
  });
});
