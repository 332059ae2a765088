/**
 * PKCS#10 certification requests from a DER template. Building and signing are separate: the
 * caller gets the to-be-signed bytes, signs them however it likes (in the HSM in production, a
 * software key in unit tests) and hands the signature back. DER is the source of truth.
 *
 * The encoding follows @peculiar/x509 2.2.0 exactly (PrintableString when the value allows it,
 * else UTF8String; an empty attributes [0]; ecdsa-with-SHAx without parameters), and a unit
 * test holds the two byte-identical.
 */
import { createHash } from 'node:crypto';
import { bitString, oid, seq, set, smallInteger, tlv } from '../core/index.js';
import { DIGEST_INFO_PREFIX, ecdsaRawToDer, type KeyTypeSpec } from './key-types.js';

export const SUBJECT_FIELDS = ['C', 'ST', 'L', 'O', 'OU', 'CN'] as const;
export type SubjectField = (typeof SUBJECT_FIELDS)[number];
export type CsrSubject = { CN: string } & Partial<Record<Exclude<SubjectField, 'CN'>, string>>;

const FIELD_OIDS: Record<SubjectField, Buffer> = {
  C: oid('2.5.4.6'),
  ST: oid('2.5.4.8'),
  L: oid('2.5.4.7'),
  O: oid('2.5.4.10'),
  OU: oid('2.5.4.11'),
  CN: oid('2.5.4.3'),
};

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;
/** x509's rule: PrintableString when every character allows it, else UTF8String. */
function directoryString(value: string): Buffer {
  return PRINTABLE.test(value)
    ? tlv(0x13, Buffer.from(value, 'latin1'))
    : tlv(0x0c, Buffer.from(value, 'utf8'));
}

/** The subject's RDNs in the order provline writes them (C, ST, L, O, OU, CN), one per set. */
export function subjectRdns(subject: CsrSubject): Array<[SubjectField, string]> {
  const out: Array<[SubjectField, string]> = [];
  for (const field of SUBJECT_FIELDS) {
    const value = subject[field];
    if (value !== undefined) out.push([field, value]);
  }
  return out;
}

export function encodeName(subject: CsrSubject): Buffer {
  return seq(
    ...subjectRdns(subject).map(([field, value]) => set(seq(FIELD_OIDS[field], directoryString(value)))),
  );
}

/** CertificationRequestInfo: the bytes that get signed. */
export function certificationRequestInfo(subject: CsrSubject, spki: Buffer): Buffer {
  return seq(smallInteger(0), encodeName(subject), spki, Buffer.from([0xa0, 0x00]));
}

/**
 * The signed CSR from its parts. `signature` is what goes in the BIT STRING: DER
 * ECDSA-Sig-Value for EC, the raw PKCS#1 v1.5 signature for RSA.
 */
export function certificationRequest(tbs: Buffer, spec: KeyTypeSpec, signature: Buffer): Buffer {
  return seq(tbs, spec.signatureAlgorithm, bitString(signature));
}

/**
 * What to hand a raw signing mechanism for `tbs`: the hash for CKM_ECDSA, the DigestInfo for
 * CKM_RSA_PKCS. Hashing in Node works on every HSM (SoftHSM has no CKM_ECDSA_SHA256).
 */
export function signingInput(tbs: Buffer, spec: KeyTypeSpec): Buffer {
  const digest = createHash(spec.hash).update(tbs).digest();
  return spec.family === 'ec' ? digest : Buffer.concat([DIGEST_INFO_PREFIX[spec.hash], digest]);
}

/** The BIT STRING content from a raw mechanism output (r||s for ECDSA). */
export function signatureValue(raw: Buffer, spec: KeyTypeSpec): Buffer {
  return spec.family === 'ec' ? ecdsaRawToDer(raw) : raw;
}

/** PEM exactly as @peculiar/x509 writes it (64-column lines, LF, no final newline). */
export function toPem(der: Buffer, tag = 'CERTIFICATE REQUEST'): string {
  const b64 = der.toString('base64');
  const lines = [`-----BEGIN ${tag}-----`];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  lines.push(`-----END ${tag}-----`);
  return lines.join('\n');
}

/** Signs the signing input (hash or DigestInfo) and returns the raw mechanism output. */
export type RawSigner = (input: Buffer) => Buffer | Promise<Buffer>;

export interface CsrRequest {
  subject: CsrSubject;
  spki: Buffer;
  spec: KeyTypeSpec;
}

/** Builds and signs a CSR with any raw signer (crypto passed in). Returns DER. */
export async function createCsr(req: CsrRequest, sign: RawSigner): Promise<Buffer> {
  const tbs = certificationRequestInfo(req.subject, req.spki);
  const raw = await sign(signingInput(tbs, req.spec));
  return certificationRequest(tbs, req.spec, signatureValue(raw, req.spec));
}
