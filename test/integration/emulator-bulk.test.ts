/**
 * Bulk registration end to end (planted bad lines, reports fetched through their links,
 * issued certificates checked with openssl against the CSRs' keys), faults and pacing, and
 * durability: state and a running task survive SIGKILL.
 */
/* eslint-disable @typescript-eslint/no-explicit-any -- scenario outputs are untyped JSON shared by the SDK and the CLI driver */
import { execFile, execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  CreatePolicyCommand,
  CreateThingCommand,
  CreateThingGroupCommand,
  CreateThingTypeCommand,
  DescribeEndpointCommand,
  DescribeThingCommand,
  DescribeThingRegistrationTaskCommand,
  GetRegistrationCodeCommand,
  ListAttachedPoliciesCommand,
  ListCertificatesCommand,
  ListThingGroupsForThingCommand,
  ListThingPrincipalsCommand,
  ListThingRegistrationTaskReportsCommand,
  StartThingRegistrationTaskCommand,
  type IoTClient,
} from '@aws-sdk/client-iot';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/home.js';
import {
  KEY,
  REGION,
  SECRET,
  iotClient,
  makeCsr,
  s3Client,
  startEmulatorProcess,
  type EmulatorProcess,
  type TestCsr,
} from './emulator-helpers.js';

const run = promisify(execFile);
const ROLE = 'arn:aws:iam::123456789012:role/provline-local-registration';
const cliEnv = {
  ...process.env,
  AWS_ACCESS_KEY_ID: KEY,
  AWS_SECRET_ACCESS_KEY: SECRET,
  AWS_DEFAULT_REGION: REGION,
  AWS_CONFIG_FILE: '/dev/null',
  AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
};

const TEMPLATE = JSON.stringify({
  Parameters: {
    ThingName: { Type: 'String' },
    SerialNumber: { Type: 'String' },
    Hw: { Type: 'String', Default: 'A' },
    CSR: { Type: 'String' },
  },
  Resources: {
    thing: {
      Type: 'AWS::IoT::Thing',
      Properties: {
        ThingName: { Ref: 'ThingName' },
        ThingTypeName: 'sensor',
        ThingGroups: ['line-3'],
        AttributePayload: { serial: { Ref: 'SerialNumber' }, hw: { Ref: 'Hw' } },
      },
    },
    certificate: {
      Type: 'AWS::IoT::Certificate',
      Properties: { CertificateSigningRequest: { Ref: 'CSR' }, Status: 'ACTIVE' },
    },
    policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'device' } },
  },
});

async function setupAccount(client: IoTClient): Promise<void> {
  await client.send(new CreateThingTypeCommand({ thingTypeName: 'sensor' }));
  await client.send(new CreateThingGroupCommand({ thingGroupName: 'line-3' }));
  await client.send(
    new CreatePolicyCommand({
      policyName: 'device',
      policyDocument: JSON.stringify({
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }],
      }),
    }),
  );
}

async function waitStatus(
  client: IoTClient,
  taskId: string,
  done: (t: { status?: string; successCount?: number }) => boolean,
  timeoutMs = 30_000,
): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const t = await client.send(new DescribeThingRegistrationTaskCommand({ taskId }));
    if (done(t)) return t as unknown as Record<string, unknown>;
    if (Date.now() > deadline) throw new Error(`task ${taskId} stuck: ${JSON.stringify(t)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function reportLines(
  client: IoTClient,
  taskId: string,
  reportType: 'RESULTS' | 'ERRORS',
): Promise<Array<Record<string, any>>> {
  const r = await client.send(new ListThingRegistrationTaskReportsCommand({ taskId, reportType }));
  const out: Array<Record<string, any>> = [];
  for (const link of r.resourceLinks ?? []) {
    const res = await fetch(link);
    expect(res.status).toBe(200);
    out.push(
      ...(await res.text())
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, any>),
    );
  }
  return out;
}

function lines(n: number, prefix: string): { text: string; csrs: TestCsr[] } {
  const csrs = Array.from({ length: n }, (_, i) => makeCsr(`${prefix}-${i}`));
  return {
    text:
      csrs
        .map((c, i) => JSON.stringify({ ThingName: `${prefix}-${i}`, SerialNumber: `SN${i}`, CSR: c.csr }))
        .join('\n') + '\n',
    csrs,
  };
}

describe('bulk registration with planted bad lines', () => {
  let dir: string;
  let emu: EmulatorProcess;
  let client: IoTClient;

  beforeAll(async () => {
    dir = tempDir('provline-emu-bulk-');
    emu = await startEmulatorProcess(join(dir, 'state'), [
      '--faults',
      JSON.stringify({
        failLines: [{ pattern: 'SN-FAULT', error: 'ThrottlingException', message: 'Rate exceeded' }],
      }),
    ]);
    client = iotClient(emu.iotUrl);
    await setupAccount(client);
  });
  afterAll(async () => {
    await emu?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('registers the good lines, reports the bad ones by line number, and issues certificates for the CSR keys', async () => {
    const good = lines(12, 'dev');
    const rows = good.text.trim().split('\n');
    rows.splice(3, 0, '{not json');
    rows.splice(5, 0, JSON.stringify({ SerialNumber: 'SN-no-name', CSR: good.csrs[0]!.csr }));
    rows.splice(7, 0, '');
    rows.splice(8, 0, JSON.stringify({ ThingName: 'bad name', SerialNumber: 'SN', CSR: good.csrs[0]!.csr }));
    rows.splice(
      10,
      0,
      JSON.stringify({ ThingName: 'faulty', SerialNumber: 'SN-FAULT', CSR: good.csrs[0]!.csr }),
    );
    const file = join(dir, 'input.ndjson');
    writeFileSync(file, `${rows.join('\n')}\n`);
    // The input goes up with the AWS CLI's s3 commands, as an operator would do it.
    await run(
      '/usr/bin/aws',
      [
        's3',
        'cp',
        file,
        's3://provline-local/batches/b1.ndjson',
        '--endpoint-url',
        emu.s3Url,
        '--only-show-errors',
      ],
      { env: cliEnv },
    );
    const ls = await run(
      '/usr/bin/aws',
      ['s3', 'ls', 's3://provline-local/batches/', '--endpoint-url', emu.s3Url],
      { env: cliEnv },
    );
    expect(ls.stdout).toMatch(/b1\.ndjson/);

    const { taskId } = await client.send(
      new StartThingRegistrationTaskCommand({
        templateBody: TEMPLATE,
        inputFileBucket: 'provline-local',
        inputFileKey: 'batches/b1.ndjson',
        roleArn: ROLE,
      }),
    );
    const task = await waitStatus(client, taskId!, (t) => t.status !== 'InProgress');
    expect(task).toMatchObject({
      status: 'Completed',
      successCount: 12,
      failureCount: 4,
      percentageProgress: 100,
    });

    const errors = await reportLines(client, taskId!, 'ERRORS');
    const byLine = new Map(errors.map((e) => [e.lineNumber as number, e]));
    expect([...byLine.keys()].sort((a, b) => a - b)).toEqual([4, 6, 9, 11]);
    expect(byLine.get(4)!.errorMessage).toMatch(/InvalidRequestException: The input line is not valid JSON/);
    expect(byLine.get(6)!.errorMessage).toContain('Cannot resolve reference value: {Ref=ThingName}');
    expect(byLine.get(9)!.errorMessage).toMatch(/InvalidRequestException: .*thingName/);
    expect(byLine.get(11)!.errorMessage).toMatch(
      /^com\.amazonaws\.services\.iot\.model\.ThrottlingException: Rate exceeded/,
    );
    for (const e of errors) expect(e.response).toBeNull();
    const bytes = Buffer.from(`${rows.join('\n')}\n`);
    const endOf = (n: number): number => {
      let pos = 0;
      for (let i = 0; i < n; i++) pos = bytes.indexOf(10, pos) + 1;
      return pos;
    };
    expect(byLine.get(4)!.offset).toBe(endOf(4));

    const results = await reportLines(client, taskId!, 'RESULTS');
    expect(results).toHaveLength(12);
    const caPem = await (await fetch(`${emu.iotUrl}/_emulator/device-ca`)).text();
    writeFileSync(join(dir, 'ca.pem'), caPem);
    for (const r of results) {
      expect(r.errorMessage).toBeNull();
      const row = JSON.parse(rows[(r.lineNumber as number) - 1]!) as { ThingName: string; CSR: string };
      const i = Number(row.ThingName.split('-')[1]);
      expect(r.offset).toBe(endOf(r.lineNumber as number));
      expect(Object.keys(r.response.resourceArns).sort()).toEqual(['certificate', 'thing']);
      const certFile = join(dir, `${row.ThingName}.pem`);
      writeFileSync(certFile, r.response.certificatePem as string);
      expect(
        execFileSync('openssl', ['x509', '-in', certFile, '-noout', '-pubkey'], { encoding: 'utf8' }),
      ).toBe(good.csrs[i]!.publicKeyPem);
      writeFileSync(join(dir, 'req.pem'), row.CSR);
      expect(
        execFileSync('openssl', ['req', '-in', join(dir, 'req.pem'), '-noout', '-pubkey'], {
          encoding: 'utf8',
        }),
      ).toBe(good.csrs[i]!.publicKeyPem);
      expect(
        execFileSync('openssl', ['verify', '-CAfile', join(dir, 'ca.pem'), certFile], { encoding: 'utf8' }),
      ).toContain(': OK');
    }
    const subject = execFileSync(
      'openssl',
      ['x509', '-in', join(dir, 'dev-0.pem'), '-noout', '-subject', '-issuer', '-enddate'],
      { encoding: 'utf8' },
    );
    expect(subject).toContain('subject=CN = AWS IoT Certificate');
    expect(subject).toContain(
      'issuer=OU = Amazon Web Services O=Amazon.com Inc. L=Seattle ST=Washington C=US',
    );
    expect(subject).toContain('notAfter=Dec 31 23:59:59 2049 GMT');

    const thing = await client.send(new DescribeThingCommand({ thingName: 'dev-5' }));
    expect(thing).toMatchObject({ thingTypeName: 'sensor', attributes: { serial: 'SN5', hw: 'A' } });
    expect(
      (await client.send(new ListThingGroupsForThingCommand({ thingName: 'dev-5' }))).thingGroups?.map(
        (g) => g.groupName,
      ),
    ).toEqual(['line-3']);
    const principals = (await client.send(new ListThingPrincipalsCommand({ thingName: 'dev-5' })))
      .principals!;
    expect(principals).toHaveLength(1);
    expect(
      (await client.send(new ListAttachedPoliciesCommand({ target: principals[0]! }))).policies?.map(
        (p) => p.policyName,
      ),
    ).toEqual(['device']);

    // The report objects are ordinary S3 objects too (SDK with WHEN_REQUIRED checksums, and the AWS CLI).
    const key = new URL(
      (await client.send(new ListThingRegistrationTaskReportsCommand({ taskId, reportType: 'RESULTS' })))
        .resourceLinks![0]!,
    ).pathname
      .split('/')
      .slice(2)
      .join('/');
    const obj = await s3Client(emu.s3Url).send(
      new GetObjectCommand({ Bucket: 'aws-iot-registration-reports', Key: decodeURIComponent(key) }),
    );
    expect((await obj.Body!.transformToString()).trim().split('\n')).toHaveLength(12);
    const cp = await run(
      '/usr/bin/aws',
      [
        's3',
        'cp',
        `s3://aws-iot-registration-reports/${decodeURIComponent(key)}`,
        '-',
        '--endpoint-url',
        emu.s3Url,
      ],
      { env: cliEnv },
    );
    expect(cp.stdout.trim().split('\n')).toHaveLength(12);
  });

  it('a failing task fault fails the task outright, with its message', async () => {
    await fetch(`${emu.iotUrl}/_emulator/faults`, {
      method: 'PUT',
      body: JSON.stringify({ failTask: { message: 'Injected: input unreadable' } }),
    });
    await s3Client(emu.s3Url).send(
      new (await import('@aws-sdk/client-s3')).PutObjectCommand({
        Bucket: 'provline-local',
        Key: 'b2.ndjson',
        Body: lines(2, 'ft').text,
      }),
    );
    const { taskId } = await client.send(
      new StartThingRegistrationTaskCommand({
        templateBody: TEMPLATE,
        inputFileBucket: 'provline-local',
        inputFileKey: 'b2.ndjson',
        roleArn: ROLE,
      }),
    );
    const t = await waitStatus(client, taskId!, (x) => x.status !== 'InProgress');
    expect(t).toMatchObject({ status: 'Failed', message: 'Injected: input unreadable', successCount: 0 });
    await fetch(`${emu.iotUrl}/_emulator/faults?replace=true`, { method: 'PUT', body: '{}' });
  });

  it('a missing input object fails the task with a message, not the API call', async () => {
    const { taskId } = await client.send(
      new StartThingRegistrationTaskCommand({
        templateBody: TEMPLATE,
        inputFileBucket: 'provline-local',
        inputFileKey: 'missing.ndjson',
        roleArn: ROLE,
      }),
    );
    const t = await waitStatus(client, taskId!, (x) => x.status !== 'InProgress');
    expect(t.status).toBe('Failed');
    expect(t.message).toMatch(/does not exist/);
  });

  it('throttling is per operation, returns ThrottlingException 400, and repeats exactly with the same seed', async () => {
    const pattern = async (): Promise<string> => {
      await fetch(`${emu.iotUrl}/_emulator/faults?replace=true`, {
        method: 'PUT',
        body: JSON.stringify({ seed: 7, throttle: { DescribeEndpoint: 0.5 } }),
      });
      let s = '';
      for (let i = 0; i < 24; i++) {
        const r = await client.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' })).then(
          () => '.',
          (e: Error & { $metadata: { httpStatusCode: number } }) =>
            e.name === 'ThrottlingException' && e.$metadata.httpStatusCode === 400 ? 'T' : '?',
        );
        s += r;
      }
      await client.send(new GetRegistrationCodeCommand({})); // other operations are untouched
      return s;
    };
    const a = await pattern();
    expect(a).toMatch(/^[.T]+$/);
    expect(a).toContain('T');
    expect(a).toContain('.');
    expect(await pattern()).toBe(a);
    await fetch(`${emu.iotUrl}/_emulator/faults?replace=true`, {
      method: 'PUT',
      body: JSON.stringify({ latencyMs: { GetRegistrationCode: 300 } }),
    });
    const t0 = Date.now();
    await client.send(new GetRegistrationCodeCommand({}));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    await fetch(`${emu.iotUrl}/_emulator/faults?replace=true`, { method: 'PUT', body: '{}' });
  });
});

describe('durability', () => {
  let dir: string;
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('state and a running bulk task survive SIGKILL; every line is applied exactly once', async () => {
    dir = tempDir('provline-emu-kill-');
    const state = join(dir, 'state');
    let emu = await startEmulatorProcess(state, ['--lines-per-second', '150']);
    let client = iotClient(emu.iotUrl);
    await setupAccount(client);
    await client.send(
      new CreateThingCommand({ thingName: 'before-kill', attributePayload: { attributes: { a: '1' } } }),
    );
    const n = 400;
    await s3Client(emu.s3Url).send(
      new (await import('@aws-sdk/client-s3')).PutObjectCommand({
        Bucket: 'provline-local',
        Key: 'big.ndjson',
        Body: lines(n, 'k').text,
      }),
    );
    const { taskId } = await client.send(
      new StartThingRegistrationTaskCommand({
        templateBody: TEMPLATE,
        inputFileBucket: 'provline-local',
        inputFileKey: 'big.ndjson',
        roleArn: ROLE,
      }),
    );
    const mid = await waitStatus(client, taskId!, (t) => (t.successCount ?? 0) >= 60);
    expect(mid.status).toBe('InProgress');
    await emu.stop('SIGKILL');

    emu = await startEmulatorProcess(state);
    client = iotClient(emu.iotUrl);
    try {
      expect((await client.send(new DescribeThingCommand({ thingName: 'before-kill' }))).attributes).toEqual({
        a: '1',
      });
      const done = await waitStatus(client, taskId!, (t) => t.status !== 'InProgress');
      expect(done).toMatchObject({
        status: 'Completed',
        successCount: n,
        failureCount: 0,
        percentageProgress: 100,
      });
      const results = await reportLines(client, taskId!, 'RESULTS');
      expect(results.map((r) => r.lineNumber as number).sort((a, b) => a - b)).toEqual(
        Array.from({ length: n }, (_, i) => i + 1),
      );
      let certs = 0;
      let marker: string | undefined;
      do {
        const page = await client.send(new ListCertificatesCommand({ pageSize: 250, marker }));
        certs += page.certificates!.length;
        marker = page.nextMarker;
      } while (marker);
      expect(certs).toBe(n);
    } finally {
      await emu.stop();
    }
  });
});
