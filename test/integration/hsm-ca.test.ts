/**
 * The factory CA in real SoftHSM2 (a fresh token in this file's own home): the CA key pair as
 * non-extractable token objects, its self-signed certificate, device and verification
 * certificates signed by it in the HSM, every certificate checked by OpenSSL; an offline-root
 * CSR and import; and the checks that refuse to sign (missing key, other token, expired, not
 * yet valid, outside the name constraints).
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaSettings, KeyType } from '../../src/config/schema.js';
import { ProvlineError } from '../../src/core/errors.js';
import {
  createCa,
  describeCa,
  destroyCa,
  findCaKey,
  importCaCertificate,
  signDeviceCertificate,
  signVerificationCertificate,
  storeCaCertificates,
} from '../../src/hsm/ca.js';
import { openHsm, type Hsm } from '../../src/hsm/hsm.js';
import { stackPaths } from '../../src/stack/home.js';
import { hsmUp, SOFTHSM_MODULE } from '../../src/stack/softhsm.js';
import { removeHome, tempDir } from '../helpers/home.js';

function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

async function caught(p: Promise<unknown>): Promise<ProvlineError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ProvlineError) return e;
    throw e;
  }
  throw new Error('expected a ProvlineError');
}

const DAY = 86_400_000;

function caSettings(label: string, keyType: KeyType, extra: Partial<CaSettings> = {}): CaSettings {
  return {
    label,
    keyType,
    validityDays: 3650,
    deviceValidityDays: 365,
    subject: { C: 'DE', O: 'Acme Sensors', CN: `${label} factory CA` },
    ...extra,
  };
}

function spkiOf(keyType: KeyType): Buffer {
  const { publicKey } =
    keyType === 'RSA-2048'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: keyType === 'P-384' ? 'P-384' : 'P-256' });
  return publicKey.export({ format: 'der', type: 'spki' });
}

describe('factory CA on SoftHSM2', () => {
  let home: string;
  let dir: string;
  let hsm: Hsm;

  beforeAll(async () => {
    home = tempDir('provline-hsm-ca-');
    dir = tempDir('provline-hsm-ca-out-');
    const paths = stackPaths(home);
    hsmUp(paths);
    hsm = await openHsm({
      module: SOFTHSM_MODULE,
      token: 'provline',
      pinFile: paths.userPinFile,
      localToken: true,
      pinEnv: 'PROVLINE_TEST_UNSET_PIN',
      sessions: 2,
      softhsm2Conf: paths.softhsm2Conf,
    });
  });
  afterAll(async () => {
    hsm?.close();
    await removeHome(home);
  });

  for (const keyType of ['P-256', 'RSA-2048'] as const) {
    it(`${keyType}: openssl verifies device certificates signed by the HSM CA; extensions as specified; random serials of at least 64 bits`, async () => {
      const now = new Date();
      const settings = caSettings(`ca-${keyType}`, keyType, { pathLen: 0 });
      const made = await createCa(hsm, { settings, now, csr: false });
      expect(made.uri).toMatch(
        new RegExp(`^pkcs11:token=provline;object=ca-${keyType};id=(%[0-9A-F]{2}){16};type=private$`),
      );
      const caFile = join(dir, `${keyType}-ca.pem`);
      writeFileSync(caFile, `${made.certificatePem!}\n`);
      const caText = openssl(['x509', '-in', caFile, '-noout', '-text']);
      expect(caText).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
      expect(caText).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
      expect(caText).toContain('X509v3 Subject Key Identifier');
      expect(caText).toContain('X509v3 Authority Key Identifier');
      // Self-signed: OpenSSL verifies it against itself.
      expect(openssl(['verify', '-CAfile', caFile, caFile])).toContain('OK');

      const serials: string[] = [];
      for (const serial of ['SN-1', 'SN-2']) {
        const pem = await signDeviceCertificate(hsm, {
          ca: settings,
          spki: spkiOf('P-256'),
          subject: { C: 'DE', O: 'Acme Sensors', CN: `thing-${serial}` },
          now,
        });
        const file = join(dir, `${keyType}-${serial}.pem`);
        writeFileSync(file, `${pem}\n`);
        expect(openssl(['verify', '-CAfile', caFile, '-purpose', 'sslclient', file])).toContain(
          `${file}: OK`,
        );
        const text = openssl(['x509', '-in', file, '-noout', '-text']);
        expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
        expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
        expect(text).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Client Authentication\n/);
        expect(text).toContain('X509v3 Subject Key Identifier');
        expect(text).toContain(keyType === 'RSA-2048' ? 'sha256WithRSAEncryption' : 'ecdsa-with-SHA256');
        const x = new X509Certificate(pem);
        expect(x.subject).toBe(`C=DE\nO=Acme Sensors\nCN=thing-${serial}`);
        expect(x.issuer).toBe(new X509Certificate(made.certificatePem!).subject);
        expect(new Date(x.validTo).getTime() - now.getTime()).toBeGreaterThan(364 * DAY);
        serials.push(x.serialNumber);
      }
      expect(serials[0]).not.toBe(serials[1]);
      for (const s of serials) expect(BigInt(`0x${s}`)).toBeGreaterThanOrEqual(1n << 64n);
    });
  }

  it('the CA private key is a token object, sensitive, never extractable; wrapping it and reading CKA_VALUE both fail', async () => {
    await createCa(hsm, { settings: caSettings('ca-export', 'P-256'), now: new Date(), csr: false });
    await hsm.pool.withSession((s) => {
      const key = findCaKey(s, 'provline', 'ca-export')!;
      const attrs = s.attributes(key.privateKey, [
        pkcs11js.CKA_TOKEN,
        pkcs11js.CKA_SENSITIVE,
        pkcs11js.CKA_EXTRACTABLE,
        pkcs11js.CKA_SIGN,
        pkcs11js.CKA_ID,
        pkcs11js.CKA_LABEL,
      ]);
      expect(attrs.get(pkcs11js.CKA_TOKEN)![0]).toBe(1);
      expect(attrs.get(pkcs11js.CKA_SENSITIVE)![0]).toBe(1);
      expect(attrs.get(pkcs11js.CKA_EXTRACTABLE)![0]).toBe(0);
      expect(attrs.get(pkcs11js.CKA_SIGN)![0]).toBe(1);
      expect(attrs.get(pkcs11js.CKA_ID)!.length).toBe(16);
      expect(attrs.get(pkcs11js.CKA_LABEL)!.toString()).toBe('ca-export');
      // A wrapping key the caller controls: the CA key still must not leave.
      const wrapper = s.p.C_GenerateKey(s.handle, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
        { type: pkcs11js.CKA_TOKEN, value: false },
        { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
        { type: pkcs11js.CKA_WRAP, value: true },
      ]);
      let wrapCode: number | undefined;
      try {
        s.p.C_WrapKey(
          s.handle,
          { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD },
          wrapper,
          key.privateKey,
          Buffer.alloc(512),
        );
      } catch (e) {
        wrapCode = (e as pkcs11js.Pkcs11Error).code;
      }
      expect(wrapCode).toBe(pkcs11js.CKR_KEY_UNEXTRACTABLE);
      let readCode: number | undefined;
      try {
        s.p.C_GetAttributeValue(s.handle, key.privateKey, [{ type: pkcs11js.CKA_VALUE }]);
      } catch (e) {
        readCode = (e as pkcs11js.Pkcs11Error).code;
      }
      expect(readCode).toBe(pkcs11js.CKR_ATTRIBUTE_SENSITIVE);
      s.p.C_DestroyObject(s.handle, wrapper);
    });
  });

  it("the CA of another profile cannot sign: a label not on the token is CA_KEY_NOT_FOUND, another token's CA is CA_WRONG_TOKEN, both before any signing", async () => {
    const req = { spki: spkiOf('P-256'), subject: { CN: 'x' }, now: new Date() };
    await createCa(hsm, { settings: caSettings('product-a-ca', 'P-256'), now: req.now, csr: false });
    const missing = await caught(
      signDeviceCertificate(hsm, { ...req, ca: caSettings('other-product-ca', 'P-256') }),
    );
    expect(missing.code).toBe('CA_KEY_NOT_FOUND');
    expect(missing.message).toContain('"other-product-ca"');
    expect(missing.message).toContain('"provline"');
    const wrongToken = await caught(
      signDeviceCertificate(hsm, { ...req, ca: caSettings('product-a-ca', 'P-256', { token: 'line-7' }) }),
    );
    expect(wrongToken.code).toBe('CA_WRONG_TOKEN');
    expect(wrongToken.details).toMatchObject({ token: 'provline', expectedToken: 'line-7' });
    const again = await caught(
      createCa(hsm, { settings: caSettings('product-a-ca', 'P-256'), now: new Date(), csr: false }),
    );
    expect(again.code).toBe('CA_EXISTS');
  });

  it('an expired or not-yet-valid CA refuses to sign (CA_EXPIRED, CA_NOT_YET_VALID)', async () => {
    const settings = caSettings('ca-short', 'P-256', { validityDays: 10 });
    const made = new Date('2030-01-01T00:00:00Z');
    await createCa(hsm, { settings, now: made, csr: false });
    const req = { ca: settings, spki: spkiOf('P-256'), subject: { CN: 'x' } };
    const early = await caught(signDeviceCertificate(hsm, { ...req, now: new Date('2029-12-01T00:00:00Z') }));
    expect(early.code).toBe('CA_NOT_YET_VALID');
    const late = await caught(signDeviceCertificate(hsm, { ...req, now: new Date('2030-02-01T00:00:00Z') }));
    expect(late.code).toBe('CA_EXPIRED');
    expect(late.details.notAfter).toBe('2030-01-11T00:00:00.000Z');
    // Within its validity it signs, and the device certificate ends with the CA.
    const pem = await signDeviceCertificate(hsm, { ...req, now: new Date('2030-01-05T00:00:00Z') });
    expect(new Date(new X509Certificate(pem).validTo).toISOString()).toBe('2030-01-11T00:00:00.000Z');
  });

  it('name constraints: the CA certificate carries them, a subject outside is refused (CA_SUBJECT_NOT_PERMITTED), one inside verifies', async () => {
    const settings = caSettings('ca-constrained', 'P-256', {
      nameConstraints: { permitted: [{ C: 'DE', O: 'Acme Sensors' }] },
    });
    const made = await createCa(hsm, { settings, now: new Date(), csr: false });
    const caFile = join(dir, 'constrained-ca.pem');
    writeFileSync(caFile, `${made.certificatePem!}\n`);
    expect(openssl(['x509', '-in', caFile, '-noout', '-text'])).toMatch(
      /X509v3 Name Constraints: critical\s+Permitted:\s+DirName:C = DE, O = Acme Sensors/,
    );
    const base = { ca: settings, spki: spkiOf('P-256'), now: new Date() };
    const outside = await caught(signDeviceCertificate(hsm, { ...base, subject: { O: 'Other', CN: 'x' } }));
    expect(outside.code).toBe('CA_SUBJECT_NOT_PERMITTED');
    const pem = await signDeviceCertificate(hsm, {
      ...base,
      subject: { C: 'DE', O: 'Acme Sensors', CN: 'in-1' },
    });
    const file = join(dir, 'constrained-leaf.pem');
    writeFileSync(file, `${pem}\n`);
    expect(openssl(['verify', '-CAfile', caFile, file])).toContain('OK');
  });

  it('a verification certificate has CN = the registration code, is signed by the CA, and leaves no key objects behind', async () => {
    const code = 'ab'.repeat(32);
    const count = (): Promise<number> =>
      hsm.pool.withSession(
        (s) => s.find([{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }], 1000).length,
      );
    const settings = caSettings('ca-verification', 'P-256');
    await createCa(hsm, { settings, now: new Date(), csr: false });
    const before = await count();
    const pem = await signVerificationCertificate(hsm, {
      ca: settings,
      registrationCode: code,
      now: new Date(),
    });
    const ca = await describeCa(hsm, settings, new Date());
    const v = new X509Certificate(pem);
    expect(v.subject).toBe(`CN=${code}`);
    expect(v.checkIssued(new X509Certificate(ca.certificatePem))).toBe(true);
    expect(v.verify(new X509Certificate(ca.certificatePem).publicKey)).toBe(true);
    expect(await count()).toBe(before);
  });

  it('offline root: ca create writes a CSR; import-cert takes the signed intermediate with its chain, refuses a certificate for another key or without CA:TRUE', async () => {
    const settings = caSettings('ca-intermediate', 'P-384');
    const made = await createCa(hsm, { settings, now: new Date(), csr: true });
    expect(made.certificatePem).toBeUndefined();
    const csrFile = join(dir, 'intermediate.csr');
    writeFileSync(csrFile, `${made.csrPem!}\n`);
    expect(openssl(['req', '-in', csrFile, '-verify', '-noout'])).toBe('');
    // Before the import the CA cannot sign.
    const early = await caught(
      signDeviceCertificate(hsm, {
        ca: settings,
        spki: spkiOf('P-256'),
        subject: { CN: 'x' },
        now: new Date(),
      }),
    );
    expect(early.code).toBe('CA_CERT_NOT_FOUND');

    // The offline root: an OpenSSL key and self-signed certificate in files (a test stand-in
    // for the air-gapped root).
    const rootKey = join(dir, 'root.key');
    const rootCert = join(dir, 'root.pem');
    openssl([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      rootKey,
      '-out',
      rootCert,
      '-subj',
      '/O=Acme/CN=Acme offline root',
      '-days',
      '30',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    /** The root signs the HSM's CSR with the extensions in `ext` (openssl -extfile syntax). */
    const rootSigns = (name: string, ext: string): string => {
      const extFile = join(dir, `${name}.ext`);
      const out = join(dir, `${name}.pem`);
      writeFileSync(extFile, ext);
      const args = ['-CA', rootCert, '-CAkey', rootKey, '-CAcreateserial', '-days', '20'];
      openssl(['x509', '-req', '-in', csrFile, ...args, '-extfile', extFile, '-out', out]);
      return out;
    };
    const interFile = rootSigns(
      'intermediate',
      'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n',
    );
    const notCa = rootSigns('not-ca', 'basicConstraints=critical,CA:FALSE\n');
    const read = (f: string): string => readFileSync(f, 'utf8');

    const wrongKey = await caught(
      importCaCertificate(hsm, { settings, certificatePem: read(rootCert), chainPems: [] }),
    );
    expect(wrongKey.code).toBe('CA_KEY_MISMATCH');
    const notCaError = await caught(
      importCaCertificate(hsm, { settings, certificatePem: read(notCa), chainPems: [read(rootCert)] }),
    );
    expect(notCaError.code).toBe('CA_CERT_INVALID');
    const badChain = await caught(
      importCaCertificate(hsm, { settings, certificatePem: read(interFile), chainPems: [read(interFile)] }),
    );
    expect(badChain.code).toBe('CA_CERT_INVALID');

    const imported = await importCaCertificate(hsm, {
      settings,
      certificatePem: read(interFile),
      chainPems: [read(rootCert)],
    });
    expect(imported.chainLength).toBe(1);
    const view = await describeCa(hsm, settings, new Date());
    expect(view.chainPems).toHaveLength(1);
    expect(createPublicKey(view.certificatePem).equals(createPublicKey(read(interFile)))).toBe(true);
    const pem = await signDeviceCertificate(hsm, {
      ca: settings,
      spki: spkiOf('P-256'),
      subject: { CN: 'via-intermediate' },
      now: new Date(),
    });
    const leaf = join(dir, 'via-intermediate.pem');
    writeFileSync(leaf, `${pem}\n`);
    expect(openssl(['verify', '-CAfile', rootCert, '-untrusted', interFile, leaf])).toContain('OK');
    expect(openssl(['x509', '-in', leaf, '-noout', '-text'])).toContain('ecdsa-with-SHA384');
  });
  it('destroyCa removes the key pair, the certificate and its chain, and a cached CA with them; other CAs stay', async () => {
    const settings = caSettings('ca-doomed', 'P-256');
    const keep = caSettings('ca-kept', 'P-256');
    const now = new Date();
    await createCa(hsm, { settings, now, csr: false });
    await createCa(hsm, { settings: keep, now, csr: false });
    // A chain certificate beside the CA's own (any certificate will do for the object count).
    const own = await describeCa(hsm, settings, now);
    await hsm.pool.withSession((s) => {
      const key = findCaKey(s, 'provline', 'ca-doomed')!;
      storeCaCertificates(s, key, new X509Certificate(own.certificatePem).raw, [
        new X509Certificate(own.certificatePem).raw,
      ]);
    });
    const labels = (): Promise<string[]> =>
      hsm.pool.withSession((s) =>
        s
          .find([], 1000)
          .map((h) => s.attributes(h, [pkcs11js.CKA_LABEL]).get(pkcs11js.CKA_LABEL)?.toString() ?? '')
          .sort(),
      );
    expect((await labels()).filter((l) => l.startsWith('ca-doomed'))).toEqual([
      'ca-doomed',
      'ca-doomed',
      'ca-doomed',
      'ca-doomed.chain.0',
    ]);
    // Signed once, so the checked CA is cached for this HSM.
    const req = { ca: settings, spki: spkiOf('P-256'), subject: { CN: 'doomed-1' }, now };
    await signDeviceCertificate(hsm, req);

    expect(await destroyCa(hsm, settings)).toBe(4);
    const after = await labels();
    expect(after.filter((l) => l.startsWith('ca-doomed'))).toEqual([]);
    expect(after.filter((l) => l === 'ca-kept')).toHaveLength(3);
    // Not signed by a cached CA whose key is gone: the lookup runs again and finds nothing.
    expect((await caught(signDeviceCertificate(hsm, req))).code).toBe('CA_KEY_NOT_FOUND');
    expect(await destroyCa(hsm, settings)).toBe(0);
    await signDeviceCertificate(hsm, { ...req, ca: keep });
  });
});
