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
