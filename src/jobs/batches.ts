/**
 * Batches in Redis: the plan (written once), the batch hash with its metadata and stage
 * markers, the index of batches and the set of batches still in the registration stage.
 * Device state lives in the journal (journal.ts); this module owns only batch-level keys.
 */
import type { Redis } from 'ioredis';
import {
  assemblePlan,
  parsePlanPage,
  parseStoredPlan,
  PLAN_PAGE,
  type BatchPlan,
  type PlanDevice,
  type PlanHeader,
} from '../batch/index.js';
import { STRATEGY_NAMES, strategyNameOf, type KeyDelivery, type StrategyName } from '../config/index.js';
import { ProvlineError } from '../core/index.js';
import type { JournalKeys } from './keys.js';

export interface BatchMeta {
  id: string;
  profile: string;
  createdAt: number;
  /** Devices accepted into the batch. */
  total: number;
  rejected: number;
  source: string;
  keyDelivery: string;
  registrationMode: string;
  /** The lot's strategy (bulk, single, device-csr, jitp, jitr). */
  strategy: StrategyName;
  /** The factory CA that signs the lot (jitp, jitr): its AWS certificate id, checked at submit. */
  caCertificateId?: string;
  /** iot:Data-ATS host, set by the registrar once the account is prepared. */
  endpoint?: string;
  /** The CA devices trust for the endpoint (PEM), set with the endpoint. */
  rootCaPem?: string;
  /** Epoch ms when every device had left the HSM and registration stages. */
  registeredAt?: number;
  /** Epoch ms when a registrar last said it was driving the batch (every few seconds). */
  registrarAt?: number;
  /** Why the batch could not run at all (e.g. the template is invalid), if so. */
  abortedCode?: string;
  abortedMessage?: string;
}

export class BatchStore {
  private readonly plans = new Map<string, BatchPlan>();

  constructor(
    private readonly redis: Redis,
    readonly keys: JournalKeys,
  ) {}

  /** Stores a new batch's whole plan and metadata. Refuses an id that already exists. */
  async create(plan: BatchPlan, now: number): Promise<void> {
    const { devices, ...header } = plan;
    for (let i = 0; i < devices.length; i += PLAN_PAGE)
      await this.stagePage(plan.batchId, devices.slice(i, i + PLAN_PAGE));
    await this.createFromHeader(header, now);
  }

  /**
   * Appends a page of a new plan's devices (in plan order). Nothing else knows the batch until
   * `createFromHeader`; `discardStaged` removes the pages of a batch that is not created.
   */
  async stagePage(id: string, devices: readonly PlanDevice[]): Promise<void> {
    if (devices.length) await this.redis.rpush(this.keys.planDevices(id), JSON.stringify(devices));
  }

  async discardStaged(id: string): Promise<void> {
    await this.redis.del(this.keys.planDevices(id));
  }

  /** The plan's devices a page at a time, in plan order (no cache: bounded memory). */
  async *planPages(id: string): AsyncGenerator<PlanDevice[]> {
    const key = this.keys.planDevices(id);
    for (let i = 0; ; i++) {
      const page = await this.redis.lindex(key, i);
      if (page === null) return;
      yield parsePlanPage(page);
    }
  }

  /** Records a new batch whose devices are staged: its plan header and metadata. */
  async createFromHeader(plan: PlanHeader, now: number): Promise<void> {
    const ok = await this.redis.set(this.keys.plan(plan.batchId), JSON.stringify(plan), 'NX');
    if (ok !== 'OK')
      throw new ProvlineError('BATCH_EXISTS', `batch ${plan.batchId} already exists`, {
        kind: 'invalid-input',
      });
    await this.redis
      .multi()
      .hset(this.keys.batch(plan.batchId), {
        id: plan.batchId,
        profile: plan.profile.name,
        createdAt: String(now),
        rejected: String(plan.rejected.length),
        source: plan.source.file,
        keyDelivery: plan.profile.keyDelivery,
        registrationMode: plan.profile.registration.mode,
        strategy: strategyNameOf(plan.profile),
      })
      .hsetnx(this.keys.batch(plan.batchId), 'total', '0')
      .zadd(this.keys.batches(), now, plan.batchId)
      .sadd(this.keys.active(), plan.batchId)
      .exec();
  }

  /** The batch's plan, cached per process (it never changes once written). */
  async plan(id: string): Promise<BatchPlan> {
    const cached = this.plans.get(id);
    if (cached) return cached;
    const json = await this.redis.get(this.keys.plan(id));
    if (json === null) throw batchNotFound(id);
    const stored = parseStoredPlan(json);
    let plan: BatchPlan;
    if ('devices' in stored) plan = stored;
    else {
      const pages: PlanDevice[][] = [];
      const key = this.keys.planDevices(id);
      for (let i = 0; ; i += 100) {
        const raw = await this.redis.lrange(key, i, i + 99);
        pages.push(...raw.map(parsePlanPage));
        if (raw.length < 100) break;
      }
      plan = assemblePlan(stored, pages);
    }
    this.plans.set(id, plan);
    return plan;
  }

  async meta(id: string): Promise<BatchMeta> {
    const h = await this.redis.hgetall(this.keys.batch(id));
    if (!h.id) throw batchNotFound(id);
    return {
      id: h.id,
      profile: h.profile ?? '',
      createdAt: Number(h.createdAt),
      total: Number(h.total ?? 0),
      rejected: Number(h.rejected ?? 0),
      source: h.source ?? '',
      keyDelivery: h.keyDelivery ?? 'wrapped',
      registrationMode: h.registrationMode ?? 'bulk',
      strategy: (STRATEGY_NAMES as readonly string[]).includes(h.strategy ?? '')
        ? (h.strategy as StrategyName)
        : strategyNameOf({
            keyDelivery: (h.keyDelivery ?? 'wrapped') as KeyDelivery,
            registration: { mode: h.registrationMode === 'single' ? 'single' : 'bulk' },
          }),
      ...(h.caCertificateId ? { caCertificateId: h.caCertificateId } : {}),
      ...(h.endpoint ? { endpoint: h.endpoint } : {}),
      ...(h.rootCaPem ? { rootCaPem: h.rootCaPem } : {}),
      ...(h.registeredAt ? { registeredAt: Number(h.registeredAt) } : {}),
      ...(h.registrarAt ? { registrarAt: Number(h.registrarAt) } : {}),
      ...(h.abortedCode ? { abortedCode: h.abortedCode, abortedMessage: h.abortedMessage ?? '' } : {}),
    };
  }

  async set(id: string, fields: Record<string, string>): Promise<void> {
    await this.redis.hset(this.keys.batch(id), fields);
  }

  /** A registrar driving the batch says it is alive (read by `status` to tell a stall). */
  async beat(id: string, now: number): Promise<void> {
    await this.redis.hset(this.keys.batch(id), 'registrarAt', String(now));
  }

  /** Newest first. */
  async list(limit = 50): Promise<string[]> {
    return this.redis.zrevrange(this.keys.batches(), 0, limit - 1);
  }

  async active(): Promise<string[]> {
    return this.redis.smembers(this.keys.active());
  }

  /** Marks the registration stage finished (no device left in accepted/keyed/registering). */
  async finishRegistration(id: string, now: number): Promise<void> {
    await this.redis
      .multi()
      .hsetnx(this.keys.batch(id), 'registeredAt', String(now))
      .srem(this.keys.active(), id)
      .exec();
  }

  /** A batch that cannot run at all: recorded so `status` and `submit --wait` can say why. */
  async abort(id: string, error: { code: string; message: string }): Promise<void> {
    await this.redis.hset(this.keys.batch(id), { abortedCode: error.code, abortedMessage: error.message });
  }
}

export function batchNotFound(id: string): ProvlineError {
  return new ProvlineError('BATCH_NOT_FOUND', `no batch "${id}"`, {
    kind: 'invalid-input',
    hint: 'List batches with `provline batches`.',
  });
}
