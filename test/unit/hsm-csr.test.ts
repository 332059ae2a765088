// The DER-template CSR must be byte-identical to @peculiar/x509's for the same inputs, so the
// fast path is a pure optimisation. Signatures are faked deterministically (x509 only formats
// what the signer returns), then one real RSA software signature is checked end to end.
import 'reflect-metadata';
import {
  constants,
  createHash,
  createPublicKey,
  generateKeyPairSync,
  privateEncrypt,
  type KeyObject,
  type webcrypto,
} from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { describe, expect, it } from 'vitest';
import {
  certificationRequestInfo,
  createCsr,
  subjectRdns,
  toPem,
  type CsrSubject,
} from '../../src/hsm/csr.js';
import { KEY_TYPE_SPECS, ecdsaRawToDer, ecSpki, rsaSpki } from '../../src/hsm/key-types.js';
import type { KeyType } from '../../src/config/schema.js';

const ALGS: Record<
  KeyType,
  {
    key: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams;
    sign: { name: string; hash?: string };
  }
> = {
  'P-256': { key: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  'P-384': { key: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  'RSA-2048': {
    key: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  },
};

/** The SPKI our code would build from the HSM attributes of this software key. */
function spkiFromAttributes(keyType: KeyType, pub: KeyObject): Buffer {
  const spec = KEY_TYPE_SPECS[keyType];
  const jwk = pub.export({ format: 'jwk' });
  if (spec.family === 'ec') {
    const point = Buffer.concat([
      Buffer.from([4]),
      Buffer.from(jwk.x!, 'base64url'),
      Buffer.from(jwk.y!, 'base64url'),
    ]);
    return ecSpki(spec, Buffer.concat([Buffer.from([0x04, point.length]), point])); // CKA_EC_POINT form
  }
  return rsaSpki(Buffer.from(jwk.n!, 'base64url'), Buffer.from(jwk.e!, 'base64url'));
}

/** A deterministic "raw signature" whose halves start with 0x00 and 0xff: exercises padding. */
function fakeRaw(keyType: KeyType, input: Buffer): Buffer {
  const n = KEY_TYPE_SPECS[keyType].signatureBytes;
  const raw = Buffer.alloc(n);
  for (let i = 0; i < n; i++) raw[i] = input[i % input.length]! ^ i;
  raw[0] = 0;
  raw[1] = 0x05;
  raw[n / 2] = 0xff;
  return raw;
}

async function x509Csr(
  keyType: KeyType,
  subject: CsrSubject,
  spki: Buffer,
  rawSig: (tbs: Buffer) => Buffer,
): Promise<x509.Pkcs10CertificateRequest> {
  const alg = ALGS[keyType];
  const name: x509.JsonName = subjectRdns(subject).map(([f, v]) => ({ [f]: [v] }));
  const crypto = {
    subtle: {
      exportKey: () => Promise.resolve(new Uint8Array(spki).buffer),
      sign: (_a: unknown, _k: unknown, tbs: ArrayBuffer) =>
        Promise.resolve(new Uint8Array(rawSig(Buffer.from(tbs))).buffer),
    },
  } as unknown as webcrypto.Crypto;
  const keys = {
    publicKey: { algorithm: alg.key },
    privateKey: { algorithm: alg.key },
  } as unknown as webcrypto.CryptoKeyPair;
  return x509.Pkcs10CertificateRequestGenerator.create({ name, keys, signingAlgorithm: alg.sign }, crypto);
}

const keys = {
  'P-256': generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  'P-384': generateKeyPairSync('ec', { namedCurve: 'P-384' }),
  'RSA-2048': generateKeyPairSync('rsa', { modulusLength: 2048 }),
} satisfies Record<KeyType, unknown>;

describe('DER-template CSR', () => {
  const subjects: CsrSubject[] = [
    { CN: 'SN0001' },
    { CN: 'sensor_SN-0001:a', O: 'Acme Devices', OU: 'Line 3', C: 'DE', ST: 'Bayern', L: 'München' },
    { CN: 'x'.repeat(128) },
  ];
  for (const keyType of Object.keys(keys) as KeyType[]) {
    for (const subject of subjects) {
      it(`is byte-identical to @peculiar/x509 for ${keyType}, subject ${JSON.stringify(subject).slice(0, 40)}`, async () => {
        const spec = KEY_TYPE_SPECS[keyType];
        const spki = spkiFromAttributes(keyType, keys[keyType].publicKey);
        expect(spki.equals(keys[keyType].publicKey.export({ format: 'der', type: 'spki' }))).toBe(true);
        const ours = await createCsr({ subject, spki, spec }, (input) => fakeRaw(keyType, input));
        // x509 hands its signer the TBS; we feed it the same fake over the same signing input.
        const theirs = await x509Csr(keyType, subject, spki, (tbs) => {
          expect(tbs.equals(certificationRequestInfo(subject, spki))).toBe(true);
          const digest = createHash(spec.hash).update(tbs).digest();
          const input =
            spec.family === 'ec'
              ? digest
              : Buffer.concat([
                  Buffer.from(spec.hash === 'sha256' ? '3031300d060960864801650304020105000420' : '', 'hex'),
                  digest,
                ]);
          return fakeRaw(keyType, input);
        });
        expect(Buffer.from(theirs.rawData).toString('hex')).toBe(ours.toString('hex'));
        expect(theirs.toString('pem')).toBe(toPem(ours));
      });
    }
  }

  it('produces a CSR whose RSA signature verifies (real software key as the signer)', async () => {
    const spec = KEY_TYPE_SPECS['RSA-2048'];
    const spki = spkiFromAttributes('RSA-2048', keys['RSA-2048'].publicKey);
    const der = await createCsr({ subject: { CN: 'SN-rsa', O: 'Acme' }, spki, spec }, (digestInfo) =>
      privateEncrypt({ key: keys['RSA-2048'].privateKey, padding: constants.RSA_PKCS1_PADDING }, digestInfo),
    );
    const csr = new x509.Pkcs10CertificateRequest(der);
    expect(csr.subject).toBe('O=Acme, CN=SN-rsa');
    expect(await csr.verify()).toBe(true);
    expect(
      createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' }).equals(
        keys['RSA-2048'].publicKey,
      ),
    ).toBe(true);
  });

  it('encodes ECDSA r||s as minimal DER integers', () => {
    const raw = Buffer.concat([Buffer.alloc(31), Buffer.from([1]), Buffer.from([0x80]), Buffer.alloc(31, 7)]);
    expect(ecdsaRawToDer(raw).toString('hex')).toBe(`3026020101022100${'80' + '07'.repeat(31)}`);
  });
});
