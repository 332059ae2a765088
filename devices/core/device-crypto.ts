/** The crypto a simulated device does on-board: keygen with a CSR, unwrapping, signing. */
import 'reflect-metadata';
import { Pkcs10CertificateRequestGenerator } from '@peculiar/x509';
import {
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  sign,
  webcrypto,
  type KeyObject,
} from 'node:crypto';
import { trimToDer } from '../../src/core/index.js';

export interface DeviceKey {
  privateKey: KeyObject;
  spkiDer: Buffer;
}

export interface GeneratedDeviceKey extends DeviceKey {
  csrDer: Buffer;
}

/** A P-256 key pair generated on the device and a CSR for `subject` (e.g. `CN=…,O=…`). */
export async function generateKeyWithCsr(subject: string): Promise<GeneratedDeviceKey> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const csr = await Pkcs10CertificateRequestGenerator.create({
    name: subject,
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { ...fromPkcs8(pkcs8), csrDer: Buffer.from(csr.rawData) };
}

export function fromPkcs8(der: Buffer): DeviceKey {
  const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  return { privateKey, spkiDer: createPublicKey(privateKey).export({ type: 'spki', format: 'der' }) };
}

export function fromPem(pem: string): DeviceKey {
  const privateKey = createPrivateKey(pem);
  return { privateKey, spkiDer: createPublicKey(privateKey).export({ type: 'spki', format: 'der' }) };
}

/** RFC 5649 unwrap with the device KEK, then the zero padding SoftHSM adds is trimmed. */
export function unwrapKey(kek: Buffer, blob: Buffer): DeviceKey {
  const d = createDecipheriv('id-aes256-wrap-pad', kek, Buffer.from('A65959A6', 'hex'));
  const plain = Buffer.concat([d.update(blob), d.final()]);
  return fromPkcs8(trimToDer(plain));
}

export function signMessage(key: DeviceKey, message: Buffer): Buffer {
  return sign('sha256', message, { key: key.privateKey, dsaEncoding: 'der' });
}
