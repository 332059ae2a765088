/**
 * `provline hsm bench`: provline's per-device throughput (keygen + CSR + wrap + destroy, every
 * result complete) against the raw limit of the same token for the same PKCS#11 work, measured
 * in one run by bench/hsm/raw.c (compiled with gcc at run time into a cache directory).
 *
 * Rounds alternate raw and provline so drift and noise from other processes hit both; the
 * medians are reported. The raw limit is the better of 1 and 2 C threads.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { KeyType } from '../config/schema.js';
import { ProvlineError } from '../core/errors.js';
import { packageRoot } from '../core/paths.js';
import type { HsmSettings } from '../stack/runtime.js';
import { openHsm, type CallMode } from './hsm.js';
import { isPkcs11Uri, parsePkcs11Uri } from './uri.js';

export interface BenchOptions {
  devices: number;
  keyType: KeyType;
  mode: CallMode;
  /** Identities in flight (and sessions in the pool). */
  lanes: number;
  rounds: number;
  /** Simulated per-call latency (ms); the raw C run is skipped when set. */
  latencyMs: number;
  /** Skip the C baseline (no gcc). */
  skipRaw?: boolean;
}

export interface RunResult {
  devices: number;
  seconds: number;
  devicesPerSecond: number;
}

export interface BenchResult {
  devices: number;
  keyType: KeyType;
  mode: string;
  lanes: number;
  rounds: number;
  latencyMs: number;
  /** Median of the rounds. */
  devicesPerSecond: number;
  runs: number[];
  raw: { devicesPerSecond: number; threads: number; byThreads: Record<string, number[]> } | null;
  ratio: number | null;
}

const round1 = (n: number): number => Math.round(n * 10) / 10;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Compiles raw.c once per source version; returns the binary's path. */
export function buildRawBench(): string {
  const source = join(packageRoot(), 'bench', 'hsm', 'raw.c');
  const digest = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 16);
  const dir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'provline', 'hsm-bench');
  const bin = join(dir, `raw-${digest}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  try {
    execFileSync('gcc', ['-O2', source, '-o', tmp, '-ldl', '-lpthread', '-I/usr/include/p11-kit-1'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  } catch (e) {
    throw new ProvlineError('HSM_BENCH_BUILD_FAILED', 'cannot compile the C baseline bench/hsm/raw.c', {
      cause: e,
      hint: 'Install gcc and libp11-kit-dev (scripts/bootstrap.sh does), or pass --skip-raw.',
    });
  }
  renameSync(tmp, bin);
  return bin;
}

function rawRun(
  bin: string,
  settings: HsmSettings,
  env: NodeJS.ProcessEnv,
  devices: number,
  threads: number,
  keyType: KeyType,
): RunResult {
  const label = isPkcs11Uri(settings.token) ? parsePkcs11Uri(settings.token).token : settings.token;
  if (label === undefined)
    throw new ProvlineError('HSM_BENCH_FAILED', 'the raw baseline needs a token label (pkcs11:token=…)');
  // Only where the PIN lives goes into argv, never the PIN.
  const pinSource = env[settings.pinEnv] ? `env:${settings.pinEnv}` : `file:${settings.pinFile ?? ''}`;
  const childEnv = { ...env, ...(settings.softhsm2Conf ? { SOFTHSM2_CONF: settings.softhsm2Conf } : {}) };
  let out: string;
  try {
    out = execFileSync(bin, [settings.module, label, pinSource, String(devices), String(threads), keyType], {
      env: childEnv,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr ?? '';
    throw new ProvlineError('HSM_BENCH_FAILED', `the raw C baseline failed: ${stderr.trim()}`, { cause: e });
  }
  const r = JSON.parse(out) as RunResult;
  return { devices: r.devices, seconds: r.seconds, devicesPerSecond: r.devicesPerSecond };
}

async function provlineRun(
  settings: HsmSettings,
  env: NodeJS.ProcessEnv,
  o: BenchOptions,
  devices: number,
): Promise<RunResult> {
  const hsm = await openHsm(settings, {
    mode: o.mode,
    sessions: o.lanes,
    simulatedLatencyMs: o.latencyMs,
    env,
  });
  try {
    // A session KEK for the run: nothing is left on the token afterwards.
    const kekLabel = `provline-bench-kek-${process.pid}`;
    await hsm.createKek({ label: kekLabel, persistent: false });
    const one = (i: number) =>
      hsm.createDeviceIdentity({
        serial: `BENCH${String(i).padStart(8, '0')}`,
        thingName: `bench-${i}`,
        keyType: o.keyType,
        kekLabel,
        subject: { O: 'provline bench' },
      });
    const runLanes = async (n: number): Promise<number> => {
      let next = 0;
      let bytes = 0;
      await Promise.all(
        Array.from({ length: Math.min(o.lanes, n) }, async () => {
          while (next < n) {
            const id = await one(next++);
            bytes += id.csrPem.length + id.wrappedKey.length; // results are complete and used
          }
        }),
      );
      return bytes;
    };
    await runLanes(Math.min(200, Math.max(o.lanes, Math.ceil(devices / 10)))); // warm-up (JIT, pool)
    const t0 = process.hrtime.bigint();
    const bytes = await runLanes(devices);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (bytes === 0) throw new ProvlineError('HSM_BENCH_FAILED', 'no identities were produced');
    return { devices, seconds, devicesPerSecond: devices / seconds };
  } finally {
    hsm.close();
  }
}

export async function runHsmBench(
  settings: HsmSettings,
  o: BenchOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<BenchResult> {
  const withRaw = !o.skipRaw && o.latencyMs === 0;
  const bin = withRaw ? buildRawBench() : undefined;
  const ours: number[] = [];
  const raw: Record<string, number[]> = { '1': [], '2': [] };
  for (let r = 0; r < o.rounds; r++) {
    if (bin)
      for (const t of [1, 2])
        raw[String(t)]!.push(round1(rawRun(bin, settings, env, o.devices, t, o.keyType).devicesPerSecond));
    ours.push(round1((await provlineRun(settings, env, o, o.devices)).devicesPerSecond));
  }
  const devicesPerSecond = round1(median(ours));
  let rawResult: BenchResult['raw'] = null;
  if (bin) {
    const best = ['1', '2']
      .map((t) => ({ threads: Number(t), dps: median(raw[t]!) }))
      .sort((a, b) => b.dps - a.dps)[0]!;
    rawResult = { devicesPerSecond: round1(best.dps), threads: best.threads, byThreads: raw };
  }
  return {
    devices: o.devices,
    keyType: o.keyType,
    mode: o.mode,
    lanes: o.lanes,
    rounds: o.rounds,
    latencyMs: o.latencyMs,
    devicesPerSecond,
    runs: ours,
    raw: rawResult,
    ratio: rawResult ? Math.round((devicesPerSecond / rawResult.devicesPerSecond) * 1000) / 1000 : null,
  };
}
