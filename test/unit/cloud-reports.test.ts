/**
 * The pure parts of the bulk workflow: input files (one line per entry), ERRORS messages
 * taken apart, report lines mapped by lineNumber in either casing, AWS error names.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { awsErrorName, isRetryableAwsError, parseReportError } from '../../src/cloud/aws-errors.js';
import { parseReport, renderInputFile, type BulkReports } from '../../src/cloud/bulk.js';
import { issuedCertificate } from '../../src/cloud/certificates.js';

const ARN = 'arn:aws:iot:us-east-1:123456789012';
const ID = 'ab'.repeat(32);

describe('renderInputFile', () => {
  it('writes exactly one line per entry, whatever the values hold', () => {
    fc.assert(
      fc.property(fc.array(fc.dictionary(fc.string(), fc.string({ unit: 'grapheme' }))), (lines) => {
        const text = renderInputFile(lines).toString('utf8');
        const out = text.split('\n');
        expect(out.pop()).toBe('');
        expect(out).toHaveLength(lines.length);
        out.forEach((l, i) => expect(JSON.parse(l)).toEqual(lines[i]));
      }),
    );
  });

  it('is empty for no entries', () => {
    expect(renderInputFile([]).length).toBe(0);
  });
});

describe('parseReportError', () => {
  it('takes apart the observed Java-style message', () => {
    const text =
      'com.amazonaws.services.iot.model.ResourceRegistrationFailureException: Register thing workflow execution terminates due to: Thing Type 250602908823:vehicle not found. (Service: AWSIot; Status Code: 400; Error Code: ResourceRegistrationFailureException; Request ID: 9025abcd-0000-4000-8000-000000000000; Proxy: null)';
    expect(parseReportError(text)).toEqual({
      errorName: 'ResourceRegistrationFailureException',
      message:
        'Register thing workflow execution terminates due to: Thing Type 250602908823:vehicle not found.',
      statusCode: 400,
      requestId: '9025abcd-0000-4000-8000-000000000000',
    });
  });

  it('round-trips any name and message', () => {
    const name = fc.stringMatching(/^[A-Z][A-Za-z]{0,20}Exception$/);
    const message = fc
      .string({ unit: 'grapheme' })
      .map((s) => s.trim())
      .filter((s) => !s.includes('(Service:'));
    fc.assert(
      fc.property(name, message, fc.integer({ min: 400, max: 599 }), fc.uuid(), (n, m, status, id) => {
        const text = `com.amazonaws.services.iot.model.${n}: ${m} (Service: AWSIot; Status Code: ${status}; Error Code: ${n}; Request ID: ${id}; Proxy: null)`;
        expect(parseReportError(text)).toEqual({
          errorName: n,
          message: m,
          statusCode: status,
          requestId: id,
        });
      }),
    );
  });

  it('tolerates other shapes', () => {
    expect(parseReportError('ThrottlingException: Rate exceeded')).toEqual({
      errorName: 'ThrottlingException',
      message: 'Rate exceeded',
    });
    expect(parseReportError('Something broke: badly')).toEqual({
      errorName: 'UnknownError',
      message: 'Something broke: badly',
    });
    expect(parseReportError(null)).toEqual({ errorName: 'UnknownError', message: '' });
    expect(
      parseReportError('Rate exceeded (Service: AWSIot; Status Code: 400; Error Code: ThrottlingException)'),
    ).toEqual({ errorName: 'ThrottlingException', message: 'Rate exceeded', statusCode: 400 });
    fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => void parseReportError(s)));
  });
});

describe('parseReport', () => {
  const empty = (): BulkReports => ({ results: new Map(), errors: new Map() });

  it('maps by lineNumber, in either casing, ignoring unknown keys', () => {
    const into = empty();
    const pem = 'not a certificate';
    parseReport(
      'RESULTS',
      [
        JSON.stringify({
          lineNumber: 3,
          offset: 9,
          extra: 1,
          response: { certificatePem: pem, resourceArns: { cert: `${ARN}:cert/${ID}`, t: `${ARN}:thing/a` } },
        }),
        '',
        JSON.stringify({
          LineNumber: 1,
          Response: {
            CertificatePem: pem,
            ResourceArns: { certificate: `${ARN}:cert/${ID}`, pol: `${ARN}:policy/p` },
          },
        }),
      ].join('\n'),
      into,
    );
    expect([...into.results.keys()]).toEqual([3, 1]);
    expect(into.results.get(3)).toEqual({
      certificatePem: pem,
      certificateId: ID,
      certificateArn: `${ARN}:cert/${ID}`,
      thingArn: `${ARN}:thing/a`,
    });
    expect(into.results.get(1)?.policyArns).toEqual([`${ARN}:policy/p`]);
    parseReport(
      'ERRORS',
      `${JSON.stringify({ errorMessage: 'com.x.ThrottlingException: Rate exceeded', lineNumber: 2, response: null })}\n`,
      into,
    );
    expect(into.errors.get(2)).toEqual({
      errorName: 'ThrottlingException',
      message: 'Rate exceeded',
      retryable: true,
    });
  });

  it('records a RESULTS line without a certificate as an error, and refuses lines it cannot map', () => {
    const into = empty();
    parseReport('RESULTS', JSON.stringify({ lineNumber: 4, response: { resourceArns: {} } }), into);
    expect(into.errors.get(4)).toMatchObject({ errorName: 'MalformedResult', retryable: false });
    expect(() => parseReport('ERRORS', '{"errorMessage":"x"}', into)).toThrow(
      expect.objectContaining({ code: 'REGISTRATION_REPORT_UNREADABLE' }),
    );
    expect(() => parseReport('ERRORS', '{oops', into)).toThrow(
      expect.objectContaining({ code: 'REGISTRATION_REPORT_UNREADABLE' }),
    );
  });

  it('is no certificate without a certificate ARN or a readable PEM', () => {
    expect(issuedCertificate('x', { thing: `${ARN}:thing/a` })).toBeUndefined();
    expect(issuedCertificate(undefined, { cert: `${ARN}:cert/${ID}` })).toBeUndefined();
  });
});

describe('AWS error names', () => {
  it('reads SDK, network and fetch errors', () => {
    expect(awsErrorName(Object.assign(new Error('x'), { name: 'ThrottlingException', $metadata: {} }))).toBe(
      'ThrottlingException',
    );
    expect(awsErrorName(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe('ECONNRESET');
    expect(awsErrorName(new TypeError('fetch failed', { cause: { code: 'UND_ERR_SOCKET' } }))).toBe(
      'UND_ERR_SOCKET',
    );
    expect(awsErrorName('text')).toBe('UnknownError');
    for (const n of [
      'ThrottlingException',
      'LimitExceededException',
      'InternalFailureException',
      'ECONNRESET',
    ])
      expect(isRetryableAwsError(n)).toBe(true);
    for (const n of ['InvalidRequestException', 'ResourceRegistrationFailureException', 'UnknownError'])
      expect(isRetryableAwsError(n)).toBe(false);
  });
});
