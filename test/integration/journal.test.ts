/** The journal on a real redis-server: atomic, idempotent transitions and consistent counts. */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VISITS_KEPT, type VisitLog } from '../../src/batch/journal.js';
import { Journal } from '../../src/jobs/journal.js';
import { STATES } from '../../src/batch/states.js';
import { stackUp } from '../../src/stack/stack.js';
import { removeHome, tempDir } from '../helpers/home.js';

describe('journal', () => {
  let home: string;
  let redis: Redis;
  let clock = 1_000;
  let journal: Journal;
  let n = 0;
  const batch = () => `b${++n}`;
  const rows = (prefix: string, count: number) =>
    Array.from({ length: count }, (_, i) => ({
      serial: `${prefix}${i}`,
      thingName: `t-${prefix}${i}`,
      line: i + 2,
    }));

  beforeAll(async () => {
    home = tempDir('provline-journal-');
    const s = await stackUp(home);
    redis = new Redis(s.redis.url!, { lazyConnect: false });
    journal = new Journal(redis, { prefix: `test${process.pid}`, now: () => ++clock });
  });
  afterAll(async () => {
    await redis.quit();
    await removeHome(home);
  });

  it('accepts a batch and records each device with its line and thing name', async () => {
    const b = batch();
    expect(await journal.accept(b, rows('A', 3))).toEqual({ accepted: 3, skipped: [], retried: [] });
    expect((await journal.counts(b)).accepted).toBe(3);
    expect(await journal.get('A1')).toMatchObject({
      serial: 'A1',
      batch: b,
      thingName: 't-A1',
      line: 3,
      state: 'accepted',
    });
    expect(await journal.serials(b, 0, 10)).toEqual(['A0', 'A1', 'A2']);
  });

  it('moves along the life cycle with timestamps and stage results', async () => {
    const b = batch();
    await journal.accept(b, rows('B', 1));
    expect(
      await journal.transition({
        batchId: b,
        serial: 'B0',
        to: 'keyed',
        fields: { csrPem: 'CSR', kekId: 'k' },
      }),
    ).toEqual({ status: 'ok', from: 'accepted' });
    const rec = await journal.get('B0');
    expect(rec).toMatchObject({ state: 'keyed', fields: { csrPem: 'CSR', kekId: 'k' } });
    expect(rec!.at.keyed).toBeGreaterThan(rec!.at.accepted!);
    expect(await journal.counts(b)).toMatchObject({ accepted: 0, keyed: 1 });
  });

  it('a repeated transition is a no-op, and an illegal one changes nothing', async () => {
    const b = batch();
    await journal.accept(b, rows('C', 1));
    await journal.transition({ batchId: b, serial: 'C0', to: 'keyed', fields: { csrPem: 'first' } });
    expect(
      await journal.transition({ batchId: b, serial: 'C0', to: 'keyed', fields: { csrPem: 'second' } }),
    ).toEqual({ status: 'same' });
    expect((await journal.get('C0'))!.fields.csrPem).toBe('first');
    expect(await journal.transition({ batchId: b, serial: 'C0', to: 'verified' })).toEqual({
      status: 'conflict',
      current: 'keyed',
    });
    expect(await journal.transition({ batchId: 'other', serial: 'C0', to: 'registering' })).toEqual({
      status: 'missing',
    });
    expect(await journal.counts(b)).toMatchObject({ keyed: 1, registering: 0, verified: 0 });
  });

  it('of 50 concurrent movers exactly one wins', async () => {
    const b = batch();
    await journal.accept(b, rows('D', 1));
    await journal.transition({ batchId: b, serial: 'D0', to: 'keyed' });
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        journal.transition({ batchId: b, serial: 'D0', to: 'registering', from: ['keyed'] }),
      ),
    );
    expect(results.filter((r) => r.status === 'ok')).toHaveLength(1);
    expect(results.filter((r) => r.status === 'same')).toHaveLength(49);
    expect((await journal.counts(b)).registering).toBe(1);
  });

  it('failures are counted by code and cleared when the device is retried', async () => {
    const b = batch();
    await journal.accept(b, rows('E', 2));
    await journal.fail(b, 'E0', { code: 'AWS_THROTTLED', message: 'Rate exceeded', stage: 'registration' });
    await journal.fail(b, 'E1', { code: 'HSM_DEVICE_ERROR', message: 'token removed', stage: 'hsm' });
    expect(await journal.failuresByCode(b)).toEqual({ AWS_THROTTLED: 1, HSM_DEVICE_ERROR: 1 });
    expect((await journal.get('E0'))!.error).toEqual({
      code: 'AWS_THROTTLED',
      message: 'Rate exceeded',
      stage: 'registration',
    });
    await journal.transition({ batchId: b, serial: 'E0', to: 'accepted' });
    expect(await journal.failuresByCode(b)).toEqual({ HSM_DEVICE_ERROR: 1 });
    expect((await journal.get('E0'))!.error).toBeUndefined();
    expect(await journal.counts(b)).toMatchObject({ accepted: 1, failed: 1 });
  });

  it('re-accepting creates nothing new; another batch is refused unless it skips existing serials', async () => {
    const b1 = batch();
    const b2 = batch();
    await journal.accept(b1, rows('F', 3));
    expect(await journal.accept(b1, rows('F', 3))).toEqual({ accepted: 0, skipped: [], retried: [] });
    await expect(journal.accept(b2, [...rows('G', 2), ...rows('F', 1)])).rejects.toMatchObject({
      code: 'SERIAL_ALREADY_SUBMITTED',
    });
    expect(await journal.get('G0')).toBeUndefined(); // nothing of the refused chunk was written
    expect(await journal.accept(b2, [...rows('G', 2), ...rows('F', 1)], { skipExisting: true })).toEqual({
      accepted: 2,
      skipped: ['F0'],
      retried: [],
    });
    expect((await journal.get('F0'))!.batch).toBe(b1);
  });

  it('a serial that failed elsewhere without a certificate moves to the new batch as a retry, keeping its CSR', async () => {
    const b1 = batch();
    const b2 = batch();
    await journal.accept(b1, rows('R', 2));
    await journal.transition({ batchId: b1, serial: 'R0', to: 'keyed', fields: { csrPem: 'CSR-R0' } });
    await journal.fail(b1, 'R0', { code: 'REGISTRATION_REJECTED', message: 'no', stage: 'registration' });
    await journal.transition({ batchId: b1, serial: 'R1', to: 'keyed', fields: { certificateId: 'c1' } });
    await journal.fail(b1, 'R1', { code: 'DEVICE_REJECTED', message: 'no', stage: 'flash' });
    // R1 has a certificate: it is not retried through the pipeline (it would get a second one).
    await expect(journal.accept(b2, rows('R', 2))).rejects.toMatchObject({
      code: 'SERIAL_ALREADY_SUBMITTED',
    });
    expect(await journal.accept(b2, rows('R', 2), { skipExisting: true })).toEqual({
      accepted: 1,
      skipped: ['R1'],
      retried: ['R0'],
    });
    const r0 = (await journal.get('R0'))!;
    expect(r0).toMatchObject({ batch: b2, state: 'accepted', fields: { csrPem: 'CSR-R0', movedFrom: b1 } });
    expect(r0.error).toBeUndefined();
    expect(await journal.counts(b1)).toMatchObject({ failed: 1 });
    expect(await journal.failuresByCode(b1)).toEqual({ DEVICE_REJECTED: 1 });
    expect(await journal.inState(b1, 'failed')).toEqual(['R1']);
    expect(await journal.inState(b2, 'accepted')).toEqual(['R0']);
  });

  it('keeps the record a retried serial leaves behind, newest first and at most ten, without the bulky fields', async () => {
    const batches: string[] = [];
    for (let i = 0; i < 12; i++) {
      const b = batch();
      batches.push(b);
      await journal.accept(b, rows('HIST', 1));
      await journal.transition({
        batchId: b,
        serial: 'HIST0',
        to: 'keyed',
        fields: { csrPem: 'CSR', wrappedKey: 'WK' },
      });
      await journal.fail(b, 'HIST0', {
        code: i % 2 ? 'HSM_FAILED' : 'AWS_REQUEST_FAILED',
        message: `try ${i}`,
        stage: 'hsm',
      });
    }
    const history = await journal.history('HIST0');
    expect(history.map((r) => r.batch)).toEqual(batches.slice(1, 11).reverse());
    expect(history[0]).toMatchObject({
      state: 'failed',
      error: { code: 'AWS_REQUEST_FAILED', message: 'try 10', stage: 'hsm' },
    });
    expect(history[0]!.at.keyed).toBeGreaterThan(0);
    expect(history[0]!.fields.csrPem).toBeUndefined();
    expect(history[0]!.fields.wrappedKey).toBeUndefined();
    expect((await journal.get('HIST0'))!.batch).toBe(batches[11]);
  });

  it('indexes every certificate id a transition stores, to its serial', async () => {
    const b = batch();
    await journal.accept(b, rows('IDX', 2));
    await journal.transitionMany([
      { batchId: b, serial: 'IDX0', to: 'keyed', fields: { certificateId: 'a'.repeat(64), csrPem: 'x' } },
      { batchId: b, serial: 'IDX1', to: 'keyed' },
    ]);
    expect(await journal.serialOfCertificate('a'.repeat(64))).toBe('IDX0');
    expect(await journal.serialOfCertificate('b'.repeat(64))).toBeUndefined();
    // A refused transition indexes nothing.
    await journal.transition({
      batchId: b,
      serial: 'IDX1',
      to: 'verified',
      fields: { certificateId: 'c'.repeat(64) },
    });
    expect(await journal.serialOfCertificate('c'.repeat(64))).toBeUndefined();
  });

  it('keeps one set of serials per state, and honours conditions in the same atomic step', async () => {
    const b = batch();
    await journal.accept(b, rows('S', 3));
    expect((await journal.inState(b, 'accepted')).sort()).toEqual(['S0', 'S1', 'S2']);
    const stored = { batchId: b, serial: 'S0', to: 'keyed' as const, when: { absent: 'csrPem' } };
    expect(await journal.transition({ ...stored, fields: { csrPem: 'first' } })).toEqual({
      status: 'ok',
      from: 'accepted',
    });
    // A device that already holds a CSR (a retried batch) never gets a second identity.
    await journal.note('S2', { csrPem: 'kept' });
    expect(await journal.transitionMany([{ ...stored, serial: 'S2', fields: { csrPem: 'second' } }])).toEqual(
      [{ status: 'unmet', current: 'accepted' }],
    );
    expect((await journal.get('S2'))!.fields.csrPem).toBe('kept');
    await journal.transition({ batchId: b, serial: 'S1', to: 'keyed', fields: { csrPem: 'x' } });
    const chunk = (await journal.claimChunk(b, 10, 'bulk'))!;
    expect(chunk).toMatchObject({ n: 1, state: 'claimed', serials: ['S0', 'S1'] });
    expect((await journal.get('S1'))!.fields.regChunk).toBe('1');
    expect(await journal.claimChunk(b, 10, 'bulk')).toBeUndefined();
    // Only the chunk that owns a device may move it on.
    const stale = {
      batchId: b,
      serial: 'S1',
      to: 'keyed' as const,
      when: { field: 'regChunk', equals: '9' },
    };
    expect(await journal.transition(stale)).toEqual({ status: 'unmet', current: 'registering' });
    expect((await journal.inState(b, 'registering')).sort()).toEqual(['S0', 'S1']);
    expect(await journal.counts(b)).toMatchObject({ accepted: 1, keyed: 0, registering: 2 });
    expect((await journal.openChunks(b)).map((c) => c.n)).toEqual([1]);
    await journal.setChunk(b, 1, { state: 'done' });
    expect(await journal.openChunks(b)).toEqual([]);
  });

  it('counts always add up to the batch size, whatever the order of moves', async () => {
    const b = batch();
    const size = 40;
    await journal.accept(b, rows('H', size));
    const moves = Array.from({ length: 400 }, (_, i) => ({
      serial: `H${(i * 7) % size}`,
      to: STATES[(i * 13) % STATES.length]!,
    }));
    await Promise.all(
      moves.map((m) =>
        journal.transition({ batchId: b, serial: m.serial, to: m.to, fields: { errorCode: 'X' } }),
      ),
    );
    const counts = await journal.counts(b);
    expect(Object.values(counts).reduce((a, c) => a + c, 0)).toBe(size);
    for (const s of STATES) expect(counts[s]).toBeGreaterThanOrEqual(0);
    const actual: Record<string, number> = {};
    for (let i = 0; i < size; i++) {
      const st = (await journal.get(`H${i}`))!.state;
      actual[st] = (actual[st] ?? 0) + 1;
    }
    for (const s of STATES) expect(counts[s]).toBe(actual[s] ?? 0);
  });

  it('keeps visit logs newest first by when the visit began, each once, at most VISITS_KEPT (a log synced late goes where its time puts it)', async () => {
    const visit = (at: number): VisitLog => ({
      v: 1,
      at,
      stationId: 'st',
      port: 'p',
      driver: 'provline-serial-v1',
      outcome: 'verified',
      ms: 1,
      recorded: ['flashed', 'verified'],
      lines: [{ t: 0, dir: '>', text: `"at":${at + 5}` }],
      omitted: 0,
    });
    for (const at of [3000, 1000, 2000, 2000, 1000]) await journal.logVisit('V0', visit(at));
    expect((await journal.visits('V0')).map((v) => v.at)).toEqual([3000, 2000, 1000]);
    for (let k = 0; k < VISITS_KEPT; k++) await journal.logVisit('V0', visit(10_000 + k));
    const kept = await journal.visits('V0');
    expect(kept).toHaveLength(VISITS_KEPT);
    expect(kept[0]!.at).toBe(10_000 + VISITS_KEPT - 1);
    // Older than every visit kept: it falls off at once.
    await journal.logVisit('V0', visit(500));
    expect((await journal.visits('V0')).map((v) => v.at)).toEqual(kept.map((v) => v.at));
  });
});
