/**
 * Fleet provisioning end to end with the official AWS IoT Device SDK v2 (aws-crt): an MQTT 5
 * client with a claim certificate and `iotidentity.IotIdentityClientv2` runs
 * CreateCertificateFromCsr / CreateKeysAndCertificate and RegisterThing against the stand-in
 * process, then connects with the new certificate as its thing. Hooks run as real HTTP
 * endpoints registered through PUT /_emulator/lambdas; refusals are read back from the
 * reasons log. Every slow step has its own budget; nothing sleeps in place of an event.
 */
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  AttachPolicyCommand,
  CreatePolicyCommand,
  CreateProvisioningClaimCommand,
  CreateProvisioningTemplateCommand,
  DescribeCertificateCommand,
  DescribeThingCommand,
} from '@aws-sdk/client-iot';
import { iotidentity, mqtt_request_response } from 'aws-iot-device-sdk-v2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/home.js';
import { makeCsr } from './emulator-helpers.js';
import {
  makeDevice,
  sdk5,
  setClock,
  startStandIn,
  uniq,
  waitEvent,
  type Device,
  type StandIn,
} from './mqtt-helpers.js';

const ACCOUNT = 'arn:aws:iot:us-east-1:123456789012';
const ROLE = 'arn:aws:iam::123456789012:role/provisioning';
/** Budgets per step: a connect, one request/response, the hook's 5 s plus slack. */
const CONNECT_MS = 20_000;
const REQUEST_MS = 20_000;

let s: StandIn;
let dir: string;
let claim: Device;
const servers: Server[] = [];

/** The claim policy of the DG (aws-iot.md §4.2), with create-from-csr as well. */
function claimPolicy(): object {
  const topics = [
    '$aws/certificates/create/*',
    '$aws/certificates/create-from-csr/*',
    '$aws/provisioning-templates/*',
  ];
  return {
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Action: 'iot:Connect', Resource: '*' },
      {
        Effect: 'Allow',
        Action: ['iot:Publish', 'iot:Receive'],
        Resource: topics.map((t) => `${ACCOUNT}:topic/${t}`),
      },
      {
        Effect: 'Allow',
        Action: 'iot:Subscribe',
        Resource: topics.map((t) => `${ACCOUNT}:topicfilter/${t}`),
      },
    ],
  };
}

/** What a provisioned device may do: connect as its thing, publish under its name. */
const DEVICE_POLICY = JSON.stringify({
  Version: '2012-10-17',
  Statement: [
    {
      Effect: 'Allow',
      Action: 'iot:Connect',
      Resource: `${ACCOUNT}:client/\${iot:Connection.Thing.ThingName}`,
    },
    {
      Effect: 'Allow',
      Action: 'iot:Publish',
      Resource: `${ACCOUNT}:topic/things/\${iot:Connection.Thing.ThingName}/*`,
    },
  ],
});

const templateBody = JSON.stringify({
  Parameters: { SerialNumber: { Type: 'String' } },
  Resources: {
    thing: {
      Type: 'AWS::IoT::Thing',
      Properties: { ThingName: { 'Fn::Join': ['', ['fleet-', { Ref: 'SerialNumber' }]] } },
    },
    certificate: {
      Type: 'AWS::IoT::Certificate',
      Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'Active' },
    },
    policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'fleet-device' } },
  },
  DeviceConfiguration: { serial: { Ref: 'SerialNumber' } },
});

async function createTemplate(name: string, extra: Record<string, unknown> = {}): Promise<void> {
  await s.iot.send(
    new CreateProvisioningTemplateCommand({
      templateName: name,
      templateBody,
      provisioningRoleArn: ROLE,
      enabled: true,
      ...extra,
    }),
  );
}

beforeAll(async () => {
  dir = tempDir('provline-fleet-sdk-');
  s = await startStandIn(join(dir, 'state'));
  claim = await makeDevice(s, dir, claimPolicy());
  await s.iot.send(new CreatePolicyCommand({ policyName: 'fleet-device', policyDocument: DEVICE_POLICY }));
  await createTemplate('fleet-basic');
}, 60_000);

afterAll(async () => {
  for (const server of servers) server.close();
  await s?.stop();
});

/** With `budgetMs`, rejects with what was being waited for. */
function within<T>(p: Promise<T>, budgetMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${budgetMs} ms`)), budgetMs);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface Session {
  identity: iotidentity.IotIdentityClientv2;
  /** CreateCertificateFromCsr for `csr` (default: a fresh key's), within its budget. */
  fromCsr(csr?: string): Promise<iotidentity.model.CreateCertificateFromCsrResponse>;
  /** RegisterThing with a SerialNumber; not bounded here (wrap it in within() or rejected()). */
  register(
    templateName: string,
    token: string | undefined,
    serial: string,
  ): Promise<iotidentity.model.RegisterThingResponse>;
  close(): Promise<void>;
}

/** An MQTT 5 connection with `creds` and the SDK's identity client on it (the official sample's setup). */
async function claimSession(creds: Pick<Device, 'certFile' | 'keyFile'> = claim): Promise<Session> {
  const c = sdk5(s, creds, uniq('fleet-provisioning'));
  await within(c.connected, CONNECT_MS, 'claim connect');
  const identity = iotidentity.IotIdentityClientv2.newFromMqtt5(c.client, {
    maxRequestResponseSubscriptions: 2,
    maxStreamingSubscriptions: 0,
    operationTimeoutInSeconds: 15,
  });
  return {
    identity,
    fromCsr: (csr = makeCsr('device').csr) =>
      within(
        identity.createCertificateFromCsr({ certificateSigningRequest: csr }),
        REQUEST_MS,
        'CreateCertificateFromCsr',
      ),
    register: (templateName, token, serial) =>
      identity.registerThing({
        templateName,
        certificateOwnershipToken: token!,
        parameters: { SerialNumber: serial },
      }),
    close: async () => {
      identity.close();
      await c.stop();
    },
  };
}

/** The modelled `/rejected` payload of a failed identity request. */
async function rejected(p: Promise<unknown>, what: string): Promise<Record<string, unknown>> {
  try {
    await within(p, REQUEST_MS, what);
  } catch (e) {
    if (e instanceof mqtt_request_response.ServiceError && e.modeledError)
      return e.modeledError as Record<string, unknown>;
    throw e;
  }
  throw new Error(`${what} was accepted; expected a rejection`);
}

/** Connects with the new credentials as the thing and publishes on its own topic. */
async function connectAsThing(thingName: string, certPem: string, keyPem: string): Promise<void> {
  const certFile = join(dir, `${thingName}.cert.pem`);
  const keyFile = join(dir, `${thingName}.key.pem`);
  writeFileSync(certFile, certPem);
  writeFileSync(keyFile, keyPem, { mode: 0o600 });
  const d = sdk5(s, { certFile, keyFile }, thingName);
  const connack = await within(d.connected, CONNECT_MS, `connect as ${thingName}`);
  expect(connack?.reasonCode).toBe(0);
  const puback = await within(
    d.client.publish({ topicName: `things/${thingName}/hello`, qos: 1, payload: Buffer.from('provisioned') }),
    REQUEST_MS,
    'publish as the thing',
  );
  expect(puback?.reasonCode ?? 0).toBe(0);
  await d.stop();
}

async function hookServer(answer: (event: Record<string, unknown>) => Promise<unknown>): Promise<string> {
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      void answer(JSON.parse(text) as Record<string, unknown>).then((body) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      });
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

async function mapLambda(arn: string, url: string): Promise<void> {
  const res = await fetch(`${s.iotUrl}/_emulator/lambdas`, {
    method: 'PUT',
    body: JSON.stringify({ [arn]: url }),
  });
  expect(res.status).toBe(200);
  expect(await res.json()).toMatchObject({ [arn]: url });
}

describe('provisioning by claim with the official SDK', () => {
  it('CreateCertificateFromCsr, RegisterThing with parameters, then a connect as the thing', async () => {
    const session = await claimSession();
    const serial = uniq('csr');
    const csr = makeCsr('device');
    const created = await session.fromCsr(csr.csr);
    expect(created.certificateId).toMatch(/^[0-9a-f]{64}$/);
    const pending = await s.iot.send(
      new DescribeCertificateCommand({ certificateId: created.certificateId }),
    );
    expect(pending.certificateDescription!.status).toBe('PENDING_ACTIVATION');
    const registered = await within(
      session.register('fleet-basic', created.certificateOwnershipToken, serial),
      REQUEST_MS,
      'RegisterThing',
    );
    expect(registered).toEqual({ thingName: `fleet-${serial}`, deviceConfiguration: { serial } });
    await session.close();
    const active = await s.iot.send(new DescribeCertificateCommand({ certificateId: created.certificateId }));
    expect(active.certificateDescription!.status).toBe('ACTIVE');
    await connectAsThing(`fleet-${serial}`, created.certificatePem!, csr.privateKeyPem);
  }, 120_000);

  it('CreateKeysAndCertificate, RegisterThing, then a connect as the thing', async () => {
    const session = await claimSession();
    const serial = uniq('keys');
    const created = await within(
      session.identity.createKeysAndCertificate({}),
      REQUEST_MS,
      'CreateKeysAndCertificate',
    );
    expect(created.privateKey).toContain('PRIVATE KEY');
    const registered = await within(
      session.register('fleet-basic', created.certificateOwnershipToken, serial),
      REQUEST_MS,
      'RegisterThing',
    );
    expect(registered.thingName).toBe(`fleet-${serial}`);
    await session.close();
    await connectAsThing(`fleet-${serial}`, created.certificatePem!, created.privateKey!);
  }, 120_000);

  it('a replayed token, an expired token (clock skew) and a disabled template are rejected with reasons', async () => {
    await createTemplate('fleet-off', { enabled: false });
    const session = await claimSession();
    try {
      const first = await session.fromCsr(makeCsr('r').csr);
      const token = first.certificateOwnershipToken!;
      await within(session.register('fleet-basic', token, uniq('once')), REQUEST_MS, 'RegisterThing');
      const replay = await rejected(
        session.register('fleet-basic', token, uniq('twice')),
        'replayed RegisterThing',
      );
      expect(replay).toEqual({
        statusCode: 400,
        errorCode: 'InvalidCertificateOwnershipToken',
        errorMessage: 'Certificate ownership token has already been used.',
      });
      await waitEvent(s, (e) => e.kind === 'fleet.rejected' && e.reason.includes('single-use'));

      const off = await session.fromCsr(makeCsr('o').csr);
      const disabled = await rejected(
        session.register('fleet-off', off.certificateOwnershipToken, uniq('off')),
        'RegisterThing on a disabled template',
      );
      expect(disabled).toMatchObject({ errorMessage: 'The provisioning template fleet-off is disabled.' });

      const late = await session.fromCsr(makeCsr('l').csr);
      await setClock(s, 3601);
      const expired = await rejected(
        session.register('fleet-basic', late.certificateOwnershipToken, uniq('late')),
        'RegisterThing after an hour',
      );
      expect(expired).toMatchObject({ errorMessage: 'Certificate ownership token has expired.' });
      const gone = await waitEvent(
        s,
        (e) => e.kind === 'fleet.expired' && e.certificateId === late.certificateId,
      );
      expect(gone.reason).toContain('was deleted');
      await expect(
        s.iot.send(new DescribeCertificateCommand({ certificateId: late.certificateId })),
      ).rejects.toMatchObject({ name: 'ResourceNotFoundException' });
    } finally {
      await setClock(s, 0);
      await session.close();
    }
  }, 180_000);
});

describe('answers go to the requesting connection only', () => {
  it("regression: two devices sharing a claim certificate never see each other's answers", async () => {
    const topic = '$aws/certificates/create-from-csr/json/accepted';
    const watcher = sdk5(s, claim, uniq('claim-neighbour'));
    await within(watcher.connected, CONNECT_MS, 'neighbour connect');
    await within(
      watcher.client.subscribe({ subscriptions: [{ topicFilter: topic, qos: 1 }] }),
      REQUEST_MS,
      'neighbour subscribe',
    );
    const session = await claimSession();
    try {
      const first = await session.fromCsr(makeCsr('a').csr);
      // The neighbour's own request: its answer comes after anything routed to it before.
      await within(
        watcher.client.publish({
          topicName: '$aws/certificates/create-from-csr/json',
          qos: 1,
          payload: Buffer.from(JSON.stringify({ certificateSigningRequest: makeCsr('b').csr })),
        }),
        REQUEST_MS,
        'neighbour publish',
      );
      const own = JSON.parse(await watcher.waitMessage(topic, REQUEST_MS)) as { certificateId: string };
      expect(own.certificateId).not.toBe(first.certificateId);
      expect(watcher.messages.filter((m) => m.topic === topic)).toHaveLength(1);
    } finally {
      await session.close();
      await watcher.stop();
    }
  }, 120_000);
});

describe('pre-provisioning hooks', () => {
  it('allows with parameterOverrides, denies, and times out after 5 s: ACCESS_DENIED with the reason logged', async () => {
    const allowArn = 'arn:aws:lambda:us-east-1:123456789012:function:fleet-allow';
    const denyArn = 'arn:aws:lambda:us-east-1:123456789012:function:fleet-deny';
    const slowArn = 'arn:aws:lambda:us-east-1:123456789012:function:fleet-slow';
    const seen: Array<Record<string, unknown>> = [];
    await mapLambda(
      allowArn,
      await hookServer((e) => {
        seen.push(e);
        const p = e.parameters as Record<string, string>;
        return Promise.resolve({
          allowProvisioning: true,
          parameterOverrides: { SerialNumber: `${p.SerialNumber}-ok` },
        });
      }),
    );
    await mapLambda(denyArn, await hookServer(() => Promise.resolve({ allowProvisioning: false })));
    await mapLambda(
      slowArn,
      await hookServer(() => new Promise((r) => setTimeout(() => r({ allowProvisioning: true }), 7000))),
    );
    await createTemplate('fleet-hook-allow', { preProvisioningHook: { targetArn: allowArn } });
    await createTemplate('fleet-hook-deny', { preProvisioningHook: { targetArn: denyArn } });
    await createTemplate('fleet-hook-slow', { preProvisioningHook: { targetArn: slowArn } });

    const session = await claimSession();
    try {
      const create = () => session.fromCsr(makeCsr('h').csr);
      const a = await create();
      const serial = uniq('hook');
      const allowed = await within(
        session.register('fleet-hook-allow', a.certificateOwnershipToken, serial),
        REQUEST_MS,
        'RegisterThing with an allowing hook',
      );
      expect(allowed.thingName).toBe(`fleet-${serial}-ok`);
      expect(seen[0]).toMatchObject({
        claimCertificateId: claim.certificateId,
        certificateId: a.certificateId,
        templateArn: `${ACCOUNT}:provisioningtemplate/fleet-hook-allow`,
        parameters: { SerialNumber: serial },
      });
      await s.iot.send(new DescribeThingCommand({ thingName: `fleet-${serial}-ok` }));

      for (const [template, reason] of [
        ['fleet-hook-deny', '"allowProvisioning": false'],
        ['fleet-hook-slow', 'did not answer within 5000 ms'],
      ] as const) {
        const c = await create();
        const denied = await rejected(
          session.register(template, c.certificateOwnershipToken, uniq('no')),
          `RegisterThing with ${template}`,
        );
        expect(denied, template).toEqual({
          statusCode: 403,
          errorCode: 'ACCESS_DENIED',
          errorMessage: 'Access denied by the pre-provisioning hook.',
        });
        const event = await waitEvent(
          s,
          (e) => e.kind === 'fleet.rejected' && e.certificateId === c.certificateId,
        );
        expect(event.reason, template).toContain(reason);
        const d = await s.iot.send(new DescribeCertificateCommand({ certificateId: c.certificateId }));
        expect(d.certificateDescription!.status).toBe('PENDING_ACTIVATION');
      }
    } finally {
      await session.close();
    }
  }, 180_000);
});

describe('provisioning by trusted user', () => {
  it('a CreateProvisioningClaim certificate provisions a device, and is refused after its 5 minutes', async () => {
    await createTemplate('fleet-trusted');
    const c = await s.iot.send(new CreateProvisioningClaimCommand({ templateName: 'fleet-trusted' }));
    // The claim certificate needs the fleet topics like any claim (see docs/emulator.md).
    const policyName = uniq('trusted-claim');
    await s.iot.send(new CreatePolicyCommand({ policyName, policyDocument: JSON.stringify(claimPolicy()) }));
    await s.iot.send(new AttachPolicyCommand({ policyName, target: `${ACCOUNT}:cert/${c.certificateId}` }));
    const certFile = join(dir, 'trusted.cert.pem');
    const keyFile = join(dir, 'trusted.key.pem');
    writeFileSync(certFile, c.certificatePem!);
    writeFileSync(keyFile, c.keyPair!.PrivateKey!, { mode: 0o600 });

    const session = await claimSession({ certFile, keyFile });
    const serial = uniq('trusted');
    const csr = makeCsr('t');
    const created = await session.fromCsr(csr.csr);
    const registered = await within(
      session.register('fleet-trusted', created.certificateOwnershipToken, serial),
      REQUEST_MS,
      'RegisterThing',
    );
    expect(registered.thingName).toBe(`fleet-${serial}`);
    await session.close();
    await connectAsThing(`fleet-${serial}`, created.certificatePem!, csr.privateKeyPem);

    await setClock(s, 301);
    try {
      const late = sdk5(s, { certFile, keyFile }, uniq('trusted-late'));
      await expect(within(late.connected, CONNECT_MS, 'connect with an expired claim')).rejects.toThrow();
      await late.stop();
      const refused = await waitEvent(
        s,
        (e) => e.kind === 'connect.refused' && e.certificateId === c.certificateId,
      );
      expect(refused.reason).toContain('expired');
    } finally {
      await setClock(s, 0);
    }
  }, 180_000);
});
