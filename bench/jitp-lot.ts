/**
 * JITP lot benchmark (issue 13 item 10): a CSV of N devices for a `jitp` profile, from submit to
 * every device `signed` (key pair made in the HSM, device certificate signed by the factory CA
 * in the same HSM, key wrapped for delivery; no AWS call per device), against the raw HSM time
 * for the same work measured in the same run on the same token: bench/hsm/raw.c doing the
 * `ca-key` PKCS#11 calls for N devices, best of 1 thread / 2 threads / 2 processes.
 * Goal: lot time ≤ 1.25 × raw HSM time.
 *
 * An isolated local stack in a temp home (Redis, SoftHSM token, AWS IoT stand-in): the KEK and
 * the CA made in the HSM, the CA registered with the sensor-jitp template (`ca register
 * --template-body --role-arn`), `provline worker` processes started and ready (one per core),
 * then `provline submit` and the journal polled until every device is signed.
 *
 *   npm run bench:jitp-lot [-- --devices 10000 --workers 2 --cpu-prof-dir <dir>]
 *
 * `--cpu-prof-dir` writes a CPU profile of `submit` and of each worker there (node --cpu-prof).
 *
 * Prints one JSON object on stdout; progress on stderr. The stack is stopped and the temp home
 * removed at the end, also on failure.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { getProfile, loadConfig } from '../src/config/index.js';
import { packageRoot } from '../src/core/index.js';
import { runHsmBench } from '../src/hsm/index.js';
import { Journal } from '../src/jobs/index.js';
import { resolveRuntime, ensureLocalToken, stackDown, stackUp } from '../src/stack/index.js';

const GOAL = 1.25;
const ROLE = 'arn:aws:iam::123456789012:role/provline-bench-jitp';
const run = promisify(execFile);
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const n = Number(process.argv[at + 1]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} takes a positive integer`);
  return n;
}

/** Node flags for the provline processes of the lot (CPU profiles when asked for). */
const profileAt = process.argv.indexOf('--cpu-prof-dir');
const nodeFlags = profileAt > 0 ? ['--cpu-prof', '--cpu-prof-dir', process.argv[profileAt + 1]!] : [];

const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;

/** The built CLI; rejects with its stderr when it exits non-zero. */
async function provline(args: string[], env: NodeJS.ProcessEnv, flags: string[] = []): Promise<string> {
  try {
    const { stdout } = await run(
      process.execPath,
      [...flags, join(packageRoot(), 'bin/provline.js'), ...args],
      {
        env,
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    return stdout;
  } catch (e) {
    const { stderr = '', stdout = '' } = e as { stderr?: string; stdout?: string };
    throw new Error(`provline ${args.join(' ')} failed:\n${stderr}${stdout}`, { cause: e });
  }
}

/** Starts a `provline worker` and resolves once it says it is ready. */
function startWorker(env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(process.execPath, [...nodeFlags, join(packageRoot(), 'bin/provline.js'), 'worker'], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let said = '';
    child.stderr.on('data', (d: Buffer) => {
      said += d.toString();
      if (said.includes('ready')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`a worker exited with ${code}: ${said}`)));
  });
}

/** One jitp profile: CA and KEK in the stack's token, the shipped sensor-jitp template. */
function writeConfig(home: string): string {
  const file = join(home, 'provline.config.yaml');
  writeFileSync(
    file,
    stringify({
      home,
      profiles: {
        lot: {
          strategy: 'jitp',
          thingName: 'lot-{serial}',
          template: join(packageRoot(), 'config/templates/sensor-jitp.json'),
          policy: join(packageRoot(), 'config/policies/demo-device.json'),
          policyName: 'provline-demo-device',
          keyDelivery: 'wrapped',
          kekLabel: 'provline-bench-jitp-kek',
          csrSubject: { O: 'provline-bench' },
          ca: {
            label: 'provline-bench-jitp-ca',
            pathLen: 0,
            subject: { CN: 'bench factory CA', O: 'provline-bench' },
          },
        },
      },
    }),
  );
  return file;
}

async function main(): Promise<void> {
  const devices = option('devices', 10_000);
  const workerCount = option('workers', availableParallelism());
  const home = mkdtempSync(join(tmpdir(), 'provline-bench-jitp-'));
  const config = writeConfig(home);
  const workers: ChildProcess[] = [];
  let redis: Redis | undefined;
  try {
    progress(`stack up in ${home}`);
    await stackUp(home);
    await ensureLocalToken(home);
    // The stack's own token and pin file: an outer SOFTHSM2_CONF or PIN would point elsewhere.
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PROVLINE_CONFIG: config,
      PROVLINE_HOME: home,
      PROVLINE_LOG_LEVEL: 'warn',
    };
    delete env.SOFTHSM2_CONF;
    delete env.PROVLINE_HSM_PIN;
    const loaded = loadConfig({ file: config, env: {} });
    const rt = resolveRuntime(loaded);
    const profile = getProfile(loaded, 'lot');

    progress('KEK and factory CA in the HSM, CA registered with the JITP template');
    await provline(['hsm', 'kek', 'create', '--profile', 'lot'], env);
    await provline(['ca', 'create', '--profile', 'lot'], env);
    await provline(['ca', 'register', '--profile', 'lot', '--template-body', '--role-arn', ROLE], env);

    // 1. The raw HSM time for the same work on this token: the C program's ca-key calls.
    progress(`raw HSM: ${devices} identities signed by a CA, C PKCS#11 vs provline's HSM stage alone`);
    const hsm = await runHsmBench(
      rt.hsm,
      {
        work: 'ca-key',
        devices,
        keyType: profile.keyType,
        mode: 'auto',
        lanes: 1,
        rounds: 1,
        latencyMs: 0,
        processes: workerCount,
      },
      { ...env, ...(rt.hsm.softhsm2Conf ? { SOFTHSM2_CONF: rt.hsm.softhsm2Conf } : {}) },
    );
    if (!hsm.raw) throw new Error('the raw C baseline did not run');
    const rawSeconds = devices / hsm.raw.devicesPerSecond;

    // 2. The lot: CSV → submit → HSM workers → every device signed.
    const csv = join(home, 'lot.csv');
    const serials = Array.from({ length: devices }, (_, i) => `JB${String(i).padStart(7, '0')}`);
    writeFileSync(csv, `serial\n${serials.join('\n')}\n`);
    progress(`lot: ${devices} devices, ${workerCount} worker process(es)`);
    for (let i = 0; i < workerCount; i++) workers.push(await startWorker(env));
    redis = new Redis(rt.redisUrl!);
    const journal = new Journal(redis);
    const start = Date.now();
    const { batchId } = JSON.parse(
      await provline(['submit', csv, '--profile', 'lot', '--json'], env, nodeFlags),
    ) as {
      batchId: string;
    };
    const submitted = Date.now();
    let counts = await journal.counts(batchId);
    while (counts.signed + counts.failed < devices) {
      await sleep(50);
      counts = await journal.counts(batchId);
    }
    const end = Date.now();
    const seconds = (end - start) / 1000;
    const result = {
      bench: 'jitp-lot',
      devices,
      workers: workerCount,
      keyType: profile.keyType,
      signed: counts.signed,
      failed: counts.failed,
      seconds: { total: round(seconds), submit: round((submitted - start) / 1000) },
      devicesPerSecond: round(devices / seconds, 1),
      limits: {
        rawHsm: {
          work: 'ca-key',
          devicesPerSecond: hsm.raw.devicesPerSecond,
          shape: hsm.raw.shape,
          seconds: round(rawSeconds),
        },
        provlineHsmAlone: { devicesPerSecond: hsm.devicesPerSecond, processes: workerCount },
      },
      ratio: round(seconds / rawSeconds, 3),
      goal: GOAL,
      meetsGoal: seconds / rawSeconds <= GOAL,
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    if (counts.failed) throw new Error(`${counts.failed} device(s) failed: provline report ${batchId}`);
  } finally {
    await redis?.quit().catch(() => undefined);
    await Promise.all(workers.map(stopWorker));
    await stackDown(home);
    rmSync(home, { recursive: true, force: true });
  }
}

/** SIGTERM (the worker finishes its job in hand) and wait for the exit. */
async function stopWorker(w: ChildProcess): Promise<void> {
  if (w.exitCode !== null || w.signalCode !== null) return;
  const exited = once(w, 'exit');
  w.kill('SIGTERM');
  await exited;
}

main().then(
  () => undefined,
  (e: unknown) => {
    progress(`bench:jitp-lot failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = 1;
  },
);
