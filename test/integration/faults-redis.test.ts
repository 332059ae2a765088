/**
 * Redis crashes under `submit --wait` (issue 16, items 1 and 2), on real components: the
 * stack's redis-server (AOF on), SoftHSM and the AWS IoT stand-in, through the real CLI.
 *
 * Redis is SIGKILLed at a recorded point (a bulk task of the batch in progress at the stand-in)
 * and started again on the same port; `submit --wait`, whose workers run in its own process,
 * must ride through: every serial registered once, nothing lost or duplicated, exit 0, and one
 * JSON log line per change of Redis's state instead of unhandled-error dumps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive } from '../../src/core/proc.js';
import { stackPaths } from '../../src/stack/home.js';
import { redisStatus } from '../../src/stack/redis.js';
import { stackUp } from '../../src/stack/stack.js';
import { BIN, ROOT, runCli } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';
import {
  csvFile,
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
  registrationDone: boolean;
}

interface Submit {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
}

describe('Redis crashes under submit --wait', () => {
  const home = tempDir('provline-faults-redis-');
  const dir = tempDir('provline-faults-redis-files-');
  let stack: PipelineStack;
  let port: number;
  let prefixN = 0;
  const children = new Set<ChildProcess>();

  const isolated = (): NodeJS.ProcessEnv => ({
    ...stack.env,
    PROVLINE_REDIS_PREFIX: `f${process.pid}x${++prefixN}`,
  });

  const startSubmit = (e: NodeJS.ProcessEnv, file: string): Submit => {
    const child = spawn(process.execPath, [BIN, 'submit', file, '--profile', 'fast', '--wait', '--json'], {
      cwd: ROOT,
      env: { ...e, PROVLINE_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exit = new Promise<number | null>((resolve) =>
      child.once('close', (code) => {
        children.delete(child);
        resolve(code);
      }),
    );
    return { child, stdout: () => out, stderr: () => err, exit };
  };

  /** The one batch under this prefix, once submit has recorded it. */
  const batchOf = (redis: Redis, prefix: string): Promise<string> =>
    until(
      'the batch to be recorded',
      async () => (await redis.zrange(`${prefix}:batches`, '0', '0'))[0],
      30_000,
    );

  const killRedis = async (): Promise<void> => {
    const pid = redisStatus(stackPaths(home), port).pid ?? undefined;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid!, 'SIGKILL');
    await until(
      'redis-server to die',
      () => Promise.resolve(isAlive(pid, 'redis-server') ? undefined : true),
      10_000,
    );
  };

  /** Every serial registered once: distinct certificates = things = serials. */
  const expectEachOnce = async (e: NodeJS.ProcessEnv, batch: string, serialPrefix: string, n: number) => {
    const r = await runCli(['report', batch, '--format', 'json'], { env: e });
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<{ serial: string; state: string; certificateId: string }>;
    expect(rows).toHaveLength(n);
    expect(rows.filter((x) => x.state === 'registered')).toHaveLength(n);
    expect(new Set(rows.map((x) => x.certificateId)).size).toBe(n);
    expect(await thingCount(stack.iot, `sensor-${serialPrefix}`)).toBe(n);
  };

  /** The log stays structured: JSON lines or the progress lines, no dumps or stack traces. */
  const expectQuietLog = (stderr: string): Array<Record<string, unknown>> => {
    expect(stderr).not.toContain('Unhandled error event');
    expect(stderr).not.toMatch(/^\s+at /m);
    expect(stderr).not.toContain('errno:');
    expect(stderr).not.toContain('could not renew lock');
    const events: Array<Record<string, unknown>> = [];
    for (const line of stderr.split('\n')) {
      if (!line.startsWith('{')) {
        expect(line, 'a non-JSON line that is not progress').toMatch(
          /^(|running the workers.*|keys \d+.*|stalled: .*)$/,
        );
        continue;
      }
      events.push(JSON.parse(line) as Record<string, unknown>);
    }
    return events;
  };

  beforeAll(async () => {
    stack = await pipelineStack(home, dir, 'provline-faults-kek');
    port = Number(new URL(stack.redisUrl).port);
  }, 90_000);

  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    stack?.iot.destroy();
    await removeHome(home);
  });

  /**
   * Submits n serials with --wait, waits for the recorded point (a bulk task of the batch in
   * progress at the stand-in), SIGKILLs Redis, runs `outage` (given the register job lock's
   * remaining time), starts the stack again (Redis reloads its AOF on the same port), and
   * checks the outcome: exit 0, every serial registered once, a quiet structured log.
   */
  const crashUnderSubmit = async (
    serialPrefix: string,
    n: number,
    outage: (sub: Submit, lockTtlMs: number) => Promise<void>,
  ): Promise<Array<Record<string, unknown>>> => {
    const e = isolated();
    const prefix = e.PROVLINE_REDIS_PREFIX!;
    // Slow bulk tasks (100 lines take about a second), so that one is surely caught running.
    await stack.faults({ linesPerSecond: 100 });
    const redis = new Redis(`redis://127.0.0.1:${port}`, { maxRetriesPerRequest: 1, lazyConnect: true });
    redis.on('error', () => undefined);
    await redis.connect();
    const sub = startSubmit(e, csvFile(dir, `${serialPrefix}.csv`, serialRange(serialPrefix, n)));
    try {
      const batch = await batchOf(redis, prefix);
      const hit = await until(
        'a bulk task in progress',
        () => taskInProgress(redis, stack.iot, prefix, batch),
        60_000,
      );
      expect(hit.taskId).toBeTruthy();
      const ttl = await until(
        'the register job to hold its lock',
        async () => {
          const t = await redis.pttl(`${prefix}-q:register:${batch}.reg:lock`);
          return t > 0 ? t : undefined;
        },
        10_000,
      );
      redis.disconnect();
      await killRedis();
      await outage(sub, ttl);
      await stackUp(home);
      const code = await Promise.race([sub.exit, sleep(120_000, 'timeout' as const)]);
      expect(code, sub.stderr().slice(-3000)).toBe(0);
      const s = JSON.parse(sub.stdout()) as Status;
      expect(s.counts).toMatchObject({ registered: n, failed: 0 });
      await expectEachOnce(e, batch, serialPrefix, n);
      const events = expectQuietLog(sub.stderr());
      // One line when Redis went away, one when it was back: not one per failed reconnect.
      expect(events.filter((x) => x.event === 'redis-unreachable')).toHaveLength(1);
      expect(events.filter((x) => x.event === 'redis-reachable')).toHaveLength(1);
      return events;
    } finally {
      redis.disconnect();
      sub.child.kill('SIGKILL');
      await stack.faults({});
    }
  };

  it('submit --wait hung after a Redis SIGKILL during a bulk task: it rides through, registers each serial once and exits 0', async () => {
    await crashUnderSubmit('FC', 400, async (sub) => {
      await until(
        'submit to notice that Redis is gone',
        () => Promise.resolve(sub.stderr().includes('"event":"redis-unreachable"') ? true : undefined),
        20_000,
      );
    });
  }, 240_000);

  it('an outage longer than the job lock: the lost register job is taken back and the batch finishes', async () => {
    let lockTtl = 0;
    const events = await crashUnderSubmit('FO', 300, async (_sub, ttl) => {
      lockTtl = ttl;
      // Down for longer than the lock had left (a duration is the point here, not an event).
      await sleep(ttl + 2000);
    });
    const back = events.find((x) => x.event === 'redis-reachable');
    expect(Number(back?.downMs)).toBeGreaterThan(lockTtl);
  }, 240_000);
});
