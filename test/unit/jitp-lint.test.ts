// The JITP template lint: what AWS can fill in on a first connect, against what the profile
// puts into the device certificate's subject. Each problem names the parameter and the
// valid alternatives.
import { describe, expect, it } from 'vitest';
import { lintJitpTemplate } from '../../src/cloud/template/index.js';

const POLICY = { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'device-policy' } };

function template(parameters: string[], resources: Record<string, unknown> = {}): object {
  return {
    Parameters: Object.fromEntries(parameters.map((p) => [p, { Type: 'String' }])),
    Resources: {
      thing: {
        Type: 'AWS::IoT::Thing',
        Properties: { ThingName: { Ref: 'AWS::IoT::Certificate::CommonName' } },
      },
      certificate: {
        Type: 'AWS::IoT::Certificate',
        Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'ACTIVE' },
      },
      policy: POLICY,
      ...resources,
    },
  };
}

const GOOD = ['AWS::IoT::Certificate::CommonName', 'AWS::IoT::Certificate::Id'];

describe('lintJitpTemplate', () => {
  it('accepts a template that uses the certificate id, subject parameters the profile writes, and a policy', () => {
    expect(lintJitpTemplate(template(GOOD), ['CN'])).toEqual([]);
    expect(
      lintJitpTemplate(JSON.stringify(template([...GOOD, 'AWS::IoT::Certificate::Organization'])), [
        'CN',
        'O',
      ]),
    ).toEqual([]);
  });

  it('a subject parameter the profile does not write names the attribute and the valid parameters', () => {
    const problems = lintJitpTemplate(template([...GOOD, 'AWS::IoT::Certificate::Country']), ['CN', 'O']);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({
      parameter: 'AWS::IoT::Certificate::Country',
      path: '/Parameters/AWS::IoT::Certificate::Country',
    });
    expect(problems[0]!.message).toContain('subject attribute C');
    expect(problems[0]!.message).toContain('AWS::IoT::Certificate::Organization');
    // With a Default, AWS uses the default: no problem.
    const withDefault = template(GOOD) as { Parameters: Record<string, unknown> };
    withDefault.Parameters['AWS::IoT::Certificate::Country'] = { Type: 'String', Default: 'DE' };
    expect(lintJitpTemplate(withDefault, ['CN'])).toEqual([]);
  });

  it('a parameter AWS never fills (bulk-style ThingName) is named with what would be valid', () => {
    const t = template([...GOOD, 'ThingName']);
    const problems = lintJitpTemplate(t, ['CN']);
    expect(problems.map((p) => p.parameter)).toEqual(['ThingName']);
    expect(problems[0]!.message).toMatch(
      /not one AWS fills in.*valid here: AWS::IoT::Certificate::Id, AWS::IoT::Certificate::CommonName/,
    );
  });

  it('CertificateId must be the Ref to AWS::IoT::Certificate::Id; a CSR or PEM certificate is refused', () => {
    const literal = template(GOOD, {
      certificate: { Type: 'AWS::IoT::Certificate', Properties: { CertificateId: 'abc' } },
    });
    expect(lintJitpTemplate(literal, ['CN'])).toEqual([
      expect.objectContaining({
        parameter: 'AWS::IoT::Certificate::Id',
        path: '/Resources/certificate/Properties/CertificateId',
      }),
    ]);
    const csr = template(GOOD, {
      certificate: {
        Type: 'AWS::IoT::Certificate',
        Properties: { CertificateSigningRequest: { Ref: 'AWS::IoT::Certificate::Id' } },
      },
    });
    expect(
      lintJitpTemplate(csr, ['CN'])
        .map((p) => p.message)
        .join('\n'),
    ).toContain('JITP templates must use CertificateId');
    const undeclared = template(['AWS::IoT::Certificate::CommonName']);
    expect(lintJitpTemplate(undeclared, ['CN']).map((p) => p.parameter)).toEqual([
      'AWS::IoT::Certificate::Id',
      'AWS::IoT::Certificate::Id',
    ]);
  });

  it('a template with no policy, or no certificate resource, is refused', () => {
    const t = template(GOOD) as { Resources: Record<string, unknown> };
    delete t.Resources.policy;
    expect(lintJitpTemplate(t, ['CN']).map((p) => p.message)).toEqual([
      expect.stringContaining('attaches no policy'),
    ]);
    delete t.Resources.certificate;
    expect(lintJitpTemplate(t, ['CN']).map((p) => p.message)).toEqual([
      expect.stringContaining('no AWS::IoT::Certificate resource'),
      expect.stringContaining('attaches no policy'),
    ]);
  });

  it('structural problems come through with their paths', () => {
    expect(lintJitpTemplate('{not json', ['CN'])[0]!.message).toContain('not valid JSON');
    const problems = lintJitpTemplate({ Resources: { p: { Type: 'AWS::IoT::Policy', Properties: {} } } }, [
      'CN',
    ]);
    expect(problems[0]).toMatchObject({ path: '/Resources/p/Properties' });
  });
});
