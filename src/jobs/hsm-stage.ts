/**
 * The HSM stage for one range of a batch: a key pair, a CSR and a wrapped export per device,
 * stored in the journal with the move accepted → keyed; for a factory-CA strategy (jitp, jitr)
 * a key pair, a certificate signed by the profile's CA in the same HSM and a wrapped export,
 * with the move accepted → signed.
 *
 * Exactly one identity per serial: the move is conditional on no CSR being stored yet, in the
 * same Lua step, so two workers racing on one range (a job retried after a stall) store one
 * identity and the loser's session keys simply die with its session. A device that already
 * has a CSR from an earlier attempt (a retried batch) keeps it.
 */
import pLimit from 'p-limit';
import type { BatchPlan } from '../batch/index.js';
import { isProvlineError, messageOf, ProvlineError } from '../core/index.js';
import { hsmWorkFor, strategyFor } from '../batch/strategies/index.js';
import type { CaSettings } from '../config/index.js';
import type { SignedDeviceIdentity, DeviceIdentity, DeviceIdentityRequest } from '../hsm/index.js';
import type { BatchStore } from './batches.js';
import type { Journal, TransitionRequest } from './journal.js';
import type { HsmJobData } from './queues.js';

/** What the stage needs of the HSM (src/hsm: `Hsm` and the factory CA's functions). */
export interface IdentityMaker {
  createDeviceIdentity(req: DeviceIdentityRequest): Promise<DeviceIdentity>;
  /** A key with a certificate signed by the profile's factory CA (jitp, jitr). */
  createSignedIdentity?(req: DeviceIdentityRequest, ca: SigningRequest): Promise<SignedDeviceIdentity>;
  /** Throws the CA's problem (missing key, expired, other token) before anything is signed. */
  checkSigningCa?(ca: SigningRequest): Promise<void>;
}

export interface SigningRequest {
  settings: CaSettings;
  now: Date;
}

export interface HsmStageDeps {
  journal: Journal;
  batches: BatchStore;
  hsm: IdentityMaker;
  /** Identities made at once (the HSM's session pool bounds it anyway). */
  parallel?: number;
  /** The clock certificates are dated by (tests pass their own). */
  now?: () => Date;
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
  const ca = await factoryCa(deps, plan);
  if (ca && 'refused' in ca) {
    // The CA cannot sign (missing, expired, on another token): nothing is signed, and every
    // device of the range says why.
    for (const [i, d] of devices.entries()) {
      const rec = records[i];
      if (!rec || rec.batch !== plan.batchId || rec.state !== 'accepted') continue;
      await deps.journal.fail(plan.batchId, d.serial, ca.refused);
      result.failed++;
    }
    return result;
  }
  const signer = ca?.sign;
  const target = signer ? 'signed' : 'keyed';
  const proof = signer ? 'certificatePem' : 'csrPem';
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
        if (f[proof] && f.keyType === plan.profile.keyType && f.kekLabel === plan.profile.kekLabel) {
          moves.push({ batchId: plan.batchId, serial: d.serial, to: target, from: ['accepted'] });
          result.reused++;
          return;
        }
        try {
          const req = request(plan, d.serial, rec.thingName);
          const key = {
            keyType: plan.profile.keyType,
            kekLabel: plan.profile.kekLabel,
          };
          let fields: Record<string, string>;
          if (signer) {
            const id = await signer(req);
            fields = {
              certificatePem: id.certificatePem,
              certificateId: id.certificateId,
              caCertificateId: id.caCertificateId,
              publicKey: id.publicKey,
              wrappedKey: id.wrappedKey,
              kekId: id.kekId,
              ...key,
            };
          } else {
            const id = await deps.hsm.createDeviceIdentity(req);
            fields = {
              csrPem: id.csrPem,
              publicKey: id.publicKey,
              wrappedKey: id.wrappedKey,
              kekId: id.kekId,
              ...key,
            };
          }
          moves.push({
            batchId: plan.batchId,
            serial: d.serial,
            to: target,
            from: ['accepted'],
            when: { absent: proof },
            fields,
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

/**
 * The factory-CA signer for a strategy whose certificates the profile's CA signs, after the
 * CA's checks; `refused` when a check failed, and then every accepted device of the range is
 * failed with the CA's problem before anything is signed. Undefined for the other strategies.
 */
async function factoryCa(
  deps: HsmStageDeps,
  plan: BatchPlan,
): Promise<
  | { sign: (req: DeviceIdentityRequest) => Promise<SignedDeviceIdentity> }
  | { refused: { code: string; message: string; stage: string } }
  | undefined
> {
  if (hsmWorkFor(strategyFor(plan.profile), plan.profile.keyDelivery) !== 'key-and-certificate')
    return undefined;
  const { ca } = plan.profile;
  const maker = deps.hsm;
  if (!ca || !maker.createSignedIdentity || !maker.checkSigningCa)
    throw new ProvlineError(
      'CA_NOT_CONFIGURED',
      `profile ${plan.profile.name} signs with a factory CA, but ${ca ? 'this worker cannot sign' : 'it has no `ca` settings'}`,
      { kind: 'invalid-input', retryable: false },
    );
  const signing = { settings: ca, now: (deps.now ?? (() => new Date()))() };
  try {
    await maker.checkSigningCa(signing);
  } catch (e) {
    if (!isProvlineError(e) || e.retryable) throw e;
    return { refused: { code: e.code, message: e.message, stage: 'hsm' } };
  }
  return { sign: (req) => maker.createSignedIdentity!(req, signing) };
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
