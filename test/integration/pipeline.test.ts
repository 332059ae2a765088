/**
 * The batch pipeline end to end on real components: redis-server, SoftHSM through PKCS#11 and
 * the AWS IoT stand-in over HTTP, driven through the real CLI (`submit`, `worker`, `status`,
 * `report`, `reconcile`) as separate processes. The reliability cases of issue 5: SIGKILLed
 * workers, a Redis restart, 20 % throttling with planted failures, re-submission.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListThingsCommand, type IoTClient } from '@aws-sdk/client-iot';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { makeClients } from '../../src/cloud/clients.js';
import { loadConfig } from '../../src/config/load.js';
import { stackPaths } from '../../src/stack/home.js';
import { redisDown, redisUp } from '../../src/stack/redis.js';
import { resolveRuntime } from '../../src/stack/runtime.js';
import { stackUp } from '../../src/stack/stack.js';
import { BIN, json, ROOT, runCli } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';

interface Status {
  batchId: string;
  total: number;
  counts: Record<string, number>;
  failures: Record<string, number>;
  registrationDone: boolean;
  stages: { registered: number };
}

describe('batch pipeline', () => {
  const home = tempDir('provline-pipeline-');
  const dir = tempDir('provline-pipeline-files-');
  const config = join(dir, 'provline.config.yaml');
  let env: NodeJS.ProcessEnv;
  let redisUrl: string;
  let awsEndpoint: string;
  let iot: IoTClient;
  let prefixN = 0;
  const workers = new Set<ChildProcess>();

  /** Each test gets its own key prefix: batches, devices and queues never mix. */
  const isolated = (): NodeJS.ProcessEnv => ({
    ...env,
    PROVLINE_REDIS_PREFIX: `t${process.pid}x${++prefixN}`,
  });

  const csv = (name: string, serials: string[]): string => {
    const file = join(dir, name);
    writeFileSync(file, `serial,hw_rev\n${serials.map((s) => `${s},B`).join('\n')}\n`);
    return file;
  };
  const serials = (prefix: string, n: number): string[] =>
    Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(5, '0')}`);

  const faults = async (body: unknown): Promise<void> => {
    const r = await fetch(`${awsEndpoint}/_emulator/faults?replace=true`, {
      method: 'PUT',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    });
    expect(r.status).toBe(200);
  };

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

  const status = async (e: NodeJS.ProcessEnv, batch: string): Promise<Status> =>
    json<Status>(await runCli(['status', batch, '--json'], { env: e }));

  const waitDone = async (
    e: NodeJS.ProcessEnv,
    batch: string,
    worker?: ChildProcess,
    timeoutMs = 90_000,
  ): Promise<Status> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const s = await status(e, batch);
      if (s.registrationDone) return s;
      const died = worker && (worker.exitCode !== null || worker.signalCode !== null);
      if (died || Date.now() > until) {
        const logs = workerLogs.map((f) => `--- ${f}\n${readFileSync(f, 'utf8').slice(-3000)}`).join('\n');
        const why = died ? `the worker exited (${worker.exitCode ?? worker.signalCode})` : 'timed out';
        throw new Error(`batch ${batch} not done, ${why}: ${JSON.stringify(s.counts)}\n${logs}`);
      }
      await sleep(300);
    }
  };

  const submit = async (e: NodeJS.ProcessEnv, file: string, extra: string[] = []): Promise<string> => {
    const r = await runCli(['submit', file, '--profile', 'fast', '--json', ...extra], { env: e });
    expect(r.code, r.stderr).toBe(0);
    return json<{ batchId: string }>(r).batchId;
  };

  const thingCount = async (prefix: string): Promise<number> => {
    let n = 0;
    let nextToken: string | undefined;
    do {
      const page = await iot.send(new ListThingsCommand({ maxResults: 250, nextToken }));
      n += (page.things ?? []).filter((t) => t.thingName?.startsWith(prefix)).length;
      nextToken = page.nextToken;
    } while (nextToken);
    return n;
  };

  beforeAll(async () => {
    const s = await stackUp(home);
    redisUrl = s.redis.url!;
    writeFileSync(
      config,
      stringify({
        home,
        workers: { lockMs: 2000, flushMs: 200 },
        profiles: {
          // The demo product with small chunks, so a batch is several bulk tasks.
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
            kekLabel: 'provline-test-kek',
            registration: { mode: 'bulk', chunkSize: 100 },
          },
        },
      }),
    );
    env = { ...process.env, PROVLINE_CONFIG: config, PROVLINE_HOME: home };
    const kek = await runCli(['hsm', 'kek', 'create', '--profile', 'fast'], { env });
    expect(kek.code, kek.stderr).toBe(0);
    const rt = resolveRuntime(loadConfig({ file: config, env: {} }));
    awsEndpoint = rt.aws.endpoint!;
    iot = makeClients(rt.aws, { maxAttempts: 3 }).iot;
  }, 60_000);

  afterAll(async () => {
    for (const w of workers) w.kill('SIGKILL');
    iot?.destroy();
    await removeHome(home);
  });

  it('registers a batch with submit --wait, reports every serial, reconciles clean, and a re-submit creates nothing', async () => {
    const e = isolated();
    const file = csv('a.csv', serials('PA', 150));
    const r = await runCli(['submit', file, '--profile', 'fast', '--wait', '--json'], { env: e });
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

    const before = await thingCount('sensor-PA');
    expect(before).toBe(150);
    const again = await runCli(['submit', file, '--profile', 'fast'], { env: e });
    expect(again.code).toBe(3);
    expect(again.stderr).toContain('SERIAL_ALREADY_SUBMITTED');
    const skip = await runCli(['submit', file, '--profile', 'fast', '--skip-existing'], { env: e });
    expect(skip.code, skip.stderr).toBe(0);
    expect(skip.stdout).toContain('nothing to do');
    expect(await thingCount('sensor-PA')).toBe(before);
    const batches = json<unknown[]>(await runCli(['batches', '--json'], { env: e }));
    expect(batches).toHaveLength(1);
  }, 60_000);

  it('queues nothing when a row is invalid, and with --skip-invalid reports the rejected lines', async () => {
    const e = isolated();
    const file = join(dir, 'bad.csv');
    writeFileSync(file, 'serial,hw_rev\nPB00001,B\nPB 2,B\nPB00003,B\n');
    const r = await runCli(['submit', file, '--profile', 'fast'], { env: e });
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/line 3, column serial: .*\[SERIAL_INVALID\]/);
    expect(r.stdout).toContain('nothing was queued');
    expect(json<unknown[]>(await runCli(['batches', '--json'], { env: e }))).toEqual([]);

    const ok = await runCli(['submit', file, '--profile', 'fast', '--skip-invalid', '--wait', '--json'], {
      env: e,
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
  }, 60_000);

  it('survives workers SIGKILLed at random moments: one thing, one certificate, one identity per serial, no orphans', async () => {
    const e = isolated();
    await faults({ linesPerSecond: 400 });
    try {
      const batch = await submit(e, csv('k.csv', serials('PK', 500)));
      // Deterministic "random" kill times, so a failure can be replayed.
      const delays = [350, 900, 600, 1300, 450];
      for (const delay of delays) {
        const w = startWorker(e);
        await sleep(delay);
        w.kill('SIGKILL');
        await exited(w);
      }
      const last = startWorker(e);
      const s = await waitDone(e, batch, last);
      last.kill('SIGTERM');
      expect(await exited(last)).toBe(0);
      expect(s.counts).toMatchObject({ registered: 500, failed: 0 });

      const rows = json<Array<{ certificateId: string }>>(
        await runCli(['report', batch, '--format', 'json'], { env: e }),
      );
      expect(new Set(rows.map((x) => x.certificateId)).size).toBe(500);
      expect(await thingCount('sensor-PK')).toBe(500);
      const rec = await runCli(['reconcile', batch, '--json'], { env: e });
      expect(rec.code, rec.stdout).toBe(0);
      expect(json<{ sound: number; orphans: unknown[] }>(rec)).toMatchObject({ sound: 500, orphans: [] });
    } finally {
      await faults({});
    }
  }, 120_000);

  it('finishes a batch across a Redis restart (AOF)', async () => {
    const e = isolated();
    await faults({ linesPerSecond: 300 });
    try {
      const batch = await submit(e, csv('r.csv', serials('PR', 300)));
      const w = startWorker(e);
      await sleep(700);
      const paths = stackPaths(home);
      const port = Number(new URL(redisUrl).port);
      await redisDown(paths);
      await sleep(300);
      expect(await redisUp(paths, port)).toBe(port); // same port, same AOF
      const s = await waitDone(e, batch, w);
      expect(s.counts).toMatchObject({ registered: 300, failed: 0 });
      w.kill('SIGTERM');
      expect(await exited(w)).toBe(0);
    } finally {
      await faults({});
    }
  }, 120_000);

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
  }, 120_000);

  it('keeps no private key, PIN or plaintext key material in Redis', async () => {
    const redis = new Redis(redisUrl);
    try {
      const pin = readFileSync(join(home, 'hsm/user.pin'), 'utf8').trim();
      // PKCS#8 of an EC key starts with this DER prefix; in base64 and hex it would be visible.
      const pkcs8 = Buffer.from('308187020100301306072a8648ce3d020106082a8648ce3d030107', 'hex');
      let scanned = 0;
      for await (const keys of redis.scanStream({ count: 1000 })) {
        for (const key of keys as string[]) {
          const type = await redis.type(key);
          let text = '';
          if (type === 'string') text = (await redis.get(key)) ?? '';
          else if (type === 'hash') text = JSON.stringify(await redis.hgetall(key));
          else if (type === 'list') text = (await redis.lrange(key, 0, -1)).join('\n');
          else continue;
          scanned++;
          expect(text).not.toContain('PRIVATE KEY');
          expect(text).not.toContain(pin);
          expect(text).not.toContain(pkcs8.toString('base64').slice(0, 24));
          expect(text).not.toContain(pkcs8.toString('hex'));
        }
      }
      expect(scanned).toBeGreaterThan(100);
    } finally {
      await redis.quit();
    }
  });
});
