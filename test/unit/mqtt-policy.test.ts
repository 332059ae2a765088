/** The IoT policy evaluator (emulator/mqtt/policy.ts): pure, so tested with plain data. */
import { describe, expect, it } from 'vitest';
import {
  evaluate,
  globMatch,
  parsePolicy,
  substitute,
  type PolicyVariables,
} from '../../emulator/mqtt/policy.js';

const A = 'arn:aws:iot:us-east-1:123456789012';
const doc = (...Statement: object[]): string => JSON.stringify({ Version: '2012-10-17', Statement });
const vars: PolicyVariables = { clientId: 'dev-1', subject: { CN: 'dev-1.example', O: 'Acme' } };
const thingVars: PolicyVariables = {
  ...vars,
  thing: { thingName: 'dev-1', thingTypeName: 'sensor', attributes: { line: 'L3' } },
};

describe('policy evaluation', () => {
  it('denies by default and says that no policy is attached', () => {
    const d = evaluate([], 'iot:Connect', `${A}:client/dev-1`, vars);
    expect(d.allowed).toBe(false);
    expect(d.reason).toMatch(/no policy attached/);
  });

  it('an Allow with Action and Resource as strings or lists allows; the reason names the statement', () => {
    const p = parsePolicy(
      'p1',
      doc({ Effect: 'Allow', Action: ['iot:Publish', 'iot:Receive'], Resource: [`${A}:topic/a/*`] }),
    );
    const d = evaluate([p], 'iot:Publish', `${A}:topic/a/b`, vars);
    expect(d).toMatchObject({ allowed: true, policy: 'p1', statement: 1 });
    expect(evaluate([p], 'iot:Subscribe', `${A}:topicfilter/a/b`, vars).allowed).toBe(false);
  });

  it('an explicit Deny beats any Allow, in any policy', () => {
    const allow = parsePolicy('allow', doc({ Effect: 'Allow', Action: 'iot:*', Resource: '*' }));
    const deny = parsePolicy(
      'deny',
      doc(
        { Effect: 'Allow', Action: 'iot:Connect', Resource: '*' },
        { Effect: 'Deny', Action: 'iot:Publish', Resource: `${A}:topic/secret/*` },
      ),
    );
    const d = evaluate([allow, deny], 'iot:Publish', `${A}:topic/secret/x`, vars);
    expect(d).toMatchObject({ allowed: false, policy: 'deny', statement: 2 });
    expect(d.reason).toMatch(/explicitly denies iot:Publish/);
    expect(evaluate([allow, deny], 'iot:Publish', `${A}:topic/open/x`, vars).allowed).toBe(true);
  });

  it('* and ? wildcards in resources and actions; actions ignore case; MQTT + and # are literal', () => {
    expect(globMatch('iot:Sub*', 'iot:subscribe', true)).toBe(true);
    expect(globMatch(`${A}:topic/dev-?/x`, `${A}:topic/dev-1/x`)).toBe(true);
    expect(globMatch(`${A}:topic/dev-?/x`, `${A}:topic/dev-12/x`)).toBe(false);
    const p = parsePolicy(
      'p',
      doc({ Effect: 'Allow', Action: 'iot:Subscribe', Resource: `${A}:topicfilter/a/+` }),
    );
    expect(evaluate([p], 'iot:Subscribe', `${A}:topicfilter/a/+`, vars).allowed).toBe(true);
    expect(evaluate([p], 'iot:Subscribe', `${A}:topicfilter/a/b`, vars).allowed).toBe(false);
  });

  it('NotAction and NotResource', () => {
    const p = parsePolicy(
      'p',
      doc({ Effect: 'Allow', NotAction: 'iot:Publish', NotResource: `${A}:client/admin` }),
    );
    expect(evaluate([p], 'iot:Connect', `${A}:client/dev-1`, vars).allowed).toBe(true);
    expect(evaluate([p], 'iot:Connect', `${A}:client/admin`, vars).allowed).toBe(false);
    expect(evaluate([p], 'iot:Publish', `${A}:topic/x`, vars).allowed).toBe(false);
  });

  it('${iot:ClientId} and ${iot:Certificate.Subject.CommonName} substitute; escapes are literal', () => {
    const p = parsePolicy(
      'p',
      doc({ Effect: 'Allow', Action: 'iot:Connect', Resource: `${A}:client/\${iot:ClientId}` }),
    );
    expect(evaluate([p], 'iot:Connect', `${A}:client/dev-1`, vars).allowed).toBe(true);
    expect(evaluate([p], 'iot:Connect', `${A}:client/dev-2`, vars).allowed).toBe(false);
    expect(substitute('t/${iot:Certificate.Subject.CommonName}', vars)).toBe('t/dev-1.example');
    const lit = parsePolicy(
      'lit',
      doc({ Effect: 'Allow', Action: 'iot:Publish', Resource: `${A}:topic/a\${*}` }),
    );
    expect(evaluate([lit], 'iot:Publish', `${A}:topic/a*`, vars).allowed).toBe(true);
    expect(evaluate([lit], 'iot:Publish', `${A}:topic/abc`, vars).allowed).toBe(false);
  });

  it('Thing variables resolve only for an attached thing named by the client id; unresolved matches nothing', () => {
    const p = parsePolicy(
      'p',
      doc({
        Effect: 'Allow',
        Action: 'iot:Publish',
        Resource: `${A}:topic/\${iot:Connection.Thing.ThingName}/\${iot:Connection.Thing.Attributes[line]}`,
      }),
    );
    expect(evaluate([p], 'iot:Publish', `${A}:topic/dev-1/L3`, thingVars).allowed).toBe(true);
    const d = evaluate([p], 'iot:Publish', `${A}:topic/dev-1/L3`, vars);
    expect(d.allowed).toBe(false);
    const deny = parsePolicy(
      'd',
      doc(
        { Effect: 'Allow', Action: 'iot:*', Resource: '*' },
        { Effect: 'Deny', Action: 'iot:Publish', Resource: `${A}:topic/\${iot:Connection.Thing.ThingName}` },
      ),
    );
    // A Deny naming an unresolved variable does not apply either.
    expect(evaluate([deny], 'iot:Publish', `${A}:topic/`, vars).allowed).toBe(true);
  });

  it('Conditions: Bool on IsAttached, StringLike on the client id; unsupported operators are named', () => {
    const p = parsePolicy(
      'p',
      doc({
        Effect: 'Allow',
        Action: 'iot:Connect',
        Resource: '*',
        Condition: { Bool: { 'iot:Connection.Thing.IsAttached': 'true' } },
      }),
    );
    expect(evaluate([p], 'iot:Connect', `${A}:client/dev-1`, thingVars).allowed).toBe(true);
    const d = evaluate([p], 'iot:Connect', `${A}:client/dev-1`, vars);
    expect(d.allowed).toBe(false);
    expect(d.reason).toMatch(/Condition does not hold/);
    const like = parsePolicy(
      'l',
      doc({
        Effect: 'Allow',
        Action: 'iot:Connect',
        Resource: '*',
        Condition: { StringLike: { 'iot:ClientId': 'dev-*' } },
      }),
    );
    expect(evaluate([like], 'iot:Connect', `${A}:client/dev-1`, vars).allowed).toBe(true);
    expect(evaluate([like], 'iot:Connect', `${A}:client/x`, { clientId: 'x' }).allowed).toBe(false);
    const odd = parsePolicy(
      'o',
      doc({
        Effect: 'Allow',
        Action: 'iot:Connect',
        Resource: '*',
        Condition: { IpAddress: { 'aws:SourceIp': '10.0.0.0/8' } },
      }),
    );
    expect(evaluate([odd], 'iot:Connect', `${A}:client/dev-1`, vars).reason).toMatch(
      /IpAddress is not supported/,
    );
  });

  it('a broken stored document grants nothing and says why', () => {
    const p = parsePolicy('bad', '{not json');
    const d = evaluate([p], 'iot:Connect', `${A}:client/dev-1`, vars);
    expect(d.allowed).toBe(false);
    expect(d.reason).toMatch(/bad: the document is not JSON/);
  });
});
