/**
 * Who is connecting: the client certificate from the TLS handshake checked against the
 * registry (certificates and CA certificates in the store), at the moment of the connection.
 *
 * Outcomes (docs/emulator.md "Data plane" records each choice):
 * - `handshake`: the chain does not lead to a trust anchor (the stand-in's device CA or a
 *   registered ACTIVE CA) and the certificate is not registered: the socket is destroyed
 *   right after the handshake, before any MQTT byte is read (AWS fails such chains in TLS).
 * - `connect`: the chain is trusted but the certificate cannot be used (not registered,
 *   INACTIVE, REVOKED, PENDING_TRANSFER, expired, not yet valid, or its CA is INACTIVE): the
 *   CONNECT packet is read, then 3.1.1 gets a graceful close without CONNACK and 5 gets
 *   CONNACK 0x87 (Not authorized).
 * - `jit`: an unknown certificate signed by an ACTIVE CA with auto-registration enabled, or a
 *   PENDING_ACTIVATION one from such a CA: just-in-time registration runs on CONNECT.
 * - `ok`: registered and ACTIVE, within its validity, from an ACTIVE CA (or none).
 */
import { X509Certificate, createHash } from 'node:crypto';
import { C, type CaRec, type CertRec, type Ctx } from '../iot/model.js';

export type AuthOutcome =
  | { kind: 'ok'; cert: CertRec }
  | { kind: 'jit'; ca: CaRec; certificateId: string; leaf: X509Certificate; existing?: CertRec }
  | { kind: 'refused'; stage: 'handshake' | 'connect'; reason: string; certificateId: string };

/** Parsed CA certificates, keyed by id + generation (a CA re-registered is parsed again). */
const caCache = new Map<string, X509Certificate>();

function caX509(ca: CaRec): X509Certificate {
  const key = `${ca.certificateId}:${ca.generationId}`;
  let x = caCache.get(key);
  if (!x) {
    x = new X509Certificate(ca.certificatePem);
    if (caCache.size > 1000) caCache.clear();
    caCache.set(key, x);
  }
  return x;
}

function signedBy(leaf: X509Certificate, ca: X509Certificate): boolean {
  try {
    return leaf.checkIssued(ca) && leaf.verify(ca.publicKey);
  } catch {
    return false;
  }
}

const iso = (sec: number): string => new Date(sec * 1000).toISOString();

/** Validity and CA checks for a registered certificate that is otherwise usable. */
function usable(ctx: Ctx, cert: CertRec): string | undefined {
  const now = ctx.now();
  if (cert.notAfter < now)
    return `certificate ${cert.certificateId} expired at ${iso(cert.notAfter)}${cert.claim ? ' (a provisioning claim certificate lives 5 minutes)' : ''}`;
  if (cert.notBefore > now)
    return `certificate ${cert.certificateId} is not valid before ${iso(cert.notBefore)}`;
  if (cert.caCertificateId) {
    const ca = ctx.store.get<CaRec>(C.cas, cert.caCertificateId);
    if (!ca)
      return `the CA certificate ${cert.caCertificateId} that signed certificate ${cert.certificateId} is no longer registered`;
    if (ca.status !== 'ACTIVE')
      return `the CA certificate ${ca.certificateId} that signed certificate ${cert.certificateId} is ${ca.status}`;
  }
  return undefined;
}

/** The registered ACTIVE CA that directly signed `leaf`, and every registered CA that did. */
function signingCas(ctx: Ctx, leaf: X509Certificate): CaRec[] {
  return ctx.store.values<CaRec>(C.cas).filter((ca) => signedBy(leaf, caX509(ca)));
}

export function authenticate(ctx: Ctx, deviceCa: X509Certificate, leaf: X509Certificate): AuthOutcome {
  const certificateId = createHash('sha256').update(leaf.raw).digest('hex');
  const cert = ctx.store.get<CertRec>(C.certs, certificateId);
  if (cert) {
    if (cert.status === 'ACTIVE') {
      const problem = usable(ctx, cert);
      return problem
        ? { kind: 'refused', stage: 'connect', reason: problem, certificateId }
        : { kind: 'ok', cert };
    }
    if (cert.status === 'PENDING_ACTIVATION' && cert.caCertificateId) {
      const ca = ctx.store.get<CaRec>(C.cas, cert.caCertificateId);
      if (ca && ca.status === 'ACTIVE' && ca.autoRegistrationStatus === 'ENABLE')
        return { kind: 'jit', ca, certificateId, leaf, existing: cert };
    }
    return {
      kind: 'refused',
      stage: 'connect',
      reason: `certificate ${certificateId} is ${cert.status}; only ACTIVE certificates may connect`,
      certificateId,
    };
  }
  const cas = signingCas(ctx, leaf);
  const active = cas.filter((c) => c.status === 'ACTIVE');
  const auto = active.find((c) => c.autoRegistrationStatus === 'ENABLE');
  if (auto) return { kind: 'jit', ca: auto, certificateId, leaf };
  if (active.length)
    return {
      kind: 'refused',
      stage: 'connect',
      reason: `certificate ${certificateId} is not registered; its CA ${active[0]!.certificateId} is ACTIVE but has auto-registration DISABLE (register the certificate, or enable auto-registration for JITR)`,
      certificateId,
    };
  if (signedBy(leaf, deviceCa))
    return {
      kind: 'refused',
      stage: 'connect',
      reason: `certificate ${certificateId} was issued by the stand-in's device CA but is not registered (deleted?)`,
      certificateId,
    };
  if (cas.length)
    return {
      kind: 'refused',
      stage: 'handshake',
      reason: `certificate ${certificateId} is not registered and its CA ${cas[0]!.certificateId} is ${cas[0]!.status}, so the chain is not trusted`,
      certificateId,
    };
  return {
    kind: 'refused',
    stage: 'handshake',
    reason: `certificate ${certificateId} (issuer ${leaf.issuer.replace(/\n/g, ', ')}) is not registered and no registered ACTIVE CA signed it, so the chain is not trusted`,
    certificateId,
  };
}

/** Subject attributes of a certificate by short name (C, ST, L, O, OU, CN, serialNumber, dnQualifier). */
export function subjectOf(x: X509Certificate): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of x.subject.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] ??= line.slice(eq + 1);
  }
  return out;
}
