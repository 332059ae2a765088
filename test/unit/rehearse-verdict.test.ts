/** The rehearsal's pure parts: the sample it takes of a lot, its JUnit XML, one serial's verdict. */
import { describe, expect, it } from 'vitest';
import type { DeviceRecord } from '../../src/batch/journal.js';
import {
  deviceVerdict,
  junitXml,
  sampleIndexes,
  verdictOf,
  type Verdict,
} from '../../src/cli/rehearse/verdict.js';

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

describe('one serial of a claim lot', () => {
  const record = (state: DeviceRecord['state'], extra: Partial<DeviceRecord> = {}): DeviceRecord =>
    ({
      serial: 'SCL-1',
      batch: 'b1',
      thingName: 'sclaim-SCL-1',
      line: 2,
      state,
      at: {},
      fields: {},
      ...extra,
    }) as DeviceRecord;
  const base = { serial: 'SCL-1', line: 2, wantsConnect: true, result: undefined, seen: false };

  it('passes when the hook provisioned it and the stand-in saw it connect as its thing', () => {
    const v = deviceVerdict({
      ...base,
      record: record('connected', { fields: { certificateId: 'c'.repeat(64) } }),
      seen: true,
      claim: { claim: 'provisioned', reason: '', certificateId: 'c'.repeat(64) },
    });
    expect(v).toMatchObject({ ok: true, state: 'connected', connected: true, claim: 'provisioned' });
    expect(v.message).toBe(
      'provisioned itself through the hook (certificate cccccccccccc…) and connected to the stand-in as sclaim-SCL-1',
    );
    expect(v.code).toBeUndefined();
  });

  it("a denied serial fails with the hook's reason, and the journal's code where the station recorded one", () => {
    const denied = {
      claim: 'denied' as const,
      reason: 'NOT_IN_LOT: serial SCL-1 is in no lot of template t',
    };
    expect(deviceVerdict({ ...base, record: record('verified'), claim: denied })).toMatchObject({
      ok: false,
      claim: 'denied',
      claimReason: denied.reason,
      code: 'DEVICE_PROVISION_DENIED',
      message: `denied by the hook: ${denied.reason}`,
    });
    const failed = record('failed', {
      error: { code: 'DEVICE_PROVISION_DENIED', message: 'RegisterThing rejected: 403', stage: 'connect' },
    });
    expect(deviceVerdict({ ...base, record: failed, claim: denied }).code).toBe('DEVICE_PROVISION_DENIED');
  });

  it('a serial that never came to the hook says why: the journal, the station, or no visit in time', () => {
    const notSeen = { claim: 'not seen' as const, reason: '' };
    const failed = record('failed', {
      error: { code: 'DEVICE_PROVISION_FAILED', message: 'subscribe timed out', stage: 'connect' },
    });
    expect(deviceVerdict({ ...base, record: failed, claim: notSeen })).toMatchObject({
      ok: false,
      claim: 'not seen',
      code: 'DEVICE_PROVISION_FAILED',
      message: 'never came to the hook: subscribe timed out (stage connect)',
    });
    expect(deviceVerdict({ ...base, record: record('accepted'), claim: notSeen })).toMatchObject({
      ok: false,
      code: 'NOT_DONE',
      message: 'never came to the hook: no station result in time; the journal says accepted',
    });
  });

  it('connected but not provisioned by the hook (a thing made some other way) does not pass', () => {
    const v = deviceVerdict({
      ...base,
      record: record('connected'),
      seen: true,
      claim: { claim: 'not seen', reason: '' },
    });
    expect(v.ok).toBe(false);
  });
});
