/**
 * One device at a time: RegisterThing, paced to the account's rate (a Pacer shared by every
 * concurrent caller) and repeated only after throttling, and the crash-recovery lookup of a
 * certificate by its public key.
 *
 * RegisterThing is one atomic call, but a 5xx or a lost connection may come after it took
 * effect, so such failures are not repeated here: they surface as retryable
 * REGISTRATION_REJECTED, and the caller looks for the certificate (`findCertificateForKey`)
 * before it calls again.
 */
import { RegisterThingCommand } from '@aws-sdk/client-iot';
import { ProvlineError } from '../core/index.js';
import { awsErrorName, awsFailure } from './aws-errors.js';
import {
  certificatesSince,
  describeCertificate,
  issuedCertificate,
  spkiOfDescription,
  spkiOfPublicKey,
  type IssuedCertificate,
  type ReadOptions,
} from './certificates.js';
import type { CloudClients } from './clients.js';
import { withRetries, type Pacer } from './pacing.js';

export { Pacer, backoff, type Clock, type PacerOptions, type BackoffOptions } from './pacing.js';
export type { IssuedCertificate } from './certificates.js';

export interface RegisterThingRequest {
  templateBody: string;
  parameters: Record<string, string>;
  pacer: Pacer;
  signal?: AbortSignal;
  /** Attempts in all (throttled ones included); default 8. */
  maxAttempts?: number;
}

export type RegisteredThing = Omit<IssuedCertificate, 'policyArns'>;

export async function registerThing(c: CloudClients, r: RegisterThingRequest): Promise<RegisteredThing> {
  let out;
  try {
    out = await withRetries(
      () =>
        c.iot.send(new RegisterThingCommand({ templateBody: r.templateBody, parameters: r.parameters }), {
          abortSignal: r.signal,
        }),
      {
        retry: 'throttling',
        what: 'RegisterThing',
        maxAttempts: r.maxAttempts ?? 8,
        pacer: r.pacer,
        signal: r.signal,
      },
    );
  } catch (e) {
    throw awsFailure('REGISTRATION_REJECTED', 'RegisterThing', e, {
      hint:
        awsErrorName(e) === 'ResourceRegistrationFailureException'
          ? 'Check that the thing type, groups and policy the template names exist, and the OverrideSettings.'
          : undefined,
    });
  }
  const issued = issuedCertificate(out.certificatePem, out.resourceArns);
  if (!issued)
    throw new ProvlineError(
      'REGISTRATION_REJECTED',
      'RegisterThing: the answer holds no certificate; the template must have a certificate resource',
      { details: { errorName: 'NoCertificate', resourceArns: out.resourceArns ?? {} } },
    );
  const { policyArns: _policies, ...thing } = issued;
  return thing;
}

export interface FindCertificateRequest extends ReadOptions {
  /** The device's public key, SubjectPublicKeyInfo PEM. */
  publicKeyPem: string;
  /** Only certificates created at or after this time are looked at. */
  since: Date;
  /** Certificates to pass over (already known ones). */
  excludeIds?: Set<string>;
}

export interface FoundCertificate {
  certificateId: string;
  certificateArn: string;
  certificatePem: string;
  status: string;
}

/**
 * The newest certificate created since `since` whose public key is `publicKeyPem`'s: how a
 * registrar that crashed between "call sent" and "result recorded" finds what the call made.
 */
export async function findCertificateForKey(
  c: CloudClients,
  r: FindCertificateRequest,
): Promise<FoundCertificate | undefined> {
  const want = spkiOfPublicKey(r.publicKeyPem);
  for await (const summary of certificatesSince(c, r.since, r)) {
    if (r.excludeIds?.has(summary.certificateId)) continue;
    const d = await describeCertificate(c, summary.certificateId, r);
    if (!d?.certificatePem || !spkiOfDescription(d).equals(want)) continue;
    return {
      certificateId: summary.certificateId,
      certificateArn: summary.certificateArn,
      certificatePem: d.certificatePem,
      status: d.status ?? summary.status ?? 'UNKNOWN',
    };
  }
  return undefined;
}
