/**
 * The fenced chunk state machine of bulk mode: claimed → written (input file and manifest in
 * S3) → starting (intent recorded under the slot's fence) → started (task id) → done (reports
 * applied). A chunk found `starting` without a task id is looked up by its input key, never
 * started twice.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { BatchPlan } from '../../batch/index.js';
import {
  findTaskByInputKey,
  putInput,
  readReports,
  renderInputFile,
  startTask,
  waitTask,
  requireBucket,
  requireRoleArn,
} from '../../cloud/index.js';
import type { BulkReports, TaskOutcome } from '../../cloud/index.js';
import { isProvlineError, type ProvlineError } from '../../core/index.js';
import type { Chunk } from '../journal.js';
import type { SlotLease } from '../slot.js';
import { LOOKBACK_MS, type RegistrarDeps } from './deps.js';
import { refusedMoves, reportMoves } from './moves.js';
import { bulkParameters } from './parameters.js';
import { moveChunk } from './chunk-state.js';
import { runSingleChunk } from './single.js';

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
  const now = deps.now;
  const bucket = requireBucket(deps.cloud.aws);
  const chunkKey = deps.journal.keys.chunk(plan.batchId, chunk.n);
  const c = chunk.state === 'claimed' ? await writeChunkInput(deps, plan, chunk) : chunk;
  if (!c) return;
  const inputKey = c.fields.inputKey!;
  let taskId = c.fields.taskId;
  let lease: SlotLease | undefined;
  try {
    if (!taskId && c.state === 'starting') {
      const since = new Date(Number(c.fields.intentAt ?? now()) - LOOKBACK_MS);
      taskId = await findTaskByInputKey(deps.cloud, { bucket, key: inputKey, since, signal });
      if (taskId && !(await moveChunk(deps, plan, c, { state: 'started', taskId }, { from: ['starting'] })))
        return;
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
        await applyTaskRefused(deps, plan, c, e, lease.fence);
        return;
      }
      if (started.status === 'started') {
        taskId = started.taskId;
        // A newer fence on the chunk: another registrar took the slot and records this task.
        const state = { state: 'started' as const, taskId };
        if (!(await moveChunk(deps, plan, c, state, { from: ['starting'], fence: lease.fence }))) return;
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
    const t0 = now();
    const outcome = await waitTask(deps.cloud, taskId, {
      minDelayMs: 50,
      maxDelayMs: 250,
      ...(signal ? { signal } : {}),
    });
    await lease?.release();
    lease = undefined;
    const t1 = now();
    const reports = await readReports(deps.cloud, taskId, signal ? { signal } : {});
    deps.log?.debug({ chunk: c.n, waitMs: t1 - t0, reportsMs: now() - t1 }, 'chunk timings');
    const apply = applyReports(deps, plan, c, outcome, reports);
    if (defer) defer(c.n, apply);
    else await apply;
  } finally {
    await lease?.release();
  }
}

/**
 * Writes a claimed chunk's input file and manifest to S3; the chunk becomes `written`.
 * Undefined when another registrar has moved the chunk on meanwhile.
 */
export async function writeChunkInput(
  deps: RegistrarDeps,
  plan: BatchPlan,
  c: Chunk,
): Promise<Chunk | undefined> {
  const key = `provline/${plan.batchId}/chunk-${c.n}.ndjson`;
  const records = await deps.journal.getMany(c.serials);
  const lines = c.serials.map((serial, i) => bulkParameters(plan, serial, records[i]));
  await putInput(deps.cloud, {
    bucket: requireBucket(deps.cloud.aws),
    key,
    body: renderInputFile(lines),
    manifest: { batchId: plan.batchId, chunk: c.n, serials: c.serials },
  });
  if (!(await moveChunk(deps, plan, c, { state: 'written', inputKey: key }, { from: ['claimed'] })))
    return undefined;
  return { ...c, state: 'written', fields: { ...c.fields, inputKey: key } };
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
  await moveChunk(
    deps,
    plan,
    c,
    {
      state: 'done',
      status: outcome.status,
      registered: String(registered),
      retried: String(retried),
      failed: String(failed),
    },
    { from: ['started'] },
  );
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
  fence: number,
): Promise<void> {
  const moves = refusedMoves(c, e);
  await deps.journal.transitionMany(moves);
  const done = { state: 'done' as const, status: 'Refused', failed: String(moves.length) };
  await moveChunk(deps, plan, c, done, { from: ['starting'], fence });
}
