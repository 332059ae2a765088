/**
 * The registrar: drives one batch from `keyed` to `registered`, chunk by chunk.
 *
 * Bulk mode (the default), per chunk:
 *   1. claim up to `chunkSize` keyed devices into a chunk (one Lua step: devices → registering);
 *   2. write the NDJSON input file and its manifest to S3 (line N = chunk.serials[N-1]);
 *   3. take the account's bulk slot, record the intent to start (fenced), start the task and
 *      record its id; "another task is running" means wait, never fail;
 *   4. poll the task with backoff, read RESULTS and ERRORS, and map each line back to its
 *      serial by line number: a certificate → registered; a throttled or missing line → back to
 *      keyed for a later task; any other error → failed with AWS's message.
 * Every step records where it got to in the chunk hash, so a registrar killed at any point
 * resumes the chunk where it was: a recorded intent without a task id is resolved by looking
 * the task up by its input key, never by starting a second task for the same CSRs.
 *
 * Single mode: per device RegisterThing with the profile's template, paced under the
 * profile's TPS. The intent is recorded on the device before the call; after a crash the
 * certificate a lost call made is found again by the device's public key.
 */
import { createPublicKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import 'reflect-metadata';
import { Pkcs10CertificateRequest } from '@peculiar/x509';
import pLimit from 'p-limit';
import type { BatchPlan } from '../batch/plan.js';
import {
  findTaskByInputKey,
  putInput,
  readReports,
  renderInputFile,
  startTask,
  waitTask,
} from '../cloud/bulk.js';
import type { BulkReports, TaskOutcome } from '../cloud/bulk.js';
import { requireBucket, requireRoleArn, type CloudClients } from '../cloud/clients.js';
import { describeDataEndpoint, ensureResources } from '../cloud/resources.js';
import { findCertificateForKey, registerThing, type Pacer } from '../cloud/single.js';
import { lintTemplate } from '../cloud/template/index.js';
import { storedErrorCode } from '../core/codes.js';
import { isProvlineError, messageOf, ProvlineError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { BatchStore } from './batches.js';
import type { Chunk, DeviceRecord, Journal } from './journal.js';
import {
  failMove,
  failOwned,
  refusedMoves,
  registeredMove,
  reportMoves,
  retryOrFail,
} from './registrar/moves.js';
import type { BulkSlot, SlotLease } from './slot.js';

export interface RegistrarSettings {
  flushMs: number;
  registrationRounds: number;
  rootCaFile: string;
}

export interface RegistrarDeps {
  journal: Journal;
  batches: BatchStore;
  cloud: CloudClients;
  slot: BulkSlot;
  pacer: Pacer;
  /** Who holds the bulk slot: host/pid, for operators reading Redis. */
  owner: string;
  settings: RegistrarSettings;
  log?: Logger;
  /** Called when the HSM stage of a batch seems stalled (re-enqueues its jobs). */
  kickHsm?: (batchId: string) => Promise<void>;
  now?: () => number;
}

/** How far back to look for a task or certificate a crashed registrar may have made. */
const LOOKBACK_MS = 10 * 60_000;
const IDLE_POLL_MS = 100;
const HSM_STALL_MS = 30_000;

export type DriveResult = 'finished' | 'aborted';

/** Drives a batch's registration until no device is left before `registered`. */
export async function driveBatch(
  deps: RegistrarDeps,
  batchId: string,
  signal?: AbortSignal,
): Promise<DriveResult> {
  const now = deps.now ?? Date.now;
  const plan = await deps.batches.plan(batchId);
  const meta = await deps.batches.meta(batchId);
  if (meta.abortedCode) return 'aborted';
  if (meta.registeredAt !== undefined || plan.profile.keyDelivery === 'device') return 'finished';
  if (!(await prepare(deps, plan))) return 'aborted';

  let keyedSince: number | undefined;
  let lastAccepted = -1;
  let acceptedSince = now();
  const { chunkSize, mode } = plan.profile.registration;
  // Chunks whose task has ended and whose reports are being applied while the next task runs.
  const applying = new Map<number, Promise<void>>();
  const defer = (n: number, p: Promise<void>): void => {
    applying.set(
      n,
      p
        .catch((e: unknown) =>
          deps.log?.warn({ batchId, chunk: n, err: messageOf(e) }, 'applying reports failed; retrying'),
        )
        .finally(() => applying.delete(n)),
    );
  };
  try {
    for (;;) {
      signal?.throwIfAborted();
      // Open chunks first: one left by a crashed registrar, or the next one made ready below.
      const open = (await deps.journal.openChunks(batchId)).filter((c) => !applying.has(c.n));
      if (open.length) {
        await runWithNextReady(deps, plan, open[0]!, signal, defer);
        continue;
      }
      if (applying.size) {
        await Promise.all(applying.values());
        continue;
      }
      const counts = await deps.journal.counts(batchId);
      if (counts.accepted + counts.keyed + counts.registering === 0) {
        await deps.batches.finishRegistration(batchId, now());
        deps.log?.info({ batchId, counts }, 'registration stage finished');
        return 'finished';
      }
      if (counts.accepted !== lastAccepted) {
        lastAccepted = counts.accepted;
        acceptedSince = now();
      } else if (counts.accepted > 0 && now() - acceptedSince > HSM_STALL_MS) {
        acceptedSince = now();
        await deps.kickHsm?.(batchId);
      }
      if (counts.registering > 0 && counts.keyed === 0 && counts.accepted === 0) {
        // Devices in registering with no open chunk: a crash between a chunk's last move and
        // its "done" mark. Their chunk is done, so they go back to keyed.
        await requeueStray(deps, batchId);
        continue;
      }
      keyedSince = counts.keyed > 0 ? (keyedSince ?? now()) : undefined;
      const ready =
        counts.keyed >= chunkSize ||
        (counts.keyed > 0 &&
          (counts.accepted === 0 || now() - (keyedSince ?? now()) >= deps.settings.flushMs));
      if (ready) {
        await deps.journal.claimChunk(batchId, chunkSize, mode);
        keyedSince = undefined;
      } else {
        await sleep(IDLE_POLL_MS, undefined, { signal });
      }
    }
  } finally {
    await Promise.all(applying.values());
  }
}

/**
 * Runs a chunk; in bulk mode, while its task runs, claims the next chunk and writes its input
 * file as soon as enough devices are keyed, so the next task starts the moment this one ends
 * (AWS runs one task at a time: the gap between tasks is the only overhead left).
 */
async function runWithNextReady(
  deps: RegistrarDeps,
  plan: BatchPlan,
  chunk: Chunk,
  signal: AbortSignal | undefined,
  defer: (n: number, apply: Promise<void>) => void,
): Promise<void> {
  let settled = false;
  const running = runChunk(deps, plan, chunk, signal, defer).finally(() => (settled = true));
  // Awaited below, but the loop may be waiting on Redis when the chunk fails (say, aborted
  // at once because this run lost its job): a rejection with no handler yet crashes Node.
  running.catch(() => undefined);
  if (chunk.mode === 'bulk') {
    const { chunkSize } = plan.profile.registration;
    try {
      while (!settled) {
        const counts = await deps.journal.counts(plan.batchId);
        if (counts.keyed >= chunkSize || (counts.keyed > 0 && counts.accepted === 0)) {
          const next = await deps.journal.claimChunk(plan.batchId, chunkSize, 'bulk');
          if (next) await writeChunkInput(deps, plan, next);
          break;
        }
        await Promise.race([running.catch(() => undefined), sleep(IDLE_POLL_MS, undefined, { signal })]);
      }
    } catch (e) {
      await running.catch(() => undefined);
      throw e;
    }
  }
  await running;
}

/**
 * Makes sure the account has what the template refers to, and records the endpoint and root
 * CA for bundles. An invalid template or a conflicting policy stops the batch: every pending
 * device is failed with the reason.
 */
async function prepare(deps: RegistrarDeps, plan: BatchPlan): Promise<boolean> {
  const meta = await deps.batches.meta(plan.batchId);
  if (meta.endpoint && meta.rootCaPem) return true;
  const flavor = plan.profile.registration.mode === 'bulk' ? 'bulk' : 'register-thing';
  const problems = lintTemplate(plan.profile.templateBody, flavor);
  try {
    if (problems.length)
      throw new ProvlineError(
        'TEMPLATE_INVALID',
        `the provisioning template is invalid: ${problems.map((p) => p.message).join('; ')}`,
        { kind: 'invalid-input' },
      );
    const rootCaPem = readRootCa(deps.settings.rootCaFile);
    await ensureResources(deps.cloud, {
      policyName: plan.profile.policyName,
      ...(plan.profile.policyDocument === undefined ? {} : { policyDocument: plan.profile.policyDocument }),
      ...(plan.profile.thingType === undefined ? {} : { thingType: plan.profile.thingType }),
      thingGroups: plan.profile.thingGroups,
    });
    const endpoint = await describeDataEndpoint(deps.cloud);
    await deps.batches.set(plan.batchId, { endpoint, rootCaPem });
    return true;
  } catch (e) {
    if (!isProvlineError(e) || e.retryable) throw e;
    await abortBatch(deps, plan.batchId, { code: e.code, message: e.message });
    return false;
  }
}

function readRootCa(file: string): string {
  try {
    const pem = readFileSync(file, 'utf8');
    new X509Certificate(pem);
    return pem;
  } catch (e) {
    throw new ProvlineError(
      'ROOT_CA_UNREADABLE',
      `cannot read the root CA certificate ${file}: ${messageOf(e)}`,
      {
        kind: 'invalid-input',
        cause: e,
        hint: 'Set aws.rootCaFile to the PEM file of the CA devices trust for the endpoint (Amazon Root CA 1).',
      },
    );
  }
}

/** Fails every device of the batch that has not been registered, with one reason. */
export async function abortBatch(
  deps: Pick<RegistrarDeps, 'journal' | 'batches' | 'log'>,
  batchId: string,
  error: { code: string; message: string },
): Promise<void> {
  deps.log?.error({ batchId, code: error.code }, `batch cannot be registered: ${error.message}`);
  await deps.batches.abort(batchId, error);
  for (const state of ['accepted', 'keyed', 'registering'] as const) {
    const serials = await deps.journal.inState(batchId, state);
    for (let i = 0; i < serials.length; i += 500)
      await deps.journal.transitionMany(
        serials.slice(i, i + 500).map((serial) => failMove(batchId, serial, error.code, error.message)),
      );
  }
}

async function requeueStray(deps: RegistrarDeps, batchId: string): Promise<void> {
  const serials = await deps.journal.inState(batchId, 'registering');
  await deps.journal.transitionMany(
    serials.map((serial) => ({ batchId, serial, to: 'keyed', from: ['registering'] })),
  );
}

/** Carries one chunk from wherever it stands to done. */
export async function runChunk(
  deps: RegistrarDeps,
  plan: BatchPlan,
  chunk: Chunk,
  signal?: AbortSignal,
  /** Given: the reports are applied in the background (the next task need not wait). */
  defer?: (n: number, apply: Promise<void>) => void,
): Promise<void> {
  if (chunk.mode === 'single') return runSingleChunk(deps, plan, chunk, signal);
  const now = deps.now ?? Date.now;
  const bucket = requireBucket(deps.cloud.aws);
  const chunkKey = deps.journal.keys.chunk(plan.batchId, chunk.n);
  const c = chunk.state === 'claimed' ? await writeChunkInput(deps, plan, chunk) : chunk;
  const inputKey = c.fields.inputKey!;
  let taskId = c.fields.taskId;
  let lease: SlotLease | undefined;
  try {
    if (!taskId && c.state === 'starting') {
      const since = new Date(Number(c.fields.intentAt ?? now()) - LOOKBACK_MS);
      taskId = await findTaskByInputKey(deps.cloud, { bucket, key: inputKey, since, signal });
      if (taskId) await deps.journal.setChunk(plan.batchId, c.n, { state: 'started', taskId });
    }
    for (let wait = 0; !taskId; wait++) {
      lease = await deps.slot.acquire(deps.owner, signal);
      const fresh = await deps.journal.chunk(plan.batchId, c.n);
      if (fresh?.fields.taskId) {
        taskId = fresh.fields.taskId;
        break;
      }
      if (
        !(await lease.write(chunkKey, {
          state: 'starting',
          intentAt: String(now()),
          fence: String(lease.fence),
        }))
      ) {
        await lease.release();
        lease = undefined;
        continue;
      }
      let started;
      try {
        started = await startTask(deps.cloud, {
          bucket,
          key: inputKey,
          templateBody: plan.profile.templateBody,
          roleArn: requireRoleArn(deps.cloud.aws),
          ...(signal ? { signal } : {}),
        });
      } catch (e) {
        // An aborted call (shutdown, or this run lost its job) refused nothing: the recorded
        // intent lets the next run find the task if AWS started it.
        if (signal?.aborted || !isProvlineError(e) || e.retryable) throw e;
        // The task itself is refused (template, role, bucket): every line of it would fail.
        await applyTaskRefused(deps, plan, c, e);
        return;
      }
      if (started.status === 'started') {
        taskId = started.taskId;
        await deps.journal.setChunk(plan.batchId, c.n, { state: 'started', taskId });
        deps.log?.info(
          { batchId: plan.batchId, chunk: c.n, taskId, devices: c.serials.length },
          'bulk task started',
        );
        break;
      }
      // Another task holds the account's one slot (perhaps not even provline's): wait.
      await lease.release();
      lease = undefined;
      deps.log?.info(
        { batchId: plan.batchId, chunk: c.n, reason: started.message },
        'waiting for the bulk slot',
      );
      await sleep(Math.min(5000, 250 * 2 ** Math.min(wait, 5)), undefined, { signal });
    }
    const t0 = Date.now();
    const outcome = await waitTask(deps.cloud, taskId, {
      minDelayMs: 50,
      maxDelayMs: 250,
      ...(signal ? { signal } : {}),
    });
    await lease?.release();
    lease = undefined;
    const t1 = Date.now();
    const reports = await readReports(deps.cloud, taskId, signal ? { signal } : {});
    deps.log?.debug({ chunk: c.n, waitMs: t1 - t0, reportsMs: Date.now() - t1 }, 'chunk timings');
    const apply = applyReports(deps, plan, c, outcome, reports);
    if (defer) defer(c.n, apply);
    else await apply;
  } finally {
    await lease?.release();
  }
}

/** Writes a claimed chunk's input file and manifest to S3; the chunk becomes `written`. */
async function writeChunkInput(deps: RegistrarDeps, plan: BatchPlan, c: Chunk): Promise<Chunk> {
  const key = `provline/${plan.batchId}/chunk-${c.n}.ndjson`;
  const records = await deps.journal.getMany(c.serials);
  const lines = c.serials.map((serial, i) => bulkParameters(plan, serial, records[i]));
  await putInput(deps.cloud, {
    bucket: requireBucket(deps.cloud.aws),
    key,
    body: renderInputFile(lines),
    manifest: { batchId: plan.batchId, chunk: c.n, serials: c.serials },
  });
  await deps.journal.setChunk(plan.batchId, c.n, { state: 'written', inputKey: key });
  return { ...c, state: 'written', fields: { ...c.fields, inputKey: key } };
}

/** Template parameters for one device: the plan's, with {thingName} and {csr} filled in. */
export function deviceParameters(plan: BatchPlan, serial: string, csrPem: string): Record<string, string> {
  const device = planDevice(plan, serial);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(device.parameters))
    out[name] = value.replaceAll('{thingName}', device.thingName).replaceAll('{csr}', csrPem);
  return out;
}

function bulkParameters(
  plan: BatchPlan,
  serial: string,
  rec: DeviceRecord | undefined,
): Record<string, string> {
  const csr = rec?.fields.csrPem;
  if (!csr)
    throw new ProvlineError('DEVICE_NOT_KEYED', `device ${serial} has no CSR stored`, { retryable: false });
  return deviceParameters(plan, serial, csr);
}

const deviceIndex = new WeakMap<BatchPlan, Map<string, BatchPlan['devices'][number]>>();

function planDevice(plan: BatchPlan, serial: string): BatchPlan['devices'][number] {
  let idx = deviceIndex.get(plan);
  if (!idx) {
    idx = new Map(plan.devices.map((d) => [d.serial, d]));
    deviceIndex.set(plan, idx);
  }
  const d = idx.get(serial);
  if (!d) throw new ProvlineError('DEVICE_NOT_IN_PLAN', `serial ${serial} is not in batch ${plan.batchId}`);
  return d;
}

async function applyReports(
  deps: RegistrarDeps,
  plan: BatchPlan,
  c: Chunk,
  outcome: TaskOutcome,
  reports: BulkReports,
): Promise<void> {
  const { moves, registered, retried, failed } = reportMoves({
    chunk: { ...c, ...(c.fields.taskId ? { taskId: c.fields.taskId } : {}) },
    records: await deps.journal.getMany(c.serials),
    outcome,
    reports,
    maxRounds: deps.settings.registrationRounds,
  });
  for (let i = 0; i < moves.length; i += 500) await deps.journal.transitionMany(moves.slice(i, i + 500));
  await deps.journal.setChunk(plan.batchId, c.n, {
    state: 'done',
    status: outcome.status,
    registered: String(registered),
    retried: String(retried),
    failed: String(failed),
  });
  deps.log?.info(
    {
      batchId: plan.batchId,
      chunk: c.n,
      taskId: c.fields.taskId,
      status: outcome.status,
      registered,
      retried,
      failed,
    },
    'bulk task applied',
  );
}

async function applyTaskRefused(
  deps: RegistrarDeps,
  plan: BatchPlan,
  c: Chunk,
  e: ProvlineError,
): Promise<void> {
  const moves = refusedMoves(c, e);
  await deps.journal.transitionMany(moves);
  await deps.journal.setChunk(plan.batchId, c.n, {
    state: 'done',
    status: 'Refused',
    failed: String(moves.length),
  });
}

// ---------------------------------------------------------------------------------------------
// Single mode

async function runSingleChunk(
  deps: RegistrarDeps,
  plan: BatchPlan,
  c: Chunk,
  signal?: AbortSignal,
): Promise<void> {
  const limit = pLimit(Math.max(1, Math.min(16, Math.ceil(plan.profile.registration.tps))));
  const records = await deps.journal.getMany(c.serials);
  await Promise.all(
    records.map((rec) =>
      limit(async () => {
        if (!rec || rec.state !== 'registering' || rec.fields.regChunk !== String(c.n)) return;
        await registerOne(deps, plan, rec, String(c.n), signal);
      }),
    ),
  );
  await deps.journal.setChunk(plan.batchId, c.n, { state: 'done', status: 'Completed' });
}

/**
 * Registers one device that is in `registering` under `chunkTag`, crash-safe: the intent is
 * on the device before the call; a recorded intent without a result means "look for the
 * certificate that call may have made" before calling again.
 */
async function registerOne(
  deps: RegistrarDeps,
  plan: BatchPlan,
  rec: DeviceRecord,
  chunkTag: string,
  signal?: AbortSignal,
): Promise<void> {
  const now = deps.now ?? Date.now;
  const csrPem = rec.fields.csrPem;
  const publicKey = rec.fields.publicKey;
  if (!csrPem || !publicKey) {
    await deps.journal.transition(failMove(plan.batchId, rec.serial, 'DEVICE_NOT_KEYED', 'no CSR stored'));
    return;
  }
  if (rec.fields.singleIntentAt) {
    const found = await findCertificateForKey(deps.cloud, {
      publicKeyPem: publicKey,
      since: new Date(Number(rec.fields.singleIntentAt) - LOOKBACK_MS),
      ...(signal ? { signal } : {}),
    });
    if (found) {
      await deps.journal.transition(
        registeredMove(plan.batchId, rec, chunkTag, found, { recovered: 'true' }),
      );
      return;
    }
  }
  await deps.journal.note(rec.serial, { singleIntentAt: String(now()) });
  try {
    const issued = await registerThing(deps.cloud, {
      templateBody: plan.profile.templateBody,
      parameters: deviceParameters(plan, rec.serial, csrPem),
      pacer: deps.pacer,
      ...(signal ? { signal } : {}),
    });
    await deps.journal.transition(registeredMove(plan.batchId, rec, chunkTag, issued, {}));
  } catch (e) {
    if (signal?.aborted) throw e;
    if (isProvlineError(e) && !e.retryable) {
      await deps.journal.transition(failOwned(plan.batchId, rec.serial, chunkTag, e));
      return;
    }
    const code = isProvlineError(e) ? e.code : 'AWS_REQUEST_FAILED';
    await deps.journal.transition(
      retryOrFail(
        plan.batchId,
        rec,
        chunkTag,
        { code, message: messageOf(e) },
        deps.settings.registrationRounds,
      ),
    );
  }
}

/**
 * Registers a CSR that a device generated itself (key delivery `device`), through single
 * mode: accepted → keyed (CSR stored) → registering → registered. Safe to call again after a
 * crash at any point; returns the registered record.
 */
export async function registerCsr(
  deps: RegistrarDeps,
  req: { batchId: string; serial: string; csrPem: string; signal?: AbortSignal },
): Promise<DeviceRecord> {
  const plan = await deps.batches.plan(req.batchId);
  if (!(await prepare(deps, plan))) {
    const meta = await deps.batches.meta(req.batchId);
    throw new ProvlineError(
      storedErrorCode(meta.abortedCode, 'BATCH_ABORTED'),
      meta.abortedMessage ?? 'the batch cannot be registered',
    );
  }
  const get = async (): Promise<DeviceRecord> => {
    const rec = await deps.journal.get(req.serial);
    if (!rec || rec.batch !== req.batchId)
      throw new ProvlineError('DEVICE_NOT_IN_PLAN', `serial ${req.serial} is not in batch ${req.batchId}`);
    return rec;
  };
  let rec = await get();
  const publicKey = csrPublicKeyPem(req.csrPem);
  if (rec.state === 'accepted' || (rec.state === 'keyed' && !rec.fields.singleIntentAt)) {
    // A CSR from an earlier station attempt that never reached AWS may be replaced.
    await deps.journal.transition({
      batchId: req.batchId,
      serial: req.serial,
      to: 'keyed',
      from: ['accepted'],
      fields: { csrPem: req.csrPem, publicKey, keyType: plan.profile.keyType, keySource: 'device' },
    });
    if (rec.state === 'keyed') await deps.journal.note(req.serial, { csrPem: req.csrPem, publicKey });
    await deps.journal.transition({
      batchId: req.batchId,
      serial: req.serial,
      to: 'registering',
      from: ['keyed'],
      fields: { regChunk: `station` },
    });
    rec = await get();
  }
  if (rec.state === 'registering') {
    await registerOne(deps, plan, rec, rec.fields.regChunk ?? 'station', req.signal);
    rec = await get();
  }
  if (rec.state === 'keyed') {
    // Throttled beyond the pacer's patience: report it; the next call goes round again.
    throw new ProvlineError(
      'REGISTRATION_THROTTLED',
      `AWS throttled the registration of ${req.serial}; try again`,
      {
        retryable: true,
        details: { lastError: rec.fields.lastRegError ?? '' },
      },
    );
  }
  if (rec.state === 'failed')
    throw new ProvlineError(
      storedErrorCode(rec.error?.code, 'REGISTRATION_REJECTED'),
      rec.error?.message ?? 'registration failed',
    );
  return rec;
}

function csrPublicKeyPem(csrPem: string): string {
  const csr = new Pkcs10CertificateRequest(csrPem);
  const der = Buffer.from(csr.publicKey.rawData);
  return createPublicKey({ key: der, format: 'der', type: 'spki' }).export({
    type: 'spki',
    format: 'pem',
  }) as string;
}
