/**
 * Telling a CSV that is not UTF-8 text from its first bytes, before any row is read: UTF-16 and
 * UTF-32 (with or without a byte-order mark) and files full of NUL bytes. Read as UTF-8, such a
 * file gives a header of `\u0000`-riddled names and no hint of the real problem; here it gets
 * one clear problem at line 1. Pure: bytes in, verdict out.
 */

export type ForeignEncoding = 'UTF-16LE' | 'UTF-16BE' | 'UTF-32LE' | 'UTF-32BE' | 'binary';

export interface EncodingVerdict {
  encoding: ForeignEncoding;
  /** True when the file starts with that encoding's byte-order mark. */
  bom: boolean;
}

/** How many leading bytes `sniffEncoding` looks at (more are ignored). */
export const SNIFF_BYTES = 4096;

/**
 * What the first bytes of a file say about its encoding: undefined for UTF-8 (or ASCII), else
 * the encoding it looks like. A sample shorter than 4 bytes is never judged foreign unless it
 * holds NUL bytes.
 */
export function sniffEncoding(sample: Uint8Array): EncodingVerdict | undefined {
  const b = sample.subarray(0, SNIFF_BYTES);
  // Byte-order marks: UTF-32 first, as its little-endian mark begins with UTF-16's.
  if (startsWith(b, [0xff, 0xfe, 0x00, 0x00])) return { encoding: 'UTF-32LE', bom: true };
  if (startsWith(b, [0x00, 0x00, 0xfe, 0xff])) return { encoding: 'UTF-32BE', bom: true };
  if (startsWith(b, [0xff, 0xfe])) return { encoding: 'UTF-16LE', bom: true };
  if (startsWith(b, [0xfe, 0xff])) return { encoding: 'UTF-16BE', bom: true };

  let nuls = 0;
  for (const x of b) if (x === 0) nuls++;
  if (nuls === 0) return undefined;
  // Text in UTF-16 or UTF-32 has NUL bytes in fixed places of each code unit (for the Latin
  // characters a CSV header and serials are made of); count where they fall.
  const at = [0, 0, 0, 0];
  const units4 = b.length - (b.length % 4);
  for (let i = 0; i < units4; i++) if (b[i] === 0) at[i % 4]!++;
  const quads = units4 / 4;
  if (quads >= 1) {
    const mostly = (n: number): boolean => n >= quads * 0.9;
    if (mostly(at[1]!) && mostly(at[2]!) && mostly(at[3]!) && at[0]! < quads * 0.5)
      return { encoding: 'UTF-32LE', bom: false };
    if (mostly(at[0]!) && mostly(at[1]!) && mostly(at[2]!) && at[3]! < quads * 0.5)
      return { encoding: 'UTF-32BE', bom: false };
  }
  const pairs = Math.floor(b.length / 2);
  let even = 0;
  let odd = 0;
  for (let i = 0; i < pairs * 2; i++) {
    if (b[i] !== 0) continue;
    if (i % 2 === 0) even++;
    else odd++;
  }
  if (pairs >= 1) {
    if (odd >= pairs * 0.6 && even < pairs * 0.1) return { encoding: 'UTF-16LE', bom: false };
    if (even >= pairs * 0.6 && odd < pairs * 0.1) return { encoding: 'UTF-16BE', bom: false };
  }
  // No text encoding explains them, but a CSV has no business holding NUL bytes in bulk.
  if (nuls >= Math.max(1, b.length * 0.1)) return { encoding: 'binary', bom: false };
  return undefined;
}

/** The operator's sentence for a verdict. */
export function encodingMessage(v: EncodingVerdict): string {
  if (v.encoding === 'binary')
    return 'this file is full of NUL bytes: it is not a text CSV (a binary file, or text in an encoding other than UTF-8)';
  return `this file looks like ${v.encoding} text${v.bom ? ' (it starts with a UTF-16/32 byte-order mark)' : ' without a byte-order mark'}; provline reads UTF-8 only`;
}

function startsWith(b: Uint8Array, prefix: number[]): boolean {
  return b.length >= prefix.length && prefix.every((x, i) => b[i] === x);
}
