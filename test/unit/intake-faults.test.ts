/**
 * Intake defects found by trying the CLI as a new user would (issues 12 and 16), each pinned
 * by a test named after it: UTF-16/32 and NUL-filled files, a quoted empty serial in a
 * one-column file, header problems hiding row problems, rejected rows losing their serial.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { sniffEncoding } from '../../src/batch/encoding.js';
import { validateCsv } from '../../src/batch/intake.js';
import type { IntakeRow } from '../../src/batch/rules.js';
import { demoProfile, profileWith } from '../helpers/profiles.js';

async function check(csv: string | Buffer, profile = demoProfile()) {
  const rows: IntakeRow[] = [];
  const rejected: Array<[number, string | null]> = [];
  const result = await validateCsv(
    Readable.from([typeof csv === 'string' ? Buffer.from(csv) : csv]),
    profile,
    {
      onRow: (r) => rows.push(r),
      onReject: (line, serial) => rejected.push([line, serial]),
    },
  );
  return { ...result, rowsOut: rows, rejected };
}

const text = 'serial,hw_rev\nSN001,B\nSN002,C\n';
const utf16le = (s: string): Buffer => Buffer.from(s, 'utf16le');
const utf16be = (s: string): Buffer => utf16le(s).swap16();
const utf32le = (s: string): Buffer => {
  const out = Buffer.alloc(s.length * 4);
  for (let i = 0; i < s.length; i++) out.writeUInt32LE(s.charCodeAt(i), i * 4);
  return out;
};
const utf32be = (s: string): Buffer => utf32le(s).swap32();

describe('encoding sniffer (pure)', () => {
  it('UTF-8 and ASCII text, with or without its BOM and non-Latin characters, is left alone', () => {
    expect(sniffEncoding(Buffer.from(text))).toBeUndefined();
    expect(sniffEncoding(Buffer.from('\ufeffserial,note\nSN1,ünïcødé 设备\n'))).toBeUndefined();
    expect(sniffEncoding(Buffer.alloc(0))).toBeUndefined();
  });

  it('names UTF-16 and UTF-32 in both byte orders, without and with a byte-order mark', () => {
    expect(sniffEncoding(utf16le(text))).toEqual({ encoding: 'UTF-16LE', bom: false });
    expect(sniffEncoding(utf16be(text))).toEqual({ encoding: 'UTF-16BE', bom: false });
    expect(sniffEncoding(utf32le(text))).toEqual({ encoding: 'UTF-32LE', bom: false });
    expect(sniffEncoding(utf32be(text))).toEqual({ encoding: 'UTF-32BE', bom: false });
    expect(sniffEncoding(utf16le(`\ufeff${text}`))).toEqual({ encoding: 'UTF-16LE', bom: true });
    expect(sniffEncoding(utf16be(`\ufeff${text}`))).toEqual({ encoding: 'UTF-16BE', bom: true });
    expect(sniffEncoding(utf32le(`\ufeff${text}`))).toEqual({ encoding: 'UTF-32LE', bom: true });
    expect(sniffEncoding(utf32be(`\ufeff${text}`))).toEqual({ encoding: 'UTF-32BE', bom: true });
  });

  it('a file full of NUL bytes is binary; one stray NUL in text is left to the row rules', () => {
    expect(sniffEncoding(Buffer.alloc(5000))).toEqual({ encoding: 'binary', bom: false });
    expect(sniffEncoding(Buffer.from(`${text}SN\u0000003,B\n${'SN004,B\n'.repeat(50)}`))).toBeUndefined();
  });
});

describe('intake regressions', () => {
  it('a UTF-16 file without a BOM got HEADER_MISSING_SERIAL with \\u0000 in it: now FILE_ENCODING at line 1', async () => {
    for (const bytes of [utf16le(text), utf16be(text), utf32le(text), utf32be(text), Buffer.alloc(100)]) {
      const r = await check(bytes);
      expect(r.valid).toBe(false);
      expect(r.problems).toHaveLength(1);
      expect(r.problems[0]).toMatchObject({ line: 1, code: 'FILE_ENCODING' });
      expect(r.problems[0]!.message).not.toContain('\u0000');
      expect(r.problems[0]!.hint).toContain('UTF-8');
      expect(r.rows).toBe(0);
    }
    const r = await check(utf16le(text));
    expect(r.problems[0]!.message).toContain('looks like UTF-16LE text without a byte-order mark');
  });

  it('a UTF-16 file larger than the sniffed sample is refused as well', async () => {
    const big = `serial,hw_rev\n${Array.from({ length: 2000 }, (_, i) => `SN${i},B`).join('\n')}\n`;
    const r = await check(utf16le(big));
    expect(r.problems.map((p) => p.code)).toEqual(['FILE_ENCODING']);
  });

  it('a UTF-8 file larger than the sniffed sample reads as before, across the sample boundary', async () => {
    const big = `serial,hw_rev\n${Array.from({ length: 3000 }, (_, i) => `SN${i},B`).join('\n')}\n`;
    const r = await check(big);
    expect(r.problems).toEqual([]);
    expect(r.rowsOut).toHaveLength(3000);
    expect(r.rowsOut[2999]).toMatchObject({ line: 3001, serial: 'SN2999' });
  });

  it('a quoted empty serial in a one-column CSV was dropped as a blank line: now SERIAL_EMPTY at its line', async () => {
    const profile = profileWith({ attributes: {}, parameters: { SerialNumber: '{serial}' } });
    const r = await check('serial\nSN1\n""\n\nSN4\n', profile);
    expect(r.rows).toBe(3);
    expect(r.problems.map((p) => `${p.line}:${p.code}`)).toEqual(['3:SERIAL_EMPTY']);
    expect(r.rowsOut.map((x) => x.serial)).toEqual(['SN1', 'SN4']);
  });

  it('a header problem hid the row problems: one run reports both', async () => {
    // The demo profile needs hw_rev; the file lacks it and has a bad serial on line 3.
    const r = await check('serial\nSN1\nSN 2\nSN1\n');
    expect(r.problems.map((p) => `${p.line}:${p.code}`)).toEqual([
      '1:HEADER_MISSING_COLUMN',
      '3:SERIAL_INVALID',
      '4:SERIAL_DUPLICATE',
    ]);
    expect(r.validRows).toBe(0);
    expect(r.rowsOut).toEqual([]);
  });

  it('without a serial column the other columns and field counts are still checked', async () => {
    const r = await check('Serial,hw_rev\nSN1,B\nSN2,rev B\nSN3\n');
    expect(r.problems.map((p) => `${p.line}:${p.code}`)).toEqual([
      '1:HEADER_MISSING_SERIAL',
      '3:ATTRIBUTE_VALUE_INVALID',
      '4:FIELD_COUNT',
    ]);
    expect(r.rowsOut).toEqual([]);
  });

  it('reports of --skip-invalid batches gave a rejected row the first problem’s value: each keeps its own serial', async () => {
    const r = await check('serial,hw_rev\nSN1,B\n=1+2,B\nSN3,rev B\nSN1,B\n"SN5,B\n');
    expect(r.problems.map((p) => [p.line, p.code, p.value])).toEqual([
      [3, 'THING_NAME_INVALID', 'sensor-=1+2'],
      [3, 'ATTRIBUTE_VALUE_INVALID', '=1+2'],
      [4, 'ATTRIBUTE_VALUE_INVALID', 'rev B'],
      [5, 'SERIAL_DUPLICATE', 'SN1'],
      [6, 'UNTERMINATED_QUOTE', null],
    ]);
    expect(r.rejected).toEqual([
      [3, '=1+2'],
      [4, 'SN3'],
      [5, 'SN1'],
      [6, null],
    ]);
  });
});
