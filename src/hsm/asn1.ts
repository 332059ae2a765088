/**
 * A tiny DER writer: just the types a CSR, an SPKI and a PKCS#8 key need. Pure byte work.
 *
 * Why not @peculiar/x509 for everything: its schema-driven ASN.1 costs ~0.75 ms per CSR, three
 * times what SoftHSM spends on keygen + sign (stack-notes.md §3). The writer below builds the
 * same bytes in microseconds; test/unit/hsm-csr.test.ts proves the output byte-identical to
 * x509's for every key type.
 */

/** One TLV with a definite-length header (short or long form). */
export function tlv(tag: number, ...body: Buffer[]): Buffer {
  const content = body.length === 1 ? body[0]! : Buffer.concat(body);
  const len = content.length;
  let header: Buffer;
  if (len < 0x80) header = Buffer.from([tag, len]);
  else if (len < 0x100) header = Buffer.from([tag, 0x81, len]);
  else if (len < 0x10000) header = Buffer.from([tag, 0x82, len >> 8, len & 0xff]);
  else header = Buffer.from([tag, 0x83, len >> 16, (len >> 8) & 0xff, len & 0xff]);
  return Buffer.concat([header, content]);
}

export const seq = (...body: Buffer[]): Buffer => tlv(0x30, ...body);
export const set = (...body: Buffer[]): Buffer => tlv(0x31, ...body);
export const octetString = (b: Buffer): Buffer => tlv(0x04, b);
export const NULL = Buffer.from([0x05, 0x00]);

/** BIT STRING with no unused bits. */
export function bitString(b: Buffer): Buffer {
  return tlv(0x03, Buffer.from([0]), b);
}

/** A non-negative INTEGER from big-endian magnitude bytes (minimal encoding). */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  return m[0]! & 0x80 ? tlv(0x02, Buffer.from([0]), m) : tlv(0x02, m);
}

export function smallInteger(n: number): Buffer {
  if (n < 0 || n > 127) throw new RangeError('smallInteger takes 0..127');
  return Buffer.from([0x02, 0x01, n]);
}

/** An OBJECT IDENTIFIER from its dotted form. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const bytes: number[] = [arcs[0]! * 40 + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** Reads the content of the DER TLV at the start of `buf` (short or long length form). */
export function readTlv(buf: Buffer): { tag: number; content: Buffer; total: number } {
  if (buf.length < 2) throw new Error('DER: truncated');
  const first = buf[1]!;
  let offset = 2;
  let len = first;
  if (first & 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 3) throw new Error('DER: unsupported length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[2 + i]!;
    offset += n;
  }
  if (offset + len > buf.length) throw new Error('DER: truncated');
  return { tag: buf[0]!, content: buf.subarray(offset, offset + len), total: offset + len };
}

// ---- X.509 certificates (src/hsm/x509.ts) need a few more types. ----

/** BOOLEAN (DER: TRUE is 0xff). */
export function boolean(value: boolean): Buffer {
  return Buffer.from([0x01, 0x01, value ? 0xff : 0x00]);
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
 * (YYYYMMDDHHMMSSZ) from 2050. Whole seconds, UTC.
 */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const two = (n: number): string => String(n).padStart(2, '0');
  const rest = `${two(d.getUTCMonth() + 1)}${two(d.getUTCDate())}${two(d.getUTCHours())}${two(d.getUTCMinutes())}${two(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(0x17, Buffer.from(`${two(y % 100)}${rest}`, 'latin1'));
  return tlv(0x18, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'latin1'));
}

/** The TLVs inside a constructed value's content, in order. */
export function children(content: Buffer): Array<{ tag: number; content: Buffer; der: Buffer }> {
  const out: Array<{ tag: number; content: Buffer; der: Buffer }> = [];
  for (let rest = content; rest.length > 0;) {
    const t = readTlv(rest);
    out.push({ tag: t.tag, content: t.content, der: rest.subarray(0, t.total) });
    rest = rest.subarray(t.total);
  }
  return out;
}

/** The dotted form of an OBJECT IDENTIFIER's content bytes. */
export function oidString(content: Buffer): string {
  const first = content[0]!;
  const arcs = [Math.min(2, Math.floor(first / 40)), first - Math.min(2, Math.floor(first / 40)) * 40];
  let v = 0;
  for (const b of content.subarray(1)) {
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(v);
      v = 0;
    }
  }
  return arcs.join('.');
}
