/**
 * The lot allow-list the pre-provisioning hook trusts (docs/claim.md "The allow-list").
 *
 * `provline submit` with a claim profile writes one object per lot to S3, at
 * `<prefix>/<templateName>/lots/<batchId>.json`:
 *
 *   { "format": "provline-allowlist-v1", "payload": "<JSON text>", "signature": "<base64>",
 *     "keyId": "<sha256 of the signing key's SPKI, hex>" }
 *
 * `payload` is kept as text so the signature covers exactly the bytes written (no
 * canonicalisation); it parses to an AllowList. The signature is ECDSA P-256 over SHA-256 of
 * the payload's UTF-8 bytes, IEEE P1363 (r || s), made by a key that never leaves the HSM; the
 * hook holds only the public key. Pure: node:crypto only, no I/O (the hook and provline share
 * it, and the hook ships without the rest of provline).
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';

export const ALLOWLIST_FORMAT = 'provline-allowlist-v1';

export interface AllowedDevice {
  thingName: string;
  /** Template parameters from the CSV row; the hook returns them as parameterOverrides. */
  parameters: Record<string, string>;
}

export interface AllowList {
  version: 1;
  templateName: string;
  batchId: string;
  profile: string;
  createdAt: string;
  /** The parameter of the device's RegisterThing request that carries its serial. */
  serialParameter: string;
  /**
   * The parameter that carries the device's lot (the batch id the station wrote to it). When
   * set, a serial of this lot is allowed only to a device that names this lot.
   */
  lotParameter?: string;
  /** SHA-256 of the lot's rows as published (serial, thing name, parameters), for re-submits. */
  rowsSha256: string;
  devices: Record<string, AllowedDevice>;
}

export interface SignedAllowList {
  format: typeof ALLOWLIST_FORMAT;
  payload: string;
  signature: string;
  keyId: string;
}

/** SHA-256 (hex) of a public key's SPKI DER: how an allow-list names the key that signed it. */
export function keyIdOf(key: KeyObject): string {
  return createHash('sha256')
    .update(key.export({ format: 'der', type: 'spki' }))
    .digest('hex');
}

/** The public keys in a text of one or more PEM blocks, by key id. */
export function publicKeysFromPem(text: string): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  for (const m of text.matchAll(/-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/g)) {
    const key = createPublicKey(m[0]);
    keys.set(keyIdOf(key), key);
  }
  return keys;
}

/** The digest of a lot's rows, independent of order. */
export function rowsDigest(devices: Record<string, AllowedDevice>): string {
  const h = createHash('sha256');
  for (const serial of Object.keys(devices).sort()) {
    const d = devices[serial]!;
    const params = Object.keys(d.parameters)
      .sort()
      .map((k) => [k, d.parameters[k]]);
    h.update(JSON.stringify([serial, d.thingName, params]));
    h.update('\n');
  }
  return h.digest('hex');
}

export class AllowListError extends Error {}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Parses a stored allow-list object and checks its signature against the trusted keys.
 * Throws AllowListError saying what is wrong; never returns an unverified list.
 */
export function openAllowList(text: string, trusted: ReadonlyMap<string, KeyObject>): AllowList {
  let outer: unknown;
  try {
    outer = JSON.parse(text);
  } catch {
    throw new AllowListError('the object is not JSON');
  }
  if (!isObject(outer) || outer.format !== ALLOWLIST_FORMAT)
    throw new AllowListError(`the object is not a ${ALLOWLIST_FORMAT} allow-list`);
  const { payload, signature, keyId } = outer;
  if (typeof payload !== 'string' || typeof signature !== 'string' || typeof keyId !== 'string')
    throw new AllowListError('payload, signature and keyId must be strings');
  const key = trusted.get(keyId);
  if (!key) throw new AllowListError(`signed by key ${keyId.slice(0, 16)}…, which the hook does not trust`);
  const ok = verify(
    'sha256',
    Buffer.from(payload, 'utf8'),
    { key, dsaEncoding: 'ieee-p1363' },
    Buffer.from(signature, 'base64'),
  );
  if (!ok)
    throw new AllowListError('the signature does not match the payload (altered, or signed by another key)');
  let list: unknown;
  try {
    list = JSON.parse(payload);
  } catch {
    throw new AllowListError('the signed payload is not JSON');
  }
  if (
    !isObject(list) ||
    list.version !== 1 ||
    typeof list.templateName !== 'string' ||
    typeof list.batchId !== 'string' ||
    typeof list.serialParameter !== 'string' ||
    (list.lotParameter !== undefined && typeof list.lotParameter !== 'string') ||
    !isObject(list.devices)
  )
    throw new AllowListError('the signed payload is not a version-1 allow-list');
  return list as unknown as AllowList;
}

/** The object to store for `list`, signed by `sign` (the HSM) with the key named `keyId`. */
export async function sealAllowList(
  list: AllowList,
  keyId: string,
  sign: (data: Buffer) => Promise<Buffer>,
): Promise<SignedAllowList> {
  const payload = JSON.stringify(list);
  const signature = await sign(Buffer.from(payload, 'utf8'));
  return { format: ALLOWLIST_FORMAT, payload, signature: signature.toString('base64'), keyId };
}

/** S3 keys under the hook's prefix for one template. */
export const hookKeys = {
  lots: (prefix: string, template: string): string => `${prefix}/${template}/lots/`,
  lot: (prefix: string, template: string, batchId: string): string =>
    `${prefix}/${template}/lots/${batchId}.json`,
  used: (prefix: string, template: string, serial: string): string =>
    `${prefix}/${template}/used/${safeSegment(serial)}.json`,
  usedAll: (prefix: string, template: string): string => `${prefix}/${template}/used/`,
  denied: (prefix: string, template: string, serial: string, at: number, nonce: string): string =>
    `${prefix}/${template}/denied/${safeSegment(serial)}/${String(at).padStart(14, '0')}-${nonce}.json`,
  deniedAll: (prefix: string, template: string): string => `${prefix}/${template}/denied/`,
};

/** A serial as one key segment: percent-encoded, at most 200 characters; `_none` when empty. */
export function safeSegment(serial: string): string {
  if (!serial) return '_none';
  return encodeURIComponent(serial).slice(0, 200);
}
