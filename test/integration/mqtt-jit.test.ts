/**
 * Just-in-time registration and provisioning on the first CONNECT, against the stand-in as a
 * process: a CA made here is registered with a verification certificate; devices it signed
 * connect with the official SDK (files, and a key held in SoftHSM through PKCS#11) and with
 * mosquitto; a watcher with its own credentials sees `$aws/events/certificates/registered/…`.
 */
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import {
  AttachPolicyCommand,
  CreatePolicyCommand,
  DescribeCertificateCommand,
  DescribeThingCommand,
  ListAttachedPoliciesCommand,
  ListCertificatesByCACommand,
  ListThingPrincipalsCommand,
  RegisterCertificateCommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import { iot, io } from 'aws-iot-device-sdk-v2';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bitString, oid, seq } from '../../src/core/der.js';
import { SOFTHSM_MODULE, hsmUp, readPinFile } from '../../src/stack/softhsm.js';
import { stackPaths } from '../../src/stack/home.js';
import { tempDir } from '../helpers/home.js';
import {
  ALLOW_ALL,
  makeCa,
  makeDevice,
  makeLeaf,
  mosquitto,
  registerCa,
  sdk311,
  sdk5,
  startStandIn,
  uniq,
  waitEvent,
  type Sdk5,
  type StandIn,
} from './mqtt-helpers.js';

let s: StandIn;
let dir: string;
let watcher: Sdk5;

const JITP_POLICY = {
  Version: '2012-10-17',
  Statement: [
    {
      Effect: 'Allow',
      Action: 'iot:Connect',
      Resource: 'arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}',
    },
    {
      Effect: 'Allow',
      Action: ['iot:Publish', 'iot:Receive'],
      Resource: 'arn:aws:iot:us-east-1:123456789012:topic/things/${iot:Connection.Thing.ThingName}/*',
    },
  ],
};

function jitpTemplate(extraParameters: string[] = []): string {
  return JSON.stringify({
    Parameters: Object.fromEntries(
      ['AWS::IoT::Certificate::CommonName', 'AWS::IoT::Certificate::Id', ...extraParameters].map((p) => [
        p,
        { Type: 'String' },
      ]),
    ),
    Resources: {
      thing: {
        Type: 'AWS::IoT::Thing',
        Properties: {
          ThingName: { Ref: 'AWS::IoT::Certificate::CommonName' },
          ...(extraParameters.length ? { AttributePayload: { country: { Ref: extraParameters[0]! } } } : {}),
        },
      },
      certificate: {
        Type: 'AWS::IoT::Certificate',
        Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'ACTIVE' },
      },
      policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyDocument: JSON.stringify(JITP_POLICY) } },
    },
  });
}

async function status(certificateId: string): Promise<{ status?: string; caCertificateId?: string }> {
  const d = await s.iot.send(new DescribeCertificateCommand({ certificateId }));
  return {
    status: d.certificateDescription!.status,
    caCertificateId: d.certificateDescription!.caCertificateId,
  };
}

/** One SDK MQTT 5 connect attempt: true when CONNACK came, the failure text otherwise. */
async function attempt(
  dev: { certFile: string; keyFile: string } | iot.AwsIotMqtt5ClientConfigBuilder,
  clientId: string,
): Promise<true | string> {
  const c = sdk5(s, dev, clientId);
  try {
    await c.connected;
    await c.stop();
    return true;
  } catch (e) {
    await c.stop(false);
    return (e as Error).message;
  }
}

beforeAll(async () => {
  dir = tempDir('provline-mqtt-jit-');
  s = await startStandIn(join(dir, 'state'));
  const w = await makeDevice(s, dir, ALLOW_ALL);
  watcher = sdk5(s, w, uniq('watcher'));
  await watcher.connected;
  await watcher.client.subscribe({
    subscriptions: [{ topicFilter: '$aws/events/certificates/registered/+', qos: 1 }],
  });
});

afterAll(async () => {
  await watcher?.stop();
  await s?.stop();
});

describe('JITR', () => {
  it('a bare TLS handshake with an unknown certificate creates nothing', async () => {
    const ca = makeCa(uniq('bare-ca'));
    await registerCa(s, ca);
    const leaf = makeLeaf(ca, [['CN', 'bare']], dir);
    await new Promise<void>((resolve, reject) => {
      const sock = tlsConnect({
        host: s.host,
        port: s.port,
        ca: readFileSync(s.rootCaFile),
        cert: leaf.certPem,
        key: leaf.keyPem,
        servername: s.host,
      });
      sock.once('secureConnect', () => setTimeout(() => sock.end(() => resolve()), 300));
      sock.once('error', reject);
    });
    await expect(
      s.iot.send(new DescribeCertificateCommand({ certificateId: leaf.certificateId })),
    ).rejects.toMatchObject({ name: 'ResourceNotFoundException' });
  });

  it('first CONNECT registers PENDING_ACTIVATION, publishes the registered event and hangs up; each repeat re-publishes', async () => {
    const ca = makeCa(uniq('jitr-ca'));
    const caId = await registerCa(s, ca);
    // RegisterCertificate under the same CA publishes nothing (MEASURED on AWS).
    const manual = makeLeaf(ca, [['CN', 'manual']], dir);
    await s.iot.send(
      new RegisterCertificateCommand({
        certificatePem: manual.certPem,
        caCertificatePem: ca.pem,
        setAsActive: true,
      }),
    );
    const leaf = makeLeaf(ca, [['CN', 'jitr-device']], dir);
    const clientId = uniq('jitr');
    expect(await attempt(leaf, clientId)).toMatch(/UNEXPECTED_HANGUP|SOCKET_CLOSED|CONNECTION_CLOSED/);
    const topic = `$aws/events/certificates/registered/${caId}`;
    const event = JSON.parse(await watcher.waitMessage(topic)) as Record<string, unknown>;
    expect(event).toMatchObject({
      certificateId: leaf.certificateId,
      caCertificateId: caId,
      certificateStatus: 'PENDING_ACTIVATION',
      awsAccountId: '123456789012',
      certificateRegistrationTimestamp: null,
    });
    expect(typeof event.timestamp).toBe('number');
    expect(
      watcher.messages
        .filter((m) => m.topic === topic)
        .map((m) => (JSON.parse(m.payload) as { certificateId: string }).certificateId),
    ).not.toContain(manual.certificateId);
    expect(await status(leaf.certificateId)).toEqual({ status: 'PENDING_ACTIVATION', caCertificateId: caId });
    const listed = await s.iot.send(new ListCertificatesByCACommand({ caCertificateId: caId }));
    expect(listed.certificates!.map((c) => c.certificateId).sort()).toEqual(
      [leaf.certificateId, manual.certificateId].sort(),
    );
    await waitEvent(s, (e) => e.kind === 'jitr.registered' && e.certificateId === leaf.certificateId);

    const again = uniq('jitr-again');
    const r = await mosquitto('mosquitto_pub', s, leaf, ['-i', again, '-t', 'x', '-m', 'y', '-q', '1']);
    expect(r.code).not.toBe(0);
    await waitEvent(s, (e) => e.kind === 'jitr.pending' && e.clientId === again);
    const deadline = Date.now() + 10_000;
    while (watcher.messages.filter((m) => m.topic === topic).length < 2 && Date.now() < deadline)
      await new Promise((res) => setTimeout(res, 50));
    expect(watcher.messages.filter((m) => m.topic === topic)).toHaveLength(2);

    // What the customer's Lambda would do: activate and attach a policy; then it connects.
    await s.iot.send(
      new UpdateCertificateCommand({ certificateId: leaf.certificateId, newStatus: 'ACTIVE' }),
    );
    const policyName = uniq('jitr-policy');
    await s.iot.send(new CreatePolicyCommand({ policyName, policyDocument: JSON.stringify(ALLOW_ALL) }));
    await s.iot.send(new AttachPolicyCommand({ policyName, target: leaf.certificateArn }));
    expect(await attempt(leaf, uniq('jitr-active'))).toBe(true);
  });
});

describe('JITP', () => {
  it('the CA template provisions thing, policy and attachments on the first CONNECT; the second connects as the thing', async () => {
    const ca = makeCa(uniq('jitp-ca'));
    await registerCa(s, ca, { templateBody: jitpTemplate() });
    const thingName = uniq('jitp-thing');
    const leaf = makeLeaf(
      ca,
      [
        ['C', 'DE'],
        ['O', 'Acme'],
        ['CN', thingName],
      ],
      dir,
    );
    expect(await attempt(leaf, thingName)).toMatch(/UNEXPECTED_HANGUP|SOCKET_CLOSED|CONNECTION_CLOSED/);
    const e = await waitEvent(
      s,
      (x) => x.kind === 'jitp.provisioned' && x.certificateId === leaf.certificateId,
    );
    expect(e.reason).toMatch(new RegExp(`provisioned thing ${thingName}`));
    expect((await status(leaf.certificateId)).status).toBe('ACTIVE');
    await s.iot.send(new DescribeThingCommand({ thingName }));
    const principals = await s.iot.send(new ListThingPrincipalsCommand({ thingName }));
    expect(principals.principals).toEqual([leaf.certificateArn]);
    const policies = await s.iot.send(new ListAttachedPoliciesCommand({ target: leaf.certificateArn }));
    expect(policies.policies).toHaveLength(1);
    // The second connect works, as the thing (the policy names the thing by variable).
    const conn = sdk311(s, leaf, thingName);
    await conn.connect();
    await conn.disconnect();
    // ...and another client id is not the thing, so iot:Connect is denied.
    const other = uniq('not-the-thing');
    expect(await attempt(leaf, other)).not.toBe(true);
    await waitEvent(s, (x) => x.kind === 'connect.denied' && x.clientId === other);
  });

  it('a template parameter missing from the subject leaves the certificate PENDING_ACTIVATION, with the reason', async () => {
    const ca = makeCa(uniq('jitp-miss-ca'));
    await registerCa(s, ca, { templateBody: jitpTemplate(['AWS::IoT::Certificate::Country']) });
    const leaf = makeLeaf(
      ca,
      [
        ['O', 'Acme'],
        ['CN', uniq('no-country')],
      ],
      dir,
    );
    expect(await attempt(leaf, uniq('miss'))).not.toBe(true);
    const e = await waitEvent(s, (x) => x.kind === 'jitp.failed' && x.certificateId === leaf.certificateId);
    expect(e.reason).toMatch(
      /AWS::IoT::Certificate::Country \(subject attribute C\), which the certificate subject does not have; the certificate stays PENDING_ACTIVATION/,
    );
    expect((await status(leaf.certificateId)).status).toBe('PENDING_ACTIVATION');
  });

  it('a device key held in SoftHSM: the SDK PKCS#11 builder provisions by JITP, then connects', async () => {
    // Not a stack home (tempDir would run stack down, whose PKCS#11 probe collides with the
    // SDK's in-process initialisation of the same module); removed with the test's files.
    const home = join(dir, 'hsm-home');
    const paths = stackPaths(home);
    hsmUp(paths);
    process.env.SOFTHSM2_CONF = paths.softhsm2Conf;
    const pin = readPinFile(paths.userPinFile);
    const label = uniq('jitp-key');
    // Generate the device key inside the token (pkcs11js), keep only the public half here.
    const p11 = new pkcs11js.PKCS11();
    p11.load(SOFTHSM_MODULE);
    p11.C_Initialize();
    let spki: Buffer;
    try {
      const slot = p11.C_GetSlotList(true).find((sl) => p11.C_GetTokenInfo(sl).label.trim() === 'provline')!;
      const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      p11.C_Login(session, pkcs11js.CKU_USER, pin);
      const p256 = oid('1.2.840.10045.3.1.7');
      const keys = p11.C_GenerateKeyPair(
        session,
        { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
        [
          { type: pkcs11js.CKA_EC_PARAMS, value: p256 },
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_LABEL, value: label },
          { type: pkcs11js.CKA_VERIFY, value: true },
        ],
        [
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_PRIVATE, value: true },
          { type: pkcs11js.CKA_SENSITIVE, value: true },
          { type: pkcs11js.CKA_EXTRACTABLE, value: false },
          { type: pkcs11js.CKA_SIGN, value: true },
          { type: pkcs11js.CKA_LABEL, value: label },
        ],
      );
      const ecPoint = p11.C_GetAttributeValue(session, keys.publicKey, [{ type: pkcs11js.CKA_EC_POINT }])[0]!
        .value;
      // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point.
      spki = seq(seq(oid('1.2.840.10045.2.1'), p256), bitString(ecPoint.subarray(2)));
      p11.C_Logout(session);
      p11.C_CloseSession(session);
    } finally {
      p11.C_Finalize();
    }
    const publicKeyPem = createPublicKey({ key: spki, format: 'der', type: 'spki' }).export({
      format: 'pem',
      type: 'spki',
    }) as string;
    const ca = makeCa(uniq('jitp-hsm-ca'));
    await registerCa(s, ca, { templateBody: jitpTemplate() });
    const thingName = uniq('hsm-thing');
    const leaf = makeLeaf(ca, [['CN', thingName]], dir, { publicKeyPem });
    const builder = (): iot.AwsIotMqtt5ClientConfigBuilder =>
      iot.AwsIotMqtt5ClientConfigBuilder.newDirectMqttBuilderWithMtlsFromPkcs11(s.host, {
        pkcs11_lib: new io.Pkcs11Lib(SOFTHSM_MODULE),
        user_pin: pin,
        token_label: 'provline',
        private_key_object_label: label,
        cert_file_path: leaf.certFile,
      });
    expect(await attempt(builder(), thingName)).not.toBe(true);
    await waitEvent(s, (x) => x.kind === 'jitp.provisioned' && x.certificateId === leaf.certificateId);
    expect(await attempt(builder(), thingName)).toBe(true);
    await waitEvent(s, (x) => x.kind === 'connect.accepted' && x.clientId === thingName);
  });
});
