/**
 * Minimal DER helpers. SoftHSM zero-pads a key to a multiple of 8 bytes before
 * CKM_AES_KEY_WRAP_PAD, so an unwrapped PKCS#8 can carry trailing zeros (shared/reference/
 * stack-notes.md §4); every consumer trims to the outer TLV's own length with `trimToDer`.
 */

/** Total length (header + content) of the DER TLV at the start of `buf`. */
export function derTotalLength(buf: Uint8Array): number {
  if (buf.length < 2) throw new Error('DER: truncated header');
  const first = buf[1]!;
  if (first < 0x80) return 2 + first;
  const n = first & 0x7f;
  if (n === 0 || n > 4 || buf.length < 2 + n) throw new Error('DER: unsupported length encoding');
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + buf[2 + i]!;
  return 2 + n + len;
}

/** `buf` cut to its first DER element; throws if the element is longer than the buffer. */
export function trimToDer(buf: Buffer): Buffer {
  const total = derTotalLength(buf);
  if (total > buf.length) throw new Error(`DER: element of ${total} bytes in a ${buf.length}-byte buffer`);
  for (let i = total; i < buf.length; i++) {
    if (buf[i] !== 0) throw new Error('DER: non-zero bytes after the element');
  }
  return buf.subarray(0, total);
}
