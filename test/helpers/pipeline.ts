/**
 * The batch pipeline on real components for integration tests: the local stack (redis-server,
 * SoftHSM, the AWS IoT stand-in), a config with a small-chunk profile and its KEK, and probes
 * that read the journal and the stand-in, so a test can wait for an event (a key being made, a
 * bulk task running) instead of sleeping, each wait on its own budget.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DescribeThingRegistrationTaskCommand, ListThingsCommand, type IoTClient } from '@aws-sdk/client-iot';
import type { Redis } from 'ioredis';
import { expect } from 'vitest';
import { stringify } from 'yaml';
import { makeClients } from '../../src/cloud/clients.js';
import { loadConfig } from '../../src/config/load.js';
import { JournalKeys } from '../../src/jobs/keys.js';
import { queuePrefix } from '../../src/jobs/queues.js';
import { resolveRuntime } from '../../src/stack/runtime.js';
import { stackUp } from '../../src/stack/stack.js';
import { ROOT, runCli } from './cli.js';

/**
 * Polls `probe` every `everyMs` until it returns a value, within this step's own budget. `gone`
 * is checked each round too: when it returns a reason (the process that was to make the event
 * exited, say), waiting further is pointless and the step fails with that reason.
 */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  budgetMs: number,
  opts: { everyMs?: number; gone?: () => string | undefined } = {},
): Promise<T> {
  const started = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    const gone = opts.gone?.();
    if (gone) throw new Error(`gave up waiting for ${what}: ${gone}`);
    if (Date.now() - started > budgetMs)
      throw new Error(
        `timed out after ${Date.now() - started} ms (budget ${budgetMs} ms) waiting for ${what}`,
      );
    await sleep(opts.everyMs ?? 50);
  }
}

export interface PipelineStack {
  /** The environment of CLI calls (config and home); add PROVLINE_REDIS_PREFIX per test. */
  env: NodeJS.ProcessEnv;
  redisUrl: string;
  awsEndpoint: string;
  iot: IoTClient;
  /** Replaces the stand-in's faults (`{}` clears them). */
  faults(body: unknown): Promise<void>;
}

/**
 * Starts the local stack in `home` and writes `<dir>/provline.config.yaml` with the profile
 * `fast`: the demo product in chunks of 100, so a batch is several bulk tasks.
 */
export async function pipelineStack(home: string, dir: string, kekLabel: string): Promise<PipelineStack> {
  const s = await stackUp(home);
  const config = join(dir, 'provline.config.yaml');
  writeFileSync(
    config,
    stringify({
      home,
      workers: { lockMs: 2000, flushMs: 200 },
      profiles: {
        fast: {
          thingName: 'sensor-{serial}',
          attributes: { serial: '{serial}', hw: '{hw_rev}' },
          parameters: {
            ThingName: '{thingName}',
            SerialNumber: '{serial}',
            HardwareRevision: '{hw_rev}',
            CSR: '{csr}',
          },
          thingType: 'provline-demo-sensor',
          thingGroups: ['provline-demo'],
          template: join(ROOT, 'config/templates/demo-bulk.json'),
          policy: join(ROOT, 'config/policies/demo-device.json'),
          policyName: 'provline-demo-device',
          kekLabel,
          registration: { mode: 'bulk', chunkSize: 100 },
        },
      },
    }),
  );
  const env = { ...process.env, PROVLINE_CONFIG: config, PROVLINE_HOME: home };
  const kek = await runCli(['hsm', 'kek', 'create', '--profile', 'fast'], { env });
  expect(kek.code, kek.stderr).toBe(0);
  const rt = resolveRuntime(loadConfig({ file: config, env: {} }));
  const awsEndpoint = rt.aws.endpoint!;
  return {
    env,
    redisUrl: s.redis.url!,
    awsEndpoint,
    iot: makeClients(rt.aws, { maxAttempts: 3 }).iot,
    async faults(body) {
      const r = await fetch(`${awsEndpoint}/_emulator/faults?replace=true`, {
        method: 'PUT',
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json' },
      });
      expect(r.status).toBe(200);
    },
  };
}

/** Writes a CSV of `serials` (hardware revision B) into `dir`. */
export function csvFile(dir: string, name: string, serials: readonly string[]): string {
  const file = join(dir, name);
  writeFileSync(file, `serial,hw_rev\n${serials.map((s) => `${s},B`).join('\n')}\n`);
  return file;
}

export function serialRange(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(5, '0')}`);
}

/** Things whose name starts with `prefix`, across all pages. */
export async function thingCount(iot: IoTClient, prefix: string): Promise<number> {
  let n = 0;
  let nextToken: string | undefined;
  do {
    const page = await iot.send(new ListThingsCommand({ maxResults: 250, nextToken }));
    n += (page.things ?? []).filter((t) => t.thingName?.startsWith(prefix)).length;
    nextToken = page.nextToken;
  } while (nextToken);
  return n;
}

/**
 * A chunk of the batch whose bulk task the stand-in reports in progress right now, if any;
 * with `maxDone`, only a task that has handled at most that many lines (so that it is surely
 * still running a moment later).
 */
export async function taskInProgress(
  redis: Redis,
  iot: IoTClient,
  prefix: string,
  batch: string,
  maxDone = Infinity,
): Promise<{ chunk: string; taskId: string; done: number } | undefined> {
  const keys = new JournalKeys(prefix);
  for (const n of await redis.lrange(keys.chunks(batch), 0, -1)) {
    const [state, taskId] = await redis.hmget(keys.chunk(batch, n), 'state', 'taskId');
    if (state !== 'started' || !taskId) continue;
    const d = await iot.send(new DescribeThingRegistrationTaskCommand({ taskId }));
    const done = (d.successCount ?? 0) + (d.failureCount ?? 0);
    if (d.status === 'InProgress' && done <= maxDone) return { chunk: n, taskId, done };
  }
  return undefined;
}

/** The state a chunk of the batch is in (`claimed` … `done`), from the journal. */
export async function chunkState(
  redis: Redis,
  prefix: string,
  batch: string,
  chunk: string,
): Promise<string | null> {
  return redis.hget(new JournalKeys(prefix).chunk(batch, chunk), 'state');
}

/** Devices of the batch per state, from the journal's counters. */
export async function deviceCounts(
  redis: Redis,
  prefix: string,
  batch: string,
): Promise<Record<string, number>> {
  const h = await redis.hgetall(new JournalKeys(prefix).counts(batch));
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Number(v)]));
}

/** HSM-stage jobs a worker holds right now (taken, not finished). */
export function hsmJobsActive(redis: Redis, prefix: string): Promise<number> {
  return redis.llen(`${queuePrefix(prefix)}:hsm:active`);
}
