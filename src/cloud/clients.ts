/**
 * The AWS IoT and S3 clients of one command, made from the resolved AwsSettings
 * (src/stack/runtime.ts): the local stand-in's endpoints, or AWS itself with `useRealAws`.
 *
 * Credentials: the shared credentials file and profile when both are set (the stack's own
 * file, or the user's), otherwise the SDK's default chain (environment, ~/.aws, SSO, IMDS).
 *
 * The SDK's own retries are off by default (maxAttempts 1): every function in src/cloud
 * decides itself which failures it repeats, because repeating a call that may have taken
 * effect (RegisterThing, StartThingRegistrationTask after a 5xx) could mint a second
 * certificate or start a second task.
 */
import { fromIni } from '@aws-sdk/credential-provider-ini';
import { IoTClient } from '@aws-sdk/client-iot';
import { S3Client } from '@aws-sdk/client-s3';
import { ProvlineError } from '../core/index.js';
import type { AwsSettings } from '../config/index.js';

export interface CloudClients {
  iot: IoTClient;
  s3: S3Client;
  aws: AwsSettings;
  /** Closes the clients' sockets. */
  destroy(): void;
}

export interface ClientOptions {
  /** SDK attempts per call (1 = no SDK retries); default 1. */
  maxAttempts?: number;
}

const NOT_CONFIGURED_HINT = 'Run `provline stack up` for the local stand-in, or set `aws.useRealAws: true`.';

export function makeClients(aws: AwsSettings, opts: ClientOptions = {}): CloudClients {
  if (!aws.useRealAws) {
    const missing = [
      aws.endpoint ? undefined : 'aws.endpoint',
      aws.s3Endpoint ? undefined : 'aws.s3Endpoint',
    ];
    const names = missing.filter((m) => m !== undefined);
    if (names.length)
      throw new ProvlineError(
        'AWS_NOT_CONFIGURED',
        `No AWS endpoint to talk to: ${names.join(' and ')} unset`,
        {
          kind: 'failed',
          hint: NOT_CONFIGURED_HINT,
          details: { missing: names },
        },
      );
  }
  const credentials =
    aws.credentialsFile && aws.profile
      ? fromIni({ filepath: aws.credentialsFile, profile: aws.profile })
      : undefined;
  const common = {
    region: aws.region,
    maxAttempts: opts.maxAttempts ?? 1,
    ...(credentials ? { credentials } : {}),
  };
  const iot = new IoTClient({ ...common, ...(aws.endpoint ? { endpoint: aws.endpoint } : {}) });
  const s3 = new S3Client({
    ...common,
    ...(aws.s3Endpoint ? { endpoint: aws.s3Endpoint } : {}),
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return {
    iot,
    s3,
    aws,
    destroy: () => {
      iot.destroy();
      s3.destroy();
    },
  };
}

function required(aws: AwsSettings, option: 'bucket' | 'roleArn', what: string, hint: string): string {
  const value = aws[option];
  if (value) return value;
  throw new ProvlineError('AWS_NOT_CONFIGURED', `No ${what}`, {
    kind: 'failed',
    hint: aws.useRealAws ? hint : `Run \`provline stack up\`, or set \`aws.${option}\`.`,
    details: { missing: [`aws.${option}`] },
  });
}

/** The bucket for bulk-registration input files, or AWS_NOT_CONFIGURED. */
export function requireBucket(aws: AwsSettings): string {
  return required(
    aws,
    'bucket',
    'S3 bucket for bulk-registration input files',
    'Set `aws.bucket` to a bucket that the registration role can read.',
  );
}

/** The role AWS IoT assumes for bulk registration, or AWS_NOT_CONFIGURED. */
export function requireRoleArn(aws: AwsSettings): string {
  return required(
    aws,
    'roleArn',
    'IAM role for bulk registration',
    'Set `aws.roleArn` to a role that iot.amazonaws.com may assume, with AWSIoTThingsRegistration and s3:GetObject on the input bucket.',
  );
}
