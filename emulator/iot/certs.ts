/** Device certificates and thing principals (aws-iot.md §5.2, §3.4). */
import { IotError, invalid, notFound } from '../errors.js';
import {
  csrPublicKey,
  parseCertificate,
  rsaKeyPair,
  type IssuedCertificate,
  type ParsedCertificate,
} from '../pki.js';
import { RULES, checkOne } from '../validate.js';
import { checkCertificateId, markerPage, qbool, requiredStr, str, tokenPage } from './members.js';
import {
  C,
  R,
  arn,
  newId,
  parseArn,
  type CaRec,
  type CertRec,
  type CertStatus,
  type Ctx,
  type Handler,
} from './model.js';
import { getThing } from './things.js';

const STATUSES: readonly CertStatus[] = [
  'ACTIVE',
  'INACTIVE',
  'REVOKED',
  'PENDING_TRANSFER',
  'REGISTER_INACTIVE',
  'PENDING_ACTIVATION',
];

export function getCert(ctx: Ctx, id: string): CertRec {
  const c = ctx.store.get<CertRec>(C.certs, id);
  if (!c) throw notFound(`The certificate ${id} does not exist`);
  return c;
}

/** The certificate a principal ARN names (only certificate principals are supported). */
export function certOfPrincipal(ctx: Ctx, principal: string): CertRec {
  const a = parseArn(principal);
  if (!a || a.type !== 'cert')
    throw invalid(
      `Principal ${principal} is not a certificate ARN; the stand-in supports certificate principals only.`,
    );
  return getCert(ctx, a.id);
}

/** Stores a freshly issued certificate as a registry record. */
export function storeIssued(
  ctx: Ctx,
  issued: Pick<IssuedCertificate, 'certificateId' | 'pem' | 'notBefore' | 'notAfter'>,
  status: CertStatus,
  extra: Partial<CertRec> = {},
): CertRec {
  const now = ctx.now();
  const rec: CertRec = {
    certificateId: issued.certificateId,
    certificateArn: arn.cert(ctx, issued.certificateId),
    certificatePem: issued.pem,
    status,
    certificateMode: 'DEFAULT',
    creationDate: now,
    lastModifiedDate: now,
    generationId: newId(),
    customerVersion: 1,
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
    ...extra,
  };
  ctx.store.put(C.certs, rec.certificateId, rec);
  return rec;
}

/** CreateCertificateFromCsr's core, shared with templates: a new certificate for the CSR's key. */
export function issueFromCsr(ctx: Ctx, csr: string, status: CertStatus): CertRec {
  checkOne('certificateSigningRequest', csr, RULES.csr);
  const spki = csrPublicKey(csr);
  return storeIssued(ctx, ctx.ca.issue(spki, new Date(ctx.now() * 1000)), status);
}

/** The registered, active CA that signed `cert`, or undefined when none did. */
function signingCa(ctx: Ctx, cert: ParsedCertificate, caPem: string | undefined): CaRec | undefined {
  let candidates = ctx.store.values<CaRec>(C.cas);
  if (caPem !== undefined) {
    const ca = parseCertificate(caPem, 'CA certificate');
    candidates = candidates.filter((c) => c.certificateId === ca.certificateId);
    if (!candidates.length)
      throw new IotError('CertificateValidationException', 'The CA certificate is not registered.');
  }
  const matches = candidates.filter((c) => {
    const ca = parseCertificate(c.certificatePem, 'CA certificate');
    return cert.x509.checkIssued(ca.x509) && cert.x509.verify(ca.x509.publicKey);
  });
  if (matches.length > 1)
    throw new IotError(
      'CertificateConflictException',
      'More than one registered CA certificate matches; pass caCertificatePem.',
    );
  return matches[0];
}

/** RegisterCertificate / RegisterCertificateWithoutCA and template CertificatePem. */
export function registerCertificate(
  ctx: Ctx,
  pem: string,
  caPem: string | undefined,
  status: CertStatus,
  withCa: boolean,
): CertRec {
  checkOne('certificatePem', pem, RULES.certificatePem);
  const cert = parseCertificate(pem);
  const existing = ctx.store.get<CertRec>(C.certs, cert.certificateId);
  if (existing)
    throw new IotError(
      'ResourceAlreadyExistsException',
      'The certificate is already provisioned or registered',
      { resourceId: existing.certificateId, resourceArn: existing.certificateArn },
    );
  const nowSec = ctx.now();
  if (cert.notAfter < nowSec)
    throw new IotError('CertificateValidationException', 'The certificate has expired.');
  if (cert.notBefore > nowSec)
    throw new IotError('CertificateValidationException', 'The certificate is not yet valid.');
  const extra: Partial<CertRec> = {};
  if (withCa) {
    const ca = signingCa(ctx, cert, caPem);
    if (!ca)
      throw new IotError(
        'CertificateValidationException',
        'The certificate is not signed by a registered CA certificate.',
      );
    if (ca.status !== 'ACTIVE')
      throw new IotError(
        'CertificateStateException',
        `The CA certificate ${ca.certificateId} is not ACTIVE.`,
      );
    extra.caCertificateId = ca.certificateId;
    extra.certificateMode = ca.certificateMode;
  } else {
    extra.certificateMode = 'SNI_ONLY';
  }
  return storeIssued(
    ctx,
    { certificateId: cert.certificateId, pem: cert.pem, notBefore: cert.notBefore, notAfter: cert.notAfter },
    status,
    extra,
  );
}

/** Moves a certificate to `status` under AWS's rules (REVOKED is final). */
export function setCertStatus(ctx: Ctx, cert: CertRec, status: CertStatus): void {
  if (cert.status === status) return;
  if (cert.status === 'REVOKED')
    throw new IotError(
      'CertificateStateException',
      `Certificate ${cert.certificateId} is REVOKED and cannot change status.`,
    );
  ctx.store.put(C.certs, cert.certificateId, {
    ...cert,
    status,
    lastModifiedDate: ctx.now(),
    customerVersion: cert.customerVersion + 1,
    generationId: newId(),
  });
}

function statusFromBody(body: Record<string, unknown>, setAsActive: boolean | undefined): CertStatus {
  const s = str(body, 'status');
  if (s !== undefined && !STATUSES.includes(s as CertStatus))
    throw invalid(
      `1 validation error detected: Value '${s}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [${STATUSES.join(', ')}]`,
    );
  // MEASURED on AWS (aws-iot-dataplane.md §1.3): only just-in-time registration makes
  // PENDING_ACTIVATION certificates.
  if (s === 'PENDING_ACTIVATION')
    throw new IotError(
      'CertificateStateException',
      'Not allowed to register certificate with PENDING_ACTIVATION status',
    );
  if (setAsActive) return 'ACTIVE';
  return (s as CertStatus | undefined) ?? 'INACTIVE';
}

/** A ListCertificates-shaped page of the certificates that pass `keep` (oldest first). */
export function certificatePage(
  ctx: Ctx,
  query: URLSearchParams,
  keep: (c: CertRec) => boolean,
): { certificates: unknown[]; nextMarker: string | undefined } {
  const all = ctx.store
    .values<CertRec>(C.certs)
    .filter(keep)
    .sort((a, b) => a.creationDate - b.creationDate || (a.certificateId < b.certificateId ? -1 : 1));
  const page = markerPage(query, all);
  return {
    certificates: page.items.map((c) => ({
      certificateArn: c.certificateArn,
      certificateId: c.certificateId,
      status: c.status,
      certificateMode: c.certificateMode,
      creationDate: c.creationDate,
    })),
    nextMarker: page.next,
  };
}

export function certOps(ctx: Ctx): Record<string, Handler> {
  const { store } = ctx;
  return {
    CreateCertificateFromCsr: (r) => {
      const c = issueFromCsr(
        ctx,
        requiredStr(r.body, 'certificateSigningRequest'),
        qbool(r.query, 'setAsActive') ? 'ACTIVE' : 'INACTIVE',
      );
      return {
        certificateArn: c.certificateArn,
        certificateId: c.certificateId,
        certificatePem: c.certificatePem,
      };
    },

    CreateKeysAndCertificate: (r) => {
      const keys = rsaKeyPair();
      const issued = ctx.ca.issue(keys.spki, new Date(ctx.now() * 1000));
      const c = storeIssued(ctx, issued, qbool(r.query, 'setAsActive') ? 'ACTIVE' : 'INACTIVE');
      return {
        certificateArn: c.certificateArn,
        certificateId: c.certificateId,
        certificatePem: c.certificatePem,
        keyPair: { PublicKey: keys.publicPem, PrivateKey: keys.privatePem },
      };
    },

    RegisterCertificate: (r) => {
      const c = registerCertificate(
        ctx,
        requiredStr(r.body, 'certificatePem'),
        str(r.body, 'caCertificatePem'),
        statusFromBody(r.body, qbool(r.query, 'setAsActive')),
        true,
      );
      return { certificateArn: c.certificateArn, certificateId: c.certificateId };
    },

    RegisterCertificateWithoutCA: (r) => {
      const c = registerCertificate(
        ctx,
        requiredStr(r.body, 'certificatePem'),
        undefined,
        statusFromBody(r.body, undefined),
        false,
      );
      return { certificateArn: c.certificateArn, certificateId: c.certificateId };
    },

    DescribeCertificate: (r) => {
      const c = getCert(ctx, checkCertificateId(r.path.certificateId!));
      return {
        certificateDescription: {
          certificateArn: c.certificateArn,
          certificateId: c.certificateId,
          caCertificateId: c.caCertificateId,
          status: c.status,
          certificatePem: c.certificatePem,
          ownedBy: ctx.account,
          creationDate: c.creationDate,
          lastModifiedDate: c.lastModifiedDate,
          customerVersion: c.customerVersion,
          generationId: c.generationId,
          validity: { notBefore: c.notBefore, notAfter: c.notAfter },
          certificateMode: c.certificateMode,
        },
      };
    },

    ListCertificates: (r) => certificatePage(ctx, r.query, (c) => !c.claim),

    UpdateCertificate: (r) => {
      const c = getCert(ctx, checkCertificateId(r.path.certificateId!));
      const s = r.query.get('newStatus');
      if (s === null)
        throw invalid(
          "1 validation error detected: Value null at 'newStatus' failed to satisfy constraint: Member must not be null",
        );
      if (!STATUSES.includes(s as CertStatus))
        throw invalid(
          `1 validation error detected: Value '${s}' at 'newStatus' failed to satisfy constraint: Member must satisfy enum value set: [${STATUSES.join(', ')}]`,
        );
      if (s === 'PENDING_TRANSFER' || s === 'PENDING_ACTIVATION')
        throw invalid(`The certificate status cannot be set to ${s}; it is used internally by AWS IoT.`);
      setCertStatus(ctx, c, s as CertStatus);
      return undefined;
    },

    DeleteCertificate: (r) => {
      const c = getCert(ctx, checkCertificateId(r.path.certificateId!));
      const force = qbool(r.query, 'forceDelete') ?? false;
      if (c.status === 'ACTIVE')
        throw new IotError(
          'CertificateStateException',
          'Certificate must be deactivated (not ACTIVE) before deletion.',
        );
      if (store.countLeftOf(R.thingPrincipal, c.certificateArn) > 0)
        throw new IotError(
          'DeleteConflictException',
          'Things are attached to the certificate; detach them before deleting it.',
        );
      const policies = store.leftOf(R.policyTarget, c.certificateArn);
      if (policies.length && !force)
        throw new IotError(
          'DeleteConflictException',
          'Policies are attached to the certificate; detach them or use forceDelete.',
        );
      store.transaction(() => {
        for (const p of policies) store.unlink(R.policyTarget, p, c.certificateArn);
        store.del(C.certs, c.certificateId);
      });
      return undefined;
    },

    AttachThingPrincipal: (r) => {
      const principal = header(r.headers['x-amzn-principal']);
      const thing = getThing(ctx, r.path.thingName!);
      const cert = certOfPrincipal(ctx, principal);
      const type = r.query.get('thingPrincipalType');
      if (type !== null && type !== 'EXCLUSIVE_THING' && type !== 'NON_EXCLUSIVE_THING')
        throw invalid(
          `Value '${type}' at 'thingPrincipalType' failed to satisfy constraint: Member must satisfy enum value set: [EXCLUSIVE_THING, NON_EXCLUSIVE_THING]`,
        );
      if (
        type === 'EXCLUSIVE_THING' &&
        store.leftOf(R.thingPrincipal, cert.certificateArn).some((t) => t !== thing.thingName)
      ) {
        throw invalid(
          `Principal ${principal} is already attached to another thing; it cannot be attached exclusively.`,
        );
      }
      store.link(R.thingPrincipal, thing.thingName, cert.certificateArn);
      return undefined;
    },

    DetachThingPrincipal: (r) => {
      const principal = header(r.headers['x-amzn-principal']);
      const thing = getThing(ctx, r.path.thingName!);
      certOfPrincipal(ctx, principal);
      store.unlink(R.thingPrincipal, thing.thingName, principal);
      return undefined;
    },

    ListThingPrincipals: (r) => {
      getThing(ctx, r.path.thingName!);
      const page = tokenPage(r.query, store.rightOf(R.thingPrincipal, r.path.thingName!).sort(), 25);
      return { principals: page.items, nextToken: page.next };
    },

    ListPrincipalThings: (r) => {
      const principal = header(r.headers['x-amzn-principal']);
      certOfPrincipal(ctx, principal);
      const page = tokenPage(r.query, store.leftOf(R.thingPrincipal, principal).sort(), 25);
      return { things: page.items, nextToken: page.next };
    },
  };
}

export function header(v: string | string[] | undefined, name = 'principal'): string {
  const s = Array.isArray(v) ? v[0] : v;
  if (!s)
    throw invalid(
      `1 validation error detected: Value null at '${name}' failed to satisfy constraint: Member must not be null`,
    );
  return s;
}
