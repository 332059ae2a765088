/**
 * The batch loop: claims chunks as devices become keyed and runs them one after another (the
 * next chunk's input is written while a task runs), finishes the batch when no device is left
 * before `registered`, and kicks the HSM stage when its work seems stalled.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { BatchPlan } from '../../batch/index.js';
import { strategyFor } from '../../batch/strategies/index.js';
import { messageOf } from '../../core/index.js';
import type { Chunk } from '../journal.js';
import { prepare } from './account.js';
import { runChunk, writeChunkInput } from './chunks.js';
import { type RegistrarDeps } from './deps.js';

const IDLE_POLL_MS = 100;
/** Accepted devices that have not moved for this long mean a stalled HSM stage. */
const HSM_STALL_MS = 30_000;

export type DriveResult = 'finished' | 'aborted';

/** Drives a batch's registration until no device is left before `registered`. */
export async function driveBatch(
  deps: RegistrarDeps,
  batchId: string,
  signal?: AbortSignal,
): Promise<DriveResult> {
  const now = deps.now;
  const plan = await deps.batches.plan(batchId);
  const meta = await deps.batches.meta(batchId);
  if (meta.abortedCode) return 'aborted';
  const { certificate } = strategyFor(plan.profile);
  // Device-made keys are registered by the stations, one CSR at a time (csr.ts); claim
  // devices register themselves over MQTT.
  if (meta.registeredAt !== undefined || certificate.by === 'station' || certificate.by === 'device')
    return 'finished';
  if (!(await prepare(deps, plan))) return 'aborted';

  let keyedSince: number | undefined;
  let lastAccepted = -1;
  let acceptedSince = now();
  const { chunkSize } = plan.profile.registration;
  const mode = certificate.call === 'bulk-task' ? 'bulk' : 'single';
  // Chunks whose task has ended and whose reports are being applied while the next task runs.
  const applying = new Map<number, Promise<void>>();
  // Chunks whose reports this run has applied: a read of the open chunks that began before an
  // apply ended may still show its chunk as started, and it must not be run again.
  const applied = new Set<number>();
  const defer = (n: number, p: Promise<void>): void => {
    applying.set(
      n,
      p
        .then(() => void applied.add(n))
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
      const open = (await deps.journal.openChunks(batchId)).filter(
        (c) => !applying.has(c.n) && !applied.has(c.n),
      );
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

async function requeueStray(deps: RegistrarDeps, batchId: string): Promise<void> {
  const serials = await deps.journal.inState(batchId, 'registering');
  await deps.journal.transitionMany(
    serials.map((serial) => ({ batchId, serial, to: 'keyed', from: ['registering'] })),
  );
}
