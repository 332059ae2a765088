/**
 * AWS IoT stand-in benchmark: an unpaced bulk registration task of N lines (default 10,000),
 * each with its own P-256 CSR, against the stand-in running as its own process (as `stack up`
 * runs it). Every line creates a thing (typed, in a group), issues a certificate from the CSR
 * (RSA-2048 device CA), attaches a policy and the certificate. Prints one JSON object.
 *
 *   npm run bench:emulator [-- --lines 10000]
 */
import 'reflect-metadata';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreatePolicyCommand,
  CreateThingGroupCommand,
  CreateThingTypeCommand,
  DescribeThingRegistrationTaskCommand,
  IoTClient,
  StartThingRegistrationTaskCommand,
} from '@aws-sdk/client-iot';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { csr } from './csr.js';
import { packageRoot } from '../src/core/index.js';

const TARGET = 2000;
const KEY = 'AKIABENCHPROVLINE001';
const SECRET = 'bench-secret-0123456789';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

async function main(): Promise<void> {
  const lines = arg('lines', 10_000);
  const dir = mkdtempSync(join(tmpdir(), 'provline-bench-emu-'));
  const child = spawn(
    process.execPath,
    [
      ...(process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=' + process.env.BENCH_PROF] : []),
      join(packageRoot(), 'dist/workers/emulator.js'),
      '--state-dir',
      join(dir, 'state'),
      '--bucket',
      'bench-input',
    ],
    {
      env: { ...process.env, AWS_ACCESS_KEY_ID: KEY, AWS_SECRET_ACCESS_KEY: SECRET },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  try {
    const ready = await new Promise<{ iotUrl: string; s3Url: string }>((resolve, reject) => {
      child.once('exit', (c) => reject(new Error(`stand-in exited with ${c}`)));
      child.stdout.once('data', (d: Buffer) =>
        resolve(JSON.parse(d.toString().split('\n')[0]!) as { iotUrl: string; s3Url: string }),
      );
    });
    const credentials = { accessKeyId: KEY, secretAccessKey: SECRET };
    const iot = new IoTClient({ endpoint: ready.iotUrl, region: 'us-east-1', credentials });
    const s3 = new S3Client({
      endpoint: ready.s3Url,
      region: 'us-east-1',
      credentials,
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    await iot.send(new CreateThingTypeCommand({ thingTypeName: 'sensor' }));
    await iot.send(new CreateThingGroupCommand({ thingGroupName: 'line-1' }));
    await iot.send(
      new CreatePolicyCommand({
        policyName: 'device',
        policyDocument: JSON.stringify({
          Version: '2012-10-17',
          Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }],
        }),
      }),
    );
    const t0 = Date.now();
    let input = '';
    for (let i = 0; i < lines; i++)
      input += `${JSON.stringify({ ThingName: `bench-${i}`, SerialNumber: `SN${i}`, CSR: csr(`bench-${i}`) })}\n`;
    const csrMs = Date.now() - t0;
    await s3.send(new PutObjectCommand({ Bucket: 'bench-input', Key: 'input.ndjson', Body: input }));
    const template = JSON.stringify({
      Parameters: {
        ThingName: { Type: 'String' },
        SerialNumber: { Type: 'String' },
        CSR: { Type: 'String' },
      },
      Resources: {
        thing: {
          Type: 'AWS::IoT::Thing',
          Properties: {
            ThingName: { Ref: 'ThingName' },
            ThingTypeName: 'sensor',
            ThingGroups: ['line-1'],
            AttributePayload: { serial: { Ref: 'SerialNumber' } },
          },
        },
        certificate: {
          Type: 'AWS::IoT::Certificate',
          Properties: { CertificateSigningRequest: { Ref: 'CSR' }, Status: 'ACTIVE' },
        },
        policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'device' } },
      },
    });
    const start = Date.now();
    const { taskId } = await iot.send(
      new StartThingRegistrationTaskCommand({
        templateBody: template,
        inputFileBucket: 'bench-input',
        inputFileKey: 'input.ndjson',
        roleArn: 'arn:aws:iam::123456789012:role/bench',
      }),
    );
    let task;
    let polls = 0;
    for (;;) {
      task = await iot.send(new DescribeThingRegistrationTaskCommand({ taskId }));
      polls++;
      if (task.status !== 'InProgress') break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const seconds = (Date.now() - start) / 1000;
    const linesPerSecond = Math.round(lines / seconds);
    process.stdout.write(
      `${JSON.stringify({
        bench: 'emulator-bulk',
        lines,
        status: task.status,
        successCount: task.successCount,
        failureCount: task.failureCount,
        seconds: Number(seconds.toFixed(3)),
        linesPerSecond,
        target: TARGET,
        meetsTarget: linesPerSecond >= TARGET && task.status === 'Completed' && task.failureCount === 0,
        perLine:
          'CreateThing (typed, 1 group) + CreateCertificateFromCsr (P-256 CSR, RSA-2048 CA) + AttachPolicy + AttachThingPrincipal',
        inputBytes: Buffer.byteLength(input),
        csrGenerationMs: csrMs,
        progressPolls: polls,
      })}\n`,
    );
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
