/**
 * The BullMQ side of the pipeline: queue names, job ids and job options, in one place.
 *
 *   hsm       one job per range of a batch's plan (workers.hsmChunk devices): keys + CSRs
 *   register  one long-running job per batch: drives its registration chunks to the end
 *
 * Job ids are deterministic (`<batch>.hsm.<from>`, `<batch>.reg`), so enqueueing twice (a
 * retried submit, the start-up sweep) never makes a second job while the first exists. Job
 * data holds ids and ranges only: no PIN, no key, no CSR.
 */
import { Queue, type ConnectionOptions, type JobsOptions } from 'bullmq';
import type { PlanHeader } from '../batch/index.js';
import { hsmWorkFor, strategyFor } from '../batch/strategies/index.js';
import { redisRetryStrategy, type RedisWatch } from './redis-watch.js';

export const QUEUES = { hsm: 'hsm', register: 'register' } as const;
export type Role = 'hsm' | 'registrar';
export const ROLES: readonly Role[] = ['hsm', 'registrar'];

export interface HsmJobData {
  batchId: string;
  /** Index range [from, to) of plan.devices. */
  from: number;
  to: number;
}

export interface RegisterJobData {
  batchId: string;
}

/** BullMQ key prefix for a provline key prefix: its queues live beside the journal. */
export function queuePrefix(prefix: string): string {
  return `${prefix}-q`;
}

export function connectionFromUrl(url: string): ConnectionOptions {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.pathname.length > 1 ? { db: Number(u.pathname.slice(1)) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
    // BullMQ's own back-off grows to 20 s; a restarted Redis is found again within a second.
    retryStrategy: redisRetryStrategy,
  };
}

const COMMON: JobsOptions = {
  removeOnComplete: true,
  removeOnFail: { age: 7 * 24 * 3600 },
};

export const HSM_JOB: JobsOptions = { ...COMMON, attempts: 8, backoff: { type: 'exponential', delay: 500 } };
export const REGISTER_JOB: JobsOptions = {
  ...COMMON,
  attempts: 1000,
  backoff: { type: 'exponential', delay: 1000 },
};

export function hsmJobId(batchId: string, from: number): string {
  return `${batchId}.hsm.${from}`;
}

export function registerJobId(batchId: string): string {
  return `${batchId}.reg`;
}

export class PipelineQueues {
  readonly hsm: Queue<HsmJobData>;
  readonly register: Queue<RegisterJobData>;

  constructor(
    readonly connection: ConnectionOptions,
    readonly prefix: string,
    /** Where connection errors go (without it, a lost connection is printed raw to stderr). */
    watch?: RedisWatch,
  ) {
    const opts = { connection, prefix: queuePrefix(prefix) };
    this.hsm = new Queue<HsmJobData>(QUEUES.hsm, opts);
    this.register = new Queue<RegisterJobData>(QUEUES.register, opts);
    for (const q of [this.hsm, this.register]) {
      if (watch) watch.watch(q, `queue ${q.name}`);
      else q.on('error', () => undefined);
    }
  }

  /** Enqueues a batch's HSM work (skipped for device-generated keys) and its registration job. */
  async enqueueBatch(plan: PlanHeader, hsmChunk: number): Promise<{ hsmJobs: number }> {
    if (hsmWorkFor(strategyFor(plan.profile), plan.profile.keyDelivery) === 'nothing') return { hsmJobs: 0 };
    const jobs = [];
    for (let from = 0; from < plan.deviceCount; from += hsmChunk) {
      const to = Math.min(plan.deviceCount, from + hsmChunk);
      jobs.push({
        name: 'keys',
        data: { batchId: plan.batchId, from, to },
        opts: { ...HSM_JOB, jobId: hsmJobId(plan.batchId, from) },
      });
    }
    for (let i = 0; i < jobs.length; i += 1000) await this.hsm.addBulk(jobs.slice(i, i + 1000));
    await this.register.add(
      'register',
      { batchId: plan.batchId },
      { ...REGISTER_JOB, jobId: registerJobId(plan.batchId) },
    );
    return { hsmJobs: jobs.length };
  }

  /** Workers currently connected to either queue (any host). */
  async workerCount(): Promise<{ hsm: number; register: number }> {
    const [h, r] = await Promise.all([this.hsm.getWorkersCount(), this.register.getWorkersCount()]);
    return { hsm: h, register: r };
  }

  async close(): Promise<void> {
    await Promise.all([this.hsm.close(), this.register.close()]);
  }
}
