/**
 * The factory CA as AWS IoT sees it (aws-iot.md §3.1–3.2): registration with a verification
 * certificate, the CA's description, and the certificates registered under it.
 *
 * Registration is idempotent: a CA is found by its certificate id (SHA-256 of its DER, which
 * is how AWS names certificates) before anything is registered, and a registration that lost
 * a race (ResourceAlreadyExistsException) is read back, not repeated. The verification
 * certificate is signed by whoever holds the CA key; the caller passes that signer in (the
 * HSM in provline), so this file never sees key material.
 */
import {
  DescribeCACertificateCommand,
  DescribeProvisioningTemplateCommand,
  GetRegistrationCodeCommand,
  ListCertificatesByCACommand,
  RegisterCACertificateCommand,
  type RegistrationConfig,
} from '@aws-sdk/client-iot';
import { ProvlineError } from '../core/index.js';
import { awsErrorName, awsFailure, isNotFoundAwsError, isRetryableAwsError } from './aws-errors.js';
import { certificateIdOfPem } from './certificates.js';
import type { CloudClients } from './clients.js';
import { withRetries } from './pacing.js';

export type CaCertificateMode = 'DEFAULT' | 'SNI_ONLY';

/** AWS's view of a registered CA. */
export interface CaDescription {
  certificateId: string;
  certificateArn: string;
  status: string;
  autoRegistrationStatus: string;
  certificateMode: string;
  /** Template name, or "inline" for a templateBody, and the role; undefined without JITP. */
  registrationConfig?: { templateName?: string; templateBody?: string; roleArn?: string };
  notAfter?: string;
}

// Registration is safe to repeat (an earlier success answers ResourceAlreadyExists, read back
// below), so transient failures are retried; LimitExceeded here is the 10-CAs-per-subject
// limit, which a retry cannot cure.
const retryable = (name: string): boolean => name !== 'LimitExceededException' && isRetryableAwsError(name);

/** DescribeCACertificate; undefined when AWS does not know the CA. */
export async function describeCa(c: CloudClients, certificateId: string): Promise<CaDescription | undefined> {
  let out;
  try {
    out = await withRetries(() => c.iot.send(new DescribeCACertificateCommand({ certificateId })), {
      retry: 'transient',
      what: 'DescribeCACertificate',
    });
  } catch (e) {
    if (isNotFoundAwsError(e)) return undefined;
    throw awsFailure('AWS_REQUEST_FAILED', `DescribeCACertificate ${certificateId}`, e);
  }
  const d = out.certificateDescription;
  const rc = out.registrationConfig;
  return {
    certificateId: d?.certificateId ?? certificateId,
    certificateArn: d?.certificateArn ?? '',
    status: d?.status ?? 'UNKNOWN',
    autoRegistrationStatus: d?.autoRegistrationStatus ?? 'UNKNOWN',
    certificateMode: d?.certificateMode ?? 'DEFAULT',
    ...(rc && (rc.templateName || rc.templateBody || rc.roleArn)
      ? {
          registrationConfig: {
            ...(rc.templateName ? { templateName: rc.templateName } : {}),
            ...(rc.templateBody ? { templateBody: rc.templateBody } : {}),
            ...(rc.roleArn ? { roleArn: rc.roleArn } : {}),
          },
        }
      : {}),
    ...(d?.validity?.notAfter ? { notAfter: new Date(d.validity.notAfter).toISOString() } : {}),
  };
}

export interface RegisterCaRequest {
  caCertificatePem: string;
  mode: CaCertificateMode;
  /** Signs the verification certificate for AWS's registration code (DEFAULT mode). */
  verificationCertificate: (registrationCode: string) => Promise<string>;
  /** JITP: a template name (type JITP) or an inline body, with the role AWS assumes. */
  registrationConfig?: RegistrationConfig;
}

export interface CaRegistration extends CaDescription {
  /** True when AWS already had the CA: nothing was registered. */
  alreadyRegistered: boolean;
}

/**
 * Registers the CA ACTIVE with auto-registration (JITR; JITP with a registration config), or
 * reports the registration that exists.
 */
export async function registerCa(c: CloudClients, req: RegisterCaRequest): Promise<CaRegistration> {
  const certificateId = certificateIdOfPem(req.caCertificatePem);
  const existing = await describeCa(c, certificateId);
  if (existing) return { ...existing, alreadyRegistered: true };
  let verificationCertificate: string | undefined;
  if (req.mode === 'DEFAULT') {
    const code = await withRetries(() => c.iot.send(new GetRegistrationCodeCommand({})), {
      retry: 'transient',
      what: 'GetRegistrationCode',
    }).catch((e: unknown) => {
      throw awsFailure('AWS_REQUEST_FAILED', 'GetRegistrationCode', e);
    });
    verificationCertificate = await req.verificationCertificate(code.registrationCode ?? '');
  }
  await registerCaCertificate(c, {
    caCertificatePem: req.caCertificatePem,
    mode: req.mode,
    ...(verificationCertificate ? { verificationCertificate } : {}),
    ...(req.registrationConfig ? { registrationConfig: req.registrationConfig } : {}),
  });
  const after = await describeCa(c, certificateId);
  if (!after)
    throw new ProvlineError(
      'AWS_REQUEST_FAILED',
      `RegisterCACertificate succeeded but CA ${certificateId} is not found`,
      {
        retryable: true,
        details: { certificateId },
      },
    );
  return { ...after, alreadyRegistered: false };
}

/**
 * One RegisterCACertificate call (setAsActive, allowAutoRegistration). A CA that is already
 * registered is success; AWS's refusals become typed errors.
 */
export async function registerCaCertificate(
  c: CloudClients,
  req: {
    caCertificatePem: string;
    mode: CaCertificateMode;
    verificationCertificate?: string;
    registrationConfig?: RegistrationConfig;
  },
): Promise<void> {
  try {
    await withRetries(
      () =>
        c.iot.send(
          new RegisterCACertificateCommand({
            caCertificate: req.caCertificatePem,
            ...(req.verificationCertificate ? { verificationCertificate: req.verificationCertificate } : {}),
            setAsActive: true,
            allowAutoRegistration: true,
            certificateMode: req.mode,
            ...(req.registrationConfig ? { registrationConfig: req.registrationConfig } : {}),
          }),
        ),
      { retry: retryable, what: 'RegisterCACertificate' },
    );
  } catch (e) {
    const name = awsErrorName(e);
    if (name === 'ResourceAlreadyExistsException') return;
    if (name === 'RegistrationCodeValidationException')
      throw awsFailure('CA_REGISTRATION_CODE_REJECTED', 'RegisterCACertificate', e, {
        hint: "The verification certificate's CN must be this account's registration code in this Region; run `provline ca register` again to sign one for the current code.",
      });
    if (
      ['CertificateValidationException', 'LimitExceededException', 'InvalidRequestException'].includes(name)
    )
      throw awsFailure('CA_REGISTRATION_REJECTED', 'RegisterCACertificate', e, {
        hint: "Read AWS's message: a CA certificate AWS does not accept, 10 CAs with this subject already, or a bad template or role.",
      });
    throw awsFailure('AWS_REQUEST_FAILED', 'RegisterCACertificate', e);
  }
}

/** How many certificates are registered under the CA, by status (ListCertificatesByCA). */
export async function certificatesUnderCa(
  c: CloudClients,
  certificateId: string,
): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  let marker: string | undefined;
  do {
    const page = await withRetries(
      () =>
        c.iot.send(
          new ListCertificatesByCACommand({ caCertificateId: certificateId, pageSize: 250, marker }),
        ),
      { retry: 'transient', what: 'ListCertificatesByCA' },
    ).catch((e: unknown) => {
      throw awsFailure('AWS_REQUEST_FAILED', 'ListCertificatesByCA', e);
    });
    for (const cert of page.certificates ?? []) {
      const status = cert.status ?? 'UNKNOWN';
      counts[status] = (counts[status] ?? 0) + 1;
    }
    marker = page.nextMarker;
  } while (marker);
  return counts;
}

/** A JITP provisioning template's body, for the lint before it is named in a registration. */
export async function jitpTemplateBody(c: CloudClients, templateName: string): Promise<string> {
  const out = await withRetries(() => c.iot.send(new DescribeProvisioningTemplateCommand({ templateName })), {
    retry: 'transient',
    what: 'DescribeProvisioningTemplate',
  }).catch((e: unknown) => {
    throw awsFailure(
      isNotFoundAwsError(e) ? 'JITP_TEMPLATE_INVALID' : 'AWS_REQUEST_FAILED',
      `DescribeProvisioningTemplate ${templateName}`,
      e,
      { kind: isNotFoundAwsError(e) ? 'invalid-input' : 'failed' },
    );
  });
  if (out.type !== 'JITP')
    throw new ProvlineError(
      'JITP_TEMPLATE_INVALID',
      `provisioning template ${templateName} is of type ${out.type ?? 'FLEET_PROVISIONING'}, not JITP`,
      {
        kind: 'invalid-input',
        hint: "Create the template with `--type JITP`, or pass the profile's template inline.",
      },
    );
  return out.templateBody ?? '';
}

export { certificateIdOfPem as caCertificateId };
