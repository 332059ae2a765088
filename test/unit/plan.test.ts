import { describe, expect, it } from 'vitest';
import {
  assemblePlan,
  buildPlan,
  parsePlan,
  parsePlanPage,
  parseStoredPlan,
  PLAN_VERSION,
  sha256,
} from '../../src/batch/plan.js';
import { demoProfile } from '../helpers/profiles.js';

describe('batch plan', () => {
  const profile = demoProfile();
  const input = {
    batchId: 'b-20261121-0001',
    now: new Date('2026-11-21T12:00:00Z'),
    profile,
    templateBody: '{"Resources":{}}',
    source: { file: 'batch.csv', sha256: sha256('serial\nSN1\n'), rows: 3 },
    rows: [
      {
        line: 2,
        serial: 'SN1',
        thingName: 'sensor-SN1',
        attributes: { serial: 'SN1' },
        parameters: { SerialNumber: 'SN1' },
      },
    ],
    rejectedSerials: new Map<number, string | null>([
      [3, 'SN2'],
      [4, 'SN 3'],
    ]),
    rejected: [
      { line: 4, column: 'serial', value: 'SN 3', code: 'SERIAL_INVALID' as const, message: '', hint: '' },
      { line: 3, column: null, value: '1', code: 'FIELD_COUNT' as const, message: '', hint: '' },
      {
        line: 4,
        column: 'hw_rev',
        value: 'x y',
        code: 'ATTRIBUTE_VALUE_INVALID' as const,
        message: '',
        hint: '',
      },
    ],
  };

  it('is versioned, carries the profile settings that matter, and groups rejected rows by line', () => {
    const plan = buildPlan(input);
    expect(plan.version).toBe(PLAN_VERSION);
    expect(plan.profile).toMatchObject({
      name: 'demo',
      keyType: 'P-256',
      keyDelivery: 'wrapped',
      kekLabel: 'provline-demo-kek',
      registration: { mode: 'bulk', chunkSize: 1000, tps: 10 },
      templateSha256: sha256('{"Resources":{}}'),
      // The profile travels with the plan, so workers on other hosts need no profile files.
      templateBody: '{"Resources":{}}',
      policyName: 'provline-demo-device',
      thingType: 'provline-demo-sensor',
      thingGroups: ['provline-demo'],
      csrSubject: { O: 'provline demo' },
      driver: 'provline-serial-v1',
    });
    expect(plan.rejected).toEqual([
      { line: 3, serial: 'SN2', codes: ['FIELD_COUNT'] },
      { line: 4, serial: 'SN 3', codes: ['SERIAL_INVALID', 'ATTRIBUTE_VALUE_INVALID'] },
    ]);
  });

  it('round-trips through JSON and refuses an unknown version', () => {
    const plan = buildPlan(input);
    expect(parsePlan(JSON.stringify(plan))).toEqual(plan);
    expect(() => parsePlan(JSON.stringify({ ...plan, version: 3 }))).toThrow();
  });

  it('reports of --skip-invalid batches named a rejected row by its first problem’s value: it keeps its own serial', () => {
    const plan = buildPlan({
      ...input,
      rejected: [
        {
          line: 5,
          column: 'serial',
          value: 'sensor-=1+2',
          code: 'THING_NAME_INVALID',
          message: '',
          hint: '',
        },
        { line: 6, column: 'hw_rev', value: 'rev B', code: 'ATTRIBUTE_VALUE_INVALID', message: '', hint: '' },
        { line: 7, column: null, value: null, code: 'UNTERMINATED_QUOTE', message: '', hint: '' },
      ],
      rejectedSerials: new Map<number, string | null>([
        [5, '=1+2'],
        [6, 'SN6'],
        [7, null],
      ]),
    });
    expect(plan.rejected.map((r) => [r.line, r.serial])).toEqual([
      [5, '=1+2'],
      [6, 'SN6'],
      [7, null],
    ]);
  });

  it('is stored as a header and pages, put together again in order; a version-1 plan is still read', () => {
    const plan = buildPlan(input);
    const { devices, ...header } = plan;
    const stored = parseStoredPlan(JSON.stringify(header));
    expect(stored).toEqual(header);
    const pages = [parsePlanPage(JSON.stringify(devices))];
    expect(assemblePlan(header, pages)).toEqual(plan);
    expect(() => assemblePlan({ ...header, deviceCount: 2 }, pages)).toThrow(/1 devices in its pages, not 2/);
    const { deviceCount, ...v1 } = { ...plan, version: 1 };
    expect(deviceCount).toBe(1);
    expect(parseStoredPlan(JSON.stringify(v1))).toEqual(plan);
    expect(parsePlan(JSON.stringify(v1))).toEqual(plan);
  });
});
