/**
 * The station's per-device log describes each command and answer without key material: the
 * transcripts of both protocols over exchanges that write a wrapped key and a plain private
 * key, fed in arbitrary chunk sizes, never contain the key's bytes in any encoding, nor a hash
 * of it; and a visit's lines stay bounded.
 */
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VISIT_LINE_CHARS, VISIT_LINES_MAX, capLines, type ExchangeLine } from '../../src/batch/journal.js';
import {
  CMD,
  RESPONSE_BIT,
  SLOT,
  cmngWriteCommand,
  encodeAt,
  encodeFrame,
  normalizePem,
  u32,
  u8,
} from '../../src/flash/protocol/index.js';
import { AtTranscriber, SerialV1Transcriber } from '../../src/flash/protocol/transcript.js';

/** Every way the secret could show up in a log line. */
function encodings(secret: Buffer): string[] {
  const hash = createHash('sha256').update(secret).digest('hex');
  return [
    secret.toString('hex'),
    secret.toString('hex').toUpperCase(),
    secret.toString('base64'),
    secret.toString('base64url'),
    hash.slice(0, 16),
    hash.slice(0, 16).toUpperCase(),
    // Any 12 consecutive bytes of it, as base64 and hex (a truncated line would still leak).
    secret.subarray(4, 16).toString('base64'),
    secret.subarray(4, 16).toString('hex'),
  ];
}

/** Feeds `bytes` in chunks of the given sizes (cycling), as a serial line delivers them. */
function feed(push: (b: Uint8Array) => string[], bytes: Buffer, sizes: number[]): string[] {
  const out: string[] = [];
  let i = 0;
  for (let off = 0; off < bytes.length; i++) {
    const n = sizes[i % sizes.length]!;
    out.push(...push(bytes.subarray(off, off + n)));
    off += n;
  }
  return out;
}

describe('serial-v1 transcript', () => {
  const wrapped = randomBytes(80);
  const hash = createHash('sha256').update(wrapped).digest();
  const commands = Buffer.concat([
    encodeFrame({ type: CMD.BEGIN, seq: 5, payload: Buffer.concat([u8(SLOT.wrappedKey), u32(80), hash]) }),
    encodeFrame({ type: CMD.CHUNK, seq: 6, payload: Buffer.concat([u8(SLOT.wrappedKey), u32(0), wrapped]) }),
    encodeFrame({ type: CMD.COMMIT, seq: 7, payload: u8(SLOT.wrappedKey) }),
    encodeFrame({ type: CMD.READ_HASH, seq: 8, payload: u8(SLOT.wrappedKey) }),
  ]);
  const answers = Buffer.concat([
    encodeFrame({ type: CMD.BEGIN | RESPONSE_BIT, seq: 5, payload: u8(0) }),
    encodeFrame({ type: CMD.CHUNK | RESPONSE_BIT, seq: 6, payload: Buffer.concat([u8(0), u32(80)]) }),
    encodeFrame({ type: CMD.COMMIT | RESPONSE_BIT, seq: 7, payload: Buffer.concat([u8(0), hash]) }),
    encodeFrame({
      type: CMD.READ_HASH | RESPONSE_BIT,
      seq: 8,
      payload: Buffer.concat([u8(0), u32(80), hash]),
    }),
  ]);

  it('describes a wrapped-key write by slot, offset and length, and never its bytes or hash, however the bytes arrive', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }), (sizes) => {
        const t = new SerialV1Transcriber();
        const lines = [
          ...feed((b) => t.sent(b), commands, sizes),
          ...feed((b) => t.received(b), answers, sizes),
        ];
        expect(lines).toEqual([
          'BEGIN #5 wrappedKey, 80 bytes',
          'CHUNK #6 wrappedKey at 0, 80 bytes',
          'COMMIT #7 wrappedKey',
          'READ_HASH #8 wrappedKey',
          'BEGIN answer #5 OK',
          'CHUNK answer #6 OK: next offset 80',
          'COMMIT answer #7 OK: sha256 not logged (key slot)',
          'READ_HASH answer #8 OK: 80 bytes, sha256 not logged (key slot)',
        ]);
        const text = lines.join('\n');
        for (const e of encodings(wrapped)) expect(text).not.toContain(e);
      }),
    );
  });

  it('shows the hash of a certificate slot (public) to compare with the read-back', () => {
    const t = new SerialV1Transcriber();
    const cert = createHash('sha256').update('cert').digest();
    t.sent(encodeFrame({ type: CMD.READ_HASH, seq: 9, payload: u8(SLOT.certificate) }));
    const [line] = t.received(
      encodeFrame({
        type: CMD.READ_HASH | RESPONSE_BIT,
        seq: 9,
        payload: Buffer.concat([u8(0), u32(10), cert]),
      }),
    );
    expect(line).toBe(
      `READ_HASH answer #9 OK: 10 bytes, sha256 ${cert.subarray(0, 8).toString('hex').toUpperCase()}…`,
    );
  });
});

describe('AT transcript', () => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = normalizePem(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  const der = privateKey.export({ type: 'pkcs8', format: 'der' });
  const keyHash = createHash('sha256').update(pem).digest('hex').toUpperCase();

  it('reduces every credential write to its type and length, however the bytes arrive (the PEM has CR LF line ends inside the quotes)', () => {
    const bytes = Buffer.concat([
      encodeAt('AT+CFUN=4'),
      encodeAt(cmngWriteCommand(16842753, 2, pem)),
      encodeAt('AT#XMQTTCFG="nrf91-352656100000001",60,1'),
    ]);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 8 }), (sizes) => {
        const t = new AtTranscriber();
        const lines = feed((b) => t.sent(b), bytes, sizes);
        expect(lines).toEqual([
          'AT+CFUN=4',
          `AT%CMNG=0,16842753,2,"…" (private key, ${pem.length} bytes, content not logged)`,
          'AT#XMQTTCFG="nrf91-352656100000001",60,1',
        ]);
        const text = lines.join('\n');
        expect(text).not.toContain('PRIVATE');
        for (const e of encodings(der)) expect(text).not.toContain(e);
        for (const l of pem.split('\r\n').slice(1, -1)) expect(text).not.toContain(l);
      }),
    );
  });

  it("does not log the hash of the private key in the modem's credential list", () => {
    const t = new AtTranscriber();
    const lines = t.received(
      Buffer.from(`%CMNG: 16842753,1,"${'A'.repeat(64)}"\r\n%CMNG: 16842753,2,"${keyHash}"\r\nOK\r\n`),
    );
    expect(lines).toEqual([
      `%CMNG: 16842753,1,"${'A'.repeat(16)}…"`,
      '%CMNG: 16842753,2,"…" (private key: its hash is not logged)',
      'OK',
    ]);
  });
});

describe('visit log bounds', () => {
  it('keeps the first and last lines of a long visit, counts the rest, and caps each line', () => {
    const lines: ExchangeLine[] = Array.from({ length: 1000 }, (_, i) => ({
      t: i,
      dir: '>',
      text: `${i} ${'x'.repeat(500)}`,
    }));
    const capped = capLines(lines);
    expect(capped.lines).toHaveLength(VISIT_LINES_MAX);
    expect(capped.omitted).toBe(1000 - VISIT_LINES_MAX);
    expect(capped.lines[0]!.t).toBe(0);
    expect(capped.lines.at(-1)!.t).toBe(999);
    for (const l of capped.lines) expect(l.text.length).toBeLessThanOrEqual(VISIT_LINE_CHARS);
  });
});
