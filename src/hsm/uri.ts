/**
 * PKCS#11 URIs (RFC 7512) and PKCS#11 label padding: pure string work, no module calls.
 *
 * provline uses a small subset: the token is chosen by `token=` (plus optional
 * `manufacturer=`, `model=`, `serial=`, `slot-id=`), objects are named by `object=` (CKA_LABEL),
 * `id=` (CKA_ID, percent-encoded bytes) and `type=`. Query attributes (`?pin-value=`) are
 * rejected on purpose: a PIN never travels inside a URI.
 */
import { ProvlineError } from '../core/index.js';

export type ObjectType = 'private' | 'public' | 'secret-key' | 'cert' | 'data';

export interface Pkcs11Uri {
  token?: string;
  manufacturer?: string;
  model?: string;
  serial?: string;
  slotId?: number;
  object?: string;
  id?: Buffer;
  type?: ObjectType;
}

const TYPES: readonly ObjectType[] = ['private', 'public', 'secret-key', 'cert', 'data'];

/** RFC 7512 §2.3 "pk11-pchar": unreserved characters plus these may stay unescaped in a path. */
const PCHAR_SAFE = /[A-Za-z0-9\-._~:[\]@!$'()*+,=&]/;

function uriError(uri: string, why: string): ProvlineError {
  return new ProvlineError('HSM_URI_INVALID', `not a usable PKCS#11 URI (${why}): ${uri}`, {
    kind: 'invalid-input',
    hint: 'Use a token label, or a URI such as pkcs11:token=provline (RFC 7512).',
  });
}

/** True when `s` looks like a PKCS#11 URI rather than a plain label. */
export function isPkcs11Uri(s: string): boolean {
  return s.toLowerCase().startsWith('pkcs11:');
}

/** Parses `pkcs11:token=provline;object=kek` into its attributes. */
export function parsePkcs11Uri(uri: string): Pkcs11Uri {
  if (!isPkcs11Uri(uri)) throw uriError(uri, 'it must start with "pkcs11:"');
  const rest = uri.slice('pkcs11:'.length);
  if (rest.includes('?'))
    throw uriError(
      uri,
      'query attributes such as pin-value are not accepted; PINs come from a pin file or the environment',
    );
  const out: Pkcs11Uri = {};
  if (rest === '') return out;
  for (const part of rest.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw uriError(uri, `"${part}" is not name=value`);
    const name = part.slice(0, eq).toLowerCase();
    let raw: Buffer;
    try {
      raw = percentDecode(part.slice(eq + 1));
    } catch {
      throw uriError(uri, `bad percent-encoding in "${name}"`);
    }
    const text = raw.toString('utf8');
    switch (name) {
      case 'token':
        out.token = text;
        break;
      case 'manufacturer':
        out.manufacturer = text;
        break;
      case 'model':
        out.model = text;
        break;
      case 'serial':
        out.serial = text;
        break;
      case 'slot-id':
        if (!/^\d+$/.test(text)) throw uriError(uri, 'slot-id must be a decimal number');
        out.slotId = Number(text);
        break;
      case 'object':
        out.object = text;
        break;
      case 'id':
        out.id = raw;
        break;
      case 'type':
        if (!(TYPES as readonly string[]).includes(text)) throw uriError(uri, `unknown type "${text}"`);
        out.type = text as ObjectType;
        break;
      default:
        // RFC 7512 says unknown path attributes make the URI match nothing; refusing is clearer.
        throw uriError(uri, `unsupported attribute "${name}"`);
    }
  }
  return out;
}

/** Formats a URI; attributes come out in a fixed order so URIs compare as strings. */
export function formatPkcs11Uri(u: Pkcs11Uri): string {
  const parts: string[] = [];
  const add = (name: string, value: string | Buffer | undefined): void => {
    // Text attributes keep their safe characters; the binary id is %XX throughout (as p11-kit).
    if (value !== undefined)
      parts.push(
        `${name}=${typeof value === 'string' ? percentEncode(Buffer.from(value, 'utf8')) : percentEncode(value, true)}`,
      );
  };
  add('token', u.token);
  add('manufacturer', u.manufacturer);
  add('model', u.model);
  add('serial', u.serial);
  if (u.slotId !== undefined) parts.push(`slot-id=${u.slotId}`);
  add('object', u.object);
  add('id', u.id);
  add('type', u.type);
  return `pkcs11:${parts.join(';')}`;
}

function percentEncode(bytes: Buffer, all = false): string {
  let s = '';
  for (const b of bytes) {
    const ch = String.fromCharCode(b);
    s += !all && b < 0x80 && PCHAR_SAFE.test(ch) ? ch : `%${b.toString(16).padStart(2, '0').toUpperCase()}`;
  }
  return s;
}

function percentDecode(s: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '%') {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw new Error('bad escape');
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(c, 'utf8'));
    }
  }
  return Buffer.from(bytes);
}

/**
 * PKCS#11 token labels are 32 bytes padded with spaces (pkcs11js would pad with NULs). Throws
 * if the label does not fit.
 */
export function padTokenLabel(label: string): string {
  if (Buffer.byteLength(label, 'utf8') > 32) {
    throw new ProvlineError('HSM_LABEL_TOO_LONG', `token label "${label}" is longer than 32 bytes`, {
      kind: 'invalid-input',
    });
  }
  return label + ' '.repeat(32 - Buffer.byteLength(label, 'utf8'));
}

/** A token label without its padding (spaces per the standard, NULs from some writers). */
export function tokenLabel(raw: string): string {
  return raw.replace(/[\0 ]+$/, '');
}
