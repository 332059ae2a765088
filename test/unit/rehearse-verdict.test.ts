/** The rehearsal's pure parts: the sample it takes of a lot, and its JUnit XML. */
import { describe, expect, it } from 'vitest';
import { junitXml, sampleIndexes, verdictOf, type Verdict } from '../../src/cli/rehearse/verdict.js';

describe('sample of a lot', () => {
  it('is evenly spread, starts at the first row, has no repeats, and is the whole lot when asked for more', () => {
    expect(sampleIndexes(6, 2)).toEqual([0, 3]);
    expect(sampleIndexes(10, 3)).toEqual([0, 3, 6]);
    expect(sampleIndexes(3, 3)).toEqual([0, 1, 2]);
    expect(sampleIndexes(3, 50)).toEqual([0, 1, 2]);
    expect(sampleIndexes(4, undefined)).toEqual([0, 1, 2, 3]);
    for (const [total, n] of [
      [1000, 7],
      [7, 6],
      [101, 100],
    ] as const) {
      const s = sampleIndexes(total, n);
      expect(s).toHaveLength(n);
      expect(new Set(s).size).toBe(n);
      expect(Math.max(...s)).toBeLessThan(total);
    }
  });
});

describe('JUnit XML', () => {
  const verdict: Verdict = {
    verdict: 'fail',
    csv: '/lots/a&b <1>.csv',
    profile: 'p"1',
    strategy: 'bulk',
    driver: 'nordic-at',
    rows: 2,
    sampled: 2,
    checks: [
      { name: 'lint: profile', ok: true, message: 'fine' },
      {
        name: 'csv: validation',
        ok: false,
        message: 'a <bad> & "quoted" lot\u0001',
        problems: [
          { line: 3, column: 'serial', value: 'A<B', code: 'SERIAL_INVALID', message: 'bad', hint: 'fix it' },
        ],
      },
      { name: 'stack', ok: false, skipped: true, message: 'not run' },
    ],
    devices: [
      { serial: 'S1', line: 2, ok: true, state: 'connected', message: 'ok', ms: 1200 },
      { serial: 'S&2', line: 3, ok: false, state: 'failed', code: 'DEVICE_TIMEOUT', message: 'no answer' },
    ],
    elapsedMs: 4321,
  };

  it('counts failures and skips, and escapes every value (integration tests read it with a standard XML parser)', () => {
    const xml = junitXml(verdict);
    expect(xml).toContain('tests="5" failures="2" errors="0" skipped="1" time="4.321"');
    expect(xml).toContain('<testsuite name="provline rehearse p&quot;1"');
    expect(xml).toContain('message="a &lt;bad&gt; &amp; &quot;quoted&quot; lot"');
    expect(xml).toContain('line 3, column serial: bad [SERIAL_INVALID] (value &quot;A&lt;B&quot;); fix it');
    expect(xml).toContain('<testcase classname="rehearse.devices" name="serial S&amp;2" time="0.000">');
    expect(xml).not.toContain('\u0001');
  });

  it('passes only when every check and every device passed', () => {
    expect(verdictOf(verdict.checks, verdict.devices)).toBe('fail');
    expect(verdictOf([verdict.checks[0]!], [verdict.devices[0]!])).toBe('pass');
  });
});
