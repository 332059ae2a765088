/**
 * What each device key type means in PKCS#11 and in X.509: curve parameters, the CSR signature
 * algorithm, the hash done in Node, and how the SPKI is built from the HSM's public attributes.
 * Pure data and byte work.
 */
import type { KeyType } from '../config/index.js';
import {
  bitString,
  NULL,
  octetString,
  oid,
  readTlv,
  seq,
  smallInteger,
  unsignedInteger,
} from '../core/index.js';

export interface KeyTypeSpec {
  keyType: KeyType;
  family: 'ec' | 'rsa';
  /** Node hash name for the CSR signature. */
  hash: 'sha256' | 'sha384';
  /** DER AlgorithmIdentifier of the CSR signature. */
  signatureAlgorithm: Buffer;
  /** Upper bound of the raw signature from the HSM (r||s for ECDSA). */
  signatureBytes: number;
  /** Upper bound of the wrapped PKCS#8 (RFC 5649 blob). */
  wrappedBytes: number;
  /** EC only: DER of the named-curve OID (CKA_EC_PARAMS) and the field size in bytes. */
  ecParams?: Buffer;
  fieldBytes?: number;
  /** RSA only. */
  modulusBits?: number;
}

const EC_PUBLIC_KEY = oid('1.2.840.10045.2.1');
const RSA_ENCRYPTION = oid('1.2.840.113549.1.1.1');

export const KEY_TYPE_SPECS: Record<KeyType, KeyTypeSpec> = {
  'P-256': {
    keyType: 'P-256',
    family: 'ec',
    hash: 'sha256',
    signatureAlgorithm: seq(oid('1.2.840.10045.4.3.2')), // ecdsa-with-SHA256, no parameters
    signatureBytes: 64,
    wrappedBytes: 256,
    ecParams: oid('1.2.840.10045.3.1.7'), // prime256v1
    fieldBytes: 32,
  },
  'P-384': {
    keyType: 'P-384',
    family: 'ec',
    hash: 'sha384',
    signatureAlgorithm: seq(oid('1.2.840.10045.4.3.3')), // ecdsa-with-SHA384
    signatureBytes: 96,
    wrappedBytes: 256,
    ecParams: oid('1.3.132.0.34'), // secp384r1
    fieldBytes: 48,
  },
  'RSA-2048': {
    keyType: 'RSA-2048',
    family: 'rsa',
    hash: 'sha256',
    signatureAlgorithm: seq(oid('1.2.840.113549.1.1.11'), NULL), // sha256WithRSAEncryption
    signatureBytes: 256,
    wrappedBytes: 2048,
    modulusBits: 2048,
  },
};

export const RSA_PUBLIC_EXPONENT = Buffer.from([0x01, 0x00, 0x01]);

/** DigestInfo prefixes for RSA PKCS#1 v1.5 over a hash computed in Node (RFC 8017 §9.2). */
export const DIGEST_INFO_PREFIX: Record<'sha256' | 'sha384', Buffer> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
};

/**
 * SPKI of an EC key from CKA_EC_POINT. PKCS#11 says the point is a DER OCTET STRING around
 * the uncompressed point (04|X|Y); a few modules return the bare point, so both are accepted.
 */
export function ecSpki(spec: KeyTypeSpec, ecPoint: Buffer): Buffer {
  const pointLen = 1 + 2 * spec.fieldBytes!;
  let point = ecPoint;
  if (ecPoint.length !== pointLen) point = readTlv(ecPoint).content;
  if (point.length !== pointLen || point[0] !== 0x04)
    throw new Error(`unexpected EC point of ${ecPoint.length} bytes`);
  return seq(seq(EC_PUBLIC_KEY, spec.ecParams!), bitString(point));
}

/** SPKI of an RSA key from CKA_MODULUS and CKA_PUBLIC_EXPONENT. */
export function rsaSpki(modulus: Buffer, exponent: Buffer): Buffer {
  return seq(seq(RSA_ENCRYPTION, NULL), bitString(seq(unsignedInteger(modulus), unsignedInteger(exponent))));
}

/**
 * PKCS#8 of an EC private scalar, in the shape SoftHSM wraps (RFC 5915 ECPrivateKey with no
 * optional fields; consumers derive the public key).
 */
export function ecPkcs8(spec: KeyTypeSpec, d: Buffer): Buffer {
  const size = spec.fieldBytes!;
  const scalar =
    d.length >= size ? d.subarray(d.length - size) : Buffer.concat([Buffer.alloc(size - d.length), d]);
  return seq(
    smallInteger(0),
    seq(EC_PUBLIC_KEY, spec.ecParams!),
    octetString(seq(smallInteger(1), octetString(scalar))),
  );
}

/** ECDSA raw r||s (what CKM_ECDSA returns) to a DER ECDSA-Sig-Value. */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  const half = raw.length / 2;
  return seq(unsignedInteger(raw.subarray(0, half)), unsignedInteger(raw.subarray(half)));
}
