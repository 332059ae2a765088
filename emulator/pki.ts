/**
 * The stand-in's certificate authority: a persistent "AWS IoT device CA" (RSA-2048, files in
 * the state directory) that issues certificates shaped like AWS IoT's (aws-iot.md §6.2):
 * issuer one OU RDN holding "Amazon Web Services O=Amazon.com Inc. L=Seattle ST=Washington
 * C=US", subject CN=AWS IoT Certificate, notBefore = issue time, notAfter
 * 2049-12-31T23:59:59Z, 20-byte serial, AKI + SKI + critical basicConstraints CA:FALSE +
 * critical keyUsage digitalSignature, sha256WithRSAEncryption.
 *
 * Certificates are assembled from precomputed DER pieces and signed with node:crypto, which is
 * what makes thousands of issues per second possible.
 */
import {
  X509Certificate,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IotError } from './errors.js';
import {
  NULL,
  bitString,
  boolean,
  children,
  explicit,
  fromPem,
  octetString as octets,
  oid,
  oidString,
  printable,
  readTlv,
  seq,
  set,
  time,
  tlv,
  toPem,
  unsignedInteger as uint,
  utf8,
} from '../src/core/index.js';

const boolTrue = boolean(true);

export const AWS_ISSUER_OU = 'Amazon Web Services O=Amazon.com Inc. L=Seattle ST=Washington C=US';
export const AWS_SUBJECT_CN = 'AWS IoT Certificate';
export const AWS_NOT_AFTER = new Date('2049-12-31T23:59:59Z');

const SHA256_WITH_RSA = seq(oid('1.2.840.113549.1.1.11'), NULL);
const OU_NAME = seq(set(seq(oid('2.5.4.11'), utf8(AWS_ISSUER_OU))));
const CN_NAME = seq(set(seq(oid('2.5.4.3'), utf8(AWS_SUBJECT_CN))));
const BASIC_LEAF = seq(oid('2.5.29.19'), boolTrue, octets(seq()));
const KU_LEAF = seq(oid('2.5.29.15'), boolTrue, octets(Buffer.from([0x03, 0x02, 0x07, 0x80])));
const BASIC_CA = seq(oid('2.5.29.19'), boolTrue, octets(seq(boolTrue)));
const KU_CA = seq(oid('2.5.29.15'), boolTrue, octets(Buffer.from([0x03, 0x02, 0x01, 0x06])));
const V3 = explicit(0, tlv(0x02, Buffer.from([2])));

const SIGNATURE_HASH: Record<string, string> = {
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};

const ALLOWED_CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1']);

export interface IssuedCertificate {
  certificateId: string;
  der: Buffer;
  pem: string;
  notBefore: number;
  notAfter: number;
}

/** certificateId = SHA-256 of the DER (aws-iot.md §5.2). */
export function certificateId(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

/** SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2 method 1). */
function keyIdentifier(spki: Buffer): Buffer {
  const [, bits] = children(readTlv(spki));
  return createHash('sha1').update(bits!.content.subarray(1)).digest();
}

function serial(): Buffer {
  const b = randomBytes(20);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return uint(b);
}

function extensions(list: Buffer[]): Buffer {
  return explicit(3, seq(...list));
}

function ski(id: Buffer): Buffer {
  return seq(oid('2.5.29.14'), octets(octets(id)));
}

function aki(id: Buffer): Buffer {
  return seq(oid('2.5.29.35'), octets(seq(tlv(0x80, id))));
}

function signTbs(tbs: Buffer, key: KeyObject): Buffer {
  return seq(tbs, SHA256_WITH_RSA, bitString(sign('sha256', tbs, key)));
}

export class DeviceCa {
  private readonly akiExt: Buffer;

  private constructor(
    readonly key: KeyObject,
    readonly certDer: Buffer,
    readonly keyId: Buffer,
  ) {
    this.akiExt = aki(keyId);
  }

  get certPem(): string {
    return toPem(this.certDer, 'CERTIFICATE');
  }

  /** Loads `<dir>/device-ca.{key,cert}.pem`, creating them on first use. */
  static loadOrCreate(dir: string, now = new Date()): DeviceCa {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const keyFile = join(dir, 'device-ca.key.pem');
    const certFile = join(dir, 'device-ca.cert.pem');
    if (existsSync(keyFile) && existsSync(certFile)) {
      const key = createPrivateKey(readFileSync(keyFile, 'utf8'));
      const der = fromPem(readFileSync(certFile, 'utf8'), 'CERTIFICATE')!;
      const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
      return new DeviceCa(key, der, keyIdentifier(spki));
    }
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
    const id = keyIdentifier(spki);
    const tbs = seq(
      V3,
      serial(),
      SHA256_WITH_RSA,
      OU_NAME,
      seq(time(new Date(now.getTime() - 86_400_000)), time(new Date('2059-12-31T23:59:59Z'))),
      OU_NAME,
      spki,
      extensions([ski(id), aki(id), BASIC_CA, KU_CA]),
    );
    const der = signTbs(tbs, privateKey);
    // Write the key first: a cert without its key would be useless after a crash.
    const tmpKey = `${keyFile}.tmp`;
    writeFileSync(tmpKey, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    renameSync(tmpKey, keyFile);
    writeFileSync(certFile, toPem(der, 'CERTIFICATE'));
    return new DeviceCa(privateKey, der, id);
  }

  /** A device certificate for `spki`, as AWS IoT issues from a CSR or for generated keys. */
  issue(spki: Buffer, now: Date): IssuedCertificate {
    const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000);
    return this.sign(OU_NAME, CN_NAME, notBefore, AWS_NOT_AFTER, spki);
  }

  /**
   * A provisioning-claim certificate (aws-iot.md §4.3, OBSERVED shape): issuer
   * C/ST/L/O/OU=Amazon IoT Provisioning/serialNumber=1.0, subject CN=<64 hex>, notBefore
   * back-dated 2 minutes, notAfter 5 minutes ahead.
   */
  issueClaim(spki: Buffer, now: Date): IssuedCertificate {
    const rdn = (o: string, v: Buffer): Buffer => set(seq(oid(o), v));
    const issuer = seq(
      rdn('2.5.4.6', printable('US')),
      rdn('2.5.4.8', utf8('Washington')),
      rdn('2.5.4.7', utf8('Seattle')),
      rdn('2.5.4.10', utf8('Amazon.com Inc.')),
      rdn('2.5.4.11', utf8('Amazon IoT Provisioning')),
      rdn('2.5.4.5', printable('1.0')),
    );
    const subject = seq(rdn('2.5.4.3', utf8(randomBytes(32).toString('hex'))));
    const t = Math.floor(now.getTime() / 1000) * 1000;
    const notBefore = new Date(t - 120_000);
    const notAfter = new Date(t + 300_000);
    return this.sign(issuer, subject, notBefore, notAfter, spki);
  }

  /** A leaf certificate signed by this CA (both issue paths share everything but names and validity). */
  private sign(
    issuer: Buffer,
    subject: Buffer,
    notBefore: Date,
    notAfter: Date,
    spki: Buffer,
  ): IssuedCertificate {
    const tbs = seq(
      V3,
      serial(),
      SHA256_WITH_RSA,
      issuer,
      seq(time(notBefore), time(notAfter)),
      subject,
      spki,
      extensions([this.akiExt, ski(keyIdentifier(spki)), BASIC_LEAF, KU_LEAF]),
    );
    const der = signTbs(tbs, this.key);
    return {
      certificateId: certificateId(der),
      der,
      pem: toPem(der, 'CERTIFICATE'),
      notBefore: notBefore.getTime() / 1000,
      notAfter: notAfter.getTime() / 1000,
    };
  }
}

function badCsr(why: string): IotError {
  return new IotError('InvalidRequestException', `The certificate signing request is not valid: ${why}`);
}

const CURVE_OIDS: Record<string, string> = {
  '1.2.840.10045.3.1.7': 'prime256v1',
  '1.3.132.0.34': 'secp384r1',
  '1.3.132.0.35': 'secp521r1',
};

/** The same rule as checkKey, read from SubjectPublicKeyInfo DER without building a key. */
function checkSpki(spki: Buffer): void {
  try {
    const [alg, bits] = children(readTlv(spki));
    const [algOid, params] = children(alg!);
    const algorithm = oidString(algOid!.content);
    if (algorithm === '1.2.840.10045.2.1') {
      const curve = params && params.tag === 0x06 ? oidString(params.content) : '';
      if (!CURVE_OIDS[curve])
        throw badCsr(`the CSR EC curve ${curve || '(none)'} is not supported (P-256, P-384, P-521 are)`);
      return;
    }
    if (algorithm === '1.2.840.113549.1.1.1') {
      const modulus = children(readTlv(bits!.content, 1))[0]!.content;
      let start = 0;
      while (start < modulus.length && modulus[start] === 0) start++;
      const bitLength = (modulus.length - start) * 8 - Math.clz32(modulus[start] ?? 0) + 24;
      if (bitLength < 2048) throw badCsr(`the CSR RSA key must be at least 2048 bits, got ${bitLength}`);
      return;
    }
    throw badCsr(`the CSR key algorithm ${algorithm} is not supported (RSA or ECC are)`);
  } catch (e) {
    if (e instanceof IotError) throw e;
    throw badCsr('unreadable public key');
  }
}

/** Checks the key AWS IoT accepts: RSA ≥ 2048 or EC on P-256/P-384/P-521. */
function checkKey(key: KeyObject, what: string): void {
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa') {
    if ((d.modulusLength ?? 0) < 2048)
      throw badCsr(`${what} RSA key must be at least 2048 bits, got ${d.modulusLength}`);
  } else if (key.asymmetricKeyType === 'ec') {
    if (!ALLOWED_CURVES.has(d.namedCurve ?? ''))
      throw badCsr(`${what} EC curve ${d.namedCurve} is not supported (P-256, P-384, P-521 are)`);
  } else {
    throw badCsr(`${what} key type ${key.asymmetricKeyType} is not supported (RSA or ECC are)`);
  }
}

/**
 * Parses and verifies a PEM CSR; returns its SubjectPublicKeyInfo DER. The CSR's signature
 * must verify with its own key (proof of possession), and the key must be one AWS accepts.
 */
export function csrPublicKey(pem: string): Buffer {
  const der = fromPem(pem, 'CERTIFICATE REQUEST') ?? fromPem(pem, 'NEW CERTIFICATE REQUEST');
  if (!der) throw badCsr('no PEM "CERTIFICATE REQUEST" block');
  let spki: Buffer;
  let info: Buffer;
  let hash: string | undefined;
  let sig: Buffer;
  try {
    const [cri, alg, sigBits] = children(readTlv(der));
    if (!cri || !alg || !sigBits) throw new Error('truncated');
    const spkiTlv = children(cri)[2];
    if (!spkiTlv) throw new Error('no subjectPKInfo');
    spki = spkiTlv.der;
    info = cri.der;
    hash = SIGNATURE_HASH[oidString(children(alg)[0]!.content)];
    sig = sigBits.content.subarray(1);
  } catch (e) {
    throw badCsr(`malformed DER (${(e as Error).message})`);
  }
  if (!hash) throw badCsr('unsupported signature algorithm');
  checkSpki(spki);
  let ok: boolean;
  try {
    // Verifying straight from the DER spares a KeyObject per CSR (a hot path of bulk tasks).
    ok = verify(hash, info, { key: spki, format: 'der', type: 'spki' }, sig);
  } catch {
    throw badCsr('unreadable public key');
  }
  if (!ok) throw badCsr('the signature does not verify with the CSR key');
  return spki;
}

/** An RSA-2048 key pair in the formats CreateKeysAndCertificate returns. */
export function rsaKeyPair(): { spki: Buffer; publicPem: string; privatePem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    spki: publicKey.export({ format: 'der', type: 'spki' }),
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }) as string,
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs1' }) as string,
  };
}

export interface ParsedCertificate {
  x509: X509Certificate;
  der: Buffer;
  pem: string;
  certificateId: string;
  notBefore: number;
  notAfter: number;
}

/** Parses a PEM certificate supplied by a caller (RegisterCertificate & co). */
export function parseCertificate(pem: string, what = 'certificate'): ParsedCertificate {
  const der = fromPem(pem, 'CERTIFICATE');
  if (!der)
    throw new IotError('CertificateValidationException', `The ${what} is not a valid PEM certificate.`);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(der);
  } catch {
    throw new IotError('CertificateValidationException', `The ${what} could not be parsed.`);
  }
  try {
    checkKey(x509.publicKey, `the ${what}`);
  } catch (e) {
    throw new IotError(
      'CertificateValidationException',
      (e as Error).message.replace(/^The certificate signing request is not valid: /, ''),
    );
  }
  return {
    x509,
    der,
    pem: toPem(der, 'CERTIFICATE'),
    certificateId: certificateId(der),
    notBefore: Date.parse(x509.validFrom) / 1000,
    notAfter: Date.parse(x509.validTo) / 1000,
  };
}

const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));
const EKU_SERVER = seq(oid('2.5.29.37'), octets(seq(oid('1.3.6.1.5.5.7.3.1'))));
const ROOT_NAME = seq(
  set(seq(oid('2.5.4.6'), printable('US'))),
  set(seq(oid('2.5.4.10'), utf8('Amazon'))),
  set(seq(oid('2.5.4.3'), utf8('Amazon Root CA 3 (provline stand-in)'))),
);

/** A subjectAltName extension for DNS names and IPv4/IPv6 addresses. */
function subjectAltName(names: readonly string[]): Buffer {
  const entries = names.map((n) => {
    if (/^\d+\.\d+\.\d+\.\d+$/.test(n)) return tlv(0x87, Buffer.from(n.split('.').map(Number)));
    if (n === '::1') return tlv(0x87, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    return tlv(0x82, Buffer.from(n, 'ascii'));
  });
  return seq(oid('2.5.29.17'), octets(seq(...entries)));
}

function ecSign(tbs: Buffer, key: KeyObject): Buffer {
  return seq(tbs, ECDSA_SHA256, bitString(sign('sha256', tbs, key)));
}

/**
 * The server side of the stand-in's MQTT endpoint: a persistent root CA (the "Amazon Root
 * CA" of this world; EC P-256 like Amazon Root CA 3; `root-ca.{key,cert}.pem`, key 0600)
 * and a server certificate it signs, re-issued at every start for the endpoint's host names
 * (`server.{key,cert}.pem`). Devices trust `root-ca.cert.pem`, as they trust Amazon's roots.
 */
export class ServerPki {
  private constructor(
    readonly rootCertPem: string,
    readonly rootCertFile: string,
    readonly serverKeyPem: string,
    readonly serverCertPem: string,
  ) {}

  static loadOrCreate(dir: string, hostNames: readonly string[], now = new Date()): ServerPki {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const rootKeyFile = join(dir, 'root-ca.key.pem');
    const rootCertFile = join(dir, 'root-ca.cert.pem');
    let rootKey: KeyObject;
    let rootDer: Buffer;
    if (existsSync(rootKeyFile) && existsSync(rootCertFile)) {
      rootKey = createPrivateKey(readFileSync(rootKeyFile, 'utf8'));
      rootDer = fromPem(readFileSync(rootCertFile, 'utf8'), 'CERTIFICATE')!;
    } else {
      rootKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
      const spki = createPublicKey(rootKey).export({ format: 'der', type: 'spki' });
      const id = keyIdentifier(spki);
      const tbs = seq(
        V3,
        serial(),
        ECDSA_SHA256,
        ROOT_NAME,
        seq(time(new Date(now.getTime() - 86_400_000)), time(new Date('2059-12-31T23:59:59Z'))),
        ROOT_NAME,
        spki,
        extensions([ski(id), BASIC_CA, KU_CA]),
      );
      rootDer = ecSign(tbs, rootKey);
      const tmp = `${rootKeyFile}.tmp`;
      writeFileSync(tmp, rootKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
      renameSync(tmp, rootKeyFile);
      writeFileSync(rootCertFile, toPem(rootDer, 'CERTIFICATE'));
    }
    const rootSpki = createPublicKey(rootKey).export({ format: 'der', type: 'spki' });
    const serverKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    const spki = createPublicKey(serverKey).export({ format: 'der', type: 'spki' });
    const cn = seq(set(seq(oid('2.5.4.3'), utf8(hostNames[0] ?? 'localhost'))));
    const tbs = seq(
      V3,
      serial(),
      ECDSA_SHA256,
      ROOT_NAME,
      seq(time(new Date(now.getTime() - 3_600_000)), time(new Date(now.getTime() + 397 * 86_400_000))),
      cn,
      spki,
      extensions([
        aki(keyIdentifier(rootSpki)),
        ski(keyIdentifier(spki)),
        BASIC_LEAF,
        seq(oid('2.5.29.15'), boolTrue, octets(Buffer.from([0x03, 0x02, 0x07, 0x80]))),
        EKU_SERVER,
        subjectAltName(hostNames),
      ]),
    );
    const serverDer = ecSign(tbs, rootKey);
    const serverKeyPem = serverKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    const serverCertPem = toPem(serverDer, 'CERTIFICATE');
    const keyFile = join(dir, 'server.key.pem');
    writeFileSync(`${keyFile}.tmp`, serverKeyPem, { mode: 0o600 });
    renameSync(`${keyFile}.tmp`, keyFile);
    writeFileSync(join(dir, 'server.cert.pem'), serverCertPem);
    return new ServerPki(toPem(rootDer, 'CERTIFICATE'), rootCertFile, serverKeyPem, serverCertPem);
  }
}
