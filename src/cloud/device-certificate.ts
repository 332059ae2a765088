/**
 * Turning one device's certificate off (or on again): deactivate it (INACTIVE: reversible) or
 * revoke it (REVOKED: for a device stolen or returned for good). A certificate AWS already
 * holds is updated; AWS disconnects a connected device within minutes. A certificate the
 * factory CA signed offline that AWS has not seen yet (the device has not made its first
 * connect) is registered under its CA with the new status, so its first connect is refused
 * instead of provisioning it: revocation does not have to wait for the device to show up.
 */
import { X509Certificate } from 'node:crypto';
import { RegisterCertificateCommand, UpdateCertificateCommand } from '@aws-sdk/client-iot';
import { ProvlineError } from '../core/index.js';
import { awsFailure } from './aws-errors.js';
import { certificateIdOfPem, describeCertificate } from './certificates.js';
import type { CloudClients } from './clients.js';
import { withRetries } from './pacing.js';

export type DeviceCertificateStatus = 'ACTIVE' | 'INACTIVE' | 'REVOKED';

export interface StatusChange {
  certificateId: string;
  /** AWS's status before; `UNREGISTERED` when AWS had not seen the certificate. */
  before: string;
  after: DeviceCertificateStatus;
  /** True when provline registered the certificate (signed offline, not yet seen by AWS). */
  registered: boolean;
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Sets the status of a device certificate. `certificatePem` is what the device holds: the
 * certificate, then (for a factory-CA lot) the CA that signed it.
 */
export async function setDeviceCertificateStatus(
  c: CloudClients,
  req: { certificatePem: string; status: DeviceCertificateStatus },
): Promise<StatusChange> {
  const blocks = req.certificatePem.match(PEM_BLOCK) ?? [];
  const leaf = blocks[0];
  if (!leaf)
    throw new ProvlineError('CERT_NOT_ISSUED', 'the device record holds no certificate', {
      kind: 'invalid-input',
    });
  const certificateId = certificateIdOfPem(leaf);
  const now = await describeCertificate(c, certificateId);
  if (now) {
    if (now.status === req.status)
      return { certificateId, before: now.status, after: req.status, registered: false };
    await call('UpdateCertificate', () =>
      c.iot.send(new UpdateCertificateCommand({ certificateId, newStatus: req.status })),
    );
    return { certificateId, before: now.status ?? 'UNKNOWN', after: req.status, registered: false };
  }
  const issuer = blocks.slice(1).find((b) => new X509Certificate(leaf).checkIssued(new X509Certificate(b)));
  if (!issuer)
    throw new ProvlineError(
      'CERT_NOT_REGISTERED',
      `AWS IoT does not hold the certificate ${certificateId.slice(0, 12)}…, and it was not signed by a factory CA provline could register it under`,
      { kind: 'invalid-input', details: { certificateId } },
    );
  if (req.status === 'ACTIVE')
    throw new ProvlineError(
      'CERT_NOT_REGISTERED',
      `the certificate ${certificateId.slice(0, 12)}… has not been seen by AWS IoT yet: AWS registers it at the device's first connect, there is nothing to activate`,
      { kind: 'invalid-input', details: { certificateId } },
    );
  await call('RegisterCertificate', () =>
    c.iot.send(
      new RegisterCertificateCommand({ certificatePem: leaf, caCertificatePem: issuer, status: req.status }),
    ),
  );
  return { certificateId, before: 'UNREGISTERED', after: req.status, registered: true };
}

async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await withRetries(fn, { retry: 'transient', what });
  } catch (e) {
    throw awsFailure('AWS_REQUEST_FAILED', what, e);
  }
}
