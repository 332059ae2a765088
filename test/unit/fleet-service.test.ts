/**
 * The fleet-provisioning MQTT service (emulator/mqtt/fleet.ts) called directly, without a
 * broker: a real WAL Store in a temp directory, the real device CA, real HTTP hook endpoints.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { decode as cborDecode, encode as cborEncode } from 'cborg';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DataPlaneEvent, ServiceRequest } from '../../emulator/mqtt/contract.js';
import { fleetService, MAX_FLEET_PAYLOAD, type FleetService } from '../../emulator/mqtt/fleet.js';
import { HookRunner, Lambdas, judge } from '../../emulator/mqtt/hooks.js';
import { certOps } from '../../emulator/iot/certs.js';
import { C, R, type CertRec, type Ctx, type ThingRec } from '../../emulator/iot/model.js';
import { policyOps } from '../../emulator/iot/policies.js';
import { registerOps } from '../../emulator/iot/register.js';
import { templateOps } from '../../emulator/iot/templates.js';
import { DeviceCa } from '../../emulator/pki.js';
import { Store } from '../../emulator/store.js';
import { tempDir } from '../helpers/home.js';
import { makeCsr } from '../integration/emulator-helpers.js';

const HOOK_ARN = 'arn:aws:lambda:us-east-1:123456789012:function:fleet-hook';
const CLAIM_ID = 'c'.repeat(64);

interface World {
  dir: string;
  ctx: Ctx;
  store: Store;
  offset: { seconds: number };
  events: DataPlaneEvent[];
  lambdas: Lambdas;
  service: FleetService;
}

let world: World;
const servers: Server[] = [];

function openWorld(dir: string, budgetMs = 5000, offset = { seconds: 0 }): World {
  const store = new Store({ dir: join(dir, 'store'), fsync: 'never', relations: Object.values(R) });
  const ctx: Ctx = {
    store,
    ca: DeviceCa.loadOrCreate(join(dir, 'ca')),
    region: 'us-east-1',
    account: '123456789012',
    now: () => Date.now() / 1000 + offset.seconds,
  };
  const events: DataPlaneEvent[] = [];
  const lambdas = new Lambdas();
  const service = fleetService(ctx, {
    record: (e) => events.push({ time: Date.now(), ...e }),
    hooks: new HookRunner(lambdas, { budgetMs }),
    sweepIntervalMs: 0,
  });
  return { dir, ctx, store, offset, events, lambdas, service };
}

function closeWorld(w: World): void {
  w.service.close();
  w.store.close();
}

beforeEach(() => {
  world = openWorld(tempDir('provline-fleet-'));
  op(policyOps, 'CreatePolicy', {
    path: { policyName: 'device' },
    body: {
      policyDocument: JSON.stringify({
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: '*' }],
      }),
    },
  });
});
afterEach(() => closeWorld(world));
afterAll(() => servers.forEach((s) => s.close()));

function op(
  ops: (ctx: Ctx) => Record<string, (r: never) => unknown>,
  name: string,
  r: { path?: Record<string, string>; body?: Record<string, unknown>; query?: string },
  w = world,
): Record<string, unknown> {
  const handler = ops(w.ctx)[name] as (r: unknown) => unknown;
  return (handler({
    path: r.path ?? {},
    query: new URLSearchParams(r.query ?? ''),
    headers: {},
    body: r.body ?? {},
    requestId: 'test',
  }) ?? {}) as Record<string, unknown>;
}

/** A fleet template in the DG's style: AWS::IoT::Certificate::Id referenced, not declared. */
function fleetTemplate(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    Parameters: { SerialNumber: { Type: 'String' }, Site: { Type: 'String', Default: 'lab' } },
    Resources: {
      thing: {
        Type: 'AWS::IoT::Thing',
        Properties: {
          ThingName: { 'Fn::Join': ['', ['sensor-', { Ref: 'SerialNumber' }]] },
          AttributePayload: { site: { Ref: 'Site' } },
        },
      },
      certificate: {
        Type: 'AWS::IoT::Certificate',
        Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'Active' },
      },
      policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyName: 'device' } },
    },
    DeviceConfiguration: { site: { Ref: 'Site' }, fallback: 'https://example.com' },
    ...extra,
  });
}

function createTemplate(name: string, extra: Record<string, unknown> = {}, body = fleetTemplate()): void {
  op(templateOps, 'CreateProvisioningTemplate', {
    body: {
      templateName: name,
      templateBody: body,
      provisioningRoleArn: 'arn:aws:iam::123456789012:role/prov',
      enabled: true,
      ...extra,
    },
  });
}

async function call(
  topic: string,
  payload: Buffer | Record<string, unknown>,
  w = world,
): Promise<{ topic: string; body: Record<string, unknown> }> {
  const cbor = topic.endsWith('/cbor');
  const raw = Buffer.isBuffer(payload)
    ? payload
    : cbor
      ? Buffer.from(cborEncode(payload))
      : Buffer.from(JSON.stringify(payload));
  const req: ServiceRequest = {
    topic,
    payload: raw,
    connection: { clientId: 'claim-client', certificateId: CLAIM_ID, protocolVersion: 5 },
  };
  expect(w.service.handles(topic)).toBe(true);
  const replies = await w.service.handle(req);
  expect(replies).toHaveLength(1);
  const r = replies[0]!;
  const body = (cbor ? cborDecode(r.payload) : JSON.parse(r.payload.toString('utf8'))) as Record<
    string,
    unknown
  >;
  return { topic: r.topic, body };
}

const cert = (id: string, w = world): CertRec | undefined => w.store.get<CertRec>(C.certs, id);

async function csrFlow(w = world): Promise<{ token: string; certificateId: string; publicKeyPem: string }> {
  const csr = makeCsr('ignored-subject');
  const r = await call('$aws/certificates/create-from-csr/json', { certificateSigningRequest: csr.csr }, w);
  expect(r.topic).toBe('$aws/certificates/create-from-csr/json/accepted');
  return {
    token: r.body.certificateOwnershipToken as string,
    certificateId: r.body.certificateId as string,
    publicKeyPem: csr.publicKeyPem,
  };
}

async function hookServer(
  answer: (event: Record<string, unknown>) => Promise<{ status?: number; body: unknown }>,
): Promise<{ url: string; seen: Array<Record<string, unknown>> }> {
  const seen: Array<Record<string, unknown>> = [];
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      const event = JSON.parse(text) as Record<string, unknown>;
      seen.push(event);
      void answer(event).then((a) => {
        res.writeHead(a.status ?? 200, { 'content-type': 'application/json' });
        res.end(typeof a.body === 'string' ? a.body : JSON.stringify(a.body));
      });
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, seen };
}

const rejectedOf = (kind = 'fleet.rejected'): DataPlaneEvent[] => world.events.filter((e) => e.kind === kind);

describe('topics', () => {
  it('answers only the three request topics, in both formats', () => {
    for (const t of [
      '$aws/certificates/create/json',
      '$aws/certificates/create/cbor',
      '$aws/certificates/create-from-csr/json',
      '$aws/certificates/create-from-csr/cbor',
      '$aws/provisioning-templates/my-template/provision/json',
      '$aws/provisioning-templates/my-template/provision/cbor',
    ])
      expect(world.service.handles(t)).toBe(true);
    for (const t of [
      '$aws/certificates/create/json/accepted',
      '$aws/certificates/create/xml',
      '$aws/provisioning-templates/+/provision/json',
      '$aws/provisioning-templates/a/b/provision/json',
      'devices/create/json',
    ])
      expect(world.service.handles(t)).toBe(false);
  });
});

describe('CreateCertificateFromCsr and RegisterThing', () => {
  it('certifies the CSR key, waits PENDING_ACTIVATION, then provisions with the template', async () => {
    createTemplate('sensors');
    const { token, certificateId, publicKeyPem } = await csrFlow();
    const x509 = new X509Certificate(cert(certificateId)!.certificatePem);
    expect(x509.publicKey.export({ format: 'pem', type: 'spki' })).toBe(publicKeyPem);
    expect(cert(certificateId)!.status).toBe('PENDING_ACTIVATION');
    expect(token.length).toBeGreaterThanOrEqual(64);

    const r = await call('$aws/provisioning-templates/sensors/provision/json', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 'SN1', 'AWS::IoT::Certificate::Id': 'f'.repeat(64) },
    });
    expect(r).toEqual({
      topic: '$aws/provisioning-templates/sensors/provision/json/accepted',
      body: {
        deviceConfiguration: { site: 'lab', fallback: 'https://example.com' },
        thingName: 'sensor-SN1',
      },
    });
    const c = cert(certificateId)!;
    expect(c.status).toBe('ACTIVE');
    expect(world.store.linked(R.thingPrincipal, 'sensor-SN1', c.certificateArn)).toBe(true);
    expect(world.store.linked(R.policyTarget, 'device', c.certificateArn)).toBe(true);
    expect(world.store.get<ThingRec>(C.things, 'sensor-SN1')!.attributes).toEqual({ site: 'lab' });
    const done = world.events.find((e) => e.kind === 'fleet.provisioned')!;
    expect(done.reason).toContain('thing sensor-SN1');
    expect(done.certificateId).toBe(certificateId);
  });

  it('refuses a garbage CSR and a CSR whose signature does not verify, and records why', async () => {
    const bad = await call('$aws/certificates/create-from-csr/json', { certificateSigningRequest: 'hello' });
    expect(bad.topic).toBe('$aws/certificates/create-from-csr/json/rejected');
    expect(bad.body).toMatchObject({ statusCode: 400, errorCode: 'InvalidCertificateSigningRequest' });
    const csr = makeCsr('x').csr;
    const b64 = csr.split('\n').slice(1, -2).join('');
    const der = Buffer.from(b64, 'base64');
    der[der.length - 5]! ^= 0xff;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    const t = await call('$aws/certificates/create-from-csr/json', { certificateSigningRequest: tampered });
    expect(t.body.errorCode).toBe('InvalidCertificateSigningRequest');
    const empty = await call('$aws/certificates/create-from-csr/json', {});
    expect(empty.body).toMatchObject({ errorMessage: 'Certificate signing request cannot be empty.' });
    expect(rejectedOf()).toHaveLength(3);
    expect(rejectedOf()[0]!.reason).toMatch(/CSR/);
    expect(world.store.values(C.certs)).toHaveLength(0);
  });
});

describe('CBOR', () => {
  it('CreateKeysAndCertificate and RegisterThing answer in CBOR, the key matches the certificate', async () => {
    createTemplate('cbor-tpl');
    const r = await call('$aws/certificates/create/cbor', Buffer.alloc(0));
    expect(r.topic).toBe('$aws/certificates/create/cbor/accepted');
    expect(Object.keys(r.body).sort()).toEqual(
      ['certificateId', 'certificateOwnershipToken', 'certificatePem', 'privateKey'].sort(),
    );
    const pub = createPublicKey(createPrivateKey(r.body.privateKey as string)).export({
      format: 'pem',
      type: 'spki',
    });
    expect(
      new X509Certificate(r.body.certificatePem as string).publicKey.export({ format: 'pem', type: 'spki' }),
    ).toBe(pub);
    const reg = await call('$aws/provisioning-templates/cbor-tpl/provision/cbor', {
      certificateOwnershipToken: r.body.certificateOwnershipToken,
      parameters: { SerialNumber: 'C1', Site: 'hall-2' },
    });
    expect(reg).toEqual({
      topic: '$aws/provisioning-templates/cbor-tpl/provision/cbor/accepted',
      body: {
        deviceConfiguration: { site: 'hall-2', fallback: 'https://example.com' },
        thingName: 'sensor-C1',
      },
    });
  });

  it('answers invalid CBOR, a CBOR array and non-string parameters on /rejected in CBOR', async () => {
    createTemplate('cbor-bad');
    const garbage = await call('$aws/certificates/create-from-csr/cbor', Buffer.from([0xff, 0x00, 0x13]));
    expect(garbage.body).toMatchObject({ statusCode: 400, errorCode: 'InvalidPayload' });
    const arr = await call('$aws/certificates/create/cbor', Buffer.from(cborEncode([1, 2])));
    expect(arr.body.errorCode).toBe('InvalidPayload');
    const { token } = await csrFlow();
    const p = await call('$aws/provisioning-templates/cbor-bad/provision/cbor', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 7 },
    });
    expect(p.topic).toMatch(/\/rejected$/);
    expect(p.body).toMatchObject({
      errorCode: 'InvalidPayload',
      errorMessage: 'parameters.SerialNumber must be a string.',
    });
    expect(rejectedOf().at(-1)!.reason).toContain('parameters.SerialNumber is a number');
  });
});

describe('bad input is answered, never thrown', () => {
  it('invalid JSON, a JSON array, an oversized payload, a non-object parameters', async () => {
    createTemplate('bad-input');
    const cases: Array<[string, Buffer | Record<string, unknown>, string]> = [
      [
        '$aws/certificates/create-from-csr/json',
        Buffer.from('{"certificateSigningRequest":'),
        'InvalidPayload',
      ],
      ['$aws/certificates/create/json', Buffer.from('[]'), 'InvalidPayload'],
      ['$aws/certificates/create/json', Buffer.alloc(MAX_FLEET_PAYLOAD + 1, 0x20), 'InvalidPayload'],
      [
        '$aws/provisioning-templates/bad-input/provision/json',
        { certificateOwnershipToken: 'x', parameters: ['a'] },
        'InvalidPayload',
      ],
      [
        '$aws/provisioning-templates/bad-input/provision/json',
        { certificateOwnershipToken: 42 },
        'InvalidPayload',
      ],
    ];
    for (const [topic, payload, code] of cases) {
      const r = await call(topic, payload);
      expect(r.topic, topic).toBe(`${topic}/rejected`);
      expect(r.body.errorCode, topic).toBe(code);
    }
    expect(rejectedOf()).toHaveLength(cases.length);
  });
});

describe('ownership tokens', () => {
  it('an empty token gets AWS own answer', async () => {
    createTemplate('t-empty');
    const r = await call('$aws/provisioning-templates/t-empty/provision/json', { parameters: {} });
    expect(r.body).toEqual({
      statusCode: 400,
      errorCode: 'InvalidCertificateOwnershipToken',
      errorMessage: 'Certificate ownership token cannot be empty.',
    });
  });

  it('a forged token and a replayed token are refused; the replay names the certificate', async () => {
    createTemplate('t-replay');
    const forged = await call('$aws/provisioning-templates/t-replay/provision/json', {
      certificateOwnershipToken: 'eyJmb3JnZWQiOnRydWV9',
      parameters: { SerialNumber: 'F1' },
    });
    expect(forged.body).toMatchObject({
      errorCode: 'InvalidCertificateOwnershipToken',
      errorMessage: 'Certificate ownership token is invalid.',
    });
    const { token, certificateId } = await csrFlow();
    const ok = await call('$aws/provisioning-templates/t-replay/provision/json', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 'R1' },
    });
    expect(ok.topic).toMatch(/accepted$/);
    const again = await call('$aws/provisioning-templates/t-replay/provision/json', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 'R2' },
    });
    expect(again.body).toMatchObject({ errorMessage: 'Certificate ownership token has already been used.' });
    expect(rejectedOf().at(-1)).toMatchObject({
      certificateId,
      reason: expect.stringContaining('single-use'),
    });
    expect(world.store.has(C.things, 'sensor-R2')).toBe(false);
  });

  it('expires after one hour of the injectable clock and deletes the unused certificate', async () => {
    createTemplate('t-expiry');
    const { token, certificateId } = await csrFlow();
    world.offset.seconds = 3599;
    expect(world.service.sweep()).toBe(0);
    expect(cert(certificateId)).toBeDefined();
    world.offset.seconds = 3601;
    const r = await call('$aws/provisioning-templates/t-expiry/provision/json', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 'E1' },
    });
    expect(r.body).toMatchObject({ errorMessage: 'Certificate ownership token has expired.' });
    expect(cert(certificateId)).toBeUndefined();
    const expired = world.events.find((e) => e.kind === 'fleet.expired')!;
    expect(expired).toMatchObject({ certificateId, reason: expect.stringContaining('was deleted') });
  });

  it('a used token keeps its certificate after the hour', async () => {
    createTemplate('t-kept');
    const { token, certificateId } = await csrFlow();
    await call('$aws/provisioning-templates/t-kept/provision/json', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 'K1' },
    });
    world.offset.seconds = 7200;
    world.service.sweep();
    expect(cert(certificateId)!.status).toBe('ACTIVE');
  });

  it('survive a restart of the store (tokens are in the WAL)', async () => {
    createTemplate('t-restart');
    const { token, certificateId } = await csrFlow();
    closeWorld(world);
    world = openWorld(world.dir);
    const r = await call('$aws/provisioning-templates/t-restart/provision/json', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 'W1' },
    });
    expect(r.topic).toMatch(/accepted$/);
    expect(cert(certificateId)!.status).toBe('ACTIVE');
  });

  it('an expiry due while the stand-in was down is applied after the restart', async () => {
    const { certificateId } = await csrFlow();
    closeWorld(world);
    world = openWorld(world.dir, 5000, { seconds: 4000 });
    expect(world.service.sweep()).toBe(1);
    expect(cert(certificateId)).toBeUndefined();
  });
});

describe('templates', () => {
  it('unknown, disabled and JITP templates are refused with reasons', async () => {
    createTemplate('t-off', { enabled: false });
    createTemplate('t-jitp', { type: 'JITP' });
    const { token } = await csrFlow();
    const payload = { certificateOwnershipToken: token, parameters: { SerialNumber: 'X' } };
    const none = await call('$aws/provisioning-templates/t-none/provision/json', payload);
    expect(none.body).toMatchObject({ statusCode: 404, errorCode: 'ResourceNotFound' });
    const off = await call('$aws/provisioning-templates/t-off/provision/json', payload);
    expect(off.body).toMatchObject({
      statusCode: 400,
      errorMessage: 'The provisioning template t-off is disabled.',
    });
    expect(rejectedOf().at(-1)!.reason).toContain('enable it');
    const jitp = await call('$aws/provisioning-templates/t-jitp/provision/json', payload);
    expect(jitp.body.errorMessage).toBe(
      'The provisioning template t-jitp is not a fleet provisioning template.',
    );
  });

  it('a template failure leaves the certificate pending and the token usable', async () => {
    createTemplate(
      't-fail',
      {},
      fleetTemplate({}).replace('"PolicyName":"device"', '"PolicyName":"no-such-policy"'),
    );
    createTemplate('t-good');
    const { token, certificateId } = await csrFlow();
    const r = await call('$aws/provisioning-templates/t-fail/provision/json', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 'P1' },
    });
    expect(r.body).toMatchObject({ errorCode: 'ResourceRegistrationFailure' });
    expect(r.body.errorMessage).toContain('no-such-policy');
    expect(cert(certificateId)!.status).toBe('PENDING_ACTIVATION');
    expect(world.store.has(C.things, 'sensor-P1')).toBe(false);
    const missing = await call('$aws/provisioning-templates/t-good/provision/json', {
      certificateOwnershipToken: token,
    });
    expect(missing.body).toMatchObject({
      errorCode: 'InvalidRequest',
      errorMessage: expect.stringContaining('Cannot resolve reference value: {Ref=SerialNumber}'),
    });
    const ok = await call('$aws/provisioning-templates/t-good/provision/json', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 'P1' },
    });
    expect(ok.topic).toMatch(/accepted$/);
  });

  it('RegisterThing uses the default version of the template', async () => {
    createTemplate('t-versions');
    op(templateOps, 'CreateProvisioningTemplateVersion', {
      path: { templateName: 't-versions' },
      body: { templateBody: fleetTemplate().replace('sensor-', 'v2-') },
    });
    const first = await csrFlow();
    const r1 = await call('$aws/provisioning-templates/t-versions/provision/json', {
      certificateOwnershipToken: first.token,
      parameters: { SerialNumber: 'A' },
    });
    expect(r1.body.thingName).toBe('sensor-A');
    op(templateOps, 'UpdateProvisioningTemplate', {
      path: { templateName: 't-versions' },
      body: { defaultVersionId: 2 },
    });
    const second = await csrFlow();
    const r2 = await call('$aws/provisioning-templates/t-versions/provision/json', {
      certificateOwnershipToken: second.token,
      parameters: { SerialNumber: 'B' },
    });
    expect(r2.body.thingName).toBe('v2-B');
  });
});

describe('pre-provisioning hooks', () => {
  it('receives AWS request payload; parameterOverrides are merged before evaluation', async () => {
    const hook = await hookServer((e) =>
      Promise.resolve({
        body: {
          allowProvisioning: true,
          parameterOverrides: {
            SerialNumber: `${(e.parameters as Record<string, string>).SerialNumber}-checked`,
          },
        },
      }),
    );
    world.lambdas.set(HOOK_ARN, { kind: 'http', url: hook.url });
    createTemplate('t-hook', { preProvisioningHook: { targetArn: HOOK_ARN } });
    const { token, certificateId } = await csrFlow();
    const r = await call('$aws/provisioning-templates/t-hook/provision/json', {
      certificateOwnershipToken: token,
      parameters: { SerialNumber: 'H1' },
    });
    expect(r.body.thingName).toBe('sensor-H1-checked');
    expect(hook.seen).toEqual([
      {
        claimCertificateId: CLAIM_ID,
        certificateId,
        certificatePem: cert(certificateId)!.certificatePem,
        templateArn: 'arn:aws:iot:us-east-1:123456789012:provisioningtemplate/t-hook',
        clientId: 'claim-client',
        parameters: { SerialNumber: 'H1' },
      },
    ]);
    expect(world.events.find((e) => e.kind === 'fleet.provisioned')!.reason).toContain(
      'overrode SerialNumber',
    );
  });

  it('a denial, an error, a timeout, a string "true" and an unmapped ARN give ACCESS_DENIED with the reason', async () => {
    closeWorld(world);
    world = openWorld(tempDir('provline-fleet-'), 300);
    op(policyOps, 'CreatePolicy', {
      path: { policyName: 'device' },
      body: {
        policyDocument:
          '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}',
      },
    });
    const answers: Record<string, () => Promise<{ status?: number; body: unknown }>> = {
      deny: () => Promise.resolve({ body: { allowProvisioning: false } }),
      error: () => Promise.resolve({ status: 500, body: { errorMessage: 'boom' } }),
      slow: () => new Promise((r) => setTimeout(() => r({ body: { allowProvisioning: true } }), 2000)),
      string: () => Promise.resolve({ body: { allowProvisioning: 'true' } }),
    };
    const expected: Record<string, string> = {
      deny: '"allowProvisioning": false',
      error: 'HTTP 500',
      slow: 'did not answer within 300 ms',
      string: 'only the JSON boolean true',
      unmapped: 'no local endpoint is mapped',
    };
    for (const name of [...Object.keys(answers), 'unmapped']) {
      const arn = `arn:aws:lambda:us-east-1:123456789012:function:${name}`;
      if (answers[name]) world.lambdas.set(arn, { kind: 'http', url: (await hookServer(answers[name])).url });
      createTemplate(`t-${name}`, { preProvisioningHook: { targetArn: arn } });
      const { token, certificateId } = await csrFlow();
      const r = await call(`$aws/provisioning-templates/t-${name}/provision/json`, {
        certificateOwnershipToken: token,
        parameters: { SerialNumber: name },
      });
      expect(r.body, name).toEqual({
        statusCode: 403,
        errorCode: 'ACCESS_DENIED',
        errorMessage: 'Access denied by the pre-provisioning hook.',
      });
      expect(rejectedOf().at(-1)!.reason, name).toContain(expected[name]);
      expect(cert(certificateId)!.status, name).toBe('PENDING_ACTIVATION');
    }
  });

  it('judge: overrides must be strings', () => {
    expect(judge(HOOK_ARN, { allowProvisioning: true, parameterOverrides: { a: 1 } })).toMatchObject({
      allowed: false,
      reason: expect.stringContaining('parameterOverrides.a is 1'),
    });
    expect(judge(HOOK_ARN, { allowProvisioning: true })).toMatchObject({
      allowed: true,
      parameterOverrides: {},
    });
    expect(judge(HOOK_ARN, 'yes')).toMatchObject({ allowed: false });
  });
});

describe('regression: RegisterThing with AWS::IoT::Certificate::Id as a parameter', () => {
  it('resolves the pseudo-parameter without a Parameters declaration (the DG fleet example)', () => {
    const c = op(certOps, 'CreateKeysAndCertificate', {});
    const body = fleetTemplate();
    const out = registerOps(world.ctx).RegisterThing!({
      path: {},
      query: new URLSearchParams(),
      headers: {},
      body: {
        templateBody: body,
        parameters: { SerialNumber: 'REG1', 'AWS::IoT::Certificate::Id': c.certificateId as string },
      },
      requestId: 'r',
    }) as { resourceArns: Record<string, string> };
    expect(out.resourceArns.certificate).toBe(c.certificateArn);
    expect(cert(c.certificateId as string)!.status).toBe('ACTIVE');
  });
});
