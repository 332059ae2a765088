/**
 * Conformance of the AWS IoT stand-in: ONE list of scenarios (success and error path of every
 * operation), driven once by @aws-sdk/client-iot and once by the AWS CLI v2 (`--cli-input-json`,
 * one command per step, run by the CLI's own driver in one Python process per chain; a separate
 * case starts /usr/bin/aws itself). Chains are independent and run in parallel; steps inside a
 * chain run in order and share a scratch object. Every step has its own time budget.
 */
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-return -- scenario outputs are untyped JSON shared by the SDK and the CLI driver */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as iot from '@aws-sdk/client-iot';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsCli, awsOnce } from '../helpers/aws-cli.js';
import { tempDir } from '../helpers/home.js';
import {
  KEY,
  REGION,
  SECRET,
  iotClient,
  makeCsr,
  makeRsaCsr,
  pemDer,
  s3Client,
  sha256,
  startEmulatorProcess,
  type EmulatorProcess,
} from './emulator-helpers.js';

type Out = Record<string, any>;
type Result = { ok: true; out: Out } | { ok: false; name: string; message: string };
type Scratch = Record<string, any>;

interface Driver {
  name: 'sdk' | 'cli';
  call(op: string, input: Record<string, unknown>): Promise<Result>;
  close(): void;
}

/** The budget of one step (one SDK call, one CLI command); a busy machine is slow. */
const STEP_BUDGET_MS = 30_000;

interface Step {
  op?: string;
  input?: (s: Scratch) => Record<string, unknown>;
  /** 'ok' or the exception name. */
  expect?: string;
  check?: (out: Out, s: Scratch) => void;
  /** Local preparation (files, certificates) instead of a call. */
  run?: (s: Scratch, d: Driver) => Promise<void> | void;
}

let emu: EmulatorProcess;
let dir: string;

function sdkDriver(): Driver {
  const client = iotClient(emu.iotUrl);
  return {
    name: 'sdk',
    async call(op, input) {
      const Cmd = (iot as unknown as Record<string, new (i: unknown) => iot.ListThingsCommand>)[
        `${op}Command`
      ];
      if (!Cmd) throw new Error(`no SDK command ${op}`);
      const budget = AbortSignal.timeout(STEP_BUDGET_MS);
      try {
        const out = (await client.send(new Cmd(input), { abortSignal: budget })) as Out;
        return { ok: true, out };
      } catch (e) {
        if (budget.aborted)
          throw new Error(`${op} took longer than its budget of ${STEP_BUDGET_MS} ms`, { cause: e });
        return { ok: false, name: (e as Error).name, message: (e as Error).message };
      }
    },
    close: () => client.destroy(),
  };
}

const kebab = (op: string): string =>
  op
    .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
    .replace(/([A-Z])([A-Z][a-z])/g, '$1-$2')
    .toLowerCase();

const cliEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  AWS_ACCESS_KEY_ID: KEY,
  AWS_SECRET_ACCESS_KEY: SECRET,
  AWS_DEFAULT_REGION: REGION,
  AWS_PAGER: '',
  AWS_CONFIG_FILE: '/dev/null',
  AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
});

/** `aws ...` stderr of a service error: the exception name and AWS's message. */
const cliError = (stderr: string): { name: string; message: string } => {
  const m = /An error occurred \(([A-Za-z]+)\) when calling the \w+ operation: ([\s\S]*)/.exec(stderr);
  return m ? { name: m[1]!, message: m[2]!.trim() } : { name: 'CliFailure', message: stderr };
};

function cliDriver(): Driver {
  const cli = new AwsCli(cliEnv());
  return {
    name: 'cli',
    call(op, input) {
      const args = [
        'iot',
        kebab(op),
        '--cli-input-json',
        JSON.stringify(input),
        '--endpoint-url',
        emu.iotUrl,
        '--output',
        'json',
        '--no-cli-pager',
      ];
      return cli
        .run(args, STEP_BUDGET_MS)
        .then((r): Result =>
          r.rc === 0
            ? { ok: true, out: r.stdout.trim() ? (JSON.parse(r.stdout) as Out) : {} }
            : { ok: false, ...cliError(r.stderr) },
        );
    },
    close: () => cli.close(),
  };
}

function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

const ZERO_ID = '0'.repeat(64);
const POLICY = JSON.stringify({
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }],
});

/** The scenarios; `p` prefixes every name so both drivers could share one account. */
function chains(p: string, work: string): Step[][] {
  const things: Step[] = [
    {
      op: 'CreateThingType',
      input: () => ({
        thingTypeName: `${p}-type`,
        thingTypeProperties: { thingTypeDescription: 'a sensor', searchableAttributes: ['serial'] },
      }),
      expect: 'ok',
      check: (o) => expect(o.thingTypeArn).toMatch(/:thingtype\//),
    },
    {
      op: 'CreateThingType',
      input: () => ({ thingTypeName: `${p}-type` }),
      expect: 'ResourceAlreadyExistsException',
    },
    {
      op: 'DescribeThingType',
      input: () => ({ thingTypeName: `${p}-type` }),
      expect: 'ok',
      check: (o) => expect(o.thingTypeMetadata.deprecated).toBe(false),
    },
    {
      op: 'DescribeThingType',
      input: () => ({ thingTypeName: `${p}-nope` }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'CreateThing',
      input: () => ({
        thingName: `${p}-thing:1`,
        thingTypeName: `${p}-type`,
        attributePayload: { attributes: { serial: 'S1' } },
      }),
      expect: 'ok',
      check: (o, s) => {
        expect(o.thingArn).toBe(`arn:aws:iot:${REGION}:123456789012:thing/${p}-thing:1`);
        s.thingId = o.thingId;
      },
    },
    {
      op: 'CreateThing',
      input: () => ({
        thingName: `${p}-thing:1`,
        thingTypeName: `${p}-type`,
        attributePayload: { attributes: { serial: 'S1' } },
      }),
      expect: 'ok',
      check: (o, s) => expect(o.thingId).toBe(s.thingId),
    },
    {
      op: 'CreateThing',
      input: () => ({ thingName: `${p}-thing:1`, attributePayload: { attributes: { serial: 'S2' } } }),
      expect: 'ResourceAlreadyExistsException',
    },
    { op: 'CreateThing', input: () => ({ thingName: 'bad name' }), expect: 'InvalidRequestException' },
    {
      op: 'CreateThing',
      input: () => ({
        thingName: `${p}-x`,
        attributePayload: { attributes: { a: '1', b: '2', c: '3', d: '4' } },
      }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'CreateThing',
      input: () => ({ thingName: `${p}-x`, attributePayload: { attributes: { a: 'with space' } } }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'CreateThing',
      input: () => ({ thingName: `${p}-x`, thingTypeName: `${p}-nope` }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'DescribeThing',
      input: () => ({ thingName: `${p}-thing:1` }),
      expect: 'ok',
      check: (o) =>
        expect([o.version, o.defaultClientId, o.attributes.serial]).toEqual([1, `${p}-thing:1`, 'S1']),
    },
    { op: 'DescribeThing', input: () => ({ thingName: `${p}-nope` }), expect: 'ResourceNotFoundException' },
    {
      op: 'UpdateThing',
      input: () => ({
        thingName: `${p}-thing:1`,
        attributePayload: { attributes: { hw: 'B' }, merge: true },
        expectedVersion: 1,
      }),
      expect: 'ok',
    },
    {
      op: 'UpdateThing',
      input: () => ({ thingName: `${p}-thing:1`, expectedVersion: 99 }),
      expect: 'VersionConflictException',
    },
    {
      op: 'DescribeThing',
      input: () => ({ thingName: `${p}-thing:1` }),
      expect: 'ok',
      check: (o) => expect([o.version, o.attributes]).toEqual([2, { serial: 'S1', hw: 'B' }]),
    },
    {
      op: 'ListThings',
      input: () => ({ thingTypeName: `${p}-type` }),
      expect: 'ok',
      check: (o) => expect(o.things.map((t: Out) => t.thingName)).toEqual([`${p}-thing:1`]),
    },
    { op: 'ListThings', input: () => ({ nextToken: 'garbage' }), expect: 'InvalidRequestException' },
    {
      op: 'CreateThingGroup',
      input: () => ({
        thingGroupName: `${p}-group`,
        thingGroupProperties: { thingGroupDescription: 'line 3' },
      }),
      expect: 'ok',
      check: (o, s) => (s.groupId = o.thingGroupId),
    },
    {
      op: 'CreateThingGroup',
      input: () => ({
        thingGroupName: `${p}-group`,
        thingGroupProperties: { thingGroupDescription: 'line 3' },
      }),
      expect: 'ok',
      check: (o, s) => expect(o.thingGroupId).toBe(s.groupId),
    },
    {
      op: 'CreateThingGroup',
      input: () => ({
        thingGroupName: `${p}-group`,
        thingGroupProperties: { thingGroupDescription: 'other' },
      }),
      expect: 'ResourceAlreadyExistsException',
    },
    {
      op: 'CreateThingGroup',
      input: () => ({ thingGroupName: `${p}-child`, parentGroupName: `${p}-nope` }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'DescribeThingGroup',
      input: () => ({ thingGroupName: `${p}-group` }),
      expect: 'ok',
      check: (o) => expect(o.thingGroupProperties.thingGroupDescription).toBe('line 3'),
    },
    {
      op: 'DescribeThingGroup',
      input: () => ({ thingGroupName: `${p}-nope` }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'AddThingToThingGroup',
      input: () => ({ thingGroupName: `${p}-group`, thingName: `${p}-thing:1` }),
      expect: 'ok',
    },
    {
      op: 'AddThingToThingGroup',
      input: () => ({ thingGroupName: `${p}-nope`, thingName: `${p}-thing:1` }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'ListThingGroupsForThing',
      input: () => ({ thingName: `${p}-thing:1` }),
      expect: 'ok',
      check: (o) => expect(o.thingGroups.map((g: Out) => g.groupName)).toEqual([`${p}-group`]),
    },
    {
      op: 'ListThingGroupsForThing',
      input: () => ({ thingName: `${p}-nope` }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'DeleteThing',
      input: () => ({ thingName: `${p}-thing:1`, expectedVersion: 1 }),
      expect: 'VersionConflictException',
    },
    { op: 'DeleteThing', input: () => ({ thingName: `${p}-thing:1` }), expect: 'ok' },
    {
      op: 'DescribeThing',
      input: () => ({ thingName: `${p}-thing:1` }),
      expect: 'ResourceNotFoundException',
    },
  ];

  const certs: Step[] = [
    {
      op: 'CreatePolicy',
      input: () => ({ policyName: `${p}-policy`, policyDocument: POLICY }),
      expect: 'ok',
      check: (o) => expect(o.policyVersionId).toBe('1'),
    },
    {
      op: 'CreatePolicy',
      input: () => ({ policyName: `${p}-policy`, policyDocument: POLICY }),
      expect: 'ResourceAlreadyExistsException',
    },
    {
      op: 'CreatePolicy',
      input: () => ({ policyName: `${p}-bad`, policyDocument: '{not json' }),
      expect: 'MalformedPolicyException',
    },
    {
      op: 'CreatePolicy',
      input: () => ({
        policyName: `${p}-big`,
        policyDocument: JSON.stringify({ Statement: [{ Resource: 'x'.repeat(2100) }] }),
      }),
      expect: 'MalformedPolicyException',
    },
    {
      op: 'GetPolicy',
      input: () => ({ policyName: `${p}-policy` }),
      expect: 'ok',
      check: (o) =>
        expect([o.defaultVersionId, o.generationId]).toEqual(['1', expect.stringMatching(/^[0-9a-f]{64}$/)]),
    },
    { op: 'GetPolicy', input: () => ({ policyName: `${p}-nope` }), expect: 'ResourceNotFoundException' },
    {
      op: 'ListPolicies',
      input: () => ({}),
      expect: 'ok',
      check: (o) => expect(o.policies.map((x: Out) => x.policyName)).toContain(`${p}-policy`),
    },
    { op: 'ListPolicies', input: () => ({ marker: 'garbage' }), expect: 'InvalidRequestException' },
    { run: (s) => void Object.assign(s, { csr: makeCsr(`${p}-dev`) }) },
    {
      op: 'CreateCertificateFromCsr',
      input: (s) => ({ certificateSigningRequest: s.csr.csr, setAsActive: true }),
      expect: 'ok',
      check: (o, s) => {
        expect(o.certificateId).toBe(sha256(pemDer(o.certificatePem)));
        expect(o.certificateArn).toBe(`arn:aws:iot:${REGION}:123456789012:cert/${o.certificateId}`);
        const f = join(work, `${p}-cert.pem`);
        writeFileSync(f, o.certificatePem);
        expect(openssl(['x509', '-in', f, '-noout', '-pubkey'])).toBe(s.csr.publicKeyPem);
        Object.assign(s, { certId: o.certificateId, certArn: o.certificateArn });
      },
    },
    {
      op: 'CreateCertificateFromCsr',
      input: () => ({
        certificateSigningRequest:
          '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
      }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'CreateKeysAndCertificate',
      input: () => ({ setAsActive: false }),
      expect: 'ok',
      check: (o, s) => {
        expect(o.keyPair.PrivateKey).toMatch(/^-----BEGIN RSA PRIVATE KEY-----\n/);
        expect(o.keyPair.PublicKey).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
        s.certId2 = o.certificateId;
      },
    },
    {
      op: 'DescribeCertificate',
      input: (s) => ({ certificateId: s.certId }),
      expect: 'ok',
      check: (o) =>
        expect([o.certificateDescription.status, o.certificateDescription.ownedBy]).toEqual([
          'ACTIVE',
          '123456789012',
        ]),
    },
    {
      op: 'DescribeCertificate',
      input: (s) => ({ certificateId: s.certId2 }),
      expect: 'ok',
      check: (o) => expect(o.certificateDescription.status).toBe('INACTIVE'),
    },
    {
      op: 'DescribeCertificate',
      input: () => ({ certificateId: ZERO_ID }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'DescribeCertificate',
      input: () => ({ certificateId: 'z'.repeat(64) }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'ListCertificates',
      input: () => ({ pageSize: 250 }),
      expect: 'ok',
      check: (o, s) => expect(o.certificates.map((c: Out) => c.certificateId)).toContain(s.certId),
    },
    {
      op: 'UpdateCertificate',
      input: (s) => ({ certificateId: s.certId2, newStatus: 'ACTIVE' }),
      expect: 'ok',
    },
    {
      op: 'UpdateCertificate',
      input: (s) => ({ certificateId: s.certId2, newStatus: 'PENDING_ACTIVATION' }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'UpdateCertificate',
      input: (s) => ({ certificateId: s.certId2, newStatus: 'REVOKED' }),
      expect: 'ok',
    },
    {
      op: 'UpdateCertificate',
      input: (s) => ({ certificateId: s.certId2, newStatus: 'ACTIVE' }),
      expect: 'CertificateStateException',
    },
    {
      op: 'UpdateCertificate',
      input: () => ({ certificateId: ZERO_ID, newStatus: 'ACTIVE' }),
      expect: 'ResourceNotFoundException',
    },
    {
      run: (s) => {
        const key = join(work, `${p}-self.key`);
        s.selfSigned = openssl([
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-keyout',
          key,
          '-subj',
          `/CN=${p}-self`,
          '-days',
          '30',
        ]);
      },
    },
    {
      op: 'RegisterCertificateWithoutCA',
      input: (s) => ({ certificatePem: s.selfSigned, status: 'ACTIVE' }),
      expect: 'ok',
      check: (o, s) => expect(o.certificateId).toBe(sha256(pemDer(s.selfSigned))),
    },
    {
      op: 'RegisterCertificateWithoutCA',
      input: (s) => ({ certificatePem: s.selfSigned }),
      expect: 'ResourceAlreadyExistsException',
    },
    {
      op: 'RegisterCertificate',
      input: (s) => ({ certificatePem: s.selfSigned }),
      expect: 'ResourceAlreadyExistsException',
    },
    { op: 'AttachPolicy', input: (s) => ({ policyName: `${p}-policy`, target: s.certArn }), expect: 'ok' },
    {
      op: 'AttachPolicy',
      input: (s) => ({ policyName: `${p}-nope`, target: s.certArn }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'ListAttachedPolicies',
      input: (s) => ({ target: s.certArn }),
      expect: 'ok',
      check: (o) => expect(o.policies.map((x: Out) => x.policyName)).toEqual([`${p}-policy`]),
    },
    {
      op: 'ListAttachedPolicies',
      input: () => ({ target: `arn:aws:iot:${REGION}:123456789012:cert/${ZERO_ID}` }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'ListTargetsForPolicy',
      input: () => ({ policyName: `${p}-policy` }),
      expect: 'ok',
      check: (o, s) => expect(o.targets).toEqual([s.certArn]),
    },
    {
      op: 'ListTargetsForPolicy',
      input: () => ({ policyName: `${p}-nope` }),
      expect: 'ResourceNotFoundException',
    },
    { op: 'CreateThing', input: () => ({ thingName: `${p}-dev` }), expect: 'ok' },
    {
      op: 'AttachThingPrincipal',
      input: (s) => ({ thingName: `${p}-dev`, principal: s.certArn }),
      expect: 'ok',
    },
    {
      op: 'AttachThingPrincipal',
      input: (s) => ({ thingName: `${p}-nope`, principal: s.certArn }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'ListThingPrincipals',
      input: () => ({ thingName: `${p}-dev` }),
      expect: 'ok',
      check: (o, s) => expect(o.principals).toEqual([s.certArn]),
    },
    {
      op: 'ListThingPrincipals',
      input: () => ({ thingName: `${p}-nope` }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'ListPrincipalThings',
      input: (s) => ({ principal: s.certArn }),
      expect: 'ok',
      check: (o) => expect(o.things).toEqual([`${p}-dev`]),
    },
    {
      op: 'ListPrincipalThings',
      input: () => ({ principal: `arn:aws:iot:${REGION}:123456789012:cert/${ZERO_ID}` }),
      expect: 'ResourceNotFoundException',
    },
    { op: 'DeleteThing', input: () => ({ thingName: `${p}-dev` }), expect: 'InvalidRequestException' },
    {
      op: 'DeleteCertificate',
      input: (s) => ({ certificateId: s.certId }),
      expect: 'CertificateStateException',
    },
    {
      op: 'UpdateCertificate',
      input: (s) => ({ certificateId: s.certId, newStatus: 'INACTIVE' }),
      expect: 'ok',
    },
    {
      op: 'DeleteCertificate',
      input: (s) => ({ certificateId: s.certId }),
      expect: 'DeleteConflictException',
    },
    {
      op: 'DetachThingPrincipal',
      input: (s) => ({ thingName: `${p}-dev`, principal: s.certArn }),
      expect: 'ok',
    },
    {
      op: 'DetachThingPrincipal',
      input: (s) => ({ thingName: `${p}-nope`, principal: s.certArn }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'DeleteCertificate',
      input: (s) => ({ certificateId: s.certId }),
      expect: 'DeleteConflictException',
    },
    { op: 'DetachPolicy', input: (s) => ({ policyName: `${p}-policy`, target: s.certArn }), expect: 'ok' },
    {
      op: 'DetachPolicy',
      input: (s) => ({ policyName: `${p}-nope`, target: s.certArn }),
      expect: 'ResourceNotFoundException',
    },
    { op: 'DeleteCertificate', input: (s) => ({ certificateId: s.certId }), expect: 'ok' },
    {
      op: 'DeleteCertificate',
      input: (s) => ({ certificateId: s.certId }),
      expect: 'ResourceNotFoundException',
    },
  ];

  const cas: Step[] = [
    {
      op: 'GetRegistrationCode',
      input: () => ({}),
      expect: 'ok',
      check: (o, s) => (s.code = o.registrationCode),
    },
    {
      run: (s) => {
        const f = (n: string): string => join(work, `${p}-${n}`);
        openssl([
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-keyout',
          f('ca.key'),
          '-subj',
          `/CN=${p} test CA`,
          '-days',
          '30',
          '-addext',
          'basicConstraints=critical,CA:TRUE',
          '-addext',
          'keyUsage=critical,keyCertSign',
          '-out',
          f('ca.pem'),
        ]);
        const signed = (name: string, cn: string): string => {
          openssl([
            'req',
            '-new',
            '-newkey',
            'ec',
            '-pkeyopt',
            'ec_paramgen_curve:P-256',
            '-nodes',
            '-keyout',
            f(`${name}.key`),
            '-subj',
            `/CN=${cn}`,
            '-out',
            f(`${name}.csr`),
          ]);
          return openssl([
            'x509',
            '-req',
            '-in',
            f(`${name}.csr`),
            '-CA',
            f('ca.pem'),
            '-CAkey',
            f('ca.key'),
            '-CAcreateserial',
            '-days',
            '10',
          ]);
        };
        s.caPem = openssl(['x509', '-in', f('ca.pem')]);
        s.verification = signed('verify', s.code);
        s.wrongVerification = signed('wrong', 'not-the-code');
        s.deviceByCa = signed('device', `${p}-device`);
        s.notCa = openssl([
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-keyout',
          f('leaf.key'),
          '-subj',
          `/CN=${p}-leaf`,
          '-days',
          '30',
          '-addext',
          'basicConstraints=CA:FALSE',
        ]);
      },
    },
    {
      op: 'RegisterCertificate',
      input: (s) => ({ certificatePem: s.deviceByCa, setAsActive: true }),
      expect: 'CertificateValidationException',
    },
    {
      op: 'RegisterCACertificate',
      input: (s) => ({ caCertificate: s.caPem, verificationCertificate: s.wrongVerification }),
      expect: 'RegistrationCodeValidationException',
    },
    {
      op: 'RegisterCACertificate',
      input: (s) => ({ caCertificate: s.notCa, verificationCertificate: s.verification }),
      expect: 'CertificateValidationException',
    },
    {
      op: 'RegisterCACertificate',
      input: (s) => ({
        caCertificate: s.caPem,
        verificationCertificate: s.verification,
        allowAutoRegistration: true,
      }),
      expect: 'ok',
      check: (o, s) => (s.caId = o.certificateId),
    },
    {
      op: 'RegisterCACertificate',
      input: (s) => ({ caCertificate: s.caPem, verificationCertificate: s.verification }),
      expect: 'ResourceAlreadyExistsException',
    },
    {
      op: 'DescribeCACertificate',
      input: (s) => ({ certificateId: s.caId }),
      expect: 'ok',
      check: (o) =>
        expect([o.certificateDescription.status, o.certificateDescription.autoRegistrationStatus]).toEqual([
          'INACTIVE',
          'ENABLE',
        ]),
    },
    {
      op: 'DescribeCACertificate',
      input: () => ({ certificateId: ZERO_ID }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'RegisterCertificate',
      input: (s) => ({ certificatePem: s.deviceByCa, setAsActive: true }),
      expect: 'CertificateStateException',
    },
    {
      op: 'UpdateCACertificate',
      input: (s) => ({ certificateId: s.caId, newStatus: 'ACTIVE' }),
      expect: 'ok',
    },
    {
      op: 'UpdateCACertificate',
      input: (s) => ({ certificateId: s.caId, newStatus: 'SOMETIMES' }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'UpdateCACertificate',
      input: () => ({ certificateId: ZERO_ID, newStatus: 'ACTIVE' }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'ListCACertificates',
      input: () => ({}),
      expect: 'ok',
      check: (o, s) => expect(o.certificates.map((c: Out) => c.certificateId)).toContain(s.caId),
    },
    { op: 'ListCACertificates', input: () => ({ marker: 'garbage' }), expect: 'InvalidRequestException' },
    {
      op: 'RegisterCertificate',
      input: (s) => ({ certificatePem: s.deviceByCa, setAsActive: true }),
      expect: 'ok',
      check: (o, s) => (s.devId = o.certificateId),
    },
    {
      op: 'DescribeCertificate',
      input: (s) => ({ certificateId: s.devId }),
      expect: 'ok',
      check: (o, s) =>
        expect([o.certificateDescription.caCertificateId, o.certificateDescription.status]).toEqual([
          s.caId,
          'ACTIVE',
        ]),
    },
    {
      op: 'DescribeEndpoint',
      input: () => ({ endpointType: 'iot:Data-ATS' }),
      expect: 'ok',
      // The stand-in names its own MQTT endpoint, which clients can reach (AWS: <prefix>-ats.iot…).
      check: (o) => expect(o.endpointAddress).toMatch(/^localhost:\d+$/),
    },
    {
      op: 'DescribeEndpoint',
      input: () => ({ endpointType: 'iot:Nope' }),
      expect: 'InvalidRequestException',
    },
  ];

  const fleet = JSON.stringify({
    Parameters: { SerialNumber: { Type: 'String' }, 'AWS::IoT::Certificate::Id': { Type: 'String' } },
    Resources: {
      thing: {
        Type: 'AWS::IoT::Thing',
        Properties: { ThingName: { 'Fn::Join': ['', ['fleet-', { Ref: 'SerialNumber' }]] } },
      },
      certificate: {
        Type: 'AWS::IoT::Certificate',
        Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'Active' },
      },
    },
  });
  const templates: Step[] = [
    {
      op: 'CreateProvisioningTemplate',
      input: () => ({
        templateName: `${p}-fleet`,
        templateBody: fleet,
        provisioningRoleArn: 'arn:aws:iam::123456789012:role/prov',
      }),
      expect: 'ok',
      check: (o) => expect(o.defaultVersionId).toBe(1),
    },
    {
      op: 'CreateProvisioningTemplate',
      input: () => ({
        templateName: `${p}-fleet`,
        templateBody: fleet,
        provisioningRoleArn: 'arn:aws:iam::123456789012:role/prov',
      }),
      expect: 'ResourceAlreadyExistsException',
    },
    {
      op: 'CreateProvisioningTemplate',
      input: () => ({
        templateName: `${p}-if`,
        templateBody: JSON.stringify({
          Resources: {
            t: { Type: 'AWS::IoT::Thing', Properties: { ThingName: { 'Fn::If': ['c', 'a', 'b'] } } },
          },
        }),
        provisioningRoleArn: 'arn:aws:iam::123456789012:role/prov',
      }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'DescribeProvisioningTemplate',
      input: () => ({ templateName: `${p}-fleet` }),
      expect: 'ok',
      check: (o) => expect([o.enabled, o.type, o.templateBody]).toEqual([false, 'FLEET_PROVISIONING', fleet]),
    },
    {
      op: 'DescribeProvisioningTemplate',
      input: () => ({ templateName: `${p}-nope` }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'ListProvisioningTemplates',
      input: () => ({}),
      expect: 'ok',
      check: (o) => expect(o.templates.map((t: Out) => t.templateName)).toContain(`${p}-fleet`),
    },
    {
      op: 'ListProvisioningTemplates',
      input: () => ({ nextToken: 'garbage' }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'UpdateProvisioningTemplate',
      input: () => ({ templateName: `${p}-fleet`, enabled: true, description: 'factory' }),
      expect: 'ok',
    },
    {
      op: 'UpdateProvisioningTemplate',
      input: () => ({ templateName: `${p}-nope`, enabled: true }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'CreateProvisioningClaim',
      input: () => ({ templateName: `${p}-fleet` }),
      expect: 'ok',
      check: (o) => expect(o.keyPair.PrivateKey).toMatch(/RSA PRIVATE KEY/),
    },
    {
      op: 'CreateProvisioningClaim',
      input: () => ({ templateName: `${p}-nope` }),
      expect: 'ResourceNotFoundException',
    },
    { op: 'DeleteProvisioningTemplate', input: () => ({ templateName: `${p}-fleet` }), expect: 'ok' },
    {
      op: 'DeleteProvisioningTemplate',
      input: () => ({ templateName: `${p}-fleet` }),
      expect: 'ResourceNotFoundException',
    },
    { op: 'CreateThingType', input: () => ({ thingTypeName: `${p}-rt-type` }), expect: 'ok' },
    { run: (s) => void Object.assign(s, { rtCsr: makeRsaCsr(`${p}-rt`) }) },
    {
      op: 'RegisterThing',
      input: (s) => ({
        templateBody: registerTemplate(`${p}-rt-type`),
        parameters: { ThingName: `${p}-rt-1`, CSR: s.rtCsr.csr },
      }),
      expect: 'ok',
      check: (o) => {
        expect(Object.keys(o.resourceArns).sort()).toEqual(['certificate', 'policy', 'thing']);
        expect(o.resourceArns.thing).toMatch(new RegExp(`:thing/${p}-rt-1$`));
        expect(o.resourceArns.policy).toMatch(/:policy\/[0-9A-F]{40}$/);
        expect(o.certificatePem).toMatch(/^-----BEGIN CERTIFICATE-----/);
      },
    },
    {
      op: 'RegisterThing',
      input: (s) => ({ templateBody: registerTemplate(`${p}-rt-type`), parameters: { CSR: s.rtCsr.csr } }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'RegisterThing',
      input: (s) => ({
        templateBody: registerTemplate(`${p}-missing-type`),
        parameters: { ThingName: `${p}-rt-2`, CSR: s.rtCsr.csr },
      }),
      expect: 'ResourceRegistrationFailureException',
    },
    { op: 'DescribeThing', input: () => ({ thingName: `${p}-rt-2` }), expect: 'ResourceNotFoundException' },
  ];

  const bulk: Step[] = [
    {
      run: async () => {
        const lines = [0, 1, 2].map((i) =>
          JSON.stringify({ ThingName: `${p}-bulk-${i}`, CSR: makeCsr(`${p}-bulk-${i}`).csr }),
        );
        lines.splice(1, 0, '{"ThingName": "bad name", "CSR": "x"}');
        const s3 = s3Client(emu.s3Url);
        await s3.send(
          new PutObjectCommand({
            Bucket: 'provline-local',
            Key: `${p}/input.ndjson`,
            Body: `${lines.join('\n')}\n`,
          }),
        );
        const slow = Array.from({ length: 30 }, (_, i) =>
          JSON.stringify({ ThingName: `${p}-slow-${i}`, CSR: makeCsr(`${p}-slow`).csr }),
        );
        await s3.send(
          new PutObjectCommand({
            Bucket: 'provline-local',
            Key: `${p}/slow.ndjson`,
            Body: `${slow.join('\n')}\n`,
          }),
        );
        await fetch(`${emu.iotUrl}/_emulator/faults`, {
          method: 'PUT',
          body: JSON.stringify({ linesPerSecond: 1 }),
        });
      },
    },
    {
      op: 'StartThingRegistrationTask',
      input: () => ({
        templateBody: bulkTemplate,
        inputFileBucket: 'provline-local',
        inputFileKey: `${p}/slow.ndjson`,
        roleArn: 'arn:aws:iam::123456789012:role/bulk',
      }),
      expect: 'ok',
      check: (o, s) => (s.paced = o.taskId),
    },
    {
      op: 'StartThingRegistrationTask',
      input: () => ({
        templateBody: bulkTemplate,
        inputFileBucket: 'provline-local',
        inputFileKey: `${p}/input.ndjson`,
        roleArn: 'arn:aws:iam::123456789012:role/bulk',
      }),
      expect: 'InvalidRequestException',
    },
    { op: 'StopThingRegistrationTask', input: (s) => ({ taskId: s.paced }), expect: 'ok' },
    {
      op: 'StopThingRegistrationTask',
      input: () => ({ taskId: 'nope' }),
      expect: 'ResourceNotFoundException',
    },
    {
      run: () =>
        fetch(`${emu.iotUrl}/_emulator/faults?replace=true`, { method: 'PUT', body: '{}' }).then(
          () => undefined,
        ),
    },
    {
      op: 'StartThingRegistrationTask',
      input: () => ({
        templateBody: '{"Resources": {}}',
        inputFileBucket: 'provline-local',
        inputFileKey: `${p}/input.ndjson`,
        roleArn: 'arn:aws:iam::123456789012:role/bulk',
      }),
      expect: 'InvalidRequestException',
    },
    { run: (s, d) => waitTask(d, s.paced, 'Cancelled') },
    {
      op: 'StartThingRegistrationTask',
      input: () => ({
        templateBody: bulkTemplate,
        inputFileBucket: 'provline-local',
        inputFileKey: `${p}/input.ndjson`,
        roleArn: 'arn:aws:iam::123456789012:role/bulk',
      }),
      expect: 'ok',
      check: (o, s) => (s.taskId = o.taskId),
    },
    { run: (s, d) => waitTask(d, s.taskId, 'Completed') },
    {
      op: 'DescribeThingRegistrationTask',
      input: (s) => ({ taskId: s.taskId }),
      expect: 'ok',
      check: (o) =>
        expect([o.status, o.successCount, o.failureCount, o.percentageProgress]).toEqual([
          'Completed',
          3,
          1,
          100,
        ]),
    },
    {
      op: 'DescribeThingRegistrationTask',
      input: () => ({ taskId: 'nope' }),
      expect: 'ResourceNotFoundException',
    },
    {
      op: 'StopThingRegistrationTask',
      input: (s) => ({ taskId: s.taskId }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'ListThingRegistrationTasks',
      input: () => ({ status: 'Completed' }),
      expect: 'ok',
      check: (o, s) => expect(o.taskIds).toContain(s.taskId),
    },
    {
      op: 'ListThingRegistrationTasks',
      input: () => ({ nextToken: 'garbage' }),
      expect: 'InvalidRequestException',
    },
    {
      op: 'ListThingRegistrationTaskReports',
      input: (s) => ({ taskId: s.taskId, reportType: 'ERRORS' }),
      expect: 'ok',
      check: (o, s) => {
        expect(o.reportType).toBe('ERRORS');
        expect(o.resourceLinks).toHaveLength(1);
        s.errorsLink = o.resourceLinks[0];
      },
    },
    {
      run: async (s) => {
        const text = await (await fetch(s.errorsLink)).text();
        const lines = text
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Out);
        expect(lines).toHaveLength(1);
        expect(Object.keys(lines[0]!)).toEqual(['errorMessage', 'lineNumber', 'offset', 'response']);
        expect(lines[0]!.lineNumber).toBe(2);
        expect(lines[0]!.response).toBeNull();
        expect(lines[0]!.errorMessage).toMatch(
          /^com\.amazonaws\.services\.iot\.model\.InvalidRequestException: .*\(Service: AWSIot; Status Code: 400; Error Code: InvalidRequestException; Request ID: [0-9a-f-]+; Proxy: null\)$/,
        );
      },
    },
    {
      op: 'ListThingRegistrationTaskReports',
      input: (s) => ({ taskId: s.taskId, reportType: 'RESULTS' }),
      expect: 'ok',
      check: (o) => expect(o.resourceLinks).toHaveLength(1),
    },
    {
      op: 'ListThingRegistrationTaskReports',
      input: () => ({ taskId: 'nope', reportType: 'RESULTS' }),
      expect: 'InvalidRequestException',
    },
    { op: 'DescribeThing', input: () => ({ thingName: `${p}-bulk-2` }), expect: 'ok' },
  ];

  return [things, certs, cas, templates, bulk];
}

function registerTemplate(thingType: string): string {
  return JSON.stringify({
    Parameters: { ThingName: { Type: 'String' }, CSR: { Type: 'String' } },
    Resources: {
      thing: {
        Type: 'AWS::IoT::Thing',
        Properties: {
          ThingName: { Ref: 'ThingName' },
          ThingTypeName: thingType,
          AttributePayload: { model: 'x1' },
        },
      },
      certificate: {
        Type: 'AWS::IoT::Certificate',
        Properties: { CertificateSigningRequest: { Ref: 'CSR' }, Status: 'ACTIVE' },
      },
      policy: {
        Type: 'AWS::IoT::Policy',
        Properties: {
          PolicyDocument: {
            Version: '2012-10-17',
            Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }],
          },
        },
      },
    },
  });
}

const bulkTemplate = JSON.stringify({
  Parameters: { ThingName: { Type: 'String' }, CSR: { Type: 'String' } },
  Resources: {
    thing: { Type: 'AWS::IoT::Thing', Properties: { ThingName: { Ref: 'ThingName' } } },
    certificate: {
      Type: 'AWS::IoT::Certificate',
      Properties: { CertificateSigningRequest: { Ref: 'CSR' }, Status: 'ACTIVE' },
    },
  },
});

/** Polls until the task reaches `status`: one step, with a budget of its own. */
async function waitTask(d: Driver, taskId: string, status: string, budgetMs = 60_000): Promise<void> {
  const until = Date.now() + budgetMs;
  let last: Result | undefined;
  while (Date.now() < until) {
    last = await d.call('DescribeThingRegistrationTask', { taskId });
    if (last.ok && last.out.status === status) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`task ${taskId} not ${status} within ${budgetMs} ms; last answer ${JSON.stringify(last)}`);
}

async function runChain(d: Driver, steps: Step[]): Promise<void> {
  const s: Scratch = {};
  for (const [i, step] of steps.entries()) {
    if (step.run) {
      await step.run(s, d);
      continue;
    }
    const input = step.input!(s);
    const r = await d.call(step.op!, input);
    const where = `${d.name} step ${i} ${step.op} ${JSON.stringify(input).slice(0, 200)}`;
    if (step.expect === 'ok') {
      expect(r.ok, `${where}: ${r.ok ? '' : `${r.name}: ${r.message}`}`).toBe(true);
      if (r.ok) step.check?.(r.out, s);
    } else {
      expect(r.ok ? 'ok' : r.name, `${where}: ${r.ok ? 'succeeded' : r.message}`).toBe(step.expect);
    }
  }
}

beforeAll(async () => {
  dir = tempDir('provline-emu-conf-');
  emu = await startEmulatorProcess(join(dir, 'state'));
});

afterAll(async () => {
  await emu?.stop();
  rmSync(dir, { recursive: true, force: true });
});

for (const make of [sdkDriver, cliDriver]) {
  describe.concurrent(
    `conformance via ${make === sdkDriver ? '@aws-sdk/client-iot' : 'AWS CLI v2 (/usr/bin/aws)'}`,
    () => {
      const p = make === sdkDriver ? 'sdk' : 'cli';
      const names = [
        'things, types and groups',
        'certificates, policies and principals',
        'CA certificates and endpoints',
        'provisioning templates and RegisterThing',
        'bulk registration',
      ];
      // Each step has its own budget (STEP_BUDGET_MS, waitTask's); the test's timeout, the sum
      // of its steps' budgets, only stops a hang.
      const steps = chains(p, dir).map((c) => c.length);
      it.each(names.map((n, i) => [n, i] as const))(
        '%s',
        async (_name, i) => {
          const work = join(dir, p);
          mkdirSync(work, { recursive: true });
          const d = make();
          try {
            await runChain(d, chains(p, work)[i]!);
          } finally {
            d.close();
          }
        },
        Math.max(...steps) * STEP_BUDGET_MS,
      );
    },
  );
}

describe('the aws binary itself', () => {
  it('/usr/bin/aws, started on its own, gets an answer and an AWS error from the stand-in', async () => {
    const common = ['--endpoint-url', emu.iotUrl, '--output', 'json', '--no-cli-pager'];
    const ok = await awsOnce(['iot', 'list-things', ...common], cliEnv());
    expect(ok.rc, ok.stderr).toBe(0);
    expect((JSON.parse(ok.stdout) as Out).things).toEqual(expect.any(Array));
    const missing = await awsOnce(
      ['iot', 'describe-thing', '--thing-name', 'no-such-thing', ...common],
      cliEnv(),
    );
    expect(missing.rc).toBe(254);
    expect(cliError(missing.stderr).name).toBe('ResourceNotFoundException');
  });
});

describe('authentication', () => {
  it('a wrong secret is refused with 403 InvalidSignatureException (SDK)', async () => {
    const err = await iotClient(emu.iotUrl, 'wrong-secret')
      .send(new iot.ListThingsCommand({}))
      .catch((e: Error & { $metadata: { httpStatusCode: number } }) => e);
    expect((err as Error).name).toBe('InvalidSignatureException');
    expect((err as { $metadata: { httpStatusCode: number } }).$metadata.httpStatusCode).toBe(403);
  });

  it('an unsigned request is refused with 403 MissingAuthenticationTokenException', async () => {
    const r = await fetch(`${emu.iotUrl}/things`);
    expect(r.status).toBe(403);
    expect(r.headers.get('x-amzn-errortype')).toBe('MissingAuthenticationTokenException');
  });
});
