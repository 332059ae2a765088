/**
 * `provline hsm bench`: provline's per-device throughput, every result complete, against the
 * raw limit of the same token for the same PKCS#11 work, measured in one run by
 * bench/hsm/raw.c (compiled with gcc at run time into a cache directory). The work per device:
 *
 *   csr     key pair + CSR signed by the new key + wrap + destroy (createDeviceIdentity);
 *   ca-key  key pair + device certificate signed by the factory CA on the same session + wrap +
 *           destroy (createSignedIdentity: the JITP/JITR line);
 *   ca-csr  a device certificate for a public key the device made (signDeviceCertificate: the
 *           station's shape for a device's own CSR); the keys come from a pool made in Node
 *           before the timed loop.
 *
 * For the CA works the bench makes a CA of its own on the token (`provline-bench-ca-<pid>`, the
 * bench's key type, a token object like every factory CA), the C baseline signs with that same
 * key object, and the CA is removed when the work is done, also on failure.
 *
 * Rounds alternate raw and provline so drift and noise from other processes hit both; the
 * medians are reported. The raw limit is the best of 1 C thread, 2 C threads, and 2 C processes.
 */
import { execFile, execFileSync, fork, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { CaSettings, KeyType, HsmSettings } from '../config/index.js';
import { ProvlineError, packageRoot } from '../core/index.js';
import { createCa, createSignedIdentity, destroyCa, signDeviceCertificate } from './ca.js';
import { openHsm, type CallMode, type Hsm } from './hsm.js';
import { isPkcs11Uri, parsePkcs11Uri } from './uri.js';

export const BENCH_WORKS = ['csr', 'ca-key', 'ca-csr'] as const;
export type BenchWork = (typeof BENCH_WORKS)[number];

/**
 * Devices per round when none are given: a CA signature alone (ca-csr) is several times
 * cheaper than a key pair, so it needs more devices for a measurable interval.
 */
export const DEFAULT_BENCH_DEVICES: Record<BenchWork, number> = {
  csr: 3000,
  'ca-key': 3000,
  'ca-csr': 12_000,
};

export interface BenchOptions {
  /** The per-device work (default csr). */
  work?: BenchWork;
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
  /** provline processes sharing the work (default 1). */
  processes?: number;
  /** The label of the CA the CA works sign with (set by runHsmBench, which makes the CA). */
  caLabel?: string;
}

export interface RunResult {
  devices: number;
  seconds: number;
  devicesPerSecond: number;
}

export interface BenchResult {
  work: BenchWork;
  devices: number;
  keyType: KeyType;
  mode: string;
  lanes: number;
  processes: number;
  rounds: number;
  latencyMs: number;
  /** Median of the rounds. */
  devicesPerSecond: number;
  runs: number[];
  /** Best C shape: "1" / "2" threads in one process, or "2p" = two single-thread processes. */
  raw: { devicesPerSecond: number; shape: string; byShape: Record<string, number[]> } | null;
  ratio: number | null;
}

const execFileAsync = promisify(execFile);

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

async function rawRun(
  bin: string,
  settings: HsmSettings,
  env: NodeJS.ProcessEnv,
  devices: number,
  threads: number,
  o: Pick<BenchOptions, 'keyType' | 'work' | 'caLabel'>,
): Promise<RunResult> {
  const label = isPkcs11Uri(settings.token) ? parsePkcs11Uri(settings.token).token : settings.token;
  if (label === undefined)
    throw new ProvlineError('HSM_BENCH_FAILED', 'the raw baseline needs a token label (pkcs11:token=…)');
  // Only where the PIN lives goes into argv, never the PIN.
  const pinSource = env[settings.pinEnv] ? `env:${settings.pinEnv}` : `file:${settings.pinFile ?? ''}`;
  const childEnv = { ...env, ...(settings.softhsm2Conf ? { SOFTHSM2_CONF: settings.softhsm2Conf } : {}) };
  let out: string;
  try {
    ({ stdout: out } = await execFileAsync(
      bin,
      [
        settings.module,
        label,
        pinSource,
        String(devices),
        String(threads),
        o.keyType,
        o.work ?? 'csr',
        ...(o.caLabel ? [o.caLabel] : []),
      ],
      {
        env: childEnv,
        encoding: 'utf8',
      },
    ));
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr ?? '';
    throw new ProvlineError('HSM_BENCH_FAILED', `the raw C baseline failed: ${stderr.trim()}`, { cause: e });
  }
  const r = JSON.parse(out) as RunResult;
  return { devices: r.devices, seconds: r.seconds, devicesPerSecond: r.devicesPerSecond };
}

/** The bench CA's settings: what the CA works sign with (made by runHsmBench). */
function benchCaSettings(label: string, keyType: KeyType): CaSettings {
  return {
    label,
    keyType,
    validityDays: 30,
    subject: { CN: 'provline bench CA', O: 'provline bench' },
    deviceValidityDays: 365,
  };
}

/** How many device public keys the ca-csr work cycles through (made before the timed loop). */
const SPKI_POOL = 64;

function spkiPool(keyType: KeyType): Buffer[] {
  return Array.from({ length: SPKI_POOL }, () => {
    const { publicKey } =
      keyType === 'RSA-2048'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ec', { namedCurve: keyType });
    return publicKey.export({ format: 'der', type: 'spki' });
  });
}

/** One device's work for `o.work`; resolves to the size of what it produced. */
function deviceWork(hsm: Hsm, o: BenchOptions, kekLabel: string): (i: number) => Promise<number> {
  const req = (i: number) => ({
    serial: `BENCH${String(i).padStart(8, '0')}`,
    thingName: `bench-${i}`,
    keyType: o.keyType,
    kekLabel,
    subject: { O: 'provline bench' },
  });
  const work = o.work ?? 'csr';
  if (work === 'csr')
    return async (i) => {
      const id = await hsm.createDeviceIdentity(req(i));
      return id.csrPem.length + id.wrappedKey.length;
    };
  if (!o.caLabel) throw new ProvlineError('HSM_BENCH_FAILED', `the ${work} work needs the bench CA`);
  const ca = { settings: benchCaSettings(o.caLabel, o.keyType), now: new Date() };
  if (work === 'ca-key')
    return async (i) => {
      const id = await createSignedIdentity(hsm, req(i), ca);
      return id.certificatePem.length + id.wrappedKey.length;
    };
  const spkis = spkiPool(o.keyType);
  return async (i) => {
    const pem = await signDeviceCertificate(hsm, {
      ca: ca.settings,
      spki: spkis[i % spkis.length]!,
      subject: { O: 'provline bench', CN: `bench-${i}` },
      now: ca.now,
    });
    return pem.length;
  };
}

/** One process's part of a provline run: open, warm up, then measure on request. */
export interface BenchLoop {
  /** Runs `devices` identities; returns the measured interval in epoch milliseconds. */
  run(devices: number): Promise<{ startMs: number; endMs: number }>;
  close(): void;
}

export async function openBenchLoop(
  settings: HsmSettings,
  env: NodeJS.ProcessEnv,
  o: BenchOptions,
): Promise<BenchLoop> {
  const hsm = await openHsm(settings, {
    mode: o.mode,
    sessions: o.lanes,
    simulatedLatencyMs: o.latencyMs,
    env,
  });
  // A session KEK for the run: nothing is left on the token afterwards.
  const kekLabel = `provline-bench-kek-${process.pid}`;
  await hsm.createKek({ label: kekLabel, persistent: false });
  const one = deviceWork(hsm, o, kekLabel);
  const runLanes = async (n: number): Promise<number> => {
    let next = 0;
    let bytes = 0;
    await Promise.all(
      Array.from({ length: Math.min(o.lanes, n) }, async () => {
        while (next < n) bytes += await one(next++); // results are complete and used
      }),
    );
    return bytes;
  };
  await runLanes(Math.min(200, Math.max(o.lanes, Math.ceil(o.devices / 10)))); // warm-up (JIT, pool)
  return {
    async run(devices) {
      const startMs = performance.timeOrigin + performance.now();
      const bytes = await runLanes(devices);
      const endMs = performance.timeOrigin + performance.now();
      if (bytes === 0) throw new ProvlineError('HSM_BENCH_FAILED', 'no identities were produced');
      return { startMs, endMs };
    },
    close: () => hsm.close(),
  };
}

/**
 * provline's throughput for `devices` identities, split over `o.processes` processes (the way
 * HSM workers are deployed, one per core). The processes warm up, wait at a barrier, start
 * together, and the rate is all devices over the span from the first start to the last end.
 */
async function provlineRun(
  settings: HsmSettings,
  env: NodeJS.ProcessEnv,
  o: BenchOptions,
  devices: number,
): Promise<RunResult> {
  const processes = o.processes ?? 1;
  if (processes <= 1) {
    const loop = await openBenchLoop(settings, env, o);
    try {
      const { startMs, endMs } = await loop.run(devices);
      const seconds = (endMs - startMs) / 1000;
      return { devices, seconds, devicesPerSecond: devices / seconds };
    } finally {
      loop.close();
    }
  }
  const share = Math.ceil(devices / processes);
  const children = Array.from({ length: processes }, () =>
    fork(join(packageRoot(), 'dist', 'workers', 'hsm-bench-child.js'), [], {
      env,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  const message = (child: ChildProcess, type: string): Promise<BenchChildMessage> =>
    new Promise((resolve, reject) => {
      const onMessage = (m: BenchChildMessage): void => {
        if (m.type === 'error')
          reject(new ProvlineError('HSM_BENCH_FAILED', `a bench process failed: ${m.message ?? ''}`));
        else if (m.type === type) resolve(m);
        else return;
        child.off('message', onMessage);
      };
      child.on('message', onMessage);
      child.once('exit', (code) =>
        reject(new ProvlineError('HSM_BENCH_FAILED', `a bench process exited with ${code}`)),
      );
    });
  try {
    const ready = children.map((c) => message(c, 'ready'));
    for (const c of children) c.send({ type: 'open', settings, options: o });
    await Promise.all(ready);
    const done = children.map((c) => message(c, 'done'));
    for (const c of children) c.send({ type: 'go', devices: share });
    const spans = await Promise.all(done);
    const startMs = Math.min(...spans.map((m) => m.startMs!));
    const endMs = Math.max(...spans.map((m) => m.endMs!));
    const seconds = (endMs - startMs) / 1000;
    return { devices: share * processes, seconds, devicesPerSecond: (share * processes) / seconds };
  } finally {
    for (const c of children) c.kill();
  }
}

export interface BenchChildMessage {
  type: 'ready' | 'done' | 'error';
  startMs?: number;
  endMs?: number;
  message?: string;
}

/**
 * Measures one work. For the CA works it first makes the bench's CA on the token and removes it
 * (key pair and certificate objects) when done, whatever happened in between.
 */
export async function runHsmBench(
  settings: HsmSettings,
  o: BenchOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<BenchResult> {
  const work = o.work ?? 'csr';
  if (work === 'csr') return measure(settings, { ...o, work }, env);
  const admin = await openHsm(settings, { sessions: 1, env });
  const ca = benchCaSettings(`provline-bench-ca-${process.pid}`, o.keyType);
  try {
    await createCa(admin, { settings: ca, now: new Date(), csr: false });
    try {
      return await measure(settings, { ...o, work, caLabel: ca.label }, env);
    } finally {
      await destroyCa(admin, ca);
    }
  } finally {
    admin.close();
  }
}

export interface BenchAllResult {
  /** One result per work, each with its own raw limit and ratio. */
  works: Record<BenchWork, BenchResult>;
  ratios: Record<BenchWork, number | null>;
  /** The goal for every work: provline at ≥ 0.8 of the best raw shape. */
  goal: number;
}

/** Every work in turn; `devices` undefined takes DEFAULT_BENCH_DEVICES per work. */
export async function runHsmBenchAll(
  settings: HsmSettings,
  o: Omit<BenchOptions, 'work' | 'devices'> & { devices?: number },
  env: NodeJS.ProcessEnv = process.env,
): Promise<BenchAllResult> {
  const works = {} as Record<BenchWork, BenchResult>;
  const ratios = {} as Record<BenchWork, number | null>;
  for (const work of BENCH_WORKS) {
    works[work] = await runHsmBench(
      settings,
      { ...o, work, devices: o.devices ?? DEFAULT_BENCH_DEVICES[work] },
      env,
    );
    ratios[work] = works[work].ratio;
  }
  return { works, ratios, goal: 0.8 };
}

async function measure(
  settings: HsmSettings,
  o: BenchOptions & { work: BenchWork },
  env: NodeJS.ProcessEnv,
): Promise<BenchResult> {
  const withRaw = !o.skipRaw && o.latencyMs === 0;
  const bin = withRaw ? buildRawBench() : undefined;
  const ours: number[] = [];
  // The raw limit is the best of: 1 C thread, 2 C threads in one process, and 2 C processes
  // side by side (processes share no SoftHSM locks, as provline's own processes do not).
  const raw: Record<string, number[]> = { '1': [], '2': [], '2p': [] };
  for (let r = 0; r < o.rounds; r++) {
    if (bin) {
      for (const t of [1, 2])
        raw[String(t)]!.push(round1((await rawRun(bin, settings, env, o.devices, t, o)).devicesPerSecond));
      const half = Math.ceil(o.devices / 2);
      const pair = await Promise.all([0, 1].map(() => rawRun(bin, settings, env, half, 1, o)));
      raw['2p']!.push(round1((2 * half) / Math.max(...pair.map((p) => p.seconds))));
    }
    ours.push(round1((await provlineRun(settings, env, o, o.devices)).devicesPerSecond));
  }
  const devicesPerSecond = round1(median(ours));
  let rawResult: BenchResult['raw'] = null;
  if (bin) {
    const best = Object.keys(raw)
      .map((shape) => ({ shape, dps: median(raw[shape]!) }))
      .sort((a, b) => b.dps - a.dps)[0]!;
    rawResult = { devicesPerSecond: round1(best.dps), shape: best.shape, byShape: raw };
  }
  return {
    work: o.work,
    devices: o.devices,
    keyType: o.keyType,
    mode: o.mode,
    lanes: o.lanes,
    processes: o.processes ?? 1,
    rounds: o.rounds,
    latencyMs: o.latencyMs,
    devicesPerSecond,
    runs: ours,
    raw: rawResult,
    ratio: rawResult ? Math.round((devicesPerSecond / rawResult.devicesPerSecond) * 1000) / 1000 : null,
  };
}
