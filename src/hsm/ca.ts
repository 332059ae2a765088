/**
 * The factory CA inside the HSM (docs/hsm.md "Factory CA").
 *
 * The CA key pair is made on the token as TOKEN objects: the private half sensitive, never
 * extractable, allowed to sign and nothing else; both halves carry CKA_LABEL (the profile's
 * `ca.label`) and a random 16-byte CKA_ID, and are named by PKCS#11 URI. The CA certificate,
 * and the chain above it when an offline root signed it, are kept as CKO_CERTIFICATE token
 * objects beside the key (same CKA_ID; labels `<label>` and `<label>.chain.<n>`), so the CA is
 * whole wherever the token goes (an HSM backup, another line PC) and one lookup finds it.
 *
 * Before anything is signed, `signingCa` checks that the CA is on the expected token, that its
 * key and certificate are both there and belong together, and that the certificate is valid
 * now; each failure is its own typed error. Certificates are built with the DER writer
 * (x509.ts) and signed by the CA key in the HSM through the same raw-signer shape as CSRs.
 */
import { X509Certificate, createHash, randomBytes, randomFillSync } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { CaSettings, KeyType } from '../config/index.js';
import { ProvlineError } from '../core/index.js';
import {
  certificationRequest,
  certificationRequestInfo,
  encodeName,
  signatureValue,
  signingInput,
  toPem,
} from './csr.js';
import type { CsrSubject } from './csr.js';
import { hsmError } from './errors.js';
import type { Hsm } from './hsm.js';
import {
  deviceKeyTemplates,
  subjectFor,
  type CertifiedIdentity,
  type DeviceIdentityRequest,
} from './identity.js';
import { ecSpki, KEY_TYPE_SPECS, rsaSpki, type KeyTypeSpec } from './key-types.js';
import type { KeyOps } from './ops.js';
import type { Session } from './session.js';
import { formatPkcs11Uri } from './uri.js';
import {
  authorityKeyIdentifier,
  basicConstraints,
  clientAuthUsage,
  keyIdentifier,
  keyUsage,
  keyUsageBitsOf,
  KEY_USAGE,
  nameConstraints,
  permittedNamesOf,
  readCertificate,
  serialFromRandom,
  signCertificate,
  subjectKeyIdentifier,
  subjectKeyIdentifierOf,
  tbsCertificate,
  withinSubtree,
  type CertificateParts,
} from './x509.js';

/** The CA key pair on the token. Handles are valid while the module stays initialised. */
export interface CaKey {
  label: string;
  id: Buffer;
  keyType: KeyType;
  spec: KeyTypeSpec;
  privateKey: Buffer;
  publicKey: Buffer;
  /** SubjectPublicKeyInfo DER, read from the public key object. */
  spki: Buffer;
  /** PKCS#11 URI of the private key. */
  uri: string;
}

/** A CA that passed every check in `signingCa` and may sign now. */
export interface SigningCa {
  key: CaKey;
  certificate: CertificateParts;
  x509: X509Certificate;
  chain: Buffer[];
  /** The keyIdentifier device certificates name in their authorityKeyIdentifier. */
  keyId: Buffer;
  notBefore: Date;
  notAfter: Date;
}

const EC_KEYGEN: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN };
const RSA_KEYGEN: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN };
const ECDSA: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_ECDSA };
const RSA_PKCS: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_RSA_PKCS };
const DAY_MS = 86_400_000;
/** Device certificates start this long before signing: line PCs and AWS disagree on the time. */
export const NOT_BEFORE_SKEW_MS = 3_600_000;

/** `template` with the attributes of `overrides` replaced (or added). */
function withAttributes(template: pkcs11js.Template, overrides: pkcs11js.Template): pkcs11js.Template {
  return [...template.filter((a) => !overrides.some((o) => o.type === a.type)), ...overrides];
}

/**
 * Key-pair templates: the device-key templates (identity.ts) with the CA's rules. `token` true
 * for the CA (persistent); false for the throwaway key of a verification certificate (a
 * session object, destroyed after use). Either way the private half never leaves the HSM, not
 * even wrapped, and may only sign.
 */
export function caKeyTemplates(
  spec: KeyTypeSpec,
  label: string,
  id: Buffer,
  token: boolean,
): { pub: pkcs11js.Template; priv: pkcs11js.Template } {
  const device = deviceKeyTemplates(spec, label, id);
  return {
    pub: withAttributes(device.pub, [
      { type: pkcs11js.CKA_TOKEN, value: token },
      { type: pkcs11js.CKA_ENCRYPT, value: false },
      { type: pkcs11js.CKA_WRAP, value: false },
    ]),
    priv: withAttributes(device.priv, [
      { type: pkcs11js.CKA_TOKEN, value: token },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_DECRYPT, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
    ]),
  };
}

function caError(
  code: 'CA_KEY_NOT_FOUND' | 'CA_CERT_NOT_FOUND' | 'CA_WRONG_TOKEN' | 'CA_EXISTS' | 'CA_AMBIGUOUS',
  message: string,
  hint: string,
  details: Record<string, unknown>,
): ProvlineError {
  return new ProvlineError(code, message, { kind: 'invalid-input', hint, details });
}

/** SPKI of a public key object, and the key type it is. */
function publicKeyInfo(s: Session, handle: Buffer): { spki: Buffer; keyType: KeyType } {
  const [type] = s.p.C_GetAttributeValue(s.handle, handle, [{ type: pkcs11js.CKA_KEY_TYPE }]);
  const keyType = type!.value.readUIntLE(0, Math.min(6, type!.value.length));
  if (keyType === pkcs11js.CKK_EC) {
    const attrs = s.attributes(handle, [pkcs11js.CKA_EC_PARAMS, pkcs11js.CKA_EC_POINT], 'reading the CA key');
    const params = attrs.get(pkcs11js.CKA_EC_PARAMS)!;
    const spec = Object.values(KEY_TYPE_SPECS).find((k) => k.ecParams?.equals(params));
    if (!spec)
      throw new ProvlineError('HSM_KEY_TYPE_UNSUPPORTED', 'the CA key is on a curve provline does not use');
    return { spki: ecSpki(spec, attrs.get(pkcs11js.CKA_EC_POINT)!), keyType: spec.keyType };
  }
  const attrs = s.attributes(
    handle,
    [pkcs11js.CKA_MODULUS, pkcs11js.CKA_PUBLIC_EXPONENT],
    'reading the CA key',
  );
  const modulus = attrs.get(pkcs11js.CKA_MODULUS)!;
  if (keyType !== pkcs11js.CKK_RSA || modulus.length !== 256)
    throw new ProvlineError('HSM_KEY_TYPE_UNSUPPORTED', 'the CA key is not P-256, P-384 or RSA-2048');
  return { spki: rsaSpki(modulus, attrs.get(pkcs11js.CKA_PUBLIC_EXPONENT)!), keyType: 'RSA-2048' };
}

function byLabel(s: Session, cls: number, label: string, max = 2): Buffer[] {
  return s.find(
    [
      { type: pkcs11js.CKA_CLASS, value: cls },
      { type: pkcs11js.CKA_LABEL, value: label },
    ],
    max,
  );
}

/** The CA key pair labelled `label` on this token, or undefined. */
export function findCaKey(s: Session, tokenLabel: string, label: string): CaKey | undefined {
  const privs = byLabel(s, pkcs11js.CKO_PRIVATE_KEY, label);
  if (privs.length === 0) return undefined;
  if (privs.length > 1)
    throw caError(
      'CA_AMBIGUOUS',
      `more than one private key on token "${tokenLabel}" is labelled "${label}"`,
      'CA labels must be unique on a token: remove the extra key with the HSM vendor tools.',
      { label, token: tokenLabel },
    );
  const privateKey = privs[0]!;
  const id =
    s.attributes(privateKey, [pkcs11js.CKA_ID], 'reading the CA key').get(pkcs11js.CKA_ID) ?? Buffer.alloc(0);
  const pubs = s.find([
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: id },
  ]);
  if (pubs.length !== 1)
    throw caError(
      'CA_KEY_NOT_FOUND',
      `the CA "${label}" on token "${tokenLabel}" has a private key but no public key object beside it`,
      'The CA was not made by provline, or half of it was deleted: make a new CA with `provline ca create`.',
      { label, token: tokenLabel },
    );
  const { spki, keyType } = publicKeyInfo(s, pubs[0]!);
  return {
    label,
    id: Buffer.from(id),
    keyType,
    spec: KEY_TYPE_SPECS[keyType],
    privateKey,
    publicKey: pubs[0]!,
    spki,
    uri: formatPkcs11Uri({ token: tokenLabel, object: label, id, type: 'private' }),
  };
}

/** Generates the CA key pair as token objects; refuses a label that is already taken. */
export function generateCaKey(s: Session, tokenLabel: string, label: string, keyType: KeyType): CaKey {
  if (
    byLabel(s, pkcs11js.CKO_PRIVATE_KEY, label).length ||
    byLabel(s, pkcs11js.CKO_CERTIFICATE, label).length
  )
    throw caError(
      'CA_EXISTS',
      `a CA labelled "${label}" already exists on token "${tokenLabel}"`,
      'provline never replaces a CA key: use it (`provline ca status`), or choose another ca.label for a new CA.',
      { label, token: tokenLabel },
    );
  const spec = KEY_TYPE_SPECS[keyType];
  const { pub, priv } = caKeyTemplates(spec, label, randomBytes(16), true);
  try {
    s.p.C_GenerateKeyPair(s.handle, spec.family === 'ec' ? EC_KEYGEN : RSA_KEYGEN, pub, priv);
  } catch (e) {
    throw hsmError(e, 'generating the CA key');
  }
  return findCaKey(s, tokenLabel, label)!;
}

/** A raw signer over the CA's private key on this session. */
function signerFor(s: Session, ops: KeyOps, key: { privateKey: Buffer }, spec: KeyTypeSpec) {
  return async (input: Buffer): Promise<Buffer> => {
    try {
      return await ops.sign(
        s.p,
        s.handle,
        spec.family === 'ec' ? ECDSA : RSA_PKCS,
        key.privateKey,
        input,
        spec.signatureBytes,
      );
    } catch (e) {
      throw hsmError(e, 'signing with the CA key');
    }
  };
}

const chainLabel = (label: string, n: number): string => `${label}.chain.${n}`;

/** The certificate objects of a CA key: its own certificate and the chain above it, in order. */
export function readCaCertificates(s: Session, key: CaKey): { certificate?: Buffer; chain: Buffer[] } {
  const handles = s.find(
    [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE },
      { type: pkcs11js.CKA_ID, value: key.id },
    ],
    64,
  );
  let certificate: Buffer | undefined;
  const chain: Array<[number, Buffer]> = [];
  for (const h of handles) {
    const a = s.attributes(h, [pkcs11js.CKA_LABEL, pkcs11js.CKA_VALUE], 'reading the CA certificate');
    const label = a.get(pkcs11js.CKA_LABEL)!.toString('utf8');
    const value = Buffer.from(a.get(pkcs11js.CKA_VALUE)!);
    if (label === key.label) certificate = value;
    const n = label.startsWith(`${key.label}.chain.`) ? Number(label.slice(key.label.length + 7)) : NaN;
    if (Number.isInteger(n)) chain.push([n, value]);
  }
  chain.sort((a, b) => a[0] - b[0]);
  return { ...(certificate ? { certificate } : {}), chain: chain.map(([, v]) => v) };
}

/**
 * Stores the CA certificate and its chain beside the key, replacing what was there. A crash
 * between the removal and the new objects leaves a CA without a certificate, which
 * `signingCa` reports (CA_CERT_NOT_FOUND); running the import again completes it.
 */
export function storeCaCertificates(
  s: Session,
  key: CaKey,
  certificate: Buffer,
  chain: readonly Buffer[],
): void {
  const old = s.find(
    [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE },
      { type: pkcs11js.CKA_ID, value: key.id },
    ],
    64,
  );
  try {
    for (const h of old) s.p.C_DestroyObject(s.handle, h);
    [certificate, ...chain].forEach((der, i) => {
      const parts = readCertificate(der);
      s.p.C_CreateObject(s.handle, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE },
        { type: pkcs11js.CKA_CERTIFICATE_TYPE, value: pkcs11js.CKC_X_509 },
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_PRIVATE, value: false },
        { type: pkcs11js.CKA_LABEL, value: i === 0 ? key.label : chainLabel(key.label, i - 1) },
        { type: pkcs11js.CKA_ID, value: key.id },
        { type: pkcs11js.CKA_SUBJECT, value: parts.subject },
        { type: pkcs11js.CKA_ISSUER, value: parts.issuer },
        {
          type: pkcs11js.CKA_SERIAL_NUMBER,
          value: Buffer.concat([Buffer.from([0x02, parts.serial.length]), parts.serial]),
        },
        { type: pkcs11js.CKA_VALUE, value: der },
      ]);
    });
  } catch (e) {
    throw hsmError(e, 'storing the CA certificate');
  }
}

/** Refuses a profile whose CA lives on another token than the one this connection uses. */
export function checkCaToken(settings: Pick<CaSettings, 'label' | 'token'>, tokenLabel: string): void {
  if (settings.token !== undefined && settings.token !== tokenLabel)
    throw caError(
      'CA_WRONG_TOKEN',
      `the profile's CA "${settings.label}" lives on token "${settings.token}", but this HSM connection is to token "${tokenLabel}"`,
      "Point hsm.token at the CA's token, or fix the profile's ca.token.",
      { label: settings.label, token: tokenLabel, expectedToken: settings.token },
    );
}

/** What signs: the CA, after every check that must pass before anything is signed. */
export function signingCa(
  s: Session,
  tokenLabel: string,
  settings: Pick<CaSettings, 'label' | 'token'>,
  now: Date,
): SigningCa {
  const { label } = settings;
  const details = { label, token: tokenLabel };
  checkCaToken(settings, tokenLabel);
  const key = findCaKey(s, tokenLabel, label);
  if (!key)
    throw caError(
      'CA_KEY_NOT_FOUND',
      `no CA key labelled "${label}" on token "${tokenLabel}"`,
      "Create the CA with `provline ca create --profile <p>`, or check the profile's ca.label and hsm.token (a CA of another profile or token cannot sign).",
      details,
    );
  const { certificate, chain } = readCaCertificates(s, key);
  if (!certificate)
    throw caError(
      'CA_CERT_NOT_FOUND',
      `the CA key "${label}" on token "${tokenLabel}" has no certificate yet`,
      'After `ca create --csr-out`, import the certificate the offline root signed: `provline ca import-cert --profile <p> --cert <file> [--chain <file>]`.',
      details,
    );
  const parts = readCertificate(certificate);
  if (!parts.spki.equals(key.spki))
    throw new ProvlineError(
      'CA_KEY_MISMATCH',
      `the certificate stored for CA "${label}" does not certify its key in the HSM`,
      {
        kind: 'invalid-input',
        hint: 'Import the certificate issued for this key with `provline ca import-cert`.',
        details,
      },
    );
  const x509 = new X509Certificate(certificate);
  const notBefore = new Date(x509.validFrom);
  const notAfter = new Date(x509.validTo);
  const validity = {
    ...details,
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    now: now.toISOString(),
  };
  if (now < notBefore)
    throw new ProvlineError(
      'CA_NOT_YET_VALID',
      `the CA certificate "${label}" is not valid before ${validity.notBefore}`,
      {
        kind: 'invalid-input',
        hint: "Check this machine's clock, or wait until the CA certificate is valid.",
        details: validity,
      },
    );
  if (now > notAfter)
    throw new ProvlineError('CA_EXPIRED', `the CA certificate "${label}" expired at ${validity.notAfter}`, {
      kind: 'invalid-input',
      hint: 'Rotate the CA: make a new one under another ca.label, register it, and sign new lots with it (docs/hsm.md).',
      details: validity,
    });
  return {
    key,
    certificate: parts,
    x509,
    chain,
    keyId: subjectKeyIdentifierOf(parts) ?? keyIdentifier(key.spki),
    notBefore,
    notAfter,
  };
}

export interface IssueRequest {
  spki: Buffer;
  subject: CsrSubject;
  now: Date;
  validityDays: number;
  /** 16 random bytes for the serial (tests pass their own). */
  random?: Buffer;
}

/** Signs an end-entity (TLS client) certificate with the CA key; returns its DER. */
export async function issueCertificate(
  s: Session,
  ops: KeyOps,
  ca: SigningCa,
  req: IssueRequest,
): Promise<Buffer> {
  const subject = encodeName(req.subject);
  const { permitted, extensions } = issuing(ca);
  if (permitted.length && !permitted.some((base) => withinSubtree(subject, base)))
    throw new ProvlineError(
      'CA_SUBJECT_NOT_PERMITTED',
      `the subject ${JSON.stringify(req.subject)} is outside the CA's name constraints`,
      {
        kind: 'invalid-input',
        hint: "The profile's csrSubject must start with the RDNs of one of ca.nameConstraints.permitted (in the order C, ST, L, O, OU).",
        details: { label: ca.key.label, subject: req.subject },
      },
    );
  const start = new Date(Math.max(req.now.getTime() - NOT_BEFORE_SKEW_MS, ca.notBefore.getTime()));
  const end = new Date(Math.min(req.now.getTime() + req.validityDays * DAY_MS, ca.notAfter.getTime()));
  const tbs = tbsCertificate({
    serial: serialFromRandom(req.random ?? serialRandom()),
    signatureAlgorithm: ca.key.spec.signatureAlgorithm,
    issuer: ca.certificate.subject,
    subject,
    notBefore: start,
    notAfter: end,
    spki: req.spki,
    extensions: [...extensions.before, subjectKeyIdentifier(keyIdentifier(req.spki)), ...extensions.after],
  });
  return signCertificate(tbs, ca.key.spec, signerFor(s, ops, ca.key, ca.key.spec));
}

/**
 * What every certificate a CA issues shares, encoded once per checked CA: its permitted name
 * subtrees, the extensions before and after the device's own subjectKeyIdentifier, and what
 * follows the device certificate in a bundle (the CA certificate and its chain, PEM) with the
 * CA certificate's AWS id.
 */
interface IssuingParts {
  permitted: Buffer[];
  extensions: { before: Buffer[]; after: Buffer[] };
  chainPem: string;
  caCertificateId: string;
}
const issuingParts = new WeakMap<SigningCa, IssuingParts>();

function issuing(ca: SigningCa): IssuingParts {
  let parts = issuingParts.get(ca);
  if (!parts) {
    parts = {
      permitted: permittedNamesOf(ca.certificate),
      extensions: {
        before: [basicConstraints(false), keyUsage([KEY_USAGE.digitalSignature]), clientAuthUsage()],
        after: [authorityKeyIdentifier(ca.keyId)],
      },
      chainPem: [ca.certificate.der, ...ca.chain].map((d) => `${toPem(d, 'CERTIFICATE')}\n`).join(''),
      caCertificateId: sha256Hex(ca.certificate.der),
    };
    issuingParts.set(ca, parts);
  }
  return parts;
}

/**
 * 16 fresh random bytes for a serial, cut from a pool the CSPRNG refills (one call per 256
 * serials instead of one per certificate; every byte is used once).
 */
const RANDOM_POOL = Buffer.alloc(4096);
let randomOffset = RANDOM_POOL.length;

function serialRandom(): Buffer {
  if (randomOffset + 16 > RANDOM_POOL.length) {
    randomFillSync(RANDOM_POOL);
    randomOffset = 0;
  }
  const out = RANDOM_POOL.subarray(randomOffset, randomOffset + 16);
  randomOffset += 16;
  return out;
}

export interface SelfSignedRequest {
  settings: Pick<CaSettings, 'subject' | 'validityDays' | 'pathLen' | 'nameConstraints'>;
  now: Date;
  random?: Buffer;
}

/** The CA's self-signed certificate (a root, or a CA that AWS alone needs to trust). */
export async function selfSignedCaCertificate(
  s: Session,
  ops: KeyOps,
  key: CaKey,
  req: SelfSignedRequest,
): Promise<Buffer> {
  const name = encodeName(req.settings.subject as CsrSubject);
  const keyId = keyIdentifier(key.spki);
  const extensions = [
    basicConstraints(true, req.settings.pathLen),
    keyUsage([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign]),
    subjectKeyIdentifier(keyId),
    authorityKeyIdentifier(keyId),
  ];
  const permitted = req.settings.nameConstraints?.permitted ?? [];
  if (permitted.length) extensions.push(nameConstraints(permitted.map((p) => encodeRelativeName(p))));
  const tbs = tbsCertificate({
    serial: serialFromRandom(req.random ?? randomBytes(16)),
    signatureAlgorithm: key.spec.signatureAlgorithm,
    issuer: name,
    subject: name,
    notBefore: new Date(req.now.getTime() - NOT_BEFORE_SKEW_MS),
    notAfter: new Date(req.now.getTime() + req.settings.validityDays * DAY_MS),
    spki: key.spki,
    extensions,
  });
  return signCertificate(tbs, key.spec, signerFor(s, ops, key, key.spec));
}

/** A Name from subject attributes that need not include CN (name-constraint subtrees). */
function encodeRelativeName(subject: Partial<Record<keyof CsrSubject, string>>): Buffer {
  return encodeName(subject as CsrSubject);
}

/** A PKCS#10 request for the CA key, for an offline root to sign. */
export async function caCertificationRequest(
  s: Session,
  ops: KeyOps,
  key: CaKey,
  subject: CsrSubject,
): Promise<Buffer> {
  const tbs = certificationRequestInfo(subject, key.spki);
  const raw = await signerFor(s, ops, key, key.spec)(signingInput(tbs, key.spec));
  return certificationRequest(tbs, key.spec, signatureValue(raw, key.spec));
}

/**
 * Checks that `certificate` certifies the CA key and is a CA, and that each chain certificate
 * issued the one before it. Throws CA_KEY_MISMATCH or CA_CERT_INVALID.
 */
export function checkImportedCertificate(
  key: CaKey,
  certificate: X509Certificate,
  chain: readonly X509Certificate[],
): void {
  const invalid = (message: string, hint: string): ProvlineError =>
    new ProvlineError('CA_CERT_INVALID', message, {
      kind: 'invalid-input',
      hint,
      details: { label: key.label },
    });
  const spki = certificate.publicKey.export({ format: 'der', type: 'spki' });
  if (!spki.equals(key.spki))
    throw new ProvlineError(
      'CA_KEY_MISMATCH',
      `the certificate does not certify the public key of CA "${key.label}" in the HSM`,
      {
        kind: 'invalid-input',
        hint: 'Import the certificate the root signed for the CSR `ca create --csr-out` wrote for this CA.',
        details: { label: key.label, subject: certificate.subject },
      },
    );
  if (!certificate.ca)
    throw invalid(
      'the certificate is not a CA certificate (basicConstraints CA:TRUE is missing)',
      'Have the root sign the CSR with a CA profile (basicConstraints critical, CA:TRUE).',
    );
  const usage = keyUsageBitsOf(readCertificate(Buffer.from(certificate.raw)));
  if (usage && !usage.includes(KEY_USAGE.keyCertSign))
    throw invalid(
      "the certificate's keyUsage does not allow keyCertSign",
      'Have the root sign the CSR with keyUsage keyCertSign (and cRLSign).',
    );
  [certificate, ...chain].forEach((child, i) => {
    const parent = chain[i];
    if (parent && !(child.checkIssued(parent) && child.verify(parent.publicKey)))
      throw invalid(
        `chain certificate ${i + 1} (${parent.subject.replace(/\n/g, ', ')}) did not issue ${child.subject.replace(/\n/g, ', ')}`,
        'Give the chain in order: the issuer of the certificate first, the root last.',
      );
  });
}

// ---- what the rest of provline calls, each inside one pooled session ----

export interface CaCreated {
  label: string;
  keyType: KeyType;
  /** PKCS#11 URI of the CA's private key. */
  uri: string;
  /** The self-signed certificate (PEM), unless a CSR was asked for. */
  certificatePem?: string;
  /** The CSR for an offline root (PEM), when asked for. */
  csrPem?: string;
}

export async function createCa(
  hsm: Hsm,
  req: { settings: CaSettings; now: Date; csr: boolean },
): Promise<CaCreated> {
  const { settings } = req;
  return hsm.pool.withSession(async (s) => {
    const tokenLabel = hsm.token.label;
    checkCaToken(settings, tokenLabel);
    const key = generateCaKey(s, tokenLabel, settings.label, settings.keyType);
    const ops = hsm.opsFor(key.keyType);
    const base = { label: key.label, keyType: key.keyType, uri: key.uri };
    if (req.csr) {
      const csr = await caCertificationRequest(s, ops, key, settings.subject as CsrSubject);
      return { ...base, csrPem: toPem(csr) };
    }
    const der = await selfSignedCaCertificate(s, ops, key, { settings, now: req.now });
    storeCaCertificates(s, key, der, []);
    return { ...base, certificatePem: toPem(der, 'CERTIFICATE') };
  });
}

/** Stores the certificate an offline root signed for the CA key (and the chain above it). */
export async function importCaCertificate(
  hsm: Hsm,
  req: {
    settings: Pick<CaSettings, 'label' | 'token'>;
    certificatePem: string;
    chainPems: readonly string[];
  },
): Promise<{ label: string; uri: string; subject: string; chainLength: number }> {
  const parse = (pem: string, what: string): X509Certificate => {
    try {
      return new X509Certificate(pem);
    } catch (e) {
      throw new ProvlineError('CA_CERT_INVALID', `${what} is not a PEM certificate`, {
        kind: 'invalid-input',
        cause: e,
      });
    }
  };
  const certificate = parse(req.certificatePem, 'the CA certificate');
  const chain = req.chainPems.map((p, i) => parse(p, `chain certificate ${i + 1}`));
  return hsm.pool.withSession((s) => {
    const tokenLabel = hsm.token.label;
    checkCaToken(req.settings, tokenLabel);
    const key = findCaKey(s, tokenLabel, req.settings.label);
    if (!key)
      throw caError(
        'CA_KEY_NOT_FOUND',
        `no CA key labelled "${req.settings.label}" on token "${tokenLabel}"`,
        'Run `provline ca create --profile <p> --csr-out <file>` first; the certificate must be issued for that key.',
        { label: req.settings.label, token: tokenLabel },
      );
    checkImportedCertificate(key, certificate, chain);
    storeCaCertificates(
      s,
      key,
      Buffer.from(certificate.raw),
      chain.map((c) => Buffer.from(c.raw)),
    );
    return { label: key.label, uri: key.uri, subject: certificate.subject, chainLength: chain.length };
  });
}

export interface CaView {
  label: string;
  keyType: KeyType;
  uri: string;
  certificatePem: string;
  chainPems: string[];
  notBefore: string;
  notAfter: string;
}

/** The CA as it can sign now (every check of `signingCa`), with its certificate and chain. */
export async function describeCa(
  hsm: Hsm,
  settings: Pick<CaSettings, 'label' | 'token'>,
  now: Date,
): Promise<CaView> {
  return hsm.pool.withSession((s) => {
    const ca = signingCa(s, hsm.token.label, settings, now);
    return {
      label: ca.key.label,
      keyType: ca.key.keyType,
      uri: ca.key.uri,
      certificatePem: toPem(ca.certificate.der, 'CERTIFICATE'),
      chainPems: ca.chain.map((c) => toPem(c, 'CERTIFICATE')),
      notBefore: ca.notBefore.toISOString(),
      notAfter: ca.notAfter.toISOString(),
    };
  });
}

export interface DeviceCertificateRequest {
  ca: Pick<CaSettings, 'label' | 'token' | 'deviceValidityDays'>;
  /** The device's SubjectPublicKeyInfo DER. */
  spki: Buffer;
  subject: CsrSubject;
  now: Date;
}

/**
 * A device certificate for a given public key (a device's own key, from its CSR), signed by the
 * CA key in the HSM (PEM). The CA is the per-HSM cached checked one, as for createSignedIdentity.
 */
export async function signDeviceCertificate(hsm: Hsm, req: DeviceCertificateRequest): Promise<string> {
  const { der } = await issueForKey(hsm, req);
  return toPem(der, 'CERTIFICATE');
}

/** One device certificate for a given public key, signed by the cached checked CA. */
async function issueForKey(hsm: Hsm, req: DeviceCertificateRequest): Promise<{ der: Buffer; ca: SigningCa }> {
  return forgetCaWhenGone(hsm, req.ca.label, () =>
    hsm.pool.withSession(async (s) => {
      const ca = cachedSigningCa(hsm, s, req.ca, req.now);
      const der = await issueCertificate(s, hsm.opsFor(ca.key.keyType), ca, {
        spki: req.spki,
        subject: req.subject,
        now: req.now,
        validityDays: req.ca.deviceValidityDays,
      });
      return { der, ca };
    }),
  );
}

/**
 * AWS's verification certificate (aws-iot.md §3.2): CN = the registration code, for a
 * throwaway P-256 key made in the HSM as session objects (destroyed here), signed by the CA.
 */
export async function signVerificationCertificate(
  hsm: Hsm,
  req: { ca: Pick<CaSettings, 'label' | 'token'>; registrationCode: string; now: Date },
): Promise<string> {
  return hsm.pool.withSession(async (s) => {
    const ca = signingCa(s, hsm.token.label, req.ca, req.now);
    const spec = KEY_TYPE_SPECS['P-256'];
    const { pub, priv } = caKeyTemplates(spec, `${req.ca.label}.verification`, randomBytes(16), false);
    let kp: pkcs11js.KeyPair;
    try {
      kp = s.p.C_GenerateKeyPair(s.handle, EC_KEYGEN, pub, priv);
    } catch (e) {
      throw hsmError(e, 'generating the verification key');
    }
    try {
      const { spki } = publicKeyInfo(s, kp.publicKey);
      const der = await issueCertificate(s, hsm.opsFor(ca.key.keyType), ca, {
        spki,
        subject: { CN: req.registrationCode },
        now: req.now,
        validityDays: 1,
      });
      return toPem(der, 'CERTIFICATE');
    } finally {
      for (const h of [kp.privateKey, kp.publicKey]) {
        try {
          s.p.C_DestroyObject(s.handle, h);
        } catch {
          // a session object dies with its session anyway
        }
      }
    }
  });
}

/** A device identity whose certificate the factory CA signed: what the HSM stage keeps. */
export interface SignedDeviceIdentity extends Omit<CertifiedIdentity, 'certificateDer'> {
  /** The device certificate followed by the CA certificate and its stored chain (PEM). */
  certificatePem: string;
  /** AWS IoT's id of the device certificate: the SHA-256 of its DER, hex. */
  certificateId: string;
  /** The CA certificate's id (the registered CA AWS names in its events). */
  caCertificateId: string;
}

/**
 * Checked CAs kept per HSM for a short while, so a lot does not look the CA up, read and parse
 * its certificate once per device. Validity is checked against `now` on every use; a key
 * deleted meanwhile fails its signature with HSM_OBJECT_GONE and drops the entry.
 */
const CA_CACHE_MS = 30_000;
const caCache = new WeakMap<Hsm, Map<string, { ca: SigningCa; tokenLabel: string; at: number }>>();

function cachedSigningCa(
  hsm: Hsm,
  s: Session,
  settings: Pick<CaSettings, 'label' | 'token'>,
  now: Date,
): SigningCa {
  let forHsm = caCache.get(hsm);
  if (!forHsm) {
    forHsm = new Map<string, { ca: SigningCa; tokenLabel: string; at: number }>();
    caCache.set(hsm, forHsm);
  }
  const hit = forHsm.get(settings.label);
  const t = Date.now();
  if (hit && t - hit.at < CA_CACHE_MS && now >= hit.ca.notBefore && now <= hit.ca.notAfter) {
    // The token's label as read with the CA: reading it again costs a C_GetTokenInfo per
    // device (a quarter of a certificate's time on SoftHSM), and it cannot change under an open
    // session (relabelling a token re-initialises it).
    checkCaToken(settings, hit.tokenLabel);
    return hit.ca;
  }
  const tokenLabel = hsm.token.label;
  const ca = signingCa(s, tokenLabel, settings, now);
  forHsm.set(settings.label, { ca, tokenLabel, at: t });
  return ca;
}

/**
 * Checks the profile's CA can sign now (key on this token, certificate stored and valid) and
 * returns its certificate: the HSM stage's and `submit`'s check before anything is signed.
 */
export async function checkSigningCa(
  hsm: Hsm,
  settings: Pick<CaSettings, 'label' | 'token'>,
  now: Date,
): Promise<{ certificatePem: string; certificateId: string; notAfter: Date }> {
  return hsm.pool.withSession((s) => {
    const ca = cachedSigningCa(hsm, s, settings, now);
    return {
      certificatePem: toPem(ca.certificate.der, 'CERTIFICATE'),
      certificateId: sha256Hex(ca.certificate.der),
      notAfter: ca.notAfter,
    };
  });
}

/**
 * A device key made in the HSM (wrapped for delivery, as for every HSM key) with a certificate
 * signed by the profile's factory CA on the same session: key pair, one CA signature, one wrap.
 * Offline: no AWS call. The CA checks of `signingCa` run before anything is made.
 */
export async function createSignedIdentity(
  hsm: Hsm,
  req: DeviceIdentityRequest,
  caReq: { settings: Pick<CaSettings, 'label' | 'token' | 'deviceValidityDays'>; now: Date },
): Promise<SignedDeviceIdentity> {
  let issuedBy: SigningCa | undefined;
  return forgetCaWhenGone(hsm, caReq.settings.label, async () => {
    const id = await hsm.createCertifiedIdentity(req, async (s, spki) => {
      const ca = cachedSigningCa(hsm, s, caReq.settings, caReq.now);
      issuedBy = ca;
      return issueCertificate(s, hsm.opsFor(ca.key.keyType), ca, {
        spki,
        subject: subjectFor(req),
        now: caReq.now,
        validityDays: caReq.settings.deviceValidityDays,
      });
    });
    const { chainPem, caCertificateId } = issuing(issuedBy!);
    const { certificateDer, ...rest } = id;
    return {
      ...rest,
      certificatePem: `${toPem(certificateDer, 'CERTIFICATE')}\n${chainPem}`,
      certificateId: sha256Hex(certificateDer),
      caCertificateId,
    };
  });
}

/** Runs `fn`; a CA key deleted under a cached entry (HSM_OBJECT_GONE) drops the entry. */
async function forgetCaWhenGone<T>(hsm: Hsm, label: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ProvlineError && e.code === 'HSM_OBJECT_GONE') caCache.get(hsm)?.delete(label);
    throw e;
  }
}

/**
 * Removes a CA from the token: its key pair and the certificate objects kept beside it (its own
 * certificate and the chain, found by label and by the key's CKA_ID). For benchmarks and tests
 * that make a CA of their own; no provline command deletes a factory CA. Returns how many
 * objects were destroyed (0 when there was no such CA).
 */
export async function destroyCa(hsm: Hsm, settings: Pick<CaSettings, 'label' | 'token'>): Promise<number> {
  return hsm.pool.withSession((s) => {
    checkCaToken(settings, hsm.token.label);
    const found = new Map<string, Buffer>();
    const add = (handles: Buffer[]): void => {
      for (const h of handles) found.set(h.toString('hex'), h);
    };
    const keys = [pkcs11js.CKO_PRIVATE_KEY, pkcs11js.CKO_PUBLIC_KEY].flatMap((cls) =>
      byLabel(s, cls, settings.label, 64),
    );
    add(keys);
    add(byLabel(s, pkcs11js.CKO_CERTIFICATE, settings.label, 64));
    for (const k of keys) {
      const id = s.attributes(k, [pkcs11js.CKA_ID], 'reading the CA key').get(pkcs11js.CKA_ID);
      if (id?.length)
        add(
          s.find(
            [
              { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE },
              { type: pkcs11js.CKA_ID, value: id },
            ],
            64,
          ),
        );
    }
    caCache.get(hsm)?.delete(settings.label);
    try {
      for (const h of found.values()) s.p.C_DestroyObject(s.handle, h);
    } catch (e) {
      throw hsmError(e, 'removing the CA');
    }
    return found.size;
  });
}

function sha256Hex(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

/**
 * A device certificate for a public key the device made itself (its CSR, read at the station),
 * signed by the factory CA, with the chain the device presents: the station's path for
 * device-generated keys on a jitp or jitr line.
 */
export async function signDeviceKey(
  hsm: Hsm,
  req: DeviceCertificateRequest,
): Promise<Pick<SignedDeviceIdentity, 'certificatePem' | 'certificateId' | 'caCertificateId'>> {
  const { der, ca } = await issueForKey(hsm, req);
  const { chainPem, caCertificateId } = issuing(ca);
  return {
    certificatePem: `${toPem(der, 'CERTIFICATE')}\n${chainPem}`,
    certificateId: sha256Hex(der),
    caCertificateId,
  };
}
