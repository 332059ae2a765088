/**
 * Pipeline jobs and non-retryable errors, on a real redis-server with the real workers
 * (src/jobs/runner.ts). Regression: a job whose error could never go away (a batch that does
 * not exist) was retried up to 1000 times with backoff; it now fails at its first attempt,
 * as BullMQ's UnrecoverableError, with the code in its failure reason.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnrecoverableError, type Job } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { ProvlineError } from '../../src/core/errors.js';
import { toJobError } from '../../src/core/job-error.js';
import { createLogger } from '../../src/core/log.js';
import { connectionFromUrl, HSM_JOB, PipelineQueues, REGISTER_JOB } from '../../src/jobs/queues.js';
import { startRunner, type Runner } from '../../src/jobs/runner.js';
import { resolveRuntime } from '../../src/stack/runtime.js';
import { stackUp } from '../../src/stack/stack.js';
import { removeHome, tempDir } from '../helpers/home.js';

describe('toJobError', () => {
  it('turns a non-retryable ProvlineError into an UnrecoverableError that keeps the code and cause', () => {
    const e = new ProvlineError('BATCH_NOT_FOUND', 'no batch "x"');
    const j = toJobError(e);
    expect(j).toBeInstanceOf(UnrecoverableError);
    expect((j as Error).message).toBe('no batch "x" [BATCH_NOT_FOUND]');
    expect((j as Error).cause).toBe(e);
  });

  it('leaves retryable ProvlineErrors and foreign errors alone, so BullMQ retries them', () => {
    const retryable = new ProvlineError('HSM_SESSION_LOST', 'lost', { retryable: true });
    const foreign = new Error('connect ECONNREFUSED 127.0.0.1:6379');
    expect(toJobError(retryable)).toBe(retryable);
    expect(toJobError(foreign)).toBe(foreign);
  });
});

describe('pipeline jobs with an error that cannot go away', () => {
  const home = tempDir('provline-joberr-');
  let runner: Runner;
  let queues: PipelineQueues;

  beforeAll(async () => {
    const s = await stackUp(home);
    const file = join(home, 'provline.config.yaml');
    writeFileSync(file, stringify({ home }));
    const loaded = loadConfig({ file, env: {} });
    const prefix = `joberr${process.pid}`;
    const redisUrl = s.redis.url!;
    queues = new PipelineQueues(connectionFromUrl(redisUrl), prefix);
    runner = await startRunner({
      redisUrl,
      runtime: resolveRuntime(loaded),
      workers: loaded.config.workers,
      roles: ['hsm', 'registrar'],
      prefix,
      log: createLogger('silent'),
    });
  });

  afterAll(async () => {
    await runner?.close();
    await queues?.close();
    await removeHome(home);
  });

  /** Waits (per-step budget) until the job has failed for good, or says where it is. */
  const finalFailure = async (get: () => Promise<Job | undefined>, budgetMs = 20_000): Promise<Job> => {
    const until = Date.now() + budgetMs;
    for (;;) {
      const job = await get();
      const state = await job?.getState();
      // Read the job again once it has failed: the copy read before its state may predate the
      // failure (attemptsMade still 0), a window a loaded machine widens.
      if (job && state === 'failed') return (await get())!;
      if (Date.now() > until)
        throw new Error(
          `job not failed within ${budgetMs} ms: state ${state}, attempts ${job?.attemptsMade}, reason ${job?.failedReason}`,
        );
      await sleep(100);
    }
  };

  it('a register job for a batch that does not exist fails at its first attempt (was retried up to 1000 times)', async () => {
    expect(REGISTER_JOB.attempts).toBeGreaterThan(1);
    const added = await queues.register.add('register', { batchId: 'no-such-batch' }, REGISTER_JOB);
    const job = await finalFailure(() => queues.register.getJob(added.id!));
    expect(job.attemptsMade).toBe(1);
    expect(job.failedReason).toContain('[BATCH_NOT_FOUND]');
  });

  it('an HSM job for a batch that does not exist fails at its first attempt', async () => {
    expect(HSM_JOB.attempts).toBeGreaterThan(1);
    const added = await queues.hsm.add('keys', { batchId: 'no-such-batch', from: 0, to: 10 }, HSM_JOB);
    const job = await finalFailure(() => queues.hsm.getJob(added.id!));
    expect(job.attemptsMade).toBe(1);
    expect(job.failedReason).toContain('[BATCH_NOT_FOUND]');
  });
});
