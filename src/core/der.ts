/**
 * provline's one DER module: a small writer for the types certificates, CSRs, SPKIs and PKCS#8
 * keys need, and one reader. Pure byte work, shared by the HSM stage (src/hsm), the AWS IoT
 * stand-in (emulator/) and the simulated devices.
 *
 * Why not a general ASN.1 library: a schema-driven one costs ~0.75 ms per CSR, three times what
 * SoftHSM spends on keygen + sign, and the stand-in issues thousands of certificates a second
 * (stack-notes.md §3). These encoders build the same bytes in microseconds;
 * test/unit/hsm-csr.test.ts proves the output byte-identical to @peculiar/x509's.
 *
 * SoftHSM zero-pads a key to a multiple of 8 bytes before CKM_AES_KEY_WRAP_PAD, so an unwrapped
 * PKCS#8 can carry trailing zeros (stack-notes.md §4); consumers trim it with `trimToDer`.
 */

// ---- Reading ----

/** One element read from a buffer: where it lies, and views of its content and whole encoding. */
export interface Tlv {
  tag: number;
  /** Offset of the tag byte in the buffer it was read from. */
  start: number;
  /** Offset of the first content byte. */
  contentStart: number;
  /** Offset just past the element. */
  end: number;
  /** The content bytes (a view, not a copy). */
  content: Buffer;
  /** Tag, length and content (a view, not a copy). */
  der: Buffer;
}

/** At most 4 length bytes: no element here is anywhere near 4 GiB. */
const MAX_LENGTH_BYTES = 4;

/**
 * The header of the element at `offset`: its tag, where its content starts and how long it is.
 * Throws on a truncated header or an unsupported length form (indefinite, or over 4 bytes).
 */
function header(buf: Uint8Array, offset: number): { tag: number; contentStart: number; length: number } {
  if (offset < 0 || offset + 2 > buf.length) throw new Error(`DER: truncated header at offset ${offset}`);
  const first = buf[offset + 1]!;
  if (first < 0x80) return { tag: buf[offset]!, contentStart: offset + 2, length: first };
  const n = first & 0x7f;
  if (n === 0) throw new Error(`DER: indefinite length at offset ${offset}`);
  if (n > MAX_LENGTH_BYTES) throw new Error(`DER: ${n}-byte length at offset ${offset}`);
  if (offset + 2 + n > buf.length) throw new Error(`DER: truncated length at offset ${offset}`);
  let length = 0;
  for (let i = 0; i < n; i++) length = length * 256 + buf[offset + 2 + i]!;
  return { tag: buf[offset]!, contentStart: offset + 2 + n, length };
}

/** The element at `offset` (default 0); throws if it runs past the end of `buf`. */
export function readTlv(buf: Buffer, offset = 0): Tlv {
  const h = header(buf, offset);
  const end = h.contentStart + h.length;
  if (end > buf.length)
    throw new Error(
      `DER: element at offset ${offset} needs ${end - offset} bytes, ${buf.length - offset} left`,
    );
  return {
    tag: h.tag,
    start: offset,
    contentStart: h.contentStart,
    end,
    content: buf.subarray(h.contentStart, end),
    der: buf.subarray(offset, end),
  };
}

/** The elements inside a constructed element (or inside any buffer of whole elements), in order. */
export function children(of: Tlv | Buffer): Tlv[] {
  const content = Buffer.isBuffer(of) ? of : of.content;
  const out: Tlv[] = [];
  for (let p = 0; p < content.length;) {
    const t = readTlv(content, p);
    out.push(t);
    p = t.end;
  }
  return out;
}

/** Total length (header + content) of the element at the start of `buf`, read from its header. */
export function derTotalLength(buf: Uint8Array): number {
  const h = header(buf, 0);
  return h.contentStart + h.length;
}

/** `buf` cut to its first element; throws if the element is longer than the buffer or non-zero bytes follow. */
export function trimToDer(buf: Buffer): Buffer {
  const total = derTotalLength(buf);
  if (total > buf.length) throw new Error(`DER: element of ${total} bytes in a ${buf.length}-byte buffer`);
  for (let i = total; i < buf.length; i++) {
    if (buf[i] !== 0) throw new Error('DER: non-zero bytes after the element');
  }
  return buf.subarray(0, total);
}

/** The dotted form of an OBJECT IDENTIFIER's content bytes (X.690 §8.19). */
export function oidString(content: Buffer): string {
  const subs: number[] = [];
  let v = 0;
  for (const b of content) {
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      subs.push(v);
      v = 0;
    }
  }
  if (subs.length === 0 || content[content.length - 1]! & 0x80)
    throw new Error('DER: malformed OBJECT IDENTIFIER');
  // The first subidentifier holds the first two arcs; a first arc of 2 takes everything from 80 up.
  const top = Math.min(2, Math.floor(subs[0]! / 40));
  return [top, subs[0]! - top * 40, ...subs.slice(1)].join('.');
}

// ---- Writing ----

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One element with a definite, minimal length (short or long form). */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = content.length === 1 ? content[0]! : Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), lengthBytes(body.length), body]);
}

export const seq = (...body: Buffer[]): Buffer => tlv(0x30, ...body);
export const set = (...body: Buffer[]): Buffer => tlv(0x31, ...body);
export const octetString = (b: Buffer): Buffer => tlv(0x04, b);
export const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
export const printable = (s: string): Buffer => tlv(0x13, Buffer.from(s, 'ascii'));
export const NULL = Buffer.from([0x05, 0x00]);

/** BIT STRING with no unused bits. */
export function bitString(b: Buffer): Buffer {
  return tlv(0x03, Buffer.from([0]), b);
}

/** BOOLEAN (DER: TRUE is 0xff). */
export function boolean(value: boolean): Buffer {
  return Buffer.from([0x01, 0x01, value ? 0xff : 0x00]);
}

/** A non-negative INTEGER from big-endian magnitude bytes (minimal encoding). */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  return m[0]! & 0x80 ? tlv(0x02, Buffer.from([0]), m) : tlv(0x02, m);
}

export function smallInteger(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 127) throw new RangeError('smallInteger takes 0..127');
  return Buffer.from([0x02, 0x01, n]);
}

/** An OBJECT IDENTIFIER from its dotted form. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  if (arcs.length < 2 || arcs.some((a) => !Number.isSafeInteger(a) || a < 0))
    throw new RangeError(`not a dotted OBJECT IDENTIFIER: "${dotted}"`);
  const bytes: number[] = [];
  for (const sub of [arcs[0]! * 40 + arcs[1]!, ...arcs.slice(2)]) {
    const chunk: number[] = [sub & 0x7f];
    for (let v = Math.floor(sub / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** An EXPLICIT context-specific tag [n] around `body` (constructed). */
export function explicit(n: number, ...body: Buffer[]): Buffer {
  return tlv(0xa0 | n, ...body);
}

/** An IMPLICIT context-specific tag [n] replacing the tag of a primitive value's content. */
export function implicitPrimitive(n: number, content: Buffer): Buffer {
  return tlv(0x80 | n, content);
}

/** An IMPLICIT context-specific tag [n] replacing the tag of a constructed value (e.g. a SEQUENCE). */
export function implicitConstructed(n: number, content: Buffer): Buffer {
  return tlv(0xa0 | n, content);
}

/**
 * A BIT STRING of named bits (keyUsage): bit 0 is the most significant bit of the first byte,
 * and DER drops trailing zero bits (X.690 §11.2.2), which the unused-bits count says.
 */
export function namedBits(bits: readonly number[]): Buffer {
  if (bits.length === 0) return tlv(0x03, Buffer.from([0]));
  const top = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(top / 8) + 1);
  for (const b of bits) bytes[Math.floor(b / 8)]! |= 0x80 >> (b % 8);
  return tlv(0x03, Buffer.from([7 - (top % 8)]), bytes);
}

/**
 * RFC 5280 §4.1.2.5 Time: UTCTime (YYMMDDHHMMSSZ) for years 1950–2049, GeneralizedTime
 * (YYYYMMDDHHMMSSZ) otherwise. Whole seconds, UTC.
 */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const two = (n: number): string => String(n).padStart(2, '0');
  const rest = `${two(d.getUTCMonth() + 1)}${two(d.getUTCDate())}${two(d.getUTCHours())}${two(d.getUTCMinutes())}${two(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(0x17, Buffer.from(`${two(y % 100)}${rest}`, 'latin1'));
  return tlv(0x18, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'latin1'));
}

// ---- PEM ----

export function toPem(der: Buffer, label: string): string {
  const b64 = der.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** The DER inside the first PEM block with `label`, or undefined. */
export function fromPem(pem: string, label: string): Buffer | undefined {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(pem);
  return m ? Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64') : undefined;
}
