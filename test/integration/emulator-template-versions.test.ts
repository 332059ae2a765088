/**
 * Provisioning-template versions, hooks, provisioning claims and the RegisterThing pseudo-
 * parameter fix, against the stand-in as a real process, through @aws-sdk/client-iot and the
 * AWS CLI v2 (/usr/bin/aws).
 */
import { execFile } from 'node:child_process';
import {
  CreateKeysAndCertificateCommand,
  CreatePolicyCommand,
  CreateProvisioningClaimCommand,
  CreateProvisioningTemplateCommand,
  CreateProvisioningTemplateVersionCommand,
  DeleteProvisioningTemplateVersionCommand,
  DescribeCertificateCommand,
  DescribeProvisioningTemplateCommand,
  DescribeProvisioningTemplateVersionCommand,
  ListCertificatesCommand,
  ListProvisioningTemplateVersionsCommand,
  UpdateProvisioningTemplateCommand,
  type IoTClient,
} from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/home.js';
import {
  KEY,
  REGION,
  SECRET,
  iotClient,
  startEmulatorProcess,
  type EmulatorProcess,
} from './emulator-helpers.js';

const ROLE = 'arn:aws:iam::123456789012:role/provisioning';
const HOOK = 'arn:aws:lambda:us-east-1:123456789012:function:check-serial';
/** Each CLI command has its own budget (CLI_BUDGET_MS); a test's timeout is the sum of its commands'. */
const CLI_BUDGET_MS = 60_000;

let emu: EmulatorProcess;
let iot: IoTClient;

beforeAll(async () => {
  emu = await startEmulatorProcess(tempDir('provline-tplv-'));
  iot = iotClient(emu.iotUrl);
});
afterAll(async () => {
  iot?.destroy();
  await emu?.stop();
});

/** A fleet template whose thing name starts with `prefix` (the DG's style: Id not declared). */
const body = (prefix: string): string =>
  JSON.stringify({
    Parameters: { Serial: { Type: 'String' } },
    Resources: {
      thing: {
        Type: 'AWS::IoT::Thing',
        Properties: { ThingName: { 'Fn::Join': ['', [prefix, { Ref: 'Serial' }]] } },
      },
      certificate: {
        Type: 'AWS::IoT::Certificate',
        Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'Active' },
      },
    },
  });

async function failure(p: Promise<unknown>): Promise<{ name: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return { name: (e as Error).name, message: (e as Error).message };
  }
  throw new Error('expected the call to fail');
}

interface CliResult {
  rc: number;
  out: Record<string, unknown>;
  err: string;
}

function aws(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      '/usr/bin/aws',
      ['iot', ...args, '--endpoint-url', emu.iotUrl, '--output', 'json'],
      {
        timeout: CLI_BUDGET_MS,
        env: {
          ...process.env,
          AWS_ACCESS_KEY_ID: KEY,
          AWS_SECRET_ACCESS_KEY: SECRET,
          AWS_DEFAULT_REGION: REGION,
          AWS_PAGER: '',
        },
      },
      (error, stdout, stderr) =>
        resolve({
          rc: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
          out: stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : {},
          err: stderr,
        }),
    );
  });
}

describe('template versions through @aws-sdk/client-iot', () => {
  it('create, list, describe, default, delete, the limit and ids that are never reused', async () => {
    const name = 'sdk-versions';
    const created = await iot.send(
      new CreateProvisioningTemplateCommand({
        templateName: name,
        templateBody: body('v1-'),
        provisioningRoleArn: ROLE,
        enabled: true,
      }),
    );
    expect(created.defaultVersionId).toBe(1);
    const v2 = await iot.send(
      new CreateProvisioningTemplateVersionCommand({ templateName: name, templateBody: body('v2-') }),
    );
    expect(v2).toMatchObject({ templateName: name, versionId: 2, isDefaultVersion: false });
    const v3 = await iot.send(
      new CreateProvisioningTemplateVersionCommand({
        templateName: name,
        templateBody: body('v3-'),
        setAsDefault: true,
      }),
    );
    expect(v3).toMatchObject({ versionId: 3, isDefaultVersion: true });
    let d = await iot.send(new DescribeProvisioningTemplateCommand({ templateName: name }));
    expect([d.defaultVersionId, d.templateBody]).toEqual([3, body('v3-')]);

    const page1 = await iot.send(
      new ListProvisioningTemplateVersionsCommand({ templateName: name, maxResults: 2 }),
    );
    expect(page1.versions!.map((v) => [v.versionId, v.isDefaultVersion])).toEqual([
      [1, false],
      [2, false],
    ]);
    const page2 = await iot.send(
      new ListProvisioningTemplateVersionsCommand({ templateName: name, nextToken: page1.nextToken }),
    );
    expect(page2.versions!.map((v) => [v.versionId, v.isDefaultVersion])).toEqual([[3, true]]);
    expect(page2.versions![0]!.creationDate).toBeInstanceOf(Date);

    const desc2 = await iot.send(
      new DescribeProvisioningTemplateVersionCommand({ templateName: name, versionId: 2 }),
    );
    expect([desc2.templateBody, desc2.isDefaultVersion]).toEqual([body('v2-'), false]);

    const conflict = await failure(
      iot.send(new DeleteProvisioningTemplateVersionCommand({ templateName: name, versionId: 3 })),
    );
    expect(conflict.name).toBe('DeleteConflictException');
    expect(conflict.message).toContain('default version');

    await iot.send(new UpdateProvisioningTemplateCommand({ templateName: name, defaultVersionId: 1 }));
    d = await iot.send(new DescribeProvisioningTemplateCommand({ templateName: name }));
    expect([d.defaultVersionId, d.templateBody]).toEqual([1, body('v1-')]);
    await iot.send(new DeleteProvisioningTemplateVersionCommand({ templateName: name, versionId: 3 }));
    expect(
      (
        await failure(
          iot.send(new DescribeProvisioningTemplateVersionCommand({ templateName: name, versionId: 3 })),
        )
      ).name,
    ).toBe('ResourceNotFoundException');
    expect(
      (
        await failure(
          iot.send(new UpdateProvisioningTemplateCommand({ templateName: name, defaultVersionId: 3 })),
        )
      ).name,
    ).toBe('ResourceNotFoundException');

    // Versions 1, 2 exist; 4, 5, 6 fill the limit of 5; ids go on from the highest ever given.
    for (const id of [4, 5, 6]) {
      const v = await iot.send(
        new CreateProvisioningTemplateVersionCommand({ templateName: name, templateBody: body(`v${id}-`) }),
      );
      expect(v.versionId).toBe(id);
    }
    const limit = await failure(
      iot.send(
        new CreateProvisioningTemplateVersionCommand({ templateName: name, templateBody: body('v7-') }),
      ),
    );
    expect(limit.name).toBe('VersionsLimitExceededException');

    const bad = await failure(
      iot.send(
        new CreateProvisioningTemplateVersionCommand({ templateName: name, templateBody: '{"Resources":' }),
      ),
    );
    expect(bad.name).toBe('InvalidRequestException');
    const none = await failure(
      iot.send(
        new CreateProvisioningTemplateVersionCommand({ templateName: 'no-such', templateBody: body('x') }),
      ),
    );
    expect(none.name).toBe('ResourceNotFoundException');
  });

  it('pre-provisioning hooks: set, removed, and refused on JITP templates', async () => {
    await iot.send(
      new CreateProvisioningTemplateCommand({
        templateName: 'sdk-hook',
        templateBody: body('h-'),
        provisioningRoleArn: ROLE,
        preProvisioningHook: { targetArn: HOOK, payloadVersion: '2020-04-01' },
      }),
    );
    let d = await iot.send(new DescribeProvisioningTemplateCommand({ templateName: 'sdk-hook' }));
    expect(d.preProvisioningHook).toEqual({ targetArn: HOOK, payloadVersion: '2020-04-01' });
    await iot.send(
      new UpdateProvisioningTemplateCommand({ templateName: 'sdk-hook', removePreProvisioningHook: true }),
    );
    d = await iot.send(new DescribeProvisioningTemplateCommand({ templateName: 'sdk-hook' }));
    expect(d.preProvisioningHook).toBeUndefined();
    const jitp = await failure(
      iot.send(
        new CreateProvisioningTemplateCommand({
          templateName: 'sdk-hook-jitp',
          type: 'JITP',
          templateBody: body('j-'),
          provisioningRoleArn: ROLE,
          preProvisioningHook: { targetArn: HOOK },
        }),
      ),
    );
    expect(jitp.name).toBe('InvalidRequestException');
  });

  it('CreateProvisioningClaim: a 5-minute claim certificate, described but not listed', async () => {
    await iot.send(
      new CreateProvisioningTemplateCommand({
        templateName: 'sdk-claim',
        templateBody: body('c-'),
        provisioningRoleArn: ROLE,
        enabled: true,
      }),
    );
    const claim = await iot.send(new CreateProvisioningClaimCommand({ templateName: 'sdk-claim' }));
    const d = await iot.send(new DescribeCertificateCommand({ certificateId: claim.certificateId }));
    const { notBefore, notAfter } = d.certificateDescription!.validity!;
    expect(d.certificateDescription!.status).toBe('ACTIVE');
    expect(notAfter!.getTime()).toBe(claim.expiration!.getTime());
    expect(notAfter!.getTime() - Date.now()).toBeLessThanOrEqual(300_000);
    expect(notAfter!.getTime() - Date.now()).toBeGreaterThan(240_000);
    expect(notAfter!.getTime() - notBefore!.getTime()).toBe(420_000);
    const listed = await iot.send(new ListCertificatesCommand({ pageSize: 250 }));
    expect(listed.certificates!.map((c) => c.certificateId)).not.toContain(claim.certificateId);
  });
});

describe('template versions and RegisterThing through the AWS CLI v2', () => {
  it(
    'versions: create, list, describe, set default, refuse deleting the default',
    async () => {
      const name = 'cli-versions';
      expect(
        (
          await aws([
            'create-provisioning-template',
            '--template-name',
            name,
            '--template-body',
            body('a-'),
            '--provisioning-role-arn',
            ROLE,
          ])
        ).out,
      ).toMatchObject({ defaultVersionId: 1 });
      const v2 = await aws([
        'create-provisioning-template-version',
        '--template-name',
        name,
        '--template-body',
        body('b-'),
        '--set-as-default',
      ]);
      expect(v2.out).toMatchObject({ versionId: 2, isDefaultVersion: true });
      const list = await aws(['list-provisioning-template-versions', '--template-name', name]);
      expect(
        (list.out.versions as Array<Record<string, unknown>>).map((v) => [v.versionId, v.isDefaultVersion]),
      ).toEqual([
        [1, false],
        [2, true],
      ]);
      const d1 = await aws([
        'describe-provisioning-template-version',
        '--template-name',
        name,
        '--version-id',
        '1',
      ]);
      expect(d1.out).toMatchObject({ versionId: 1, templateBody: body('a-'), isDefaultVersion: false });
      const del = await aws([
        'delete-provisioning-template-version',
        '--template-name',
        name,
        '--version-id',
        '2',
      ]);
      expect(del.rc).not.toBe(0);
      expect(del.err).toContain('DeleteConflictException');
      expect(
        (await aws(['update-provisioning-template', '--template-name', name, '--default-version-id', '1']))
          .rc,
      ).toBe(0);
      expect(
        (await aws(['delete-provisioning-template-version', '--template-name', name, '--version-id', '2']))
          .rc,
      ).toBe(0);
      const d = await aws(['describe-provisioning-template', '--template-name', name]);
      expect(d.out).toMatchObject({ defaultVersionId: 1, templateBody: body('a-') });
    },
    9 * CLI_BUDGET_MS,
  );

  it(
    'regression: register-thing with AWS::IoT::Certificate::Id as a parameter of an undeclared Ref',
    async () => {
      const c = await iot.send(new CreateKeysAndCertificateCommand({}));
      await iot.send(
        new CreatePolicyCommand({
          policyName: 'cli-reg-policy',
          policyDocument:
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}',
        }),
      );
      const template = JSON.stringify({
        Parameters: { ThingName: { Type: 'String' } },
        Resources: {
          certificate: {
            Type: 'AWS::IoT::Certificate',
            Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'Active' },
          },
          policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'cli-reg-policy' } },
          thing: { Type: 'AWS::IoT::Thing', Properties: { ThingName: { Ref: 'ThingName' } } },
        },
      });
      const r = await aws([
        'register-thing',
        '--template-body',
        template,
        '--parameters',
        JSON.stringify({ ThingName: 'cli-reg-thing', 'AWS::IoT::Certificate::Id': c.certificateId }),
      ]);
      expect(r.err).toBe('');
      expect(r.out.resourceArns).toEqual({
        certificate: c.certificateArn,
        thing: expect.stringMatching(/thing\/cli-reg-thing$/),
      });
      const d = await iot.send(new DescribeCertificateCommand({ certificateId: c.certificateId }));
      expect(d.certificateDescription!.status).toBe('ACTIVE');
    },
    2 * CLI_BUDGET_MS,
  );
});
