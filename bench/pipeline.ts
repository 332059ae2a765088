/**
 * Pipeline benchmark: CSV to every certificate stored, against the unpaced local stand-in,
 * compared with the two limits measured in the same run on the same machine:
 *   - raw HSM: the C PKCS#11 program (bench/hsm/raw.c) making the same identities on the
 *     same token, best of 1 thread / 2 threads / 2 processes;
 *   - raw registration: one StartThingRegistrationTask of the same number of lines (fresh
 *     CSRs) on the same stand-in, from start to reports read.
 * Goal (issue 5): total ≤ 1.25 × (raw HSM time + raw registration time).
 *
 *   npm run bench:pipeline [-- --devices 10000 --workers 2 --chunk 1000]
 *
 * Prints one JSON object on stdout; progress on stderr.
 */
import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism, tmpdir } from 'node:os';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { csr } from './csr.js';
import { stringify } from 'yaml';
import {
  putInput,
  readReports,
  renderInputFile,
  startTask,
  waitTask,
  makeClients,
  requireBucket,
  requireRoleArn,
  ensureResources,
} from '../src/cloud/index.js';
import { getProfile, loadConfig } from '../src/config/index.js';
import { packageRoot } from '../src/core/index.js';
import { runHsmBench } from '../src/hsm/index.js';
import { BatchStore, Journal } from '../src/jobs/index.js';
import { resolveRuntime, ensureLocalToken, stackDown, stackUp } from '../src/stack/index.js';

const GOAL = 1.25;
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const log = (s: string): boolean => process.stderr.write(`${s}\n`);
const round = (n: number, d = 2): number => Math.round(n * 10 ** d) / 10 ** d;

function cli(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(packageRoot(), 'bin/provline.js'), ...args], { env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

async function main(): Promise<void> {
  const devices = arg('devices', 10_000);
  const workerCount = arg('workers', availableParallelism());
  const chunk = arg('chunk', 1000);
  const home = mkdtempSync(join(tmpdir(), 'provline-bench-pipeline-'));
  const config = join(home, 'provline.config.yaml');
  const workers: ChildProcess[] = [];
  try {
    log(`stack up in ${home}`);
    await stackUp(home);
    await ensureLocalToken(home);
    writeFileSync(
      config,
      stringify({
        home,
        workers: { hsmChunk: 200, hsmConcurrency: 4 },
        profiles: {
          bench: {
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
            template: join(packageRoot(), 'config/templates/demo-bulk.json'),
            policy: join(packageRoot(), 'config/policies/demo-device.json'),
            policyName: 'provline-demo-device',
            kekLabel: 'provline-bench-kek',
            registration: { mode: 'bulk', chunkSize: chunk },
          },
        },
      }),
    );
    const env = { ...process.env, PROVLINE_CONFIG: config, PROVLINE_HOME: home, PROVLINE_LOG_LEVEL: 'warn' };
    const loaded = loadConfig({ file: config, env: {} });
    const rt = resolveRuntime(loaded);
    const profile = getProfile(loaded, 'bench');
    const kek = await cli(['hsm', 'kek', 'create', '--profile', 'bench'], env);
    if (kek.code !== 0) throw new Error(kek.stderr);

    // 1. The HSM's raw limit on this token: the C program, and provline's own HSM stage alone.
    log(`raw HSM: ${devices} identities, C PKCS#11 vs provline (${workerCount} processes)`);
    const hsm = await runHsmBench(
      rt.hsm,
      { devices, keyType: 'P-256', mode: 'auto', lanes: 8, rounds: 1, latencyMs: 0, processes: workerCount },
      { ...process.env, ...(rt.hsm.softhsm2Conf ? { SOFTHSM2_CONF: rt.hsm.softhsm2Conf } : {}) },
    );
    const rawHsmDps = hsm.raw?.devicesPerSecond ?? hsm.devicesPerSecond;
    const rawHsmSeconds = devices / rawHsmDps;

    // 2. The stand-in's raw registration time: one task with the same number of lines.
    log(`raw registration: one bulk task of ${devices} lines`);
    const cloud = makeClients(rt.aws, { maxAttempts: 3 });
    const templateBody = (await import('node:fs')).readFileSync(profile.templatePath, 'utf8');
    await ensureResources(cloud, {
      policyName: profile.policyName,
      policyDocument: (await import('node:fs')).readFileSync(profile.policyPath!, 'utf8'),
      thingType: profile.thingType!,
      thingGroups: profile.thingGroups,
    });
    const serials = Array.from({ length: devices }, (_, i) => `RAW${String(i).padStart(7, '0')}`);
    const lines = serials.map((s) => ({
      ThingName: `raw-${s}`,
      SerialNumber: s,
      HardwareRevision: 'B',
      CSR: csr(`raw-${s}`),
    }));
    const bucket = requireBucket(rt.aws);
    const t0 = performance.now();
    await putInput(cloud, {
      bucket,
      key: 'bench/raw.ndjson',
      body: renderInputFile(lines),
      manifest: { batchId: 'raw', chunk: 0, serials },
    });
    const started = await startTask(cloud, {
      bucket,
      key: 'bench/raw.ndjson',
      templateBody,
      roleArn: requireRoleArn(rt.aws),
    });
    if (started.status !== 'started') throw new Error(`raw task not started: ${started.message}`);
    const outcome = await waitTask(cloud, started.taskId, { minDelayMs: 50, maxDelayMs: 500 });
    const reports = await readReports(cloud, started.taskId);
    const rawRegSeconds = (performance.now() - t0) / 1000;
    if (reports.results.size !== devices)
      throw new Error(`raw task: ${outcome.successCount} of ${devices} registered`);
    cloud.destroy();

    // 3. The pipeline: CSV → submit → HSM workers → bulk registrar → every certificate stored.
    const csv = join(home, 'batch.csv');
    writeFileSync(
      csv,
      `serial,hw_rev\n${Array.from({ length: devices }, (_, i) => `PB${String(i).padStart(7, '0')},B`).join('\n')}\n`,
    );
    log(`pipeline: ${devices} devices, ${workerCount} worker process(es), chunks of ${chunk}`);
    for (let i = 0; i < workerCount; i++) {
      const w = spawn(process.execPath, [join(packageRoot(), 'bin/provline.js'), 'worker'], {
        env,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      workers.push(w);
      await new Promise<void>((resolve, reject) => {
        let err = '';
        w.stderr.on('data', (d: Buffer) => {
          err += d.toString();
          if (err.includes('ready')) resolve();
        });
        w.once('exit', (code) => reject(new Error(`worker exited ${code}: ${err}`)));
      });
    }
    const redis = new Redis(resolveRuntime(loadConfig({ file: config, env: {} })).redisUrl!);
    const journal = new Journal(redis);
    const batches = new BatchStore(redis, journal.keys);
    const start = Date.now();
    const sub = await cli(['submit', csv, '--profile', 'bench', '--json'], env);
    if (sub.code !== 0) throw new Error(sub.stderr);
    const submitted = Date.now();
    const { batchId } = JSON.parse(sub.stdout) as { batchId: string };
    let hsmDone: number | undefined;
    for (;;) {
      const counts = await journal.counts(batchId);
      if (hsmDone === undefined && counts.accepted === 0) hsmDone = Date.now();
      const meta = await batches.meta(batchId);
      if (meta.registeredAt !== undefined) break;
      await sleep(50);
    }
    const meta = await batches.meta(batchId);
    const counts = await journal.counts(batchId);
    await redis.quit();
    const end = meta.registeredAt!;
    const total = (end - start) / 1000;
    const limit = rawHsmSeconds + rawRegSeconds;
    const result = {
      bench: 'pipeline',
      devices,
      workers: workerCount,
      chunkSize: chunk,
      registered: counts.registered,
      failed: counts.failed,
      seconds: {
        total: round(total),
        submit: round((submitted - start) / 1000),
        hsmStage: round(((hsmDone ?? end) - submitted) / 1000),
        registrationTail: round((end - (hsmDone ?? end)) / 1000),
      },
      devicesPerSecond: round(devices / total, 1),
      limits: {
        rawHsm: {
          devicesPerSecond: rawHsmDps,
          shape: hsm.raw?.shape ?? 'provline',
          seconds: round(rawHsmSeconds),
        },
        provlineHsmAlone: { devicesPerSecond: hsm.devicesPerSecond, processes: workerCount },
        rawRegistration: { linesPerSecond: round(devices / rawRegSeconds, 1), seconds: round(rawRegSeconds) },
        sumSeconds: round(limit),
      },
      ratio: round(total / limit, 3),
      goal: GOAL,
      meetsGoal: total / limit <= GOAL,
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    for (const w of workers) w.kill('SIGTERM');
    await Promise.all(
      workers.map((w) => new Promise((r) => (w.exitCode !== null ? r(null) : w.once('exit', r)))),
    );
    await stackDown(home);
    rmSync(home, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:pipeline failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
