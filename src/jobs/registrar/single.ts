/**
 * Single mode: one RegisterThing per device, paced under the profile's TPS. The intent is
 * recorded on the device before the call; after a crash the certificate a lost call made is
 * found again by the device's public key.
 */
import pLimit from 'p-limit';
import type { BatchPlan } from '../../batch/index.js';
import { findCertificateForKey, registerThing } from '../../cloud/index.js';
import { isProvlineError, messageOf } from '../../core/index.js';
import type { Chunk, DeviceRecord } from '../journal.js';
import { moveChunk } from './chunk-state.js';
import { LOOKBACK_MS, type RegistrarDeps } from './deps.js';
import { failMove, failOwned, registeredMove, retryOrFail } from './moves.js';
import { deviceParameters } from './parameters.js';

/** Runs a single-mode chunk: each device registered on its own, a few at a time. */
export async function runSingleChunk(
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
  await moveChunk(deps, plan, c, { state: 'done', status: 'Completed' }, { from: ['claimed'] });
}

/**
 * Registers one device that is in `registering` under `chunkTag`, crash-safe: the intent is
 * on the device before the call; a recorded intent without a result means "look for the
 * certificate that call may have made" before calling again.
 */
export async function registerOne(
  deps: RegistrarDeps,
  plan: BatchPlan,
  rec: DeviceRecord,
  chunkTag: string,
  signal?: AbortSignal,
): Promise<void> {
  const now = deps.now;
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
