/**
 * Certificates as provline sees them: ids from ARNs or DER, public keys compared as
 * SubjectPublicKeyInfo DER, the resource ARNs of a registration sorted by kind, and the
 * newest-first walk over ListCertificates that crash recovery and reconcile share.
 *
 * `since` bounds every walk: certificates are listed newest first and the walk stops at the
 * first one created before `since`. AWS stamps creation times with its clock, so callers pass
 * a `since` some minutes before the call they look for.
 */
import { X509Certificate, createHash, createPublicKey } from 'node:crypto';
import {
  DescribeCertificateCommand,
  ListCertificatesCommand,
  type CertificateDescription,
  type Certificate,
} from '@aws-sdk/client-iot';
import { ProvlineError } from '../core/index.js';
import { awsFailure, isNotFoundAwsError } from './aws-errors.js';
import type { CloudClients } from './clients.js';
import { withRetries, type Pacer } from './pacing.js';

/** What a registration issued for one device. */
export interface IssuedCertificate {
  certificatePem: string;
  certificateId: string;
  certificateArn: string;
  thingArn?: string;
  policyArns?: string[];
}

const CERT_ARN = /^(arn:[^:]+:iot:[^:]*:[^:]*:)cert\/((?:0x)?[0-9a-fA-F]{64})$/;

/** The id at the end of `arn:…:cert/<id>`, lower case; undefined for other ARNs. */
export function certificateIdFromArn(arn: string): string | undefined {
  return CERT_ARN.exec(arn)?.[2]?.replace(/^0x/, '').toLowerCase();
}

/** SHA-256 of the certificate's DER, hex: what AWS IoT uses as the certificate id in practice. */
export function certificateIdOfPem(certificatePem: string): string {
  return createHash('sha256').update(new X509Certificate(certificatePem).raw).digest('hex');
}

/** SubjectPublicKeyInfo DER of a public key PEM (`BEGIN PUBLIC KEY`). */
export function spkiOfPublicKey(publicKeyPem: string): Buffer {
  return createPublicKey(publicKeyPem).export({ format: 'der', type: 'spki' });
}

/** SubjectPublicKeyInfo DER of a certificate PEM. */
export function spkiOfCertificate(certificatePem: string): Buffer {
  return new X509Certificate(certificatePem).publicKey.export({ format: 'der', type: 'spki' });
}

/**
 * A RegisterThing result (or RESULTS report response) as an IssuedCertificate. ARNs are
 * sorted by kind, not by logical id (logical ids are the template's own names). Undefined
 * when there is no certificate in it.
 */
export function issuedCertificate(
  certificatePem: string | undefined,
  resourceArns: Record<string, unknown> | undefined,
): IssuedCertificate | undefined {
  const arns = Object.values(resourceArns ?? {}).filter((v): v is string => typeof v === 'string');
  const certArn = arns.find((a) => CERT_ARN.test(a));
  const thingArn = arns.find((a) => /^arn:[^:]+:iot:[^:]*:[^:]*:thing\//.test(a));
  const policyArns = arns.filter((a) => /^arn:[^:]+:iot:[^:]*:[^:]*:policy\//.test(a));
  if (!certificatePem) return undefined;
  let certificateId: string;
  try {
    certificateId = (certArn && certificateIdFromArn(certArn)) ?? certificateIdOfPem(certificatePem);
  } catch {
    return undefined; // not a certificate
  }
  // Without a certificate ARN, build it from the thing ARN's partition, region and account.
  const prefix = thingArn && /^(arn:[^:]+:iot:[^:]*:[^:]*:)/.exec(thingArn)?.[1];
  const certificateArn = certArn ?? (prefix ? `${prefix}cert/${certificateId}` : '');
  return {
    certificatePem,
    certificateId,
    certificateArn,
    ...(thingArn ? { thingArn } : {}),
    ...(policyArns.length ? { policyArns } : {}),
  };
}

export interface ReadOptions {
  pacer?: Pacer;
  signal?: AbortSignal;
}

/** Summaries of the certificates created at or after `since`, newest first. */
export async function* certificatesSince(
  c: CloudClients,
  since: Date,
  o: ReadOptions = {},
): AsyncGenerator<Certificate & { certificateId: string; certificateArn: string }> {
  let marker: string | undefined;
  do {
    const page = await withRetries(
      () =>
        c.iot.send(new ListCertificatesCommand({ ascendingOrder: false, pageSize: 250, marker }), {
          abortSignal: o.signal,
        }),
      { retry: 'transient', what: 'ListCertificates', pacer: o.pacer, signal: o.signal },
    ).catch((e: unknown) => {
      throw awsFailure('AWS_REQUEST_FAILED', 'ListCertificates', e);
    });
    for (const cert of page.certificates ?? []) {
      if (cert.creationDate && cert.creationDate < since) return;
      if (cert.certificateId && cert.certificateArn)
        yield { ...cert, certificateId: cert.certificateId, certificateArn: cert.certificateArn };
    }
    marker = page.nextMarker;
  } while (marker);
}

/** DescribeCertificate; undefined when the certificate does not exist. */
export async function describeCertificate(
  c: CloudClients,
  certificateId: string,
  o: ReadOptions = {},
): Promise<CertificateDescription | undefined> {
  try {
    const out = await withRetries(
      () => c.iot.send(new DescribeCertificateCommand({ certificateId }), { abortSignal: o.signal }),
      { retry: 'transient', what: 'DescribeCertificate', pacer: o.pacer, signal: o.signal },
    );
    return out.certificateDescription;
  } catch (e) {
    if (isNotFoundAwsError(e)) return undefined;
    throw awsFailure('AWS_REQUEST_FAILED', `DescribeCertificate ${certificateId}`, e);
  }
}

/** The certificate's public key DER, or a ProvlineError when AWS returned no usable PEM. */
export function spkiOfDescription(d: CertificateDescription): Buffer {
  try {
    return spkiOfCertificate(d.certificatePem ?? '');
  } catch (e) {
    throw new ProvlineError(
      'AWS_REQUEST_FAILED',
      `DescribeCertificate ${d.certificateId}: the answer holds no readable certificate`,
      { cause: e, details: { certificateId: d.certificateId } },
    );
  }
}
