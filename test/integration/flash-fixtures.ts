/**
 * Test PKI for the flash tests: a root CA, device certificates over keys the test holds, over
 * wrapped keys (zero-padded PKCS#8 wrapped with RFC 5649, as SoftHSM does) and over CSRs.
 */
import 'reflect-metadata';
import {
  Pkcs10CertificateRequest,
  Pkcs10CertificateRequestGenerator,
  X509CertificateGenerator,
} from '@peculiar/x509';
import { createCipheriv, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';

const EC = { name: 'ECDSA', namedCurve: 'P-256' };
const SIG = { name: 'ECDSA', hash: 'SHA-256' };
type KeyPair = webcrypto.CryptoKeyPair;

export interface TestCa {
  rootCaPem: string;
  keys: KeyPair;
  /** Issues a device certificate for an SPKI (DER). */
  issue(cn: string, spkiDer: Uint8Array): Promise<string>;
  issueForCsr(csrPem: string): Promise<string>;
}

export async function makeCa(): Promise<TestCa> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const root = await X509CertificateGenerator.createSelfSigned({
    name: 'CN=provline test root',
    keys,
    signingAlgorithm: SIG,
  });
  const issue = async (cn: string, spkiDer: Uint8Array): Promise<string> => {
    const cert = await X509CertificateGenerator.create({
      subject: `CN=${cn}`,
      issuer: root.subject,
      publicKey: Buffer.from(spkiDer),
      signingKey: keys.privateKey,
      signingAlgorithm: SIG,
    });
    // CRLF-free, trailing newline: the drivers must normalise whatever they are given.
    return `${cert.toString('pem')}\n`;
  };
  return {
    rootCaPem: root.toString('pem'),
    keys,
    issue,
    issueForCsr: async (csrPem) => {
      const csr = new Pkcs10CertificateRequest(csrPem);
      return issue(csr.subject.replace(/^CN=/, ''), new Uint8Array(csr.publicKey.rawData));
    },
  };
}

export interface TestDeviceKey {
  pkcs8Der: Buffer;
  privateKeyPem: string;
  spkiDer: Buffer;
}

export async function makeDeviceKey(): Promise<TestDeviceKey> {
  const kp = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const pkcs8Der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', kp.privateKey));
  const spkiDer = Buffer.from(await webcrypto.subtle.exportKey('spki', kp.publicKey));
  const privateKeyPem = createPrivateKey({ key: pkcs8Der, format: 'der', type: 'pkcs8' })
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
  return { pkcs8Der, privateKeyPem, spkiDer };
}

/** A device key and a CSR for `CN=<cn>` signed with it (for a CA elsewhere, e.g. the stand-in). */
export async function makeDeviceKeyWithCsr(cn: string): Promise<TestDeviceKey & { csrPem: string }> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const pkcs8Der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const spkiDer = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey));
  const csr = await Pkcs10CertificateRequestGenerator.create({
    name: `CN=${cn}`,
    keys,
    signingAlgorithm: SIG,
  });
  const privateKeyPem = createPrivateKey({ key: pkcs8Der, format: 'der', type: 'pkcs8' })
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
  return { pkcs8Der, privateKeyPem, spkiDer, csrPem: csr.toString('pem') };
}

/** RFC 5649 wrap of the key zero-padded to a multiple of 8 bytes (what SoftHSM exports). */
export function wrapKey(kek: Buffer, pkcs8Der: Buffer): string {
  const padded = Buffer.concat([pkcs8Der, Buffer.alloc((8 - (pkcs8Der.length % 8)) % 8)]);
  const c = createCipheriv('id-aes256-wrap-pad', kek, Buffer.from('A65959A6', 'hex'));
  return Buffer.concat([c.update(padded), c.final()]).toString('base64');
}

export const newKek = (): Buffer => randomBytes(32);
