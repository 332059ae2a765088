/**
 * The fleet-provisioning topics over MQTT 5 and 3.1.1 through Debian's mosquitto_rr (a
 * request/response client nobody here wrote: it subscribes to the answer topic, publishes the
 * request on the same connection and prints the answer) against the stand-in process. JSON
 * only: mosquitto_rr 2.0.11 sends `-f`/`-s` payloads as empty messages and `-m` cannot carry
 * binary, so CBOR is tested over the service itself (test/unit/fleet-service.test.ts).
 */
import { join } from 'node:path';
import { CreatePolicyCommand, CreateProvisioningTemplateCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/home.js';
import { makeCsr } from './emulator-helpers.js';
import {
  ALLOW_ALL,
  makeDevice,
  mosquitto,
  startStandIn,
  uniq,
  type Device,
  type StandIn,
} from './mqtt-helpers.js';

/** Each mosquitto_rr call waits at most this long for its answer (its own budget). */
const ANSWER_SECONDS = 20;
const STEP_MS = (ANSWER_SECONDS + 10) * 1000;

let s: StandIn;
let dir: string;
let claim: Device;

beforeAll(async () => {
  dir = tempDir('provline-fleet-mosq-');
  s = await startStandIn(join(dir, 'state'));
  claim = await makeDevice(s, dir, ALLOW_ALL);
  await s.iot.send(
    new CreatePolicyCommand({
      policyName: 'mosq-device',
      policyDocument: JSON.stringify({
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }],
      }),
    }),
  );
  await s.iot.send(
    new CreateProvisioningTemplateCommand({
      templateName: 'mosq-fleet',
      enabled: true,
      provisioningRoleArn: 'arn:aws:iam::123456789012:role/provisioning',
      templateBody: JSON.stringify({
        Parameters: { SerialNumber: { Type: 'String' } },
        Resources: {
          thing: { Type: 'AWS::IoT::Thing', Properties: { ThingName: { Ref: 'SerialNumber' } } },
          certificate: {
            Type: 'AWS::IoT::Certificate',
            Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' } },
          },
          policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'mosq-device' } },
        },
        DeviceConfiguration: { via: 'mosquitto' },
      }),
    }),
  );
}, 60_000);

afterAll(async () => {
  await s?.stop();
});

/** Publishes `payload` (`-m`) on `topic` with mosquitto_rr and returns the answer on `answerTopic`. */
async function request(
  topic: string,
  answerTopic: string,
  payload: string,
  version: 'mqttv5' | 'mqttv311',
): Promise<string> {
  const args = [
    '-V',
    version,
    '-q',
    '1',
    '-i',
    uniq('mosq-rr'),
    '-t',
    topic,
    '-e',
    answerTopic,
    '-m',
    payload,
  ];
  const run = await mosquitto(
    'mosquitto_rr',
    s,
    claim,
    [...args, '-W', String(ANSWER_SECONDS), '-N'],
    STEP_MS,
  );
  if (run.code !== 0) throw new Error(`mosquitto_rr ${topic} exited with ${run.code}: ${run.stderr}`);
  return run.stdout;
}

const json = (text: string): Record<string, unknown> => JSON.parse(text) as Record<string, unknown>;

describe('fleet provisioning through mosquitto_rr', () => {
  it(
    'MQTT 5 CreateCertificateFromCsr, then RegisterThing over MQTT 3.1.1 on another connection',
    async () => {
      const created = json(
        await request(
          '$aws/certificates/create-from-csr/json',
          '$aws/certificates/create-from-csr/json/accepted',
          JSON.stringify({ certificateSigningRequest: makeCsr('mosq').csr }),
          'mqttv5',
        ),
      );
      expect(Object.keys(created).sort()).toEqual([
        'certificateId',
        'certificateOwnershipToken',
        'certificatePem',
      ]);
      const serial = uniq('mosq');
      const registered = json(
        await request(
          '$aws/provisioning-templates/mosq-fleet/provision/json',
          '$aws/provisioning-templates/mosq-fleet/provision/json/accepted',
          JSON.stringify({
            certificateOwnershipToken: created.certificateOwnershipToken,
            parameters: { SerialNumber: serial },
          }),
          'mqttv311',
        ),
      );
      expect(registered).toEqual({ deviceConfiguration: { via: 'mosquitto' }, thingName: serial });
    },
    2 * STEP_MS,
  );

  it(
    'an empty token (MQTT 3.1.1) and invalid JSON (MQTT 5) are answered on /rejected',
    async () => {
      expect(
        json(
          await request(
            '$aws/provisioning-templates/mosq-fleet/provision/json',
            '$aws/provisioning-templates/mosq-fleet/provision/json/rejected',
            '{"parameters":{}}',
            'mqttv311',
          ),
        ),
      ).toEqual({
        statusCode: 400,
        errorCode: 'InvalidCertificateOwnershipToken',
        errorMessage: 'Certificate ownership token cannot be empty.',
      });
      expect(
        json(
          await request(
            '$aws/certificates/create-from-csr/json',
            '$aws/certificates/create-from-csr/json/rejected',
            '{"certificateSigningRequest":',
            'mqttv5',
          ),
        ),
      ).toEqual({
        statusCode: 400,
        errorCode: 'InvalidPayload',
        errorMessage: 'The payload is not valid JSON.',
      });
    },
    2 * STEP_MS,
  );
});
