/** A PKCS#10 CSR for a fresh P-256 software key, built with the stand-in's DER helpers (fast). */
import { generateKeyPairSync, sign } from 'node:crypto';
import { bitString, oid, seq, set, tlv, toPem, utf8 } from '../src/core/index.js';

export function csr(cn: string): string {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const info = seq(
    tlv(0x02, Buffer.from([0])),
    seq(set(seq(oid('2.5.4.3'), utf8(cn)))),
    publicKey.export({ format: 'der', type: 'spki' }),
    tlv(0xa0, Buffer.alloc(0)),
  );
  return toPem(
    seq(info, seq(oid('1.2.840.10045.4.3.2')), bitString(sign('sha256', info, privateKey))),
    'CERTIFICATE REQUEST',
  );
}
