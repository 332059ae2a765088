/**
 * Chunk state changes on a real redis-server (chunk-1.lua through Journal.setChunk): a chunk
 * moves on only from the state it should be in and, where the bulk slot's fence was written
 * with the intent to start, only for the registrar holding that fence.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Journal } from '../../src/jobs/journal.js';
import { BulkSlot } from '../../src/jobs/slot.js';
import { stackUp } from '../../src/stack/stack.js';
import { removeHome, tempDir } from '../helpers/home.js';

describe('chunk state changes', () => {
  let home: string;
  let redis: Redis;
  let journal: Journal;
  let slot: BulkSlot;
  let clock = 1_000;

  beforeAll(async () => {
    home = tempDir('provline-registrar-chunks-');
    const s = await stackUp(home);
    redis = new Redis(s.redis.url!, { lazyConnect: false });
    journal = new Journal(redis, { prefix: `chunks${process.pid}`, now: () => ++clock });
    slot = new BulkSlot(redis, journal.keys, { ttlMs: 60_000, pollMs: 10 });
  });
  afterAll(async () => {
    await redis.quit();
    await removeHome(home);
  });

  /** A batch of its own with one claimed chunk of `count` devices. */
  async function claimed(batchId: string, count = 2): Promise<number> {
    const rows = Array.from({ length: count }, (_, i) => ({
      serial: `${batchId}-${i}`,
      thingName: `t-${batchId}-${i}`,
      line: i + 2,
    }));
    await journal.accept(batchId, rows);
    await journal.transitionMany(rows.map((r) => ({ batchId, serial: r.serial, to: 'keyed' as const })));
    const chunk = await journal.claimChunk(batchId, count, 'bulk');
    expect(chunk?.state).toBe('claimed');
    return chunk!.n;
  }

  it('moves a chunk on only from the states given, and says where it found it', async () => {
    const n = await claimed('from');
    expect(
      await journal.setChunk('from', n, { state: 'started', taskId: 't1' }, { from: ['starting'] }),
    ).toEqual({ status: 'conflict', state: 'claimed', fence: '' });
    expect((await journal.chunk('from', n))?.state).toBe('claimed');
    expect(
      await journal.setChunk('from', n, { state: 'written', inputKey: 'k' }, { from: ['claimed'] }),
    ).toEqual({
      status: 'ok',
    });
    expect(await journal.chunk('from', n)).toMatchObject({ state: 'written', fields: { inputKey: 'k' } });
    expect(await journal.setChunk('from', n + 1, { state: 'done' }, { from: ['started'] })).toEqual({
      status: 'missing',
    });
    expect(await journal.chunk('from', n + 1)).toBeUndefined();
  });

  // A registrar whose slot lease ran out could record its task over the intent of the
  // registrar that took the slot after it, when chunk states were plain HSETs.
  it("a registrar that lost the slot cannot record a task over the newer holder's intent", async () => {
    const n = await claimed('fence');
    await journal.setChunk('fence', n, { state: 'written', inputKey: 'k' }, { from: ['claimed'] });
    const key = journal.keys.chunk('fence', n);
    const first = await slot.acquire('host/1');
    expect(await first.write(key, { state: 'starting', fence: String(first.fence) })).toBe(true);
    await first.release();
    const second = await slot.acquire('host/2');
    expect(second.fence).toBeGreaterThan(first.fence);
    expect(await second.write(key, { state: 'starting', fence: String(second.fence) })).toBe(true);

    const stale = await journal.setChunk(
      'fence',
      n,
      { state: 'started', taskId: 'from-first' },
      { from: ['starting'], fence: first.fence },
    );
    expect(stale).toEqual({ status: 'conflict', state: 'starting', fence: String(second.fence) });
    expect((await journal.chunk('fence', n))?.fields.taskId).toBeUndefined();
    expect(
      await journal.setChunk(
        'fence',
        n,
        { state: 'started', taskId: 'from-second' },
        { from: ['starting'], fence: second.fence },
      ),
    ).toEqual({ status: 'ok' });
    expect(await journal.chunk('fence', n)).toMatchObject({
      state: 'started',
      fields: { taskId: 'from-second' },
    });
    await second.release();
  });

  it('a done chunk stays done', async () => {
    const n = await claimed('done', 1);
    await journal.setChunk('done', n, { state: 'done', status: 'Completed' }, { from: ['claimed'] });
    expect(await journal.openChunks('done')).toEqual([]);
    expect(await journal.setChunk('done', n, { state: 'written' }, { from: ['claimed'] })).toMatchObject({
      status: 'conflict',
      state: 'done',
    });
    expect(await journal.openChunks('done')).toEqual([]);
  });
});
