/**
 * The registrar's single mode end to end: a batch of a profile with `registration.mode:
 * single` is registered device by device with RegisterThing on the stand-in, each chunk ends
 * `done` through its conditional chunk move (claimed → done), and each device holds its own
 * certificate.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IoTClient } from '@aws-sdk/client-iot';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { JournalKeys } from '../../src/jobs/keys.js';
import { json, runCli } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';
import { csvFile, pipelineStack, serialRange, thingCount } from '../helpers/pipeline.js';

/** Budget of one `submit --wait` of a small single-mode batch on a busy machine. */
const WAIT_BUDGET_MS = 150_000;

describe('registrar single mode', () => {
  const home = tempDir('provline-single-');
  const dir = tempDir('provline-single-files-');
  let env: NodeJS.ProcessEnv;
  let redisUrl: string;
  let iot: IoTClient;

  beforeAll(async () => {
    const stack = await pipelineStack(home, dir, 'provline-single-kek');
    // The same product as the stack's `fast` profile, registered one device at a time.
    const file = stack.env.PROVLINE_CONFIG!;
    const config = parse(readFileSync(file, 'utf8')) as { profiles: Record<string, Record<string, unknown>> };
    config.profiles.one = {
      ...config.profiles.fast,
      registration: { mode: 'single', chunkSize: 5, tps: 20 },
    };
    const single = join(dir, 'single.config.yaml');
    writeFileSync(single, stringify(config));
    env = { ...stack.env, PROVLINE_CONFIG: single, PROVLINE_REDIS_PREFIX: `single${process.pid}` };
    ({ redisUrl, iot } = stack);
  });

  afterAll(async () => {
    iot?.destroy();
    await removeHome(home);
  });

  it('registers every device with RegisterThing, chunk by chunk, each with its own certificate', async () => {
    const serials = serialRange('SG', 12);
    const r = await runCli(
      ['submit', csvFile(dir, 'single.csv', serials), '--profile', 'one', '--wait', '--json'],
      {
        env,
        timeoutMs: WAIT_BUDGET_MS,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    const status = json<{ batchId: string; counts: Record<string, number> }>(r);
    expect(status.counts.registered).toBe(12);

    const report = json<Array<{ state: string; certificateId: string }>>(
      await runCli(['report', status.batchId, '--format', 'json'], { env }),
    );
    expect(report.every((x) => x.state === 'registered')).toBe(true);
    expect(new Set(report.map((x) => x.certificateId)).size).toBe(12);
    expect(await thingCount(iot, 'sensor-SG')).toBe(12);

    const redis = new Redis(redisUrl);
    try {
      const keys = new JournalKeys(env.PROVLINE_REDIS_PREFIX);
      const chunks = await redis.lrange(keys.chunks(status.batchId), 0, -1);
      expect(chunks.length).toBeGreaterThanOrEqual(3);
      for (const n of chunks)
        expect(await redis.hmget(keys.chunk(status.batchId, n), 'mode', 'state', 'status')).toEqual([
          'single',
          'done',
          'Completed',
        ]);
    } finally {
      redis.disconnect();
    }
  });
});
