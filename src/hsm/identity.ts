/**
 * One device identity as one operation on one session: generate the key pair inside the HSM
 * as SESSION objects, build the CSR around the HSM's public key, sign it inside the HSM, export
 * the private key wrapped under the KEK (CKM_AES_KEY_WRAP_PAD, RFC 5649), destroy both objects.
 *
 * Session objects because SoftHSM's persistent store costs 30–40× per key and slows down with
 * every stored object (stack-notes.md §2); the HSM keeps only long-lived keys. Both objects are
 * destroyed on every path; if the module loses the session they die with it.
 */
import pkcs11js from 'pkcs11js';
import type { KeyType } from '../config/index.js';
import { ProvlineError } from '../core/index.js';
import {
  certificationRequest,
  certificationRequestInfo,
  signatureValue,
  signingInput,
  toPem,
  type CsrSubject,
} from './csr.js';
import { hsmError } from './errors.js';
import type { KekRef } from './kek.js';
import { ecSpki, KEY_TYPE_SPECS, rsaSpki, RSA_PUBLIC_EXPONENT, type KeyTypeSpec } from './key-types.js';
import type { KeyOps } from './ops.js';
import type { Session } from './session.js';

export interface DeviceIdentityRequest {
  serial: string;
  thingName: string;
  keyType: KeyType;
  /** CKA_LABEL of the transport KEK (the profile's kekLabel). */
  kekLabel: string;
  /** Subject fields besides CN (CN is always the thing name). */
  subject?: Partial<Record<'C' | 'ST' | 'L' | 'O' | 'OU', string>>;
}

/** Everything the pipeline keeps about a new device key; nothing secret in plaintext. */
export interface DeviceIdentity {
  serial: string;
  thingName: string;
  keyType: KeyType;
  /** PKCS#10, PEM, signed inside the HSM. */
  csrPem: string;
  /** SubjectPublicKeyInfo, PEM (the same key as in the CSR). */
  publicKey: string;
  /** base64 of the RFC 5649 blob; unwraps to PKCS#8 (trim SoftHSM's zero padding with trimToDer). */
  wrappedKey: string;
  /** PKCS#11 URI of the KEK that wrapped it. */
  kekId: string;
}

const AES_KEY_WRAP_PAD: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD };
const EC_KEYGEN: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN };
const RSA_KEYGEN: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN };
const ECDSA: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_ECDSA };
const RSA_PKCS: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_RSA_PKCS };
// Fresh templates on every call: pkcs11js' C_GetAttributeValue writes the value Buffer INTO the
// template objects and returns them, then reuses that Buffer on the next call with the same
// template. A shared constant made concurrent identities alias one public key (and P-384 after
// P-256 failed with CKR_BUFFER_TOO_SMALL). Pinned by the concurrency test in hsm.test.ts.
const ecPointTemplate = (): pkcs11js.Template => [{ type: pkcs11js.CKA_EC_POINT }];
const rsaPublicTemplate = (): pkcs11js.Template => [
  { type: pkcs11js.CKA_MODULUS },
  { type: pkcs11js.CKA_PUBLIC_EXPONENT },
];

/** Key-pair templates for a device key: session objects, private half sensitive. */
export function deviceKeyTemplates(
  spec: KeyTypeSpec,
  label: string,
  id: Buffer,
): { pub: pkcs11js.Template; priv: pkcs11js.Template } {
  const common: pkcs11js.Template = [
    { type: pkcs11js.CKA_TOKEN, value: false },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: id },
  ];
  const pub: pkcs11js.Template = [...common, { type: pkcs11js.CKA_VERIFY, value: true }];
  if (spec.family === 'ec') pub.push({ type: pkcs11js.CKA_EC_PARAMS, value: spec.ecParams! });
  else
    pub.push(
      { type: pkcs11js.CKA_MODULUS_BITS, value: spec.modulusBits! },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: RSA_PUBLIC_EXPONENT },
    );
  const priv: pkcs11js.Template = [
    ...common,
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SIGN, value: true },
    // Sensitive: the value never leaves in the clear. Extractable: it may leave wrapped.
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: true },
  ];
  return { pub, priv };
}

export function subjectFor(req: DeviceIdentityRequest): CsrSubject {
  return { ...req.subject, CN: req.thingName };
}

async function step<T>(operation: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw hsmError(e, operation);
  }
}

/** Creates one identity on `s` (which the caller owns exclusively for the duration). */
export async function createIdentityOn(
  s: Session,
  ops: KeyOps,
  kek: KekRef,
  req: DeviceIdentityRequest,
): Promise<DeviceIdentity> {
  return withDeviceKey(s, ops, kek, req, async (spec, privateKey, spki) => {
    const tbs = certificationRequestInfo(subjectFor(req), spki);
    const raw = await step('signing the CSR', () =>
      ops.sign(
        s.p,
        s.handle,
        spec.family === 'ec' ? ECDSA : RSA_PKCS,
        privateKey,
        signingInput(tbs, spec),
        spec.signatureBytes,
      ),
    );
    return { csrPem: toPem(certificationRequest(tbs, spec, signatureValue(raw, spec))) };
  });
}

/** An identity whose certificate a CA signed for the new key (no CSR: the key signs nothing). */
export interface CertifiedIdentity extends Omit<DeviceIdentity, 'csrPem'> {
  /** The device certificate, DER. */
  certificateDer: Buffer;
}

/**
 * Creates one identity on `s` whose certificate `certify` issues for the new public key on the
 * same session (the factory CA's key lives in the same HSM).
 */
export async function createCertifiedIdentityOn(
  s: Session,
  ops: KeyOps,
  kek: KekRef,
  req: DeviceIdentityRequest,
  certify: (s: Session, spki: Buffer) => Promise<Buffer>,
): Promise<CertifiedIdentity> {
  return withDeviceKey(s, ops, kek, req, async (_spec, _privateKey, spki) => ({
    certificateDer: await certify(s, spki),
  }));
}

/**
 * The frame of every identity: the key pair made as session objects, its public key read,
 * `make` run for what proves the identity (a CSR, a certificate), the private key wrapped under
 * the KEK, and both objects destroyed on every path.
 */
async function withDeviceKey<T extends object>(
  s: Session,
  ops: KeyOps,
  kek: KekRef,
  req: DeviceIdentityRequest,
  make: (spec: KeyTypeSpec, privateKey: pkcs11js.Handle, spki: Buffer) => Promise<T>,
): Promise<Omit<DeviceIdentity, 'csrPem'> & T> {
  const spec = KEY_TYPE_SPECS[req.keyType];
  if (!spec)
    throw new ProvlineError('HSM_KEY_TYPE_UNSUPPORTED', `unsupported key type ${String(req.keyType)}`, {
      kind: 'invalid-input',
    });
  const { p, handle } = s;
  const { pub, priv } = deviceKeyTemplates(spec, req.serial, Buffer.from(req.serial, 'utf8'));
  const kp = await step('generating the device key', () =>
    ops.generateKeyPair(p, handle, spec.family === 'ec' ? EC_KEYGEN : RSA_KEYGEN, pub, priv),
  );
  let result: (Omit<DeviceIdentity, 'csrPem'> & T) | undefined;
  let failure: Error | undefined;
  try {
    const spki = await step('reading the device public key', async () => {
      if (spec.family === 'ec') {
        const [point] = await ops.getAttributes(p, handle, kp.publicKey, ecPointTemplate());
        return ecSpki(spec, point!.value);
      }
      const [modulus, exponent] = await ops.getAttributes(p, handle, kp.publicKey, rsaPublicTemplate());
      return rsaSpki(modulus!.value, exponent!.value);
    });
    const made = await make(spec, kp.privateKey, spki);
    const wrapped = await step('wrapping the device key', () =>
      ops.wrap(p, handle, AES_KEY_WRAP_PAD, kek.handle, kp.privateKey, spec.wrappedBytes),
    );
    result = {
      serial: req.serial,
      thingName: req.thingName,
      keyType: req.keyType,
      publicKey: toPem(spki, 'PUBLIC KEY'),
      wrappedKey: wrapped.toString('base64'),
      kekId: kek.uri,
      ...made,
    };
  } catch (e) {
    failure = e instanceof Error ? e : hsmError(e, 'creating the device identity');
  }
  // Destroy both halves on every path; a failure here matters only if nothing failed before.
  let destroyFailure: Error | undefined;
  for (const object of [kp.privateKey, kp.publicKey]) {
    try {
      await ops.destroy(p, handle, object);
    } catch (e) {
      destroyFailure ??= hsmError(e, 'destroying the device key objects');
    }
  }
  if (failure !== undefined) throw failure;
  if (destroyFailure !== undefined) throw destroyFailure;
  return result!;
}
