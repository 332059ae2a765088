/**
 * Transport KEKs: AES-256 secret keys that live in the HSM (token objects), never leave it
 * (CKA_SENSITIVE, not extractable) and only wrap/unwrap device keys (no encrypt/decrypt).
 * Each has a CKA_LABEL (the profile's `kekLabel`) and a random 16-byte CKA_ID, and is named
 * by a PKCS#11 URI (the bundle's `kekId`).
 */
import { randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { ProvlineError } from '../core/index.js';
import { hsmError } from './errors.js';
import type { Session } from './session.js';
import { formatPkcs11Uri } from './uri.js';

export interface KekRef {
  label: string;
  id: Buffer;
  /** pkcs11:token=…;object=<label>;id=…;type=secret-key */
  uri: string;
  /** Object handle; valid for the lifetime of the module initialisation. */
  handle: Buffer;
  persistent: boolean;
}

export const KEK_BYTES = 32;

function baseTemplate(label: string, id: Buffer, persistent: boolean): pkcs11js.Template {
  return [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_TOKEN, value: persistent },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_WRAP, value: true },
    // UNWRAP serves `unwrapToPkcs8` (plain key delivery at the station).
    { type: pkcs11js.CKA_UNWRAP, value: true },
    { type: pkcs11js.CKA_ENCRYPT, value: false },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_SIGN, value: false },
    { type: pkcs11js.CKA_VERIFY, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: id },
  ];
}

function ref(tokenLabel: string, label: string, id: Buffer, handle: Buffer, persistent: boolean): KekRef {
  return {
    label,
    id,
    handle,
    persistent,
    uri: formatPkcs11Uri({ token: tokenLabel, object: label, id, type: 'secret-key' }),
  };
}

/** The KEK labelled `label`, or undefined. Two keys with one label are an error. */
export function findKek(s: Session, tokenLabel: string, label: string): KekRef | undefined {
  const handles = s.find(
    [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_LABEL, value: label },
    ],
    2,
  );
  if (handles.length === 0) return undefined;
  if (handles.length > 1) {
    throw new ProvlineError(
      'HSM_KEK_AMBIGUOUS',
      `more than one secret key on the token is labelled "${label}"`,
      {
        kind: 'invalid-input',
        hint: 'Remove the duplicate with the HSM vendor tools (or pkcs11-tool --delete-object).',
      },
    );
  }
  const handle = handles[0]!;
  const attrs = s.attributes(
    handle,
    [pkcs11js.CKA_KEY_TYPE, pkcs11js.CKA_WRAP, pkcs11js.CKA_ID, pkcs11js.CKA_TOKEN],
    'reading the KEK attributes',
  );
  const keyType = attrs
    .get(pkcs11js.CKA_KEY_TYPE)!
    .readUIntLE(0, Math.min(6, attrs.get(pkcs11js.CKA_KEY_TYPE)!.length));
  if (keyType !== pkcs11js.CKK_AES || attrs.get(pkcs11js.CKA_WRAP)?.[0] !== 1) {
    throw new ProvlineError(
      'HSM_KEK_INVALID',
      `the key labelled "${label}" is not an AES key allowed to wrap`,
      { kind: 'invalid-input' },
    );
  }
  return ref(
    tokenLabel,
    label,
    attrs.get(pkcs11js.CKA_ID) ?? Buffer.alloc(0),
    handle,
    attrs.get(pkcs11js.CKA_TOKEN)?.[0] === 1,
  );
}

function refuseExisting(s: Session, tokenLabel: string, label: string): void {
  if (findKek(s, tokenLabel, label)) {
    throw new ProvlineError(
      'HSM_KEK_EXISTS',
      `a KEK labelled "${label}" already exists on token "${tokenLabel}"`,
      {
        kind: 'invalid-input',
        hint: 'KEKs are never replaced by provline: use another kekLabel in the profile, or remove the old key deliberately.',
      },
    );
  }
}

/** Generates a new AES-256 KEK inside the HSM. */
export function generateKek(s: Session, tokenLabel: string, label: string, persistent = true): KekRef {
  refuseExisting(s, tokenLabel, label);
  const id = randomBytes(16);
  try {
    const handle = s.p.C_GenerateKey(s.handle, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      ...baseTemplate(label, id, persistent),
      { type: pkcs11js.CKA_VALUE_LEN, value: KEK_BYTES },
    ]);
    return ref(tokenLabel, label, id, handle, persistent);
  } catch (e) {
    throw hsmError(e, 'generating the KEK');
  }
}

/**
 * Imports a known AES-256 value as a KEK (keys agreed with a device maker; demo and tests,
 * where simulators hold the same KEK). The value crosses the PKCS#11 boundary in the clear:
 * for production, prefer `generateKek` or the vendor's key-ceremony import (docs/hsm.md).
 */
export function importKek(
  s: Session,
  tokenLabel: string,
  label: string,
  value: Buffer,
  persistent = true,
): KekRef {
  if (value.length !== KEK_BYTES) {
    throw new ProvlineError(
      'HSM_KEK_FILE_INVALID',
      `a KEK must be ${KEK_BYTES} bytes (AES-256), got ${value.length}`,
      { kind: 'invalid-input' },
    );
  }
  refuseExisting(s, tokenLabel, label);
  const id = randomBytes(16);
  try {
    const handle = s.p.C_CreateObject(s.handle, [
      ...baseTemplate(label, id, persistent),
      { type: pkcs11js.CKA_VALUE, value },
    ]);
    return ref(tokenLabel, label, id, handle, persistent);
  } catch (e) {
    throw hsmError(e, 'importing the KEK');
  }
}

/** Reads a KEK file: 32 raw bytes, or 64 hex digits (optionally followed by a newline). */
export function parseKekFile(content: Buffer): Buffer {
  if (content.length === KEK_BYTES) return content;
  const text = content.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  throw new ProvlineError(
    'HSM_KEK_FILE_INVALID',
    `a KEK file must hold ${KEK_BYTES} raw bytes or 64 hex digits (got ${content.length} bytes)`,
    {
      kind: 'invalid-input',
    },
  );
}
