/**
 * Unwrapping a device key back to PKCS#8, through the HSM and in memory only: for the
 * station's `plain` key delivery, where the device must receive its private key in the clear.
 *
 * The KEK is non-extractable, so provline cannot decrypt the blob itself, and SoftHSM refuses
 * C_Decrypt with CKM_AES_KEY_WRAP_PAD (CKR_MECHANISM_INVALID). What PKCS#11 does allow: unwrap
 * into a temporary SESSION key that is not sensitive, read its components, rebuild the PKCS#8
 * in Node, destroy the object. The KEK needs CKA_UNWRAP (provline's KEKs have it). Anyone with
 * the user PIN can therefore recover device keys; that is inherent in `plain` delivery.
 */
import { createPrivateKey } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { KeyType } from '../config/index.js';
import { ProvlineError } from '../core/index.js';
import { drainOpenSslErrors, hasCkr, hsmError } from './errors.js';
import type { KekRef } from './kek.js';
import { ecPkcs8, KEY_TYPE_SPECS } from './key-types.js';
import type { Session } from './session.js';

export interface UnwrapRequest {
  /** base64 RFC 5649 blob, as in DeviceIdentity.wrappedKey. */
  wrappedKey: string;
  kekLabel: string;
  keyType: KeyType;
}

const RSA_PARTS = [
  pkcs11js.CKA_MODULUS,
  pkcs11js.CKA_PUBLIC_EXPONENT,
  pkcs11js.CKA_PRIVATE_EXPONENT,
  pkcs11js.CKA_PRIME_1,
  pkcs11js.CKA_PRIME_2,
  pkcs11js.CKA_EXPONENT_1,
  pkcs11js.CKA_EXPONENT_2,
  pkcs11js.CKA_COEFFICIENT,
];

/** Exact PKCS#8 DER of the wrapped key (no padding). The caller must not persist it. */
export function unwrapOn(s: Session, kek: KekRef, req: UnwrapRequest): Buffer {
  const spec = KEY_TYPE_SPECS[req.keyType];
  const blob = Buffer.from(req.wrappedKey, 'base64');
  let handle: Buffer;
  try {
    handle = s.p.C_UnwrapKey(s.handle, { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, kek.handle, blob, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: spec.family === 'ec' ? pkcs11js.CKK_EC : pkcs11js.CKK_RSA },
      { type: pkcs11js.CKA_TOKEN, value: false },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: false },
      { type: pkcs11js.CKA_EXTRACTABLE, value: true },
    ]);
  } catch (e) {
    // SoftHSM 2.6 reports a failed RFC 5649 integrity check (wrong KEK, damaged blob) as
    // CKR_GENERAL_ERROR rather than CKR_WRAPPED_KEY_INVALID; in this one call that is what it means.
    if (hasCkr(e, pkcs11js.CKR_GENERAL_ERROR)) {
      drainOpenSslErrors();
      throw new ProvlineError(
        'HSM_WRAPPED_KEY_INVALID',
        'unwrapping the device key: the wrapped key does not unwrap under this KEK',
        {
          kind: 'invalid-input',
          details: { ckr: 'CKR_GENERAL_ERROR', method: 'C_UnwrapKey', kekLabel: req.kekLabel },
          cause: e,
        },
      );
    }
    throw hsmError(e, 'unwrapping the device key');
  }
  try {
    if (spec.family === 'ec') {
      const a = s.attributes(
        handle,
        [pkcs11js.CKA_EC_PARAMS, pkcs11js.CKA_VALUE],
        'reading the unwrapped key',
      );
      if (!a.get(pkcs11js.CKA_EC_PARAMS)!.equals(spec.ecParams!)) {
        throw new ProvlineError('HSM_WRAPPED_KEY_INVALID', `the wrapped key is not a ${req.keyType} key`, {
          kind: 'invalid-input',
        });
      }
      return ecPkcs8(spec, a.get(pkcs11js.CKA_VALUE)!);
    }
    const a = s.attributes(handle, RSA_PARTS, 'reading the unwrapped key');
    const b64 = (t: number): string => a.get(t)!.toString('base64url');
    const key = createPrivateKey({
      format: 'jwk',
      key: {
        kty: 'RSA',
        n: b64(pkcs11js.CKA_MODULUS),
        e: b64(pkcs11js.CKA_PUBLIC_EXPONENT),
        d: b64(pkcs11js.CKA_PRIVATE_EXPONENT),
        p: b64(pkcs11js.CKA_PRIME_1),
        q: b64(pkcs11js.CKA_PRIME_2),
        dp: b64(pkcs11js.CKA_EXPONENT_1),
        dq: b64(pkcs11js.CKA_EXPONENT_2),
        qi: b64(pkcs11js.CKA_COEFFICIENT),
      },
    });
    return key.export({ format: 'der', type: 'pkcs8' });
  } finally {
    try {
      s.p.C_DestroyObject(s.handle, handle);
    } catch {
      // A session object dies with its session at the latest.
    }
  }
}
