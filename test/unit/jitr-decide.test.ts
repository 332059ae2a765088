// The JITR activator's decision core (src/cloud/jitr/decide.ts) over certificates built with
// the factory CA's DER template and software keys: what is activated (and as which thing),
// what is a no-op, and every refusal with its reason; the configuration checks; the import
// scan of the Lambda packager.
import { X509Certificate, createHash, generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeName, signingInput } from '../../src/hsm/csr.js';
import { KEY_TYPE_SPECS } from '../../src/hsm/key-types.js';
import {
  KEY_USAGE,
  authorityKeyIdentifier,
  basicConstraints,
  keyIdentifier,
  keyUsage,
  serialFromRandom,
  signCertificate,
  subjectKeyIdentifier,
  tbsCertificate,
} from '../../src/hsm/x509.js';
import {
  ActivatorConfigError,
  compileConfig,
  decide,
  importsOf,
  parseRegisteredEvent,
  type CertificateView,
  type CompiledConfig,
  type Decision,
} from '../../src/cloud/jitr/index.js';

const spec = KEY_TYPE_SPECS['P-256'];
const NOW = new Date('2027-06-01T00:00:00Z');

interface Ca {
  pem: string;
  name: Buffer;
  keyId: Buffer;
  sign: (tbs: Buffer) => Promise<Buffer>;
}

function keyPair() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const sign = (tbs: Buffer): Promise<Buffer> =>
    signCertificate(tbs, spec, (input) => {
      expect(input).toEqual(signingInput(tbs, spec));
      return cryptoSign('sha256', tbs, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    });
  return { spki, sign };
}

const pem = (der: Buffer): string =>
  `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`;

async function makeCa(subject: Record<string, string>): Promise<Ca> {
  const k = keyPair();
  const name = encodeName(subject as never);
  const keyId = keyIdentifier(k.spki);
  const der = await k.sign(
    tbsCertificate({
      serial: serialFromRandom(Buffer.alloc(16, 3)),
      signatureAlgorithm: spec.signatureAlgorithm,
      issuer: name,
      subject: name,
      notBefore: new Date('2026-01-01T00:00:00Z'),
      notAfter: new Date('2046-01-01T00:00:00Z'),
      spki: k.spki,
      extensions: [
        basicConstraints(true, 0),
        keyUsage([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign]),
        subjectKeyIdentifier(keyId),
      ],
    }),
  );
  return { pem: pem(der), name, keyId, sign: k.sign };
}

async function leaf(
  ca: Ca,
  subject: Record<string, string>,
  validity: [string, string] = ['2027-01-01T00:00:00Z', '2028-01-01T00:00:00Z'],
): Promise<string> {
  const k = keyPair();
  const der = await ca.sign(
    tbsCertificate({
      serial: serialFromRandom(Buffer.alloc(16, 5)),
      signatureAlgorithm: spec.signatureAlgorithm,
      issuer: ca.name,
      subject: encodeName(subject as never),
      notBefore: new Date(validity[0]),
      notAfter: new Date(validity[1]),
      spki: k.spki,
      extensions: [
        basicConstraints(false),
        keyUsage([KEY_USAGE.digitalSignature]),
        authorityKeyIdentifier(ca.keyId),
      ],
    }),
  );
  return pem(der);
}

const idOf = (p: string): string => createHash('sha256').update(new X509Certificate(p).raw).digest('hex');

function view(certificatePem: string, status = 'PENDING_ACTIVATION'): CertificateView {
  const certificateId = idOf(certificatePem);
  return {
    certificateId,
    certificateArn: `arn:aws:iot:us-east-1:123456789012:cert/${certificateId}`,
    certificatePem,
    status,
  };
}

const event = (certificateId: string, caCertificateId = 'a'.repeat(64)) => ({
  certificateId,
  caCertificateId,
});

const SETTINGS = {
  profile: 'sensor',
  thingName: 'sensor-{serial}',
  subject: { O: 'Acme' },
  attributes: { serial: '{serial}', model: 'm1-{serial}' },
  thingType: 'acme-sensor',
  policyName: 'acme-device',
};

function config(cas: Ca[], over: Record<string, unknown> = {}): CompiledConfig {
  return compileConfig({ ...SETTINGS, ...over, caCertificates: cas.map((c) => c.pem) });
}

function decideFor(cfg: CompiledConfig, certificatePem: string, status?: string): Decision {
  const v = view(certificatePem, status);
  return decide(cfg, event(v.certificateId), v, NOW);
}

describe('JITR decision core', () => {
  it('a certificate the factory CA signed, CN of the thing-name form and the fixed subject: activate as that thing, attributes from its placeholders', async () => {
    const ca = await makeCa({ O: 'Acme', CN: 'Acme factory CA' });
    const cert = await leaf(ca, { O: 'Acme', CN: 'sensor-00042' });
    const d = decideFor(config([ca]), cert);
    expect(d).toMatchObject({
      action: 'activate',
      certificateId: idOf(cert),
      certificateArn: `arn:aws:iot:us-east-1:123456789012:cert/${idOf(cert)}`,
      thingName: 'sensor-00042',
      attributes: { serial: '00042', model: 'm1-00042' },
      thingType: 'acme-sensor',
      policyName: 'acme-device',
      caCertificateId: idOf(ca.pem),
    });
    expect(d.reason).toContain('O=Acme, CN=Acme factory CA');
  });

  it('two configured CAs (a rotation): a certificate of the new one is activated and names it', async () => {
    const old = await makeCa({ O: 'Acme', CN: 'Acme CA 2026' });
    const next = await makeCa({ O: 'Acme', CN: 'Acme CA 2027' });
    const d = decideFor(config([old, next]), await leaf(next, { O: 'Acme', CN: 'sensor-7' }));
    expect(d).toMatchObject({ action: 'activate', caCertificateId: idOf(next.pem) });
  });

  it('ACTIVE already (a replayed event): nothing to do', async () => {
    const ca = await makeCa({ CN: 'Acme CA' });
    const d = decideFor(config([ca], { subject: undefined }), await leaf(ca, { CN: 'sensor-1' }), 'ACTIVE');
    expect(d.action).toBe('none');
    expect(d.reason).toContain('ACTIVE already');
  });

  for (const status of ['INACTIVE', 'REVOKED']) {
    it(`${status}: refused, the operator's status stands`, async () => {
      const ca = await makeCa({ CN: 'Acme CA' });
      const d = decideFor(config([ca], { subject: undefined }), await leaf(ca, { CN: 'sensor-1' }), status);
      expect(d).toMatchObject({ action: 'refuse', code: 'JITR_CERTIFICATE_STATUS' });
      expect(d.reason).toContain(status);
    });
  }

  it('signed by another CA, even one with the same name as the factory CA: refused, provline did not sign it', async () => {
    const factory = await makeCa({ O: 'Acme', CN: 'Acme factory CA' });
    const impostor = await makeCa({ O: 'Acme', CN: 'Acme factory CA' });
    const d = decideFor(config([factory]), await leaf(impostor, { O: 'Acme', CN: 'sensor-9' }));
    expect(d).toMatchObject({ action: 'refuse', code: 'JITR_NOT_SIGNED_BY_FACTORY_CA' });
    expect(d.reason).toContain('is not signed by any of the 1 configured factory CA certificate(s)');
    // A forgery: the factory CA's name and key identifier as issuer, signed by another key.
    const forged = await leaf({ ...factory, sign: impostor.sign }, { O: 'Acme', CN: 'sensor-9' });
    expect(new X509Certificate(forged).checkIssued(new X509Certificate(factory.pem))).toBe(true);
    expect(decideFor(config([factory]), forged)).toMatchObject({
      action: 'refuse',
      code: 'JITR_NOT_SIGNED_BY_FACTORY_CA',
    });
    const other = await makeCa({ O: 'Evil', CN: 'Other CA' });
    const d2 = decideFor(config([factory]), await leaf(other, { O: 'Acme', CN: 'sensor-9' }));
    expect(d2).toMatchObject({ action: 'refuse', code: 'JITR_NOT_SIGNED_BY_FACTORY_CA' });
    expect(d2.reason).toContain('issuer O=Evil, CN=Other CA');
  });

  it('expired or not yet valid: refused with the validity', async () => {
    const ca = await makeCa({ O: 'Acme', CN: 'Acme CA' });
    const expired = await leaf(ca, { O: 'Acme', CN: 'sensor-1' }, [
      '2026-01-01T00:00:00Z',
      '2027-01-01T00:00:00Z',
    ]);
    const early = await leaf(ca, { O: 'Acme', CN: 'sensor-1' }, [
      '2027-07-01T00:00:00Z',
      '2028-01-01T00:00:00Z',
    ]);
    for (const cert of [expired, early]) {
      const d = decideFor(config([ca]), cert);
      expect(d).toMatchObject({ action: 'refuse', code: 'JITR_CERTIFICATE_NOT_VALID_NOW' });
      expect(d.reason).toContain(NOW.toISOString());
    }
  });

  it('a subject that does not give the expected thing name, or lacks the fixed attributes: refused, naming both', async () => {
    const ca = await makeCa({ O: 'Acme', CN: 'Acme CA' });
    const cases: Array<[Record<string, string>, string]> = [
      [
        { O: 'Acme', CN: 'gateway-1' },
        'CN "gateway-1", which is not a thing name of the form sensor-{serial}',
      ],
      [{ O: 'Acme', CN: 'sensor-' }, 'not a thing name of the form sensor-{serial}'],
      [{ O: 'Acme', CN: 'sensor-a b' }, 'not a thing name of the form'],
      [{ O: 'Acme' }, 'has no CN'],
      [
        { O: 'Other', CN: 'sensor-1' },
        'has O="Other" in its subject; the profile sensor puts O="Acme" there',
      ],
      [{ CN: 'sensor-1' }, 'has O=(none)'],
    ];
    for (const [subject, reason] of cases) {
      const d = decideFor(config([ca]), await leaf(ca, subject));
      expect(d, JSON.stringify(subject)).toMatchObject({ action: 'refuse', code: 'JITR_SUBJECT_MISMATCH' });
      expect(d.reason).toContain(reason);
    }
  });

  it('a certificate AWS does not know, or a description that is not the event certificate: refused', async () => {
    const ca = await makeCa({ CN: 'Acme CA' });
    const cfg = config([ca], { subject: undefined });
    const a = await leaf(ca, { CN: 'sensor-1' });
    const b = await leaf(ca, { CN: 'sensor-2' });
    expect(decide(cfg, event(idOf(a)), undefined, NOW)).toMatchObject({ code: 'JITR_CERTIFICATE_UNKNOWN' });
    expect(decide(cfg, event(idOf(a)), { ...view(b), certificateId: idOf(a) }, NOW)).toMatchObject({
      code: 'JITR_CERTIFICATE_MISMATCH',
    });
  });

  it('parseRegisteredEvent: the event AWS publishes parses; anything else says what is wrong', () => {
    const good = {
      certificateId: 'b'.repeat(64),
      caCertificateId: 'c'.repeat(64),
      timestamp: 1,
      certificateStatus: 'PENDING_ACTIVATION',
      awsAccountId: '123456789012',
      certificateRegistrationTimestamp: null,
    };
    expect(parseRegisteredEvent(good)).toEqual({
      certificateId: 'b'.repeat(64),
      caCertificateId: 'c'.repeat(64),
      timestamp: 1,
      certificateStatus: 'PENDING_ACTIVATION',
      awsAccountId: '123456789012',
    });
    expect(parseRegisteredEvent('x')).toEqual({ problem: 'the event is "x", not a JSON object' });
    expect(parseRegisteredEvent({ ...good, certificateId: 'xyz' })).toEqual({
      problem: `the event's certificateId is "xyz", not a 64-hex-digit certificate id`,
    });
    expect(parseRegisteredEvent({ ...good, caCertificateId: undefined })).toMatchObject({
      problem: expect.stringContaining('caCertificateId'),
    });
  });

  it('the configuration is checked field by field, with what would be valid', async () => {
    const ca = await makeCa({ CN: 'Acme CA' });
    const leafOnly = await leaf(ca, { CN: 'sensor-1' });
    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ thingName: 'sensor' }, 'thingName', 'has no placeholder'],
      [{ thingName: 'sensor-{' }, 'thingName', 'bad placeholder'],
      [
        { attributes: { batch: '{lot}' } },
        'attributes.batch',
        'uses {lot}, which the thing name "sensor-{serial}" does not carry',
      ],
      [{ attributes: { 'bad name': '{serial}' } }, 'attributes.bad name', 'not an AWS IoT attribute name'],
      [{ subject: { CN: 'x' } }, 'subject.CN', 'CN is the thing name'],
      [{ policyName: 'bad policy' }, 'policyName', 'not an AWS IoT policy name'],
      [{ policyName: undefined }, 'policyName', 'is required'],
      [{ thingType: 'a b' }, 'thingType', 'not an AWS IoT thing type name'],
      [{ caCertificates: [] }, 'caCertificates', 'no factory CA certificate'],
      [{ caCertificates: [leafOnly] }, 'caCertificates.0', 'is not a CA certificate'],
    ];
    for (const [over, field, message] of cases) {
      let caught: unknown;
      try {
        compileConfig({ ...SETTINGS, caCertificates: [ca.pem], ...over });
      } catch (e) {
        caught = e;
      }
      expect(caught, JSON.stringify(over)).toBeInstanceOf(ActivatorConfigError);
      expect((caught as ActivatorConfigError).field).toBe(field);
      expect((caught as Error).message).toContain(message);
    }
  });

  it('the Lambda packager reads every import form of compiled ES modules', () => {
    const src = [
      "import { a } from './decide.js';",
      'import {',
      '  b,',
      "} from '@aws-sdk/client-iot';",
      "import * as fs from 'node:fs';",
      "export { c } from './activate.js';",
      "import './side-effect.js';",
      "const m = await import('zod');",
    ].join('\n');
    expect(importsOf(src)).toEqual([
      './decide.js',
      '@aws-sdk/client-iot',
      'node:fs',
      './activate.js',
      './side-effect.js',
      'zod',
    ]);
  });
});
