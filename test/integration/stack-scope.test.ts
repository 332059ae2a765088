/**
 * The stack's stand-in started as a given account and region (what `provline rehearse` does
 * with the account and region a profile names): `stack status` says so, its ARNs and endpoint
 * hosts follow, and a request signed for another region is refused as AWS refuses it, for IoT
 * and for S3. A running stand-in is not silently kept as another account.
 */
import { readFileSync } from 'node:fs';
import { CreateThingCommand, DescribeEndpointCommand, IoTClient } from '@aws-sdk/client-iot';
import { HeadBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, describe, expect, it } from 'vitest';
import { credentialsFromIni } from '../../emulator/config.js';
import { stackStatus, stackUp } from '../../src/stack/stack.js';
import { removeHome, tempDir } from '../helpers/home.js';

const AS = { region: 'eu-west-1', account: '111122223333' };

describe('the stand-in as a given account and region', () => {
  const home = tempDir('provline-stack-scope-');
  afterAll(() => removeHome(home));

  it('names that account and region everywhere and refuses requests signed for another region', async () => {
    const up = await stackUp(home, AS);
    expect(up.aws).toMatchObject({
      region: 'eu-west-1',
      account: '111122223333',
      roleArn: 'arn:aws:iam::111122223333:role/provline-local-registration',
      running: true,
    });
    // The AWS config file the CLI reads names the region too.
    expect(readFileSync(up.aws.configFile!, 'utf8')).toContain('region = eu-west-1');
    const credentials = credentialsFromIni(readFileSync(up.aws.credentialsFile!, 'utf8'), up.aws.profile!)!;
    const iot = (region: string): IoTClient =>
      new IoTClient({ endpoint: up.aws.endpoint!, region, credentials, maxAttempts: 1 });
    const s3 = (region: string): S3Client =>
      new S3Client({
        endpoint: up.aws.s3Endpoint!,
        region,
        credentials,
        forcePathStyle: true,
        maxAttempts: 1,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });

    const right = iot('eu-west-1');
    const made = await right.send(new CreateThingCommand({ thingName: 'scope-thing' }));
    expect(made.thingArn).toBe('arn:aws:iot:eu-west-1:111122223333:thing/scope-thing');
    const legacy = await right.send(new DescribeEndpointCommand({ endpointType: 'iot:Data' }));
    expect(legacy.endpointAddress).toMatch(/^[0-9a-f]+\.iot\.eu-west-1\.amazonaws\.com$/);
    await s3('eu-west-1').send(new HeadBucketCommand({ Bucket: up.aws.bucket! }));

    const wrong = await iot('us-east-1')
      .send(new CreateThingCommand({ thingName: 'scope-wrong' }))
      .then(
        () => undefined,
        (e: unknown) => e as { name: string; message: string; $metadata: { httpStatusCode: number } },
      );
    expect(wrong?.name).toBe('InvalidSignatureException');
    expect(wrong?.$metadata.httpStatusCode).toBe(403);
    expect(wrong?.message).toContain("Credential should be scoped to a valid region, not 'us-east-1'");
    const wrongS3 = await s3('us-east-1')
      .send(new PutObjectCommand({ Bucket: up.aws.bucket!, Key: 'k', Body: 'x' }))
      .then(
        () => undefined,
        (e: unknown) => e as { name: string; message: string },
      );
    expect(wrongS3?.name).toBe('AuthorizationHeaderMalformed');
    expect(wrongS3?.message).toBe(
      "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'",
    );
    for (const c of [right, iot('us-east-1')]) c.destroy();

    // Up again: the recorded account is kept; asking for another one while it runs is refused.
    expect((await stackUp(home)).aws).toMatchObject({ account: '111122223333', pid: up.aws.pid });
    await expect(stackUp(home, { account: '444455556666' })).rejects.toMatchObject({
      code: 'STACK_AWS_FAILED',
      message:
        'the AWS IoT stand-in runs as account 111122223333 in eu-west-1, not 444455556666 in eu-west-1',
    });
    expect(stackStatus(home).aws.running).toBe(true);
  });
});
