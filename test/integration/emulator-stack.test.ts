/**
 * `provline stack up` runs the stand-in: status --json names the endpoint, region, a 0600
 * shared-credentials file and profile, and the bucket; clients configured only from those
 * fields work; `provline emulator faults` changes it at run time; `stack down` stops it.
 */
import { readFileSync, statSync } from 'node:fs';
import { DescribeEndpointCommand, IoTClient } from '@aws-sdk/client-iot';
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { credentialsFromIni } from '../../emulator/config.js';
import { json, runCli, type CliResult } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';

interface Aws {
  endpoint: string;
  s3Endpoint: string;
  region: string;
  credentialsFile: string;
  profile: string;
  bucket: string;
  mqttEndpoint: string | null;
  roleArn: string;
  pid: number | null;
  running: boolean;
}

describe('the stand-in in the local stack', () => {
  let home: string;
  const env = (): NodeJS.ProcessEnv => ({ PROVLINE_HOME: home });
  // The stack is brought up once, as a fixture; the first test looks at what `up` answered.
  let up: CliResult;
  beforeAll(async () => {
    home = tempDir('provline-emu-stack-');
    up = await runCli(['stack', 'up', '--json'], { env: env() });
  });
  afterAll(async () => {
    await removeHome(home);
  });

  it('stack up starts it and status --json describes how to reach it', async () => {
    const r = up;
    expect(r.code, r.stderr).toBe(0);
    const aws = json<{ aws: Aws }>(r).aws;
    expect(aws).toMatchObject({
      region: 'us-east-1',
      profile: 'provline-local',
      bucket: 'provline-local',
      running: true,
    });
    expect(aws.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(statSync(aws.credentialsFile).mode & 0o777).toBe(0o600);

    // A standard shared-credentials file: what the SDK's fromIni and the AWS CLI read.
    const credentials = credentialsFromIni(readFileSync(aws.credentialsFile, 'utf8'), aws.profile)!;
    expect(credentials.accessKeyId).toMatch(/^AKIA[A-Z2-7]{16}$/);
    const iot = new IoTClient({ endpoint: aws.endpoint, region: aws.region, credentials });
    expect(
      (await iot.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }))).endpointAddress,
    ).toBe(aws.mqttEndpoint); // the stand-in's own MQTT endpoint (AWS: <prefix>-ats.iot…)
    expect(aws.mqttEndpoint).toMatch(/^localhost:\d+$/);
    const s3 = new S3Client({
      endpoint: aws.s3Endpoint,
      region: aws.region,
      credentials,
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    await s3.send(new HeadBucketCommand({ Bucket: aws.bucket }));

    const again = json<{ aws: Aws }>(await runCli(['stack', 'up', '--json'], { env: env() })).aws;
    expect(again.pid).toBe(aws.pid);
  });

  it('provline emulator faults reads and changes the running stand-in', async () => {
    const set = await runCli(['emulator', 'faults', '--set', '{"throttle":{"CreateThing":0.25},"seed":3}'], {
      env: env(),
    });
    expect(set.code, set.stderr).toBe(0);
    expect(json<{ throttle: Record<string, number>; seed: number }>(set)).toMatchObject({
      throttle: { CreateThing: 0.25 },
      seed: 3,
    });
    const bad = await runCli(['emulator', 'faults', '--set', '{"throttle":{"CreateThing":2}}'], {
      env: env(),
    });
    expect(bad.code).toBe(3);
    expect(bad.stderr).toContain('EMULATOR_FAULTS_REJECTED');
    const cleared = json<{ throttle: Record<string, number> }>(
      await runCli(['emulator', 'faults', '--clear'], { env: env() }),
    );
    expect(cleared.throttle).toEqual({});
  });

  it('stack down stops it', async () => {
    // A stack of its own, so that no other test finds the shared one stopped.
    const own = { PROVLINE_HOME: tempDir('provline-emu-stack-down-') };
    const first = await runCli(['stack', 'up', '--json'], { env: own });
    expect(json<{ aws: Aws }>(first).aws.running, first.stderr).toBe(true);
    const s = json<{ aws: Aws }>(await runCli(['stack', 'down', '--json'], { env: own }));
    expect(s.aws.running).toBe(false);
    expect(s.aws.pid).toBeNull();
  });
});
