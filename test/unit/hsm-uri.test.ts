// Pure parts of src/hsm: RFC 7512 URIs, label padding and the CKR → HSM_* table.
import pkcs11js from 'pkcs11js';
import { describe, expect, it } from 'vitest';
import { ckrName, hsmError } from '../../src/hsm/errors.js';
import { formatPkcs11Uri, padTokenLabel, parsePkcs11Uri, tokenLabel } from '../../src/hsm/uri.js';

describe('PKCS#11 URIs', () => {
  it('round-trips token, object, binary id and type', () => {
    const u = {
      token: 'line 3',
      object: 'provline-kek',
      id: Buffer.from([0x00, 0xc2, 0x26, 0x41]),
      type: 'secret-key' as const,
    };
    const s = formatPkcs11Uri(u);
    expect(s).toBe('pkcs11:token=line%203;object=provline-kek;id=%00%C2%26%41;type=secret-key');
    expect(parsePkcs11Uri(s)).toEqual(u);
  });
  it('parses slot-id, serial and percent-encoded UTF-8', () => {
    expect(parsePkcs11Uri('pkcs11:token=M%C3%BCnchen;serial=4A2F;slot-id=42')).toEqual({
      token: 'München',
      serial: '4A2F',
      slotId: 42,
    });
  });
  it('refuses a PIN in the URI and unknown attributes', () => {
    expect(() => parsePkcs11Uri('pkcs11:token=provline?pin-value=1234')).toThrow(
      expect.objectContaining({ code: 'HSM_URI_INVALID' }),
    );
    expect(() => parsePkcs11Uri('pkcs11:token=provline;library-version=1')).toThrow(/unsupported attribute/);
    expect(() => parsePkcs11Uri('pkcs11:id=%zz')).toThrow(/percent-encoding/);
  });
  it('pads token labels with spaces to 32 bytes and strips spaces or NULs', () => {
    expect(padTokenLabel('provline')).toHaveLength(32);
    expect(tokenLabel(padTokenLabel('provline'))).toBe('provline');
    expect(tokenLabel('provline\0\0\0')).toBe('provline');
    expect(() => padTokenLabel('x'.repeat(33))).toThrow(
      expect.objectContaining({ code: 'HSM_LABEL_TOO_LONG' }),
    );
  });
});

describe('CKR mapping', () => {
  const err = (code: number, method = 'C_Login') =>
    new pkcs11js.Pkcs11Error(`${ckrName(code)}:${code}`, code, method);
  it('branches on the numeric code, with a stable HSM_* code and retryable flag', () => {
    expect(hsmError(err(pkcs11js.CKR_PIN_INCORRECT), 'logging in')).toMatchObject({
      code: 'HSM_PIN_INCORRECT',
      retryable: false,
      kind: 'invalid-input',
      details: { ckr: 'CKR_PIN_INCORRECT', method: 'C_Login' },
    });
    expect(hsmError(err(pkcs11js.CKR_SESSION_HANDLE_INVALID), 'x')).toMatchObject({
      code: 'HSM_SESSION_LOST',
      retryable: true,
    });
    expect(hsmError(err(pkcs11js.CKR_DEVICE_ERROR), 'x')).toMatchObject({
      code: 'HSM_DEVICE_ERROR',
      retryable: true,
    });
    expect(hsmError(err(pkcs11js.CKR_MECHANISM_INVALID), 'x')).toMatchObject({
      code: 'HSM_MECHANISM_UNSUPPORTED',
      retryable: false,
    });
    expect(hsmError(err(pkcs11js.CKR_WRAPPING_KEY_HANDLE_INVALID), 'x')).toMatchObject({
      code: 'HSM_OBJECT_GONE',
      retryable: true,
    });
  });
  it('keeps vendor codes it does not know, by number', () => {
    expect(hsmError(err(0x80000123), 'x')).toMatchObject({
      code: 'HSM_CKR_UNEXPECTED',
      details: { ckr: '0x80000123' },
    });
  });
});
