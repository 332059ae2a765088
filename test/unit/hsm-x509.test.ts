// The certificate DER template of the factory CA, with software keys standing in for the HSM
// (crypto passed in): Node's X509Certificate parses and verifies what it builds; the edge
// cases of time, named bits and serials are pinned byte for byte; the profile's ca settings
// are checked with every problem reported.
import { X509Certificate, generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CaSettingsSchema, type KeyType } from '../../src/config/schema.js';
import { namedBits, time } from '../../src/core/der.js';
import { encodeName, signingInput } from '../../src/hsm/csr.js';
import { KEY_TYPE_SPECS } from '../../src/hsm/key-types.js';
import {
  KEY_USAGE,
  authorityKeyIdentifier,
  basicConstraints,
  keyIdentifier,
  keyUsage,
  keyUsageBitsOf,
  permittedNamesOf,
  nameConstraints,
  readCertificate,
  serialFromRandom,
  signCertificate,
  subjectKeyIdentifier,
  subjectKeyIdentifierOf,
  tbsCertificate,
  withinSubtree,
  type TbsRequest,
} from '../../src/hsm/x509.js';

/**
 * A software key standing in for the HSM. `signer(tbs)` is a RawSigner for that TBS: it checks
 * that it is handed what the HSM would get (the hash, or the DigestInfo) and returns what the
 * HSM's raw mechanism would (r||s, or the PKCS#1 v1.5 signature).
 */
function softwareKey(keyType: KeyType) {
  const { privateKey, publicKey } =
    keyType === 'RSA-2048'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: keyType });
  const spec = KEY_TYPE_SPECS[keyType];
  const signer =
    (tbs: Buffer) =>
    (input: Buffer): Buffer => {
      expect(input).toEqual(signingInput(tbs, spec));
      return cryptoSign(spec.hash, tbs, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    };
  return { spki: publicKey.export({ format: 'der', type: 'spki' }), signer, spec, publicKey };
}

/** Builds and signs a certificate with a software key. */
function signed(key: ReturnType<typeof softwareKey>, req: TbsRequest): Promise<Buffer> {
  const tbs = tbsCertificate(req);
  return signCertificate(tbs, key.spec, key.signer(tbs));
}

describe('x509 DER template', () => {
  it('time(): UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5)', () => {
    expect(time(new Date('2049-12-31T23:59:59Z')).toString('latin1')).toBe('\x17\x0d491231235959Z');
    expect(time(new Date('2050-01-01T00:00:00Z')).toString('latin1')).toBe('\x18\x0f20500101000000Z');
  });

  it('namedBits(): trailing zero bits dropped and counted (X.690 §11.2.2)', () => {
    expect(namedBits([KEY_USAGE.digitalSignature]).toString('hex')).toBe('03020780');
    expect(namedBits([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign]).toString('hex')).toBe('03020106');
  });

  it('serialFromRandom(): positive, DER-minimal, always 127 bits, whatever the random bytes', () => {
    for (const fill of [0x00, 0xff, 0x80, 0x3f]) {
      const serial = serialFromRandom(Buffer.alloc(16, fill));
      expect(serial.length).toBe(16);
      expect(serial[0]! & 0x80).toBe(0);
      expect(serial[0]! & 0x40).toBe(0x40);
    }
  });

  for (const keyType of ['P-256', 'P-384', 'RSA-2048'] as const) {
    it(`${keyType}: a CA certificate and a leaf it signs parse and verify in Node, with the extensions read back`, async () => {
      const ca = softwareKey(keyType);
      const caName = encodeName({ O: 'Acme', CN: 'Acme CA' });
      const caId = keyIdentifier(ca.spki);
      const caDer = await signed(ca, {
        serial: serialFromRandom(Buffer.alloc(16, 7)),
        signatureAlgorithm: ca.spec.signatureAlgorithm,
        issuer: caName,
        subject: caName,
        notBefore: new Date('2026-01-01T00:00:00Z'),
        notAfter: new Date('2056-01-01T00:00:00Z'),
        spki: ca.spki,
        extensions: [
          basicConstraints(true, 0),
          keyUsage([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign]),
          subjectKeyIdentifier(caId),
          authorityKeyIdentifier(caId),
          nameConstraints([encodeName({ O: 'Acme' } as never)]),
        ],
      });
      const caCert = new X509Certificate(caDer);
      expect(caCert.ca).toBe(true);
      expect(caCert.verify(ca.publicKey)).toBe(true);
      expect(caCert.validTo).toBe('Jan  1 00:00:00 2056 GMT');
      const parts = readCertificate(caDer);
      expect(parts.subject).toEqual(caName);
      expect(parts.spki).toEqual(ca.spki);
      expect(keyUsageBitsOf(parts)).toEqual([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign]);
      expect(subjectKeyIdentifierOf(parts)).toEqual(caId);
      expect(permittedNamesOf(parts)).toEqual([encodeName({ O: 'Acme' } as never)]);

      const leaf = softwareKey('P-256');
      const leafDer = await signed(ca, {
        serial: serialFromRandom(Buffer.alloc(16, 9)),
        signatureAlgorithm: ca.spec.signatureAlgorithm,
        issuer: parts.subject,
        subject: encodeName({ O: 'Acme', CN: 'thing-1' }),
        notBefore: new Date('2026-01-01T00:00:00Z'),
        notAfter: new Date('2027-01-01T00:00:00Z'),
        spki: leaf.spki,
        extensions: [
          basicConstraints(false),
          keyUsage([KEY_USAGE.digitalSignature]),
          authorityKeyIdentifier(caId),
        ],
      });
      const leafCert = new X509Certificate(leafDer);
      expect(leafCert.ca).toBe(false);
      expect(leafCert.checkIssued(caCert)).toBe(true);
      expect(leafCert.verify(ca.publicKey)).toBe(true);
      expect(withinSubtree(readCertificate(leafDer).subject, permittedNamesOf(parts)[0]!)).toBe(true);
      expect(withinSubtree(encodeName({ O: 'Other', CN: 'x' }), permittedNamesOf(parts)[0]!)).toBe(false);
    });
  }
});

describe('profile ca settings', () => {
  it('defaults apply; a missing CN, a bad key type and an unknown option are all reported', () => {
    const ok = CaSettingsSchema.parse({ label: 'acme-ca', subject: { CN: 'Acme CA' } });
    expect(ok).toMatchObject({ keyType: 'P-256', validityDays: 7300, deviceValidityDays: 3650 });
    const bad = CaSettingsSchema.safeParse({
      label: 'x',
      keyType: 'P-521',
      subject: { O: 'Acme' },
      pathlen: 0,
    });
    expect(bad.success).toBe(false);
    const paths = bad.error!.issues.map((i) => i.path.join('.') || i.message).sort();
    expect(paths).toEqual(['Unrecognized key: "pathlen"', 'keyType', 'subject']);
  });
});
