import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { validateCsv } from '../../src/batch/intake.js';
import type { IntakeRow, Problem } from '../../src/batch/rules.js';
import { demoProfile, profileWith } from '../helpers/profiles.js';

const demo = demoProfile();

async function check(csv: string | Buffer, profile = demo) {
  const rows: IntakeRow[] = [];
  const result = await validateCsv(
    Readable.from([typeof csv === 'string' ? Buffer.from(csv) : csv]),
    profile,
    {
      onRow: (r) => rows.push(r),
    },
  );
  return { ...result, rowsOut: rows };
}

const codes = (ps: Problem[]) => ps.map((p) => `${p.line}:${p.code}`);

describe('CSV intake: accepted forms', () => {
  it('accepts a clean file and yields each row with its thing name, attributes and parameters', async () => {
    const r = await check('serial,hw_rev\nSN001,B\nSN002,C\n');
    expect(r.valid).toBe(true);
    expect(r.rows).toBe(2);
    expect(r.rowsOut).toEqual([
      {
        line: 2,
        serial: 'SN001',
        thingName: 'sensor-SN001',
        attributes: { serial: 'SN001', hw: 'B' },
        parameters: { ThingName: '{thingName}', SerialNumber: 'SN001', HardwareRevision: 'B', CSR: '{csr}' },
      },
      {
        line: 3,
        serial: 'SN002',
        thingName: 'sensor-SN002',
        attributes: { serial: 'SN002', hw: 'C' },
        parameters: { ThingName: '{thingName}', SerialNumber: 'SN002', HardwareRevision: 'C', CSR: '{csr}' },
      },
    ]);
  });

  it('accepts a UTF-8 BOM, CRLF line ends, quoted fields and blank lines', async () => {
    const csv = Buffer.concat([
      Buffer.from([0xef, 0xbb, 0xbf]),
      Buffer.from('serial,hw_rev\r\n"SN1","B"\r\n\r\nSN2,"C,D"\r\n\r\n'),
    ]);
    const r = await check(csv);
    expect(r.problems).toEqual([]);
    expect(r.rowsOut.map((x) => [x.line, x.serial])).toEqual([
      [2, 'SN1'],
      [4, 'SN2'],
    ]);
  });

  it('numbers lines physically across multi-line quoted fields and blank lines', async () => {
    const csv = 'serial,hw_rev,note\nSN1,B,"two\nlines"\n\nSN2,B,"three\r\nphysical\rlines"\n,B,x\n';
    const r = await check(csv, profileWith({ attributes: { hw: '{hw_rev}' } }));
    expect(codes(r.problems)).toEqual(['8:SERIAL_EMPTY']);
  });
});

describe('CSV intake: one rule at a time', () => {
  it('empty serial', async () => {
    const r = await check('serial,hw_rev\n,B\n');
    expect(r.problems[0]).toMatchObject({ line: 2, column: 'serial', value: '', code: 'SERIAL_EMPTY' });
  });

  it('missing serial column names the columns found', async () => {
    const r = await check('Serial,hw_rev\nSN1,B\n');
    expect(r.problems[0]).toMatchObject({ line: 1, code: 'HEADER_MISSING_SERIAL' });
    expect(r.problems[0]!.message).toContain('Serial, hw_rev');
  });

  it('a column the profile needs is missing from the header', async () => {
    const r = await check('serial\nSN1\n');
    expect(r.problems).toEqual([
      expect.objectContaining({ line: 1, column: 'hw_rev', code: 'HEADER_MISSING_COLUMN' }),
    ]);
  });

  it('duplicate and empty header names', async () => {
    const r = await check('serial,hw_rev,hw_rev,\nSN1,B,B,x\n');
    expect(codes(r.problems)).toEqual(['1:HEADER_DUPLICATE_COLUMN', '1:HEADER_EMPTY_COLUMN']);
  });

  it('a thing name outside AWS rules, with the offending value', async () => {
    const r = await check('serial,hw_rev\nSN.1,B\n');
    expect(r.problems).toEqual([
      expect.objectContaining({
        line: 2,
        column: 'serial',
        value: 'sensor-SN.1',
        code: 'THING_NAME_INVALID',
      }),
    ]);
  });

  it('a thing name longer than 128 characters', async () => {
    const r = await check(`serial,hw_rev\n${'A'.repeat(125)},B\n`);
    expect(codes(r.problems)).toEqual(['2:THING_NAME_INVALID']);
    expect(r.problems[0]!.value).toMatch(/…\(132 chars\)$/);
  });

  it('an attribute value with a space, reported on its column', async () => {
    const r = await check('serial,hw_rev\nSN1,rev B\n');
    expect(r.problems).toEqual([
      expect.objectContaining({ line: 2, column: 'hw_rev', value: 'rev B', code: 'ATTRIBUTE_VALUE_INVALID' }),
    ]);
  });

  it('too many attributes for a profile without a thing type', async () => {
    const profile = profileWith({
      attributes: { a: '{serial}', b: '{serial}', c: '{serial}', d: '{serial}' },
    });
    const r = await check('serial\nSN1\n', profile);
    expect(codes(r.problems)).toEqual(['1:PROFILE_TOO_MANY_ATTRIBUTES']);
    const withType = profileWith({
      thingType: 'sensor',
      attributes: { a: '{serial}', b: '{serial}', c: '{serial}', d: '{serial}' },
    });
    expect((await check('serial\nSN1\n', withType)).valid).toBe(true);
  });

  it('duplicate serials name both lines', async () => {
    const r = await check('serial,hw_rev\nSN1,B\nSN2,B\nSN1,C\n');
    expect(r.problems).toEqual([
      expect.objectContaining({ line: 4, column: 'serial', value: 'SN1', code: 'SERIAL_DUPLICATE' }),
    ]);
    expect(r.problems[0]!.message).toContain('line 2 and again on line 4');
  });

  it('duplicate thing names when the pattern does not keep serials apart', async () => {
    const profile = profileWith({ thingName: 'dev-{model}', attributes: {} });
    const r = await check('serial,model\nSN1,X\nSN2,X\n', profile);
    expect(r.problems).toEqual([expect.objectContaining({ line: 3, code: 'THING_NAME_DUPLICATE' })]);
    expect(r.problems[0]!.message).toContain('line 2');
  });

  it('wrong number of fields', async () => {
    const r = await check('serial,hw_rev\nSN1\nSN2,B,extra\nSN3,B\n');
    expect(r.problems.map((p) => [p.line, p.code, p.value])).toEqual([
      [2, 'FIELD_COUNT', '1'],
      [3, 'FIELD_COUNT', '3'],
    ]);
  });

  it('an unterminated quote, at the line where the quote opens', async () => {
    const r = await check('serial,hw_rev\nSN1,B\n"SN2,B\nSN3,B\n');
    expect(codes(r.problems)).toEqual(['3:UNTERMINATED_QUOTE']);
  });

  it('a file that is one unterminated quote is not also called empty', async () => {
    expect(codes((await check('"serial,hw_rev\nSN1,B\n')).problems)).toEqual(['1:UNTERMINATED_QUOTE']);
  });

  it('a stray quote inside an unquoted field is flagged on that field, and later lines stay numbered', async () => {
    const r = await check('serial,hw_rev\nS"N1,B\nSN2,B\n,B\n');
    expect(codes(r.problems)).toEqual(['2:SERIAL_INVALID', '4:SERIAL_EMPTY']);
  });

  it('invalid UTF-8, escaped in the value', async () => {
    const r = await check(
      Buffer.concat([Buffer.from('serial,hw_rev\nSN1,'), Buffer.from([0xff, 0x41]), Buffer.from('\n')]),
    );
    expect(r.problems).toEqual([
      expect.objectContaining({ line: 2, column: 'hw_rev', value: '\\ufffdA', code: 'INVALID_UTF8' }),
    ]);
  });

  it('control characters are escaped in reported values', async () => {
    const r = await check('serial,hw_rev\n"SN\t1",B\n');
    expect(r.problems[0]).toMatchObject({ code: 'SERIAL_INVALID', value: 'SN\\t1' });
  });

  it('an empty file, and a header without rows', async () => {
    expect(codes((await check('')).problems)).toEqual(['1:FILE_EMPTY']);
    expect(codes((await check('\n\n')).problems)).toEqual(['1:FILE_EMPTY']);
    expect(codes((await check('serial,hw_rev\n\n')).problems)).toEqual(['2:NO_DATA_ROWS']);
  });

  it('a template parameter longer than AWS accepts', async () => {
    const profile = profileWith({ attributes: {}, parameters: { Note: '{note}' } });
    const r = await check(`serial,note\nSN1,${'x'.repeat(4097)}\n`, profile);
    expect(r.problems).toEqual([
      expect.objectContaining({ line: 2, column: 'note', code: 'PARAMETER_TOO_LONG' }),
    ]);
  });

  it('reports every problem, keeps the first N and counts the rest', async () => {
    const body = Array.from({ length: 50 }, () => ',B').join('\n');
    const r = await validateCsv(Readable.from([Buffer.from(`serial,hw_rev\n${body}\n`)]), demo, {
      maxProblems: 10,
    });
    expect(r.problemCount).toBe(50);
    expect(r.problems).toHaveLength(10);
    expect(r.problems.map((p) => p.line)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });
});
