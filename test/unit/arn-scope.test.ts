/**
 * The account and region a profile's documents name (src/cloud/arn-scope.ts): concrete ARN
 * fields count, wildcards, policy variables and empty fields do not, and two accounts or two
 * regions are each reported with where they are written.
 */
import { describe, expect, it } from 'vitest';
import { arnScope } from '../../src/cloud/arn-scope.js';

const policy = (...resources: string[]): string =>
  JSON.stringify({
    Version: '2012-10-17',
    Statement: [{ Effect: 'Allow', Action: 'iot:*', Resource: resources }],
  });

describe('arnScope', () => {
  it('takes the one account and region every document names, and where each is named', () => {
    const s = arnScope([
      { source: 'device.json', text: policy('arn:aws:iot:eu-west-1:111122223333:client/${iot:ClientId}') },
      // A template's inline policy is a JSON string inside JSON: its ARNs count too.
      {
        source: 'template.json',
        text: JSON.stringify({
          Resources: {
            policy: {
              Type: 'AWS::IoT::Policy',
              Properties: { PolicyDocument: policy('arn:aws:iot:eu-west-1:111122223333:topic/a/*') },
            },
          },
        }),
      },
      { source: 'claim.hookArn', text: 'arn:aws:lambda:eu-west-1:111122223333:function:hook' },
    ]);
    expect(s).toEqual({
      accounts: [{ value: '111122223333', sources: ['device.json', 'template.json', 'claim.hookArn'] }],
      regions: [{ value: 'eu-west-1', sources: ['device.json', 'template.json', 'claim.hookArn'] }],
      conflicts: [],
    });
  });

  it('counts no wildcard, policy variable or empty field (IAM has no region, S3 neither)', () => {
    const s = arnScope([
      {
        source: 'p.json',
        text: policy(
          'arn:aws:iot:*:*:client/x',
          'arn:aws:iot:eu-*:1111?2223333:topic/x',
          'arn:aws:iot:${aws:Region}:${aws:Account}:topic/x',
          'arn:aws:s3:::bucket/key',
        ),
      },
      { source: 'role', text: 'arn:aws:iam::444455556666:role/r' },
    ]);
    expect(s.regions).toEqual([]);
    expect(s.accounts).toEqual([{ value: '444455556666', sources: ['role'] }]);
    expect(s.conflicts).toEqual([]);
  });

  it('reports two accounts and two regions, each with the documents that name it', () => {
    const s = arnScope([
      { source: 'device.json', text: policy('arn:aws:iot:eu-west-1:111122223333:client/a') },
      { source: 'claim.json', text: policy('arn:aws:iot:us-east-2:444455556666:client/a') },
      { source: 'claim.hookArn', text: 'arn:aws:lambda:eu-west-1:111122223333:function:hook' },
    ]);
    expect(s.conflicts).toEqual([
      'the profile names 2 accounts: 111122223333 (device.json, claim.hookArn) and 444455556666 (claim.json); its policies, templates and hook must all be for one account',
      'the profile names 2 regions: eu-west-1 (device.json, claim.hookArn) and us-east-2 (claim.json); its policies, templates and hook must all be for one region',
    ]);
  });

  it('names nothing for documents without ARNs', () => {
    expect(arnScope([{ source: 't.json', text: '{"Resources":{}}' }])).toEqual({
      accounts: [],
      regions: [],
      conflicts: [],
    });
  });
});
