/** The station's path for device-generated keys: a CSR registered through single mode. */
import { createPublicKey } from 'node:crypto';
import 'reflect-metadata';
import { Pkcs10CertificateRequest } from '@peculiar/x509';
import { storedErrorCode, ProvlineError } from '../../core/index.js';
import type { DeviceRecord } from '../journal.js';
import { prepare } from './account.js';
import type { RegistrarDeps } from './deps.js';
import { registerOne } from './single.js';

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
