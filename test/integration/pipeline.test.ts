/**
 * The batch pipeline end to end on real components: redis-server, SoftHSM through PKCS#11 and
 * the AWS IoT stand-in over HTTP, driven through the real CLI (`submit`, `worker`, `status`,
 * `report`, `reconcile`) as separate processes. The reliability cases of issue 5: SIGKILLed
 * workers, a Redis restart, 20 % throttling with planted failures, re-submission.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IoTClient } from '@aws-sdk/client-iot';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stackPaths } from '../../src/stack/home.js';
import { redisDown, redisUp } from '../../src/stack/redis.js';
import { BIN, json, ROOT, runCli } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';
import {
  chunkState,
  csvFile,
  deviceCounts,
  hsmJobsActive,
  pipelineStack,
  serialRange,
  taskInProgress,
  thingCount,
  until,
  type PipelineStack,
} from '../helpers/pipeline.js';

interface Status {
  batchId: string;
  total: number;
  counts: Record<string, number>;
  failures: Record<string, number>;
  registrationDone: boolean;
  stages: { registered: number };
}

/** Budget of a `submit --wait` of a few hundred serials on a busy machine. */
const WAIT_BUDGET_MS = 150_000;
/** Budget of one wait for an event of the pipeline (a job taken, a task running). */
const EVENT_BUDGET_MS = 60_000;

describe('batch pipeline', () => {
  const home = tempDir('provline-pipeline-');
  const dir = tempDir('provline-pipeline-files-');
  let stack: PipelineStack;
  let env: NodeJS.ProcessEnv;
  let redisUrl: string;
  let iot: IoTClient;
  let prefixN = 0;
  const workers = new Set<ChildProcess>();

  /** Each test gets its own key prefix: batches, devices and queues never mix. */
  const isolated = (): NodeJS.ProcessEnv => ({
    ...env,
    PROVLINE_REDIS_PREFIX: `t${process.pid}x${++prefixN}`,
  });

  const csv = (name: string, serials: string[]): string => csvFile(dir, name, serials);
  const serials = serialRange;
  const faults = (body: unknown): Promise<void> => stack.faults(body);

  let workerN = 0;
  const workerLogs: string[] = [];
  const startWorker = (e: NodeJS.ProcessEnv): ChildProcess => {
    const log = join(dir, `worker-${++workerN}.log`);
    workerLogs.push(log);
    const child = spawn(process.execPath, [BIN, 'worker'], {
      cwd: ROOT,
      env: { ...e, PROVLINE_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'ignore', openSync(log, 'w')],
    });
    workers.add(child);
    child.once('exit', () => workers.delete(child));
    return child;
  };
  const exited = (c: ChildProcess): Promise<number | null> =>
    c.exitCode !== null || c.signalCode !== null
      ? Promise.resolve(c.exitCode)
      : new Promise((r) => c.once('exit', (code) => r(code)));
  const logs = (): string =>
    workerLogs.map((f) => `--- ${f}\n${readFileSync(f, 'utf8').slice(-3000)}`).join('\n');
  /** Why waiting for a worker's progress is pointless: it exited. */
  const deadWorker = (w: ChildProcess) => (): string | undefined =>
    w.exitCode !== null || w.signalCode !== null
      ? `the worker exited (${w.exitCode ?? w.signalCode})\n${logs()}`
      : undefined;

  const status = async (e: NodeJS.ProcessEnv, batch: string): Promise<Status> =>
    json<Status>(await runCli(['status', batch, '--json'], { env: e }));

  /** Polls `status` until registration is done, on its own budget; fails early if the worker dies. */
  const waitDone = async (
    e: NodeJS.ProcessEnv,
    batch: string,
    worker: ChildProcess,
    budgetMs = WAIT_BUDGET_MS,
  ): Promise<Status> => {
    let last: Status | undefined;
    try {
      return await until(
        `batch ${batch} to finish registration`,
        async () => {
          last = await status(e, batch);
          return last.registrationDone ? last : undefined;
        },
        budgetMs,
        { everyMs: 300, gone: deadWorker(worker) },
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\nlast counts ${JSON.stringify(last?.counts)}\n${logs()}`, {
        cause: err,
      });
    }
  };

  const submit = async (e: NodeJS.ProcessEnv, file: string, extra: string[] = []): Promise<string> => {
    const r = await runCli(['submit', file, '--profile', 'fast', '--json', ...extra], { env: e });
    expect(r.code, r.stderr).toBe(0);
    return json<{ batchId: string }>(r).batchId;
  };

  /** A bulk task of the batch running and at most half done: still running when a kill lands. */
  const taskEarly = (redis: Redis, prefix: string, batch: string) =>
    taskInProgress(redis, iot, prefix, batch, 50);

  beforeAll(async () => {
    stack = await pipelineStack(home, dir, 'provline-test-kek');
    ({ env, redisUrl, iot } = stack);
  });

  afterAll(async () => {
    for (const w of workers) w.kill('SIGKILL');
    iot?.destroy();
    await removeHome(home);
  });

  it('registers a batch with submit --wait, reports every serial, reconciles clean, and a re-submit creates nothing', async () => {
    const e = isolated();
    const file = csv('a.csv', serials('PA', 150));
    const r = await runCli(['submit', file, '--profile', 'fast', '--wait', '--json'], {
      env: e,
      timeoutMs: WAIT_BUDGET_MS,
    });
    expect(r.code, r.stderr).toBe(0);
    const s = json<Status>(r);
    expect(s.counts.registered).toBe(150);
    expect(s.total).toBe(150);

    const report = await runCli(['report', s.batchId, '--format', 'json'], { env: e });
    const rows =
      json<Array<{ serial: string; state: string; certificateId: string; registeredAt: string }>>(report);
    expect(rows).toHaveLength(150);
    expect(rows.every((x) => x.state === 'registered' && x.registeredAt)).toBe(true);
    expect(new Set(rows.map((x) => x.certificateId)).size).toBe(150);

    const rec = await runCli(['reconcile', s.batchId, '--json'], { env: e });
    expect(rec.code, rec.stdout + rec.stderr).toBe(0);
    expect(json<{ sound: number; orphans: unknown[] }>(rec)).toMatchObject({ sound: 150, orphans: [] });

    const before = await thingCount(iot, 'sensor-PA');
    expect(before).toBe(150);
    const again = await runCli(['submit', file, '--profile', 'fast'], { env: e });
    expect(again.code).toBe(3);
    expect(again.stderr).toContain('SERIAL_ALREADY_SUBMITTED');
    const skip = await runCli(['submit', file, '--profile', 'fast', '--skip-existing'], { env: e });
    expect(skip.code, skip.stderr).toBe(0);
    expect(skip.stdout).toContain('nothing to do');
    expect(await thingCount(iot, 'sensor-PA')).toBe(before);
    const batches = json<unknown[]>(await runCli(['batches', '--json'], { env: e }));
    expect(batches).toHaveLength(1);
  });

  it('queues nothing when a row is invalid, and with --skip-invalid reports the rejected lines', async () => {
    const e = isolated();
    const file = csv('bad.csv', ['PB00001', 'PB 2', 'PB00003']);
    const r = await runCli(['submit', file, '--profile', 'fast'], { env: e });
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/line 3, column serial: .*\[SERIAL_INVALID\]/);
    expect(r.stdout).toContain('nothing was queued');
    expect(json<unknown[]>(await runCli(['batches', '--json'], { env: e }))).toEqual([]);

    const ok = await runCli(['submit', file, '--profile', 'fast', '--skip-invalid', '--wait', '--json'], {
      env: e,
      timeoutMs: WAIT_BUDGET_MS,
    });
    expect(ok.code, ok.stderr).toBe(0);
    const { batchId } = json<Status>(ok);
    const rows = json<Array<{ serial: string; line: string; state: string; errorCode: string }>>(
      await runCli(['report', batchId, '--format', 'json'], { env: e }),
    );
    expect(rows.map((x) => [x.line, x.state])).toEqual([
      ['2', 'registered'],
      ['4', 'registered'],
      ['3', 'rejected'],
    ]);
    expect(rows[2]!.errorCode).toBe('SERIAL_INVALID');
  });

  it('survives workers SIGKILLed at recorded points (keys in flight, bulk tasks running): one thing, one certificate, one identity per serial, no orphans', async () => {
    const e = isolated();
    const prefix = e.PROVLINE_REDIS_PREFIX!;
    const n = 500;
    // Bulk tasks of 100 lines take about a second at 100 lines/s: long enough to be caught.
    await faults({ linesPerSecond: 100 });
    const redis = new Redis(redisUrl);
    try {
      const batch = await submit(e, csv('k.csv', serials('PK', n)));

      /** Starts a worker, waits for `what` (on its own budget), SIGKILLs the worker there. */
      const crashAt = async <T>(what: string, probe: () => Promise<T | undefined>): Promise<T> => {
        const w = startWorker(e);
        const hit = await until(what, probe, EVENT_BUDGET_MS, { everyMs: 20, gone: deadWorker(w) });
        w.kill('SIGKILL');
        expect(await exited(w)).toBeNull();
        return hit;
      };

      // 1. Keys in flight: a worker holds an HSM job while most of the batch has no key yet.
      await crashAt('an HSM job in flight', async () =>
        (await hsmJobsActive(redis, prefix)) > 0 &&
        (await deviceCounts(redis, prefix, batch)).accepted! >= 200
          ? true
          : undefined,
      );
      // The dead worker's job is still taken (the stall check hands it on): it was in flight.
      expect(await hsmJobsActive(redis, prefix)).toBeGreaterThan(0);
      expect((await deviceCounts(redis, prefix, batch)).accepted).toBeGreaterThan(0);

      // 2. and 3. A bulk task running: the first one, then one after a chunk was registered.
      for (const after of [0, 100]) {
        const hit = await crashAt(`a bulk task running, ${after}+ devices registered`, async () =>
          ((await deviceCounts(redis, prefix, batch)).registered ?? 0) >= after
            ? taskEarly(redis, prefix, batch)
            : undefined,
        );
        // The worker died with the chunk unfinished: its devices are still being registered.
        expect(await chunkState(redis, prefix, batch, hit.chunk)).toBe('started');
        expect((await deviceCounts(redis, prefix, batch)).registering).toBeGreaterThan(0);
      }

      const last = startWorker(e);
      const s = await waitDone(e, batch, last);
      last.kill('SIGTERM');
      expect(await exited(last)).toBe(0);
      expect(s.counts).toMatchObject({ registered: n, failed: 0 });

      const rows = json<Array<{ certificateId: string }>>(
        await runCli(['report', batch, '--format', 'json'], { env: e }),
      );
      expect(new Set(rows.map((x) => x.certificateId)).size).toBe(n);
      expect(await thingCount(iot, 'sensor-PK')).toBe(n);
      // Reconcile looks every device up in the registry: its own, longer budget.
      const rec = await runCli(['reconcile', batch, '--json'], { env: e, timeoutMs: WAIT_BUDGET_MS });
      expect(rec.code, rec.stdout).toBe(0);
      expect(json<{ sound: number; orphans: unknown[] }>(rec)).toMatchObject({ sound: n, orphans: [] });
    } finally {
      redis.disconnect();
      await faults({});
    }
  }, 400_000);

  it('finishes a batch across a Redis restart (AOF) that hits a bulk task in flight', async () => {
    const e = isolated();
    const prefix = e.PROVLINE_REDIS_PREFIX!;
    await faults({ linesPerSecond: 100 });
    const redis = new Redis(redisUrl);
    try {
      const batch = await submit(e, csv('r.csv', serials('PR', 300)));
      const w = startWorker(e);
      const hit = await until('a bulk task running', () => taskEarly(redis, prefix, batch), EVENT_BUDGET_MS, {
        everyMs: 20,
        gone: deadWorker(w),
      });
      redis.disconnect();
      const paths = stackPaths(home);
      const port = Number(new URL(redisUrl).port);
      await redisDown(paths);
      expect(await redisUp(paths, port)).toBe(port); // same port, same AOF
      const s = await waitDone(e, batch, w);
      expect(s.counts).toMatchObject({ registered: 300, failed: 0 });
      // The restart hit the task while it ran; the chunk was finished after it, not before.
      expect(hit.done).toBeLessThanOrEqual(50);
      w.kill('SIGTERM');
      expect(await exited(w)).toBe(0);
    } finally {
      redis.disconnect();
      await faults({});
    }
  }, 240_000);

  it('with 20 % of calls throttled and planted bad lines, every serial ends registered or failed with the right reason', async () => {
    const e = isolated();
    await faults({
      seed: 7,
      throttle: { '*': 0.2, BulkLine: 0.2 },
      failLines: [
        { pattern: 'PTBAD', error: 'ResourceRegistrationFailureException', message: 'planted failure' },
      ],
    });
    try {
      const names = [...serials('PT', 190), ...serials('PTBAD', 10)];
      const r = await runCli(['submit', csv('t.csv', names), '--profile', 'fast', '--wait', '--json'], {
        env: e,
        timeoutMs: WAIT_BUDGET_MS,
      });
      expect(r.code, r.stderr).toBe(4);
      const s = json<Status>(r);
      expect(s.counts).toMatchObject({ registered: 190, failed: 10 });
      expect(s.failures).toEqual({ REGISTRATION_REJECTED: 10 });
      const rows = json<Array<{ serial: string; state: string; errorMessage: string }>>(
        await runCli(['report', s.batchId, '--format', 'json'], { env: e }),
      );
      const bad = rows.filter((x) => x.serial.startsWith('PTBAD'));
      expect(bad.every((x) => x.state === 'failed' && x.errorMessage.includes('planted failure'))).toBe(true);
    } finally {
      await faults({});
    }
  });

  it('keeps no private key, PIN or plaintext key material in Redis, after a batch of its own', async () => {
    // Its own batch under its own prefix: the scan does not rely on what other tests left.
    const e = isolated();
    const prefix = e.PROVLINE_REDIS_PREFIX!;
    const r = await runCli(
      ['submit', csv('s.csv', serials('PS', 30)), '--profile', 'fast', '--wait', '--json'],
      {
        env: e,
        timeoutMs: WAIT_BUDGET_MS,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    const redis = new Redis(redisUrl);
    try {
      const pin = readFileSync(join(home, 'hsm/user.pin'), 'utf8').trim();
      // PKCS#8 of an EC key starts with this DER prefix; in base64 and hex it would be visible.
      const pkcs8 = Buffer.from('308187020100301306072a8648ce3d020106082a8648ce3d030107', 'hex');
      let scanned = 0;
      let devices = 0;
      for await (const keys of redis.scanStream({ match: `${prefix}*`, count: 1000 })) {
        for (const key of keys as string[]) {
          const type = await redis.type(key);
          let text = '';
          if (type === 'string') text = (await redis.get(key)) ?? '';
          else if (type === 'hash') text = JSON.stringify(await redis.hgetall(key));
          else if (type === 'list') text = (await redis.lrange(key, 0, -1)).join('\n');
          else continue;
          scanned++;
          if (key.startsWith(`${prefix}:dev:`) && text.includes('wrappedKey')) devices++;
          expect(text).not.toContain('PRIVATE KEY');
          expect(text).not.toContain(pin);
          expect(text).not.toContain(pkcs8.toString('base64').slice(0, 24));
          expect(text).not.toContain(pkcs8.toString('hex'));
        }
      }
      // Every device record, with its wrapped key, was among what was searched.
      expect(devices).toBe(30);
      expect(scanned).toBeGreaterThan(30);
    } finally {
      await redis.quit();
    }
  });
});
