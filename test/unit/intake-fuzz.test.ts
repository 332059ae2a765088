/**
 * Property tests for the intake: random byte mutations of a valid CSV never crash the
 * validator and always give line-numbered problems within the file, and a defect planted at a
 * known physical line (among multi-line quoted fields, blank lines and mixed line ends) is
 * reported at exactly that line.
 */
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateCsv } from '../../src/batch/intake.js';
import { ERROR_CODES } from '../../src/core/codes.js';
import { demoProfile } from '../helpers/profiles.js';

const profile = demoProfile();
const KNOWN = new Set<string>(ERROR_CODES.intake);

const run = (buf: Buffer) => validateCsv(Readable.from([buf]), profile, { maxProblems: 10_000 });

/** Physical lines of a buffer: CRLF, LF and CR each end one line. */
function physicalLines(buf: Buffer): number {
  let n = 1;
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] === 10) n++;
    else if (buf[i] === 13) {
      n++;
      if (buf[i + 1] === 10) i++;
    }
  }
  return n;
}

const base = Buffer.from(
  [
    'serial,hw_rev,note',
    'SN0001,A,plain',
    'SN0002,B,"quoted, with comma"',
    'SN0003,C,"multi',
    'line"',
    '',
    'SN0004,D,x',
    'SN0005,E,"say ""hi"""',
    '',
  ].join('\r\n'),
);

describe('intake under random damage', () => {
  it('the undamaged base file is valid', async () => {
    expect((await run(base)).problems).toEqual([]);
  });

  it('never crashes and always points at a line inside the file', async () => {
    const mutation = fc.record({
      kind: fc.constantFrom('replace', 'insert', 'delete'),
      at: fc.nat(),
      byte: fc.constantFrom(0x22, 0x2c, 0x0a, 0x0d, 0x20, 0xff, 0xc3, 0x00, 0x41, 0x2e, 0xef),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 6 }), async (mutations) => {
        let buf = Buffer.from(base);
        for (const m of mutations) {
          const at = buf.length ? m.at % buf.length : 0;
          if (m.kind === 'replace' && buf.length) buf[at] = m.byte;
          else if (m.kind === 'insert')
            buf = Buffer.concat([buf.subarray(0, at), Buffer.from([m.byte]), buf.subarray(at)]);
          else buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + 1)]);
        }
        const r = await run(buf);
        const last = physicalLines(buf);
        expect(r.valid).toBe(r.problemCount === 0);
        for (const p of r.problems) {
          expect(KNOWN.has(p.code), p.code).toBe(true);
          expect(p.line).toBeGreaterThanOrEqual(1);
          expect(p.line).toBeLessThanOrEqual(last);
          expect(p.message.length).toBeGreaterThan(0);
          expect(p.hint.length).toBeGreaterThan(0);
        }
      }),
      { numRuns: 400, seed: 20261121 },
    );
  });

  it('reports a planted defect at its exact physical line', async () => {
    const row = fc.record({
      multiline: fc.boolean(),
      blankAfter: fc.boolean(),
      eol: fc.constantFrom('\n', '\r\n', '\r'),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(row, { minLength: 1, maxLength: 12 }), fc.nat(), async (rows, pick) => {
        const bad = pick % rows.length;
        let text = 'serial,hw_rev,note\n';
        let line = 2;
        let expected = 0;
        rows.forEach((r, i) => {
          if (i === bad) expected = line;
          const serial = i === bad ? '' : `SN${i}`;
          const note = r.multiline ? `"first${r.eol}second"` : 'n';
          text += `${serial},A,${note}${r.eol}`;
          line += r.multiline ? 2 : 1;
          if (r.blankAfter) {
            text += r.eol === '\r' ? '\r' : r.eol;
            line++;
          }
        });
        const result = await run(Buffer.from(text));
        expect(result.problems.map((p) => [p.line, p.code])).toEqual([[expected, 'SERIAL_EMPTY']]);
      }),
      { numRuns: 300, seed: 7 },
    );
  });
});
