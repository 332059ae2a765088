/** The provisioning-template evaluator (src/cloud/template): pure, so tested directly. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  TemplateError,
  evaluateTemplate,
  lintTemplate,
  parseTemplate,
  policyNameForDocument,
} from '../../src/cloud/template/index.js';
import { ROOT } from '../helpers/cli.js';

const thing = (props: Record<string, unknown>, extra: Record<string, unknown> = {}): string =>
  JSON.stringify({
    Parameters: { Name: { Type: 'String' }, Serial: { Type: 'String', Default: 'S0' } },
    Resources: { thing: { Type: 'AWS::IoT::Thing', Properties: { ThingName: { Ref: 'Name' }, ...props } } },
    ...extra,
  });

function error(fn: () => unknown): TemplateError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TemplateError) return e;
    throw e;
  }
  throw new Error('expected a TemplateError');
}

describe('template evaluator', () => {
  it('evaluates the shipped demo template with defaults, flat AttributePayload and OverrideSettings', () => {
    const body = readFileSync(join(ROOT, 'config/templates/demo-bulk.json'), 'utf8');
    const plan = evaluateTemplate(parseTemplate(body), {
      ThingName: 'dev-1',
      SerialNumber: 'SN1',
      CSR: 'pem',
    });
    expect(plan.thing).toEqual({
      logicalId: 'thing',
      thingName: 'dev-1',
      thingTypeName: 'provline-demo-sensor',
      thingGroups: ['provline-demo'],
      attributes: { serial: 'SN1', hw: 'A' },
      overrides: {
        AttributePayload: 'MERGE',
        ThingTypeName: 'REPLACE',
        ThingGroups: 'DO_NOTHING',
        BillingGroup: 'DO_NOTHING',
      },
    });
    expect(plan.certificate).toEqual({
      logicalId: 'certificate',
      source: { kind: 'csr', certificateSigningRequest: 'pem' },
      status: 'ACTIVE',
      overrides: { Status: 'REPLACE' },
    });
    expect(plan.policies).toEqual([{ logicalId: 'policy', policyName: 'provline-demo-device' }]);
  });

  it("an unresolved Ref fails with AWS's message", () => {
    const e = error(() => evaluateTemplate(parseTemplate(thing({})), {}));
    expect(e.message).toBe('Invalid registration template. Cannot resolve reference value: {Ref=Name}');
    expect(e.errorName).toBe('InvalidRequestException');
    expect(
      error(() =>
        evaluateTemplate(parseTemplate(thing({ AttributePayload: { x: { Ref: 'Undeclared' } } })), {
          Name: 'a',
        }),
      ).message,
    ).toContain('{Ref=Undeclared}');
  });

  it('Fn::Join, Fn::Split, Fn::Select, Fn::Sub and Fn::FindInMap', () => {
    const body = thing(
      {
        ThingTypeName: {
          'Fn::FindInMap': ['Types', { 'Fn::Select': [0, { 'Fn::Split': ['-', { Ref: 'Name' }] }] }, 'type'],
        },
        AttributePayload: {
          joined: { 'Fn::Join': [':', ['a', { Ref: 'Serial' }]] },
          sub: { 'Fn::Sub': 'sn-${Serial}-${!Literal}' },
          subvars: { 'Fn::Sub': ['${X}_${Name}', { X: 'x' }] },
        },
      },
      { Mappings: { Types: { gw: { type: 'gateway' } } } },
    );
    const plan = evaluateTemplate(parseTemplate(body), { Name: 'gw-7' });
    expect(plan.thing!.thingTypeName).toBe('gateway');
    expect(plan.thing!.attributes).toEqual({ joined: 'a:S0', sub: 'sn-S0-${Literal}', subvars: 'x_gw-7' });
    expect(
      error(() =>
        evaluateTemplate(parseTemplate(thing({ ThingTypeName: { 'Fn::Select': [5, ['a']] } })), {
          Name: 'a',
        }),
      ).message,
    ).toMatch(/out of bounds/);
    expect(error(() => evaluateTemplate(parseTemplate(body), { Name: 'sensor-1' })).message).toMatch(
      /FindInMap cannot find \[Types, sensor, type\]/,
    );
  });

  it('rejects undocumented functions and sections, with every problem listed by lint', () => {
    const body = JSON.stringify({
      Conditions: {},
      Resources: {
        t: {
          Type: 'AWS::IoT::Thing',
          Properties: {
            ThingName: { 'Fn::If': ['c', 'a', 'b'] },
            AttributePayload: { b: { 'Fn::Base64': 'x' } },
          },
        },
      },
    });
    const problems = lintTemplate(body).map((p) => p.message);
    expect(problems).toEqual([
      'Invalid registration template. Conditions are not supported in AWS IoT provisioning templates.',
      'Invalid registration template. Unsupported intrinsic function: Fn::If.',
      'Invalid registration template. Unsupported intrinsic function: Fn::Base64.',
    ]);
    expect(error(() => parseTemplate(body)).message).toBe(problems[0]);
  });

  it('policies: name, document as string or object, neither (AWS message), hash name', () => {
    const policy = (props: Record<string, unknown>): string =>
      JSON.stringify({ Resources: { p: { Type: 'AWS::IoT::Policy', Properties: props } } });
    expect(error(() => parseTemplate(policy({}))).message).toBe(
      'Invalid registration template. Neither policyName nor policyDocument is present in the Template.',
    );
    const doc = { Version: '2012-10-17', Statement: [] };
    const fromObject = evaluateTemplate(parseTemplate(policy({ PolicyDocument: doc })), {}).policies[0]!;
    const fromString = evaluateTemplate(parseTemplate(policy({ PolicyDocument: JSON.stringify(doc) })), {})
      .policies[0]!;
    expect(fromObject).toEqual(fromString);
    expect(fromObject.policyName).toMatch(/^[0-9A-F]{40}$/);
    expect(fromObject.policyName).toBe(policyNameForDocument(JSON.stringify(doc)));
  });

  it('certificate rules: exactly one source; Status case-insensitive; fleet/JITP need CertificateId', () => {
    const cert = (props: Record<string, unknown>): string =>
      JSON.stringify({
        Parameters: { Id: { Type: 'String' } },
        Resources: { c: { Type: 'AWS::IoT::Certificate', Properties: props } },
      });
    expect(error(() => parseTemplate(cert({}))).message).toMatch(/exactly one of/);
    expect(
      error(() => parseTemplate(cert({ CertificatePem: 'x', CertificateSigningRequest: 'y' }))).message,
    ).toMatch(/exactly one of/);
    expect(
      evaluateTemplate(parseTemplate(cert({ CertificateId: { Ref: 'Id' }, Status: 'Active' })), { Id: 'abc' })
        .certificate,
    ).toMatchObject({ source: { kind: 'id', certificateId: 'abc' }, status: 'ACTIVE' });
    expect(error(() => parseTemplate(cert({ CertificateSigningRequest: 'x' }), 'fleet')).message).toMatch(
      /must use CertificateId/,
    );
  });

  it('rejects a nested AttributePayload (the API shape) and MERGE where AWS does not allow it', () => {
    expect(
      error(() =>
        evaluateTemplate(parseTemplate(thing({ AttributePayload: { attributes: { a: 'b' } } })), {
          Name: 'a',
        }),
      ).message,
    ).toMatch(/flat map/);
    expect(
      error(() =>
        parseTemplate(
          JSON.stringify({
            Resources: {
              t: {
                Type: 'AWS::IoT::Thing',
                Properties: { ThingName: 'a' },
                OverrideSettings: { ThingTypeName: 'MERGE' },
              },
            },
          }),
        ),
      ).message,
    ).toMatch(/MERGE is only allowed/);
    expect(error(() => parseTemplate('x'.repeat(10241))).message).toMatch(/maximum is 10240/);
  });
});
