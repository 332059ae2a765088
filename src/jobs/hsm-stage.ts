/**
 * The HSM stage for one range of a batch: a key pair, a CSR and a wrapped export per device,
 * stored in the journal with the move accepted → keyed.
 *
 * Exactly one identity per serial: the move is conditional on no CSR being stored yet, in the
 * same Lua step, so two workers racing on one range (a job retried after a stall) store one
 * identity and the loser's session keys simply die with its session. A device that already
 * has a CSR from an earlier attempt (a retried batch) keeps it.
 */
import pLimit from 'p-limit';
import type { BatchPlan } from '../batch/plan.js';
import { isProvlineError, messageOf, ProvlineError } from '../core/errors.js';
import type { DeviceIdentity, DeviceIdentityRequest } from '../hsm/identity.js';
import type { BatchStore } from './batches.js';
import type { Journal, TransitionRequest } from './journal.js';
import type { HsmJobData } from './queues.js';

/** What the stage needs of the HSM (src/hsm/hsm.ts `Hsm` satisfies it). */
export interface IdentityMaker {
  createDeviceIdentity(req: DeviceIdentityRequest): Promise<DeviceIdentity>;
}

export interface HsmStageDeps {
  journal: Journal;
  batches: BatchStore;
  hsm: IdentityMaker;
  /** Identities made at once (the HSM's session pool bounds it anyway). */
  parallel?: number;
}

export interface HsmStageResult {
  keyed: number;
  reused: number;
  skipped: number;
  failed: number;
}

export async function runHsmRange(deps: HsmStageDeps, data: HsmJobData): Promise<HsmStageResult> {
  const plan = await deps.batches.plan(data.batchId);
  const devices = plan.devices.slice(data.from, data.to);
  const records = await deps.journal.getMany(devices.map((d) => d.serial));
  const result: HsmStageResult = { keyed: 0, reused: 0, skipped: 0, failed: 0 };
  const moves: TransitionRequest[] = [];
  const limit = pLimit(deps.parallel ?? 8);
  let retryable: ProvlineError | undefined;
  await Promise.all(
    devices.map((d, i) =>
      limit(async () => {
        const rec = records[i];
        if (!rec || rec.batch !== plan.batchId || rec.state !== 'accepted') {
          result.skipped++;
          return;
        }
        const f = rec.fields;
        if (f.csrPem && f.keyType === plan.profile.keyType && f.kekLabel === plan.profile.kekLabel) {
          moves.push({ batchId: plan.batchId, serial: d.serial, to: 'keyed', from: ['accepted'] });
          result.reused++;
          return;
        }
        try {
          const id = await deps.hsm.createDeviceIdentity(request(plan, d.serial, rec.thingName));
          moves.push({
            batchId: plan.batchId,
            serial: d.serial,
            to: 'keyed',
            from: ['accepted'],
            when: { absent: 'csrPem' },
            fields: {
              csrPem: id.csrPem,
              publicKey: id.publicKey,
              wrappedKey: id.wrappedKey,
              kekId: id.kekId,
              keyType: id.keyType,
              kekLabel: plan.profile.kekLabel,
            },
          });
        } catch (e) {
          if (isProvlineError(e) && e.retryable) {
            retryable ??= e;
            return;
          }
          result.failed++;
          await deps.journal.fail(plan.batchId, d.serial, {
            code: isProvlineError(e) ? e.code : 'HSM_ERROR',
            message: messageOf(e),
            stage: 'hsm',
          });
        }
      }),
    ),
  );
  const outcomes = await deps.journal.transitionMany(moves);
  result.keyed = outcomes.filter((o) => o.status === 'ok').length - result.reused;
  // A transient HSM problem: what was made is stored; the job is retried for the rest.
  if (retryable) throw retryable;
  return result;
}

function request(plan: BatchPlan, serial: string, thingName: string): DeviceIdentityRequest {
  return {
    serial,
    thingName,
    keyType: plan.profile.keyType,
    kekLabel: plan.profile.kekLabel,
    subject: plan.profile.csrSubject,
  };
}
