/**
 * The registrar's report-to-moves mapping over reports recorded from the AWS IoT stand-in
 * (test/fixtures/registrar-reports, made by record.ts there): each device of a chunk gets the
 * move its RESULTS or ERRORS line, or its absence, calls for.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { DeviceRecord, TransitionRequest } from '../../src/batch/journal.js';
import { parseReport, type BulkReports } from '../../src/cloud/bulk.js';
import {
  keyMatches,
  refusedMoves,
  reportMoves,
  type ReportMovesInput,
} from '../../src/jobs/registrar/moves.js';
import type { RecordedTask } from '../fixtures/registrar-reports/record.js';

const BATCH = 'b-moves';
const CHUNK = 7;

function recorded(name: 'completed' | 'failed'): RecordedTask {
  const url = new URL(`../fixtures/registrar-reports/${name}.json`, import.meta.url);
  return JSON.parse(readFileSync(url, 'utf8')) as RecordedTask;
}

/** As readReports does it: both reports by line, a line with a certificate is a result. */
function parsed(task: RecordedTask, order: (lines: string[]) => string[] = (l) => l): BulkReports {
  const into: BulkReports = { results: new Map(), errors: new Map() };
  parseReport('RESULTS', order(task.results.split('\n')).join('\n'), into, 'part-1');
  parseReport('ERRORS', order(task.errors.split('\n')).join('\n'), into, 'part-1');
  for (const n of into.results.keys()) into.errors.delete(n);
  return into;
}

function record(task: RecordedTask, serial: string, fields: Record<string, string> = {}): DeviceRecord {
  return {
    serial,
    batch: BATCH,
    thingName: `thing-${serial}`,
    line: task.serials.indexOf(serial) + 1,
    state: 'registering',
    createdAt: 1,
    updatedAt: 2,
    at: {},
    fields: { regChunk: String(CHUNK), publicKey: task.publicKeys[serial]!, ...fields },
  };
}

function input(task: RecordedTask, over: Partial<ReportMovesInput> = {}): ReportMovesInput {
  return {
    chunk: { batchId: BATCH, n: CHUNK, serials: task.serials, taskId: 'task-1' },
    records: task.serials.map((s) => record(task, s)),
    outcome: { status: task.status as 'Completed', ...(task.message ? { message: task.message } : {}) },
    reports: parsed(task),
    maxRounds: 5,
    ...over,
  };
}

function bySerial(moves: TransitionRequest[]): Map<string, TransitionRequest> {
  return new Map(moves.map((m) => [m.serial, m]));
}

describe('reportMoves over a completed task', () => {
  const task = recorded('completed');
  const reports = parsed(task);
  const out = reportMoves(input(task));
  const moves = bySerial(out.moves);
  const [s1, s2, s3, s4, s5, s6] = task.serials as [string, string, string, string, string, string];

  it('registers the lines with a certificate for the device key, with its id, ARN and thing', () => {
    for (const [serial, line] of [
      [s1, 1],
      [s3, 3],
      [s6, 6],
    ] as const) {
      const issued = reports.results.get(line)!;
      expect(issued.certificateId).toMatch(/^[0-9a-f]{64}$/);
      expect(moves.get(serial)).toEqual({
        batchId: BATCH,
        serial,
        to: 'registered',
        from: ['registering'],
        when: { field: 'regChunk', equals: String(CHUNK) },
        fields: {
          certificatePem: issued.certificatePem,
          certificateId: issued.certificateId,
          certificateArn: issued.certificateArn,
          thingArn: issued.thingArn,
          taskId: 'task-1',
        },
      });
      expect(issued.thingArn).toMatch(new RegExp(`:thing/thing-${serial}$`));
    }
  });

  it('sends a throttled line back to keyed for a later task, counting the round', () => {
    expect(moves.get(s2)).toEqual({
      batchId: BATCH,
      serial: s2,
      to: 'keyed',
      from: ['registering'],
      when: { field: 'regChunk', equals: String(CHUNK) },
      fields: { regRounds: '1', lastRegError: 'ThrottlingException: Rate exceeded' },
    });
  });

  it("fails a rejected line with AWS's error name and message", () => {
    expect(moves.get(s4)).toMatchObject({
      to: 'failed',
      from: ['registering'],
      fields: {
        errorCode: 'REGISTRATION_REJECTED',
        errorMessage: 'ResourceRegistrationFailureException: Thing Type sensor not found.',
        errorStage: 'registration',
      },
    });
  });

  it('fails a line whose certificate certifies another key than the device holds', () => {
    expect(reports.results.get(5)).toBeDefined();
    expect(moves.get(s5)).toMatchObject({
      to: 'failed',
      fields: { errorCode: 'REGISTRATION_KEY_MISMATCH', errorStage: 'registration' },
    });
    expect(moves.get(s5)!.fields!.errorMessage).toContain(`line 5 returned a certificate for another key`);
  });

  it('counts what it did, one move per device', () => {
    expect(out.moves).toHaveLength(6);
    expect({ registered: out.registered, retried: out.retried, failed: out.failed }).toEqual({
      registered: 3,
      retried: 1,
      failed: 2,
    });
  });

  // The key-mismatch move was the one move made without the chunk's condition: a registrar
  // that had lost the chunk could still fail a device another chunk now owned.
  it('makes every move conditional on the device still registering under this chunk (key mismatch too)', () => {
    for (const m of out.moves) {
      expect(m.from).toEqual(['registering']);
      expect(m.when).toEqual({ field: 'regChunk', equals: String(CHUNK) });
    }
  });

  it('maps by lineNumber, not by the order of the report lines', () => {
    const reversed = reportMoves(input(task, { reports: parsed(task, (l) => [...l].reverse()) }));
    expect(bySerial(reversed.moves)).toEqual(moves);
  });

  it('leaves alone devices that are gone, moved on, or owned by another chunk', () => {
    const records = task.serials.map((s) => record(task, s));
    records[0] = undefined as unknown as DeviceRecord;
    records[1] = { ...records[1]!, state: 'keyed' };
    records[2] = { ...records[2]!, fields: { ...records[2]!.fields, regChunk: '8' } };
    records[3] = { ...records[3]!, serial: 'SOMEONE-ELSE' };
    const left = reportMoves(input(task, { records }));
    expect(left.moves.map((m) => m.serial)).toEqual([s5, s6]);
  });
});

describe('reportMoves over a task that failed part way', () => {
  const task = recorded('failed');
  const out = reportMoves(input(task, { outcome: { status: 'Failed', message: task.message! } }));
  const moves = bySerial(out.moves);

  it('registers the lines the task finished and sends the ones it left out back to keyed', () => {
    expect(task.status).toBe('Failed');
    expect(task.serials.map((s) => moves.get(s)?.to)).toEqual([
      'registered',
      'registered',
      'registered',
      'keyed',
      'keyed',
      'keyed',
    ]);
    expect(moves.get(task.serials[3]!)!.fields).toEqual({
      regRounds: '1',
      lastRegError: `REGISTRATION_LINE_MISSING: task task-1 ended Failed: ${task.message} without this line`,
    });
    expect(out).toMatchObject({ registered: 3, retried: 3, failed: 0 });
  });

  it('fails a left-out line for good once workers.registrationRounds attempts are spent', () => {
    const records = task.serials.map((s) => record(task, s, { regRounds: '4' }));
    const spent = bySerial(reportMoves(input(task, { records, maxRounds: 5 })).moves);
    expect(spent.get(task.serials[5]!)).toMatchObject({
      to: 'failed',
      from: ['registering'],
      when: { field: 'regChunk', equals: String(CHUNK) },
      fields: { errorCode: 'REGISTRATION_RETRIES_EXHAUSTED' },
    });
    expect(spent.get(task.serials[5]!)!.fields!.errorMessage).toMatch(
      /^5 registration attempts; the last: task task-1 ended Failed: /,
    );
    expect(spent.get(task.serials[0]!)!.to).toBe('registered');
  });

  it('counts a spent retry as failed, not retried', () => {
    const records = task.serials.map((s) => record(task, s, { regRounds: '4' }));
    expect(reportMoves(input(task, { records, maxRounds: 5 }))).toMatchObject({
      registered: 3,
      retried: 0,
      failed: 3,
    });
  });
});

describe('refusedMoves', () => {
  it('fails every device of a chunk whose task AWS refused, each only while the chunk owns it', () => {
    const moves = refusedMoves(
      { batchId: BATCH, n: 3, serials: ['A', 'B'] },
      {
        code: 'REGISTRATION_TASK_REJECTED',
        message: 'StartThingRegistrationTask: InvalidRequestException: bad template',
      },
    );
    expect(moves).toEqual(
      ['A', 'B'].map((serial) => ({
        batchId: BATCH,
        serial,
        to: 'failed',
        from: ['registering'],
        when: { field: 'regChunk', equals: '3' },
        fields: {
          errorCode: 'REGISTRATION_TASK_REJECTED',
          errorMessage: 'StartThingRegistrationTask: InvalidRequestException: bad template',
          errorStage: 'registration',
        },
      })),
    );
  });
});

describe('keyMatches', () => {
  const task = recorded('completed');
  const cert = parsed(task).results.get(1)!.certificatePem;

  it('is true only for the key the certificate certifies', () => {
    expect(keyMatches(task.publicKeys[task.serials[0]!], cert)).toBe(true);
    expect(keyMatches(task.publicKeys[task.serials[2]!], cert)).toBe(false);
    expect(keyMatches('-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n', cert)).toBe(false);
  });

  it('takes the certificate when the record holds no public key to compare', () => {
    expect(keyMatches(undefined, cert)).toBe(true);
  });
});
