/**
 * The station's path for device-generated keys on a factory-CA line (jitp, jitr with key
 * delivery `device`): the CSR the device returns is checked (its own signature proves it holds
 * the key), and the factory CA in the station's HSM signs a certificate for that key with the
 * subject the profile gives (CN = the thing name; the device's own subject is not used). The
 * move is accepted → signed, as for HSM keys; no AWS call per device. Safe to call again: a
 * device already signed keeps its certificate.
 */
import { createPublicKey } from 'node:crypto';
import 'reflect-metadata';
import { Pkcs10CertificateRequest } from '@peculiar/x509';
import type { CaSettings } from '../../config/index.js';
import { storedErrorCode, ProvlineError } from '../../core/index.js';
import type { CsrSubject } from '../../hsm/index.js';
import type { DeviceRecord } from '../journal.js';
import { prepare } from './account.js';
import { type RegistrarDeps } from './deps.js';

/** Signs a device's public key with the factory CA (src/hsm/ca.ts `signDeviceKey`). */
export type DeviceKeySigner = (req: {
  ca: CaSettings;
  spki: Buffer;
  subject: CsrSubject;
  now: Date;
}) => Promise<{ certificatePem: string; certificateId: string; caCertificateId: string }>;

export async function signCsrWithFactoryCa(
  deps: RegistrarDeps & { sign: DeviceKeySigner },
  req: { batchId: string; serial: string; csrPem: string; signal?: AbortSignal },
): Promise<DeviceRecord> {
  const plan = await deps.batches.plan(req.batchId);
  const { ca } = plan.profile;
  if (!ca)
    throw new ProvlineError('CA_NOT_CONFIGURED', `batch ${req.batchId} has no factory CA to sign with`, {
      kind: 'invalid-input',
    });
  // The account (policy, endpoint, root CA for the bundle) is prepared once per batch.
  if (!(await prepare(deps, plan))) {
    const meta = await deps.batches.meta(req.batchId);
    throw new ProvlineError(
      storedErrorCode(meta.abortedCode, 'BATCH_ABORTED'),
      meta.abortedMessage ?? 'the batch cannot be provisioned',
    );
  }
  const get = async (): Promise<DeviceRecord> => {
    const rec = await deps.journal.get(req.serial);
    if (!rec || rec.batch !== req.batchId)
      throw new ProvlineError('DEVICE_NOT_IN_PLAN', `serial ${req.serial} is not in batch ${req.batchId}`);
    return rec;
  };
  const rec = await get();
  if (rec.state !== 'accepted') return rec;
  let csr: Pkcs10CertificateRequest;
  try {
    csr = new Pkcs10CertificateRequest(req.csrPem);
  } catch (e) {
    throw new ProvlineError('DEVICE_CSR_INVALID', `device ${req.serial} returned a CSR that cannot be read`, {
      cause: e,
      retryable: false,
    });
  }
  if (!(await csr.verify()))
    throw new ProvlineError(
      'DEVICE_CSR_INVALID',
      `the CSR of device ${req.serial} is not signed by the key it names, so it proves nothing`,
      { retryable: false },
    );
  const spki = Buffer.from(csr.publicKey.rawData);
  const signed = await deps.sign({
    ca,
    spki,
    subject: { ...plan.profile.csrSubject, CN: rec.thingName },
    now: new Date(deps.now()),
  });
  await deps.journal.transition({
    batchId: req.batchId,
    serial: req.serial,
    to: 'signed',
    from: ['accepted'],
    when: { absent: 'certificatePem' },
    fields: {
      ...signed,
      csrPem: req.csrPem,
      publicKey: createPublicKey({ key: spki, format: 'der', type: 'spki' }).export({
        type: 'spki',
        format: 'pem',
      }) as string,
      keyType: plan.profile.keyType,
      keySource: 'device',
    },
  });
  return get();
}
