/** src/core/der.ts: the one DER writer and reader, checked against Node's own X.509 and key parsers. */
import { X509Certificate, generateKeyPairSync, sign } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  NULL,
  bitString,
  boolean,
  children,
  derTotalLength,
  fromPem,
  namedBits,
  octetString,
  oid,
  oidString,
  readTlv,
  seq,
  set,
  smallInteger,
  time,
  tlv,
  toPem,
  trimToDer,
  unsignedInteger,
  utf8,
} from '../../src/core/der.js';

describe('DER reader', () => {
  it('reads back what the writer wrote, for contents in every length form', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0x1e }),
        fc.oneof(
          fc.integer({ min: 0, max: 0x7f }),
          fc.integer({ min: 0x80, max: 0xff }),
          fc.integer({ min: 0x100, max: 0xffff }),
          fc.integer({ min: 0x10000, max: 0x10100 }),
        ),
        (tag, length) => {
          const content = Buffer.alloc(length, 0xa5);
          const der = tlv(tag, content);
          const headerBytes = length < 0x80 ? 2 : length < 0x100 ? 3 : length < 0x10000 ? 4 : 5;
          expect(der.length).toBe(headerBytes + length);
          const t = readTlv(der);
          expect(t).toMatchObject({ tag, start: 0, contentStart: headerBytes, end: der.length });
          expect(t.content.equals(content)).toBe(true);
          expect(t.der.equals(der)).toBe(true);
          expect(derTotalLength(der)).toBe(der.length);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('reads at an offset and walks the children of a constructed element', () => {
    const inner = [utf8('a'), octetString(Buffer.from([1, 2, 3])), NULL];
    const buf = Buffer.concat([Buffer.from([0xff, 0xff]), seq(...inner)]);
    const outer = readTlv(buf, 2);
    expect(outer).toMatchObject({ tag: 0x30, start: 2, contentStart: 4, end: buf.length });
    const kids = children(outer);
    expect(kids.map((k) => k.tag)).toEqual([0x0c, 0x04, 0x05]);
    expect(kids.map((k) => k.der)).toEqual(inner);
    expect(kids[1]!.content).toEqual(Buffer.from([1, 2, 3]));
    // A plain buffer of whole elements reads the same way.
    expect(children(outer.content).map((k) => k.der)).toEqual(inner);
    expect(children(readTlv(seq()))).toEqual([]);
  });

  it('refuses truncated, indefinite, oversized and overrunning elements, saying where', () => {
    expect(() => readTlv(Buffer.from([0x30]))).toThrow(/truncated header at offset 0/);
    expect(() => readTlv(Buffer.from([0x30, 0x80, 0x00, 0x00]))).toThrow(/indefinite length/);
    expect(() => readTlv(Buffer.from([0x30, 0x85, 1, 1, 1, 1, 1]))).toThrow(/5-byte length/);
    expect(() => readTlv(Buffer.from([0x30, 0x82, 0x01]))).toThrow(/truncated length/);
    expect(() => readTlv(Buffer.from([0x04, 0x03, 0x01]))).toThrow(/needs 5 bytes, 3 left/);
    expect(() => readTlv(Buffer.from([0x05, 0x00]), 2)).toThrow(/truncated header at offset 2/);
    // A child running past its parent is refused as well.
    expect(() => children(Buffer.from([0x04, 0x02, 0x00]))).toThrow(/needs 4 bytes/);
  });

  it('trims SoftHSM zero padding after a PKCS#8 key, and nothing else', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
    const padded = Buffer.concat([pkcs8, Buffer.alloc(8 - (pkcs8.length % 8))]);
    expect(trimToDer(padded).equals(pkcs8)).toBe(true);
    expect(() => trimToDer(Buffer.concat([pkcs8, Buffer.from([0, 1])]))).toThrow(/non-zero bytes/);
    expect(() => trimToDer(pkcs8.subarray(0, pkcs8.length - 1))).toThrow(/element of \d+ bytes/);
  });

  it("takes apart a key Node made: the SPKI's algorithm and curve OIDs", () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const spki = publicKey.export({ format: 'der', type: 'spki' });
    const [alg, bits] = children(readTlv(spki));
    const [algOid, curve] = children(alg!);
    expect(oidString(algOid!.content)).toBe('1.2.840.10045.2.1');
    expect(oidString(curve!.content)).toBe('1.3.132.0.34');
    expect(bits!.tag).toBe(0x03);
    expect(bits!.content[0]).toBe(0); // no unused bits
    expect(bits!.content.length).toBe(1 + 97); // 0x04 || X || Y on P-384
  });
});

describe('DER writer', () => {
  it('OBJECT IDENTIFIERs round-trip, including multi-byte arcs and the 2.x form', () => {
    for (const dotted of [
      '1.2.840.113549.1.1.11',
      '2.5.29.19',
      '1.3.6.1.4.1.311.21.20',
      '2.999.1',
      '0.9.2342',
    ]) {
      const der = oid(dotted);
      expect(der[0]).toBe(0x06);
      expect(oidString(readTlv(der).content)).toBe(dotted);
    }
    expect(oid('1.2.840.10045.3.1.7').toString('hex')).toBe('06082a8648ce3d030107');
    expect(() => oid('1')).toThrow(/not a dotted OBJECT IDENTIFIER/);
    expect(() => oid('1.x.3')).toThrow(/not a dotted OBJECT IDENTIFIER/);
    expect(() => oidString(Buffer.from([0x2a, 0x86]))).toThrow(/malformed OBJECT IDENTIFIER/);
  });

  it('INTEGERs are minimal and non-negative', () => {
    expect(unsignedInteger(Buffer.from([0, 0, 0x7f])).toString('hex')).toBe('02017f');
    expect(unsignedInteger(Buffer.from([0x80])).toString('hex')).toBe('02020080');
    expect(unsignedInteger(Buffer.from([0, 0])).toString('hex')).toBe('020100');
    expect(smallInteger(2).toString('hex')).toBe('020102');
    expect(() => smallInteger(128)).toThrow(RangeError);
  });

  it('times switch from UTCTime to GeneralizedTime at 2050 (RFC 5280)', () => {
    expect(time(new Date('2049-12-31T23:59:59.900Z')).toString('latin1')).toBe('\x17\x0d491231235959Z');
    expect(time(new Date('2050-01-01T00:00:00Z')).toString('latin1')).toBe('\x18\x0f20500101000000Z');
    expect(time(new Date('1950-01-01T00:00:00Z')).toString('latin1')).toBe('\x17\x0d500101000000Z');
    expect(time(new Date('1949-12-31T23:59:59Z')).toString('latin1')).toBe('\x18\x0f19491231235959Z');
  });

  it('named bits drop trailing zero bits and count them as unused', () => {
    // keyUsage digitalSignature (0): 03 02 07 80; keyCertSign (5) + cRLSign (6): 03 02 01 06.
    expect(namedBits([0]).toString('hex')).toBe('03020780');
    expect(namedBits([5, 6]).toString('hex')).toBe('03020106');
    expect(namedBits([8]).toString('hex')).toBe('0303070080');
    expect(namedBits([]).toString('hex')).toBe('030100');
  });

  it('PEM wraps at 64 columns and reads back', () => {
    const der = octetString(Buffer.alloc(100, 7));
    const pem = toPem(der, 'TEST BLOCK');
    expect(pem.split('\n').every((l) => l.length <= 64)).toBe(true);
    expect(fromPem(`junk\n${pem}more`, 'TEST BLOCK')!.equals(der)).toBe(true);
    expect(fromPem(pem, 'OTHER')).toBeUndefined();
  });

  it('builds a self-signed certificate that Node parses and verifies', () => {
    // Made with Node's signer over a tbsCertificate from the writer; read back by Node's own
    // X.509 parser (OpenSSL), a reader nobody here wrote.
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = publicKey.export({ format: 'der', type: 'spki' });
    const name = seq(set(seq(oid('2.5.4.3'), utf8('der test'))));
    const ecdsaSha256 = seq(oid('1.2.840.10045.4.3.2'));
    const tbs = seq(
      tlv(0xa0, smallInteger(2)),
      unsignedInteger(Buffer.from([0x00, 0x9a, 0x01])),
      ecdsaSha256,
      name,
      seq(time(new Date('2026-01-01T00:00:00Z')), time(new Date('2051-01-01T00:00:00Z'))),
      name,
      spki,
      tlv(0xa3, seq(seq(oid('2.5.29.19'), boolean(true), octetString(seq(boolean(true)))))),
    );
    const der = seq(tbs, ecdsaSha256, bitString(sign('sha256', tbs, privateKey)));
    const cert = new X509Certificate(der);
    expect(cert.subject).toBe('CN=der test');
    expect(cert.serialNumber.toUpperCase()).toBe('9A01');
    expect(cert.ca).toBe(true);
    expect(new Date(cert.validTo).toISOString()).toBe('2051-01-01T00:00:00.000Z');
    expect(cert.verify(publicKey)).toBe(true);
    // And the reader finds the same parts Node did.
    const [tbsRead] = children(readTlv(der));
    expect(tbsRead!.der.equals(tbs)).toBe(true);
    expect(children(tbsRead!)[6]!.der.equals(spki)).toBe(true);
  });
});
