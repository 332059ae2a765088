import { describe, expect, it } from 'vitest';
import {
  AtResponseReader,
  cmngWriteCommand,
  keygenCommand,
  normalizePem,
  parseCmngList,
  parseImei,
  parseKeygen,
  sha256Upper,
} from '../../src/flash/protocol/index.js';
import { CME_ERRORS, cmeError } from '../../src/flash/index.js';

const PEM_LF = '-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n';

describe('normalizePem', () => {
  it('writes CRLF line endings with no trailing break, whatever came in', () => {
    const want = '-----BEGIN CERTIFICATE-----\r\nMIIB\r\nAAAA\r\n-----END CERTIFICATE-----';
    expect(normalizePem(PEM_LF)).toBe(want);
    expect(normalizePem(PEM_LF.replace(/\n/g, '\r\n'))).toBe(want);
    expect(normalizePem(`  ${PEM_LF.replace(/\n/g, '\r')}\n\n`)).toBe(want);
  });

  it('hashes the text exactly: CRLF and LF differ (the nRF91 field quirk)', () => {
    expect(sha256Upper('abc')).toBe('BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD');
    expect(sha256Upper(normalizePem(PEM_LF))).not.toBe(sha256Upper(PEM_LF.trim()));
  });
});

describe('AtResponseReader', () => {
  it('yields responses only when their final line arrives, across chunk boundaries', () => {
    const r = new AtResponseReader();
    expect(r.push(Buffer.from('\r\n3526561000'))).toEqual([]);
    expect(r.push(Buffer.from('00001\r\n\r\nO'))).toEqual([]);
    expect(r.push(Buffer.from('K\r\n'))).toEqual([{ lines: ['352656100000001'], final: { kind: 'ok' } }]);
  });

  it('parses ERROR and +CME ERROR finals', () => {
    const r = new AtResponseReader();
    expect(r.push(Buffer.from('\r\n+CME ERROR: 527\r\n\r\nERROR\r\n'))).toEqual([
      { lines: [], final: { kind: 'cme', code: 527 } },
      { lines: [], final: { kind: 'error' } },
    ]);
  });

  it('forgets a half-received response on reset', () => {
    const r = new AtResponseReader();
    r.push(Buffer.from('%CMNG: 1,0,"AB'));
    r.reset();
    expect(r.push(Buffer.from('\r\nOK\r\n'))).toEqual([{ lines: [], final: { kind: 'ok' } }]);
  });
});

describe('answer parsers', () => {
  it('takes the IMEI from the last non-empty line, first 15 characters', () => {
    expect(parseImei(['junk', '352656100000001xyz', ''])).toBe('352656100000001');
    expect(parseImei(['35265610000000'])).toBeUndefined();
    expect(parseImei([])).toBeUndefined();
  });

  it('lists %CMNG hashes and skips damaged lines', () => {
    const h = 'A'.repeat(64);
    expect(
      parseCmngList([`%CMNG: 42,0,"${h}"`, `%CMNG: 42,1,"${h.slice(3)}"`, `%CMNG: 7,2,"${h.toLowerCase()}"`]),
    ).toEqual([
      { secTag: 42, type: 0, sha256: h },
      { secTag: 7, type: 2, sha256: h },
    ]);
  });

  it('splits %KEYGEN into the DER CSR and the COSE part', () => {
    const csr = Buffer.from([0x30, 0x03, 1, 2, 3]);
    const cose = Buffer.from([0xd2, 0x84]);
    expect(parseKeygen([`%KEYGEN: "${csr.toString('base64url')}.${cose.toString('base64url')}"`])).toEqual({
      csrDer: csr,
      cose,
    });
    expect(parseKeygen(['%KEYGEN: "trunc'])).toBeUndefined();
  });
});

describe('command encoding', () => {
  it('builds AT%CMNG writes and rejects content the modem cannot take', () => {
    expect(cmngWriteCommand(16842753, 1, 'X\r\nY')).toBe('AT%CMNG=0,16842753,1,"X\r\nY"');
    expect(() => cmngWriteCommand(1, 0, '')).toThrow();
    expect(() => cmngWriteCommand(1, 0, 'a"b')).toThrow();
    expect(keygenCommand(16842753, 'CN=352656100000001')).toBe('AT%KEYGEN=16842753,2,0,"CN=352656100000001"');
    expect(keygenCommand(5)).toBe('AT%KEYGEN=5,2,0');
  });
});

describe('CME error table', () => {
  it('maps every documented code to a stable code with a retry decision', () => {
    for (const n of [513, 514, 515, 518, 519, 523, 527, 528])
      expect(CME_ERRORS[n]?.code).toMatch(/^DEVICE_[A-Z_]+$/);
    expect(cmeError(527, 'AT%CMNG=0').code).toBe('DEVICE_CERT_INVALID');
    expect(cmeError(527, 'x').retryable).toBe(true);
    expect(cmeError(518, 'x').retryable).toBe(true);
    expect(cmeError(515, 'x').retryable).toBe(false);
    expect(cmeError(999, 'x')).toMatchObject({
      code: 'DEVICE_CME_ERROR',
      retryable: false,
      details: { cme: 999 },
    });
  });
});
