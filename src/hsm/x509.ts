/**
 * X.509 v3 certificates from a DER template, for the factory CA (src/hsm/ca.ts): the CA's own
 * self-signed certificate, device certificates and AWS verification certificates. Building and
 * signing are separate, as for CSRs: `signCertificate` takes any `RawSigner` (the CA key in the
 * HSM in production, a software key in unit tests). Reading is separate too: `readCertificate`
 * walks an existing certificate's DER for the parts a CA needs (its subject bytes, key,
 * validity, key identifier, extensions). Pure byte work; the clock and the serial's randomness
 * come in as values.
 */
import { createHash } from 'node:crypto';
import {
  bitString,
  boolean,
  children,
  explicit,
  implicitConstructed,
  implicitPrimitive,
  namedBits,
  octetString,
  oid,
  oidString,
  readTlv,
  seq,
  smallInteger,
  time,
  unsignedInteger,
} from '../core/index.js';
import { signatureValue, signingInput, type RawSigner } from './csr.js';
import type { KeyTypeSpec } from './key-types.js';

export const OID = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  basicConstraints: '2.5.29.19',
  nameConstraints: '2.5.29.30',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

/** keyUsage bit numbers (RFC 5280 §4.2.1.3). */
export const KEY_USAGE = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

/** One Extension: extnID, critical (omitted when false, DER DEFAULT), extnValue. */
export function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [boolean(true)] : []), octetString(value));
}

/** basicConstraints: `cA` TRUE with an optional pathLenConstraint, or the empty SEQUENCE (cA FALSE). */
export function basicConstraints(ca: boolean, pathLen?: number): Buffer {
  if (!ca) return extension(OID.basicConstraints, true, seq());
  const body = [boolean(true)];
  if (pathLen !== undefined) body.push(unsignedInteger(Buffer.from([pathLen])));
  return extension(OID.basicConstraints, true, seq(...body));
}

export function keyUsage(bits: readonly number[]): Buffer {
  return extension(OID.keyUsage, true, namedBits(bits));
}

export function clientAuthUsage(): Buffer {
  return extension(OID.extKeyUsage, false, seq(oid(OID.clientAuth)));
}

export function subjectKeyIdentifier(keyId: Buffer): Buffer {
  return extension(OID.subjectKeyIdentifier, false, octetString(keyId));
}

export function authorityKeyIdentifier(keyId: Buffer): Buffer {
  return extension(OID.authorityKeyIdentifier, false, seq(implicitPrimitive(0, keyId)));
}

/**
 * nameConstraints with permitted directoryName subtrees only (each an encoded Name). Critical,
 * as RFC 5280 §4.2.1.10 requires. A device subject must start with one of the subtrees' RDNs.
 */
export function nameConstraints(permittedNames: readonly Buffer[]): Buffer {
  const subtrees = permittedNames.map((name) => seq(explicit(4, name)));
  return extension(OID.nameConstraints, true, seq(implicitConstructed(0, Buffer.concat(subtrees))));
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's bits. */
export function keyIdentifier(spki: Buffer): Buffer {
  const [, key] = children(readTlv(spki).content);
  return createHash('sha1').update(key!.content.subarray(1)).digest();
}

/**
 * A serial number from 16 random bytes: positive (top bit clear) with the next bit set, so it
 * always has 127 bits (≥ 64 as CA/B and AWS practice ask), is DER-minimal and fits RFC 5280's
 * 20 octets.
 */
export function serialFromRandom(random: Buffer): Buffer {
  if (random.length < 16) throw new RangeError('a serial needs 16 random bytes');
  const serial = Buffer.from(random.subarray(0, 16));
  serial[0] = (serial[0]! & 0x3f) | 0x40;
  return serial;
}

export interface TbsRequest {
  serial: Buffer;
  /** Signature algorithm of the issuer's key (KeyTypeSpec.signatureAlgorithm). */
  signatureAlgorithm: Buffer;
  /** DER Names; the issuer's exactly as it is in the issuer's own certificate. */
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  extensions: readonly Buffer[];
}

/** TBSCertificate, version 3. */
export function tbsCertificate(r: TbsRequest): Buffer {
  return seq(
    explicit(0, smallInteger(2)),
    unsignedInteger(r.serial),
    r.signatureAlgorithm,
    r.issuer,
    seq(time(r.notBefore), time(r.notAfter)),
    r.subject,
    r.spki,
    explicit(3, seq(...r.extensions)),
  );
}

/** Signs a TBSCertificate with the issuer's key (crypto passed in); returns the certificate DER. */
export async function signCertificate(tbs: Buffer, spec: KeyTypeSpec, sign: RawSigner): Promise<Buffer> {
  const raw = await sign(signingInput(tbs, spec));
  return seq(tbs, spec.signatureAlgorithm, bitString(signatureValue(raw, spec)));
}

export interface ParsedExtension {
  critical: boolean;
  /** The extnValue OCTET STRING's content. */
  value: Buffer;
}

/** What the factory CA reads from a certificate's DER. */
export interface CertificateParts {
  der: Buffer;
  serial: Buffer;
  issuer: Buffer;
  subject: Buffer;
  spki: Buffer;
  extensions: Map<string, ParsedExtension>;
}

/** Walks a certificate's DER. Throws on anything that is not an X.509 v3-shaped certificate. */
export function readCertificate(der: Buffer): CertificateParts {
  const outer = readTlv(der);
  if (outer.tag !== 0x30) throw new Error('not a certificate (no outer SEQUENCE)');
  const [tbs] = children(outer.content);
  if (!tbs || tbs.tag !== 0x30) throw new Error('not a certificate (no TBSCertificate)');
  const fields = children(tbs.content);
  const at = fields[0]?.tag === 0xa0 ? 1 : 0;
  const [serial, , issuer, , subject, spki] = fields.slice(at);
  if (!serial || !issuer || !subject || !spki)
    throw new Error('not a certificate (TBSCertificate too short)');
  const extensions = new Map<string, ParsedExtension>();
  const extField = fields.find((f) => f.tag === 0xa3);
  if (extField) {
    const [list] = children(extField.content);
    for (const e of children(list?.content ?? Buffer.alloc(0))) {
      const parts = children(e.content);
      const id = oidString(parts[0]!.content);
      const critical = parts.length === 3 && parts[1]!.tag === 0x01 && parts[1]!.content[0] !== 0;
      extensions.set(id, { critical, value: parts[parts.length - 1]!.content });
    }
  }
  return {
    der,
    serial: serial.content,
    issuer: issuer.der,
    subject: subject.der,
    spki: spki.der,
    extensions,
  };
}

/** The keyIdentifier of a subjectKeyIdentifier extension, if the certificate has one. */
export function subjectKeyIdentifierOf(parts: CertificateParts): Buffer | undefined {
  const e = parts.extensions.get(OID.subjectKeyIdentifier);
  return e ? readTlv(e.value).content : undefined;
}

/** The named bits set in a keyUsage extension (undefined when absent). */
export function keyUsageBitsOf(parts: CertificateParts): number[] | undefined {
  const e = parts.extensions.get(OID.keyUsage);
  if (!e) return undefined;
  const bits = readTlv(e.value).content;
  const out: number[] = [];
  for (let i = 0; i < (bits.length - 1) * 8; i++)
    if (bits[1 + Math.floor(i / 8)]! & (0x80 >> (i % 8))) out.push(i);
  return out;
}

/** The permitted directoryName subtrees of a nameConstraints extension (encoded Names). */
export function permittedNamesOf(parts: CertificateParts): Buffer[] {
  const e = parts.extensions.get(OID.nameConstraints);
  if (!e) return [];
  const permitted = children(readTlv(e.value).content).find((c) => c.tag === 0xa0);
  if (!permitted) return [];
  return children(permitted.content)
    .map((subtree) => children(subtree.content)[0])
    .filter((base) => base?.tag === 0xa4)
    .map((base) => children(base!.content)[0]!.der);
}

/**
 * Whether `subject` lies in the directoryName subtree `base` (RFC 5280 §7.1, simplified to
 * what provline writes: the same RDN encodings, compared as a prefix of the subject's RDNs).
 */
export function withinSubtree(subject: Buffer, base: Buffer): boolean {
  const s = children(readTlv(subject).content);
  const b = children(readTlv(base).content);
  return b.length <= s.length && b.every((rdn, i) => rdn.der.equals(s[i]!.der));
}
