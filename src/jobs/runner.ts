/**
 * Pipeline workers in one process: BullMQ workers for the roles asked for, sharing one Redis
 * connection for the journal, one HSM session pool and one set of AWS clients. Any number of
 * these run on any number of hosts against one Redis.
 *
 * `close()` drains: the workers stop taking jobs, HSM jobs in flight finish, and registration
 * jobs stop at the next safe point and are put back (delayed a moment) for whoever runs next:
 * a chunk's progress is in Redis, so nothing is lost or done twice.
 */
import { DelayedError, Worker, type Job } from 'bullmq';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { makeClients, type CloudClients, Pacer } from '../cloud/index.js';
import type { Config } from '../config/index.js';
import { isProvlineError, messageOf, toJobError } from '../core/index.js';
import type { Logger } from '../core/index.js';
import { checkSigningCa, createSignedIdentity, openHsm, type Hsm } from '../hsm/index.js';
import type { Runtime } from '../stack/index.js';
import { BatchStore } from './batches.js';
import { runHsmRange, type IdentityMaker } from './hsm-stage.js';
import { Journal } from './journal.js';
import {
  connectionFromUrl,
  PipelineQueues,
  QUEUES,
  queuePrefix,
  type HsmJobData,
  type RegisterJobData,
  type Role,
} from './queues.js';
import { driveBatch, type RegistrarDeps } from './registrar/index.js';
import { redactUrl, redisRetryStrategy, RedisWatch } from './redis-watch.js';
import { BulkSlot, slotOwner } from './slot.js';

export interface RunnerOptions {
  redisUrl: string;
  runtime: Runtime;
  workers: Config['workers'];
  roles: readonly Role[];
  /** Key prefix of the journal and queues (tests use their own). */
  prefix?: string;
  log: Logger;
  /** Ensures the HSM is usable before opening it (the local token on embedded defaults). */
  hsmSettings?: () => Promise<Runtime['hsm']>;
  /** Shared with the caller's own Redis clients, so an outage is logged once per process. */
  watch?: RedisWatch;
}

/** How often a running registration job records that it is alive (`status` reads it). */
export const REGISTRAR_BEAT_MS = 5000;
/** How long `close()` waits for jobs in flight before it stops the workers regardless. */
const CLOSE_GRACE_MS = 15_000;

export interface Runner {
  /** Counts of jobs this process finished, for progress output. */
  readonly done: { hsm: number; register: number };
  close(): Promise<void>;
}

export async function startRunner(o: RunnerOptions): Promise<Runner> {
  const prefix = o.prefix ?? 'provline';
  const connection = connectionFromUrl(o.redisUrl);
  const watch = o.watch ?? new RedisWatch({ log: o.log, target: redactUrl(o.redisUrl) });
  // Journal calls wait while Redis is away (no per-request limit) and go through once it is back.
  const redis = new Redis(o.redisUrl, {
    maxRetriesPerRequest: null,
    lazyConnect: false,
    retryStrategy: redisRetryStrategy,
  });
  watch.watch(redis, 'journal');
  const journal = new Journal(redis, { prefix });
  const batches = new BatchStore(redis, journal.keys);
  const queues = new PipelineQueues(connection, prefix, watch);
  const done = { hsm: 0, register: 0 };
  const abort = new AbortController();
  const workers: Worker[] = [];
  let hsm: Hsm | undefined;
  let cloud: CloudClients | undefined;
  const opts = {
    connection,
    prefix: queuePrefix(prefix),
    lockDuration: o.workers.lockMs,
    // Every worker, the in-process ones of `submit --wait` included, takes back jobs whose
    // lock has expired (a worker killed, or a Redis outage longer than the lock).
    stalledInterval: Math.max(500, Math.floor(o.workers.lockMs / 2)),
    // A job whose worker was killed is simply picked up again, however often that happens.
    maxStalledCount: 1_000_000,
    // After a lost connection, fetch again within a second, not BullMQ's default 15 s.
    runRetryDelay: 1000,
  };

  if (o.roles.includes('registrar')) {
    cloud = makeClients(o.runtime.aws, { maxAttempts: 1 });
    const pacers = new Map<number, Pacer>();
    const slot = new BulkSlot(redis, journal.keys);
    const base: Omit<RegistrarDeps, 'pacer'> = {
      journal,
      batches,
      cloud,
      slot,
      owner: slotOwner(),
      now: Date.now,
      settings: {
        flushMs: o.workers.flushMs,
        registrationRounds: o.workers.registrationRounds,
        rootCaFile: o.runtime.aws.rootCaFile,
      },
      log: o.log,
      kickHsm: async (batchId) => {
        o.log.warn({ batchId }, 'HSM stage made no progress for 30 s: re-enqueueing its jobs');
        await queues.enqueueBatch(await batches.plan(batchId), o.workers.hsmChunk);
      },
    };
    workers.push(
      new Worker<RegisterJobData>(
        QUEUES.register,
        async (job: Job<RegisterJobData>, token?: string, lock?: AbortSignal) => {
          const plan = await batches.plan(job.data.batchId).catch((e: unknown) => {
            throw toJobError(e);
          });
          const tps = plan.profile.registration.tps;
          let pacer = pacers.get(tps);
          if (!pacer) pacers.set(tps, (pacer = new Pacer({ perSecond: tps })));
          // `lock` aborts when this worker lost the job's lock (a Redis outage longer than the
          // lock): the stalled check hands the job to a worker again, so this run stops.
          const signal = lock ? AbortSignal.any([abort.signal, lock]) : abort.signal;
          const beat = setInterval(() => {
            batches.beat(job.data.batchId, Date.now()).catch(() => undefined);
          }, REGISTRAR_BEAT_MS);
          try {
            await batches.beat(job.data.batchId, Date.now());
            const r = await driveBatch({ ...base, pacer }, job.data.batchId, signal);
            done.register++;
            return r;
          } catch (e) {
            if (lock?.aborted && !abort.signal.aborted) {
              // Not ours any more: leave the job alone (no move, no "missing lock" error).
              throw new DelayedError();
            }
            if (abort.signal.aborted && token) {
              // Shutting down: hand the batch back, at once, to whichever worker runs next.
              await job.moveToDelayed(Date.now() + 100, token);
              throw new DelayedError();
            }
            throw toJobError(e);
          } finally {
            clearInterval(beat);
          }
        },
        { ...opts, concurrency: o.workers.registrarConcurrency },
      ),
    );
  }

  if (o.roles.includes('hsm')) {
    // The HSM may be busy or briefly unavailable (a network HSM rebooting, SoftHSM's token
    // file being rewritten by another process): keep trying rather than exit, so a worker
    // started by systemd comes up by itself once the HSM answers.
    const settings = o.hsmSettings ? await o.hsmSettings() : o.runtime.hsm;
    for (let attempt = 1; !hsm; attempt++) {
      try {
        hsm = await openHsm(settings);
      } catch (e) {
        // A configuration problem (no PIN, a wrong token) does not mend itself: say so at once.
        if (isProvlineError(e) && e.kind === 'invalid-input') throw e;
        if (attempt >= 5 && !(isProvlineError(e) && e.retryable)) throw e;
        o.log.warn({ attempt, err: messageOf(e) }, 'cannot open the HSM yet; retrying');
        await sleep(Math.min(5000, 250 * attempt));
      }
    }
    const opened = hsm;
    const maker: IdentityMaker = {
      createDeviceIdentity: (r) => opened.createDeviceIdentity(r),
      createSignedIdentity: (r, ca) => createSignedIdentity(opened, r, ca),
      checkSigningCa: async (ca) => void (await checkSigningCa(opened, ca.settings, ca.now)),
    };
    workers.push(
      new Worker<HsmJobData>(
        QUEUES.hsm,
        async (job: Job<HsmJobData>) => {
          const r = await runHsmRange({ journal, batches, hsm: maker }, job.data).catch((e: unknown) => {
            throw toJobError(e);
          });
          done.hsm++;
          return r;
        },
        { ...opts, concurrency: o.workers.hsmConcurrency },
      ),
    );
  }

  for (const w of workers) {
    w.on('failed', (job, err) =>
      o.log.warn(
        { queue: w.name, jobId: job?.id, attempts: job?.attemptsMade, err: err.message },
        'job failed',
      ),
    );
    w.on('error', (err) => {
      // Said once, by the lockRenewalFailed handler below.
      if (err.message.startsWith('could not renew lock')) return;
      if (err.message.startsWith('Missing lock for job')) {
        o.log.info(
          { event: 'job-lock-lost', queue: w.name, err: err.message },
          'a job ended after its lock was lost; the stalled check has handed it to a worker again',
        );
        return;
      }
      watch.error(err, `worker ${w.name}`);
    });
    w.on('lockRenewalFailed', (jobIds: string[]) => {
      for (const jobId of jobIds) {
        o.log.warn(
          { event: 'job-lock-lost', queue: w.name, jobId },
          `lost the lock of job ${jobId} (Redis was away longer than the lock): stopping it here; the stalled check hands it to a worker again`,
        );
        w.cancelJob(jobId, 'lock lost');
      }
    });
  }
  await Promise.all(workers.map((w) => w.waitUntilReady()));

  return {
    done,
    async close() {
      abort.abort();
      const grace = new AbortController();
      const closed = Promise.all(workers.map((w) => w.close())).then(() => 'closed' as const);
      const late = sleep(CLOSE_GRACE_MS, 'timeout' as const, { signal: grace.signal }).catch(
        () => 'closed' as const,
      );
      const how = await Promise.race([closed, late]);
      grace.abort();
      if (how === 'timeout') {
        o.log.warn({ graceMs: CLOSE_GRACE_MS }, 'jobs still running after the grace period; stopping anyway');
        await Promise.all(workers.map((w) => w.close(true)));
      }
      await queues.close();
      hsm?.close();
      cloud?.destroy();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/**
 * Re-enqueues the work of every batch still in the registration stage: jobs lost to a Redis
 * crash or left failed after their attempts come back; existing jobs are not duplicated.
 */
export async function sweepActive(redisUrl: string, prefix: string, hsmChunk: number): Promise<number> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: null, retryStrategy: redisRetryStrategy });
  redis.on('error', () => undefined);
  const journal = new Journal(redis, { prefix });
  const batches = new BatchStore(redis, journal.keys);
  const queues = new PipelineQueues(connectionFromUrl(redisUrl), prefix);
  try {
    const active = await batches.active();
    for (const id of active) {
      const meta = await batches.meta(id).catch(() => undefined);
      if (!meta || meta.abortedCode) continue;
      await queues.enqueueBatch(await batches.plan(id), hsmChunk);
    }
    return active.length;
  } finally {
    await queues.close();
    await redis.quit();
  }
}
