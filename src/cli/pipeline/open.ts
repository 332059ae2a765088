/** What the pipeline commands share: one Redis connection, the journal, batches and queues. */
import { Redis } from 'ioredis';
import {
  BatchStore,
  Journal,
  connectionFromUrl,
  PipelineQueues,
  ROLES,
  redactUrl,
  redisRetryStrategy,
  RedisWatch,
  startRunner,
  type Runner,
} from '../../jobs/index.js';
import { requireRedis } from '../../stack/index.js';
import { ProvlineError } from '../../core/index.js';
import type { CommandContext } from '../context.js';

export interface PipelineHandles {
  redisUrl: string;
  prefix: string;
  redis: Redis;
  journal: Journal;
  batches: BatchStore;
  queues: PipelineQueues;
  /** The process's view of Redis: one log line when it goes away, one when it is back. */
  watch: RedisWatch;
  close(): Promise<void>;
}

export async function openPipeline(ctx: CommandContext): Promise<PipelineHandles> {
  const redisUrl = requireRedis(ctx.runtime);
  const prefix = ctx.loaded.config.redis.prefix;
  const redis = new Redis(redisUrl, {
    maxRetriesPerRequest: 2,
    lazyConnect: true,
    enableOfflineQueue: false,
    retryStrategy: redisRetryStrategy,
  });
  const watch = new RedisWatch({ log: ctx.logger, target: redactUrl(redisUrl) });
  try {
    await redis.connect();
  } catch (e) {
    redis.disconnect();
    throw new ProvlineError('REDIS_UNREACHABLE', `cannot reach Redis at ${redisUrl}`, {
      cause: e,
      retryable: true,
      hint: 'Start it (`provline stack up` for the local one) or fix redis.url.',
    });
  }
  watch.watch(redis, 'commands');
  const journal = new Journal(redis, { prefix });
  const batches = new BatchStore(redis, journal.keys);
  const queues = new PipelineQueues(connectionFromUrl(redisUrl), prefix, watch);
  return {
    redisUrl,
    prefix,
    redis,
    journal,
    batches,
    queues,
    watch,
    async close() {
      await queues.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/** Every pipeline role in this process (`submit --wait` with no worker connected, the demo). */
export function startLocalWorkers(c: CommandContext, p: PipelineHandles): Promise<Runner> {
  return startRunner({
    redisUrl: p.redisUrl,
    runtime: c.runtime,
    workers: c.loaded.config.workers,
    roles: ROLES,
    prefix: p.prefix,
    log: c.logger,
    hsmSettings: () => c.hsmSettings(),
    watch: p.watch,
  });
}
