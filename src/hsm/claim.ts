/**
 * The HSM side of fleet provisioning by claim (docs/claim.md):
 *
 * - the claim key: made in the HSM like a device key (key pair, CSR signed inside, the private
 *   half exported only wrapped under the profile's transport KEK, RFC 5649), so it reaches the
 *   devices exactly as device keys do (wrapped, or unwrapped by the station in memory for
 *   plain delivery) and exists in plaintext only inside the HSM and the device;
 * - the allow-list signing key: a P-256 key pair made as token objects, the private half
 *   sensitive, never extractable and allowed only to sign (the factory CA's templates). It signs
 *   each lot's allow-list; the pre-provisioning hook holds only the public key.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { KeyType } from '../config/index.js';
import { ProvlineError } from '../core/index.js';
import { findCaKey, generateCaKey, type CaKey } from './ca.js';
import { hsmError } from './errors.js';
import type { Hsm } from './hsm.js';
import type { DeviceIdentity } from './identity.js';

/** A new claim key: CSR signed in the HSM, the key wrapped under the KEK (nothing in plaintext). */
export async function createClaimKey(
  hsm: Hsm,
  req: { name: string; keyType: KeyType; kekLabel: string; subject?: Record<string, string> },
): Promise<DeviceIdentity> {
  return hsm.createDeviceIdentity({
    serial: req.name,
    thingName: req.name,
    keyType: req.keyType,
    kekLabel: req.kekLabel,
    ...(req.subject ? { subject: req.subject } : {}),
  });
}

export interface AllowListSigner {
  label: string;
  /** The public key the hook trusts (PEM, SubjectPublicKeyInfo). */
  publicKeyPem: string;
  keyId: string;
  /** ECDSA P-256 over SHA-256 of `data`, IEEE P1363 (r || s), signed inside the HSM. */
  sign(data: Buffer): Promise<Buffer>;
}

const ECDSA: pkcs11js.Mechanism = { mechanism: pkcs11js.CKM_ECDSA };

/** The allow-list signing key labelled `label`, made on first use (never replaced). */
export async function allowListSigner(hsm: Hsm, label: string, create = true): Promise<AllowListSigner> {
  const key: CaKey = await hsm.pool.withSession((s) => {
    const found = findCaKey(s, hsm.tokenLabel(), label);
    if (found) return found;
    if (!create)
      throw new ProvlineError(
        'CLAIM_NOT_FOUND',
        `no allow-list signing key labelled "${label}" on token "${hsm.tokenLabel()}"`,
        { kind: 'invalid-input', hint: 'Make the claim first: `provline claim create --profile <p>`.' },
      );
    return generateCaKey(s, hsm.tokenLabel(), label, 'P-256');
  });
  if (key.keyType !== 'P-256')
    throw new ProvlineError(
      'CLAIM_INVALID',
      `the key labelled "${label}" is ${key.keyType}; allow-lists are signed with P-256`,
      { kind: 'invalid-input', hint: 'Choose another claim.signingKeyLabel.' },
    );
  const publicKey: KeyObject = createPublicKey({ key: key.spki, format: 'der', type: 'spki' });
  const ops = hsm.opsFor('P-256');
  return {
    label,
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }) as string,
    keyId: createHash('sha256').update(key.spki).digest('hex'),
    sign: (data) =>
      hsm.pool.withSession(async (s) => {
        const digest = createHash('sha256').update(data).digest();
        try {
          return Buffer.from(await ops.sign(s.p, s.handle, ECDSA, key.privateKey, digest, 64));
        } catch (e) {
          throw hsmError(e, 'signing an allow-list');
        }
      }),
  };
}
