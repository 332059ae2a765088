/**
 * Fleet provisioning by claim end to end, on the local stack (redis-server, SoftHSM2, the AWS
 * IoT stand-in as processes): `provline claim create` (claim key in the HSM, the fleet template
 * with the hook), `provline submit` publishing the lot's signed allow-list, the hook served by
 * `provline claim hook serve` and mapped into the stand-in, and devices provisioning themselves:
 * simulated provline-serial-v1 devices written by `provline station`, and the official device
 * SDK (both CreateCertificateFromCsr and CreateKeysAndCertificate). Denials (a serial outside
 * the lot, a replay, a revoked claim, an expired token, a hook that times out, throttling) and
 * bad input (a template without the hook's parameters, a claim policy without Subscribe, a lot
 * re-submitted with changed rows) are checked with their reasons; no claim or device key is
 * in plaintext outside the HSM and the devices. Every slow step has its own budget.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  CreatePolicyCommand,
  CreateThingCommand,
  DescribeProvisioningTemplateCommand,
  ListProvisioningTemplateVersionsCommand,
  DescribeCertificateCommand,
  DescribeThingCommand,
  type IoTClient,
} from '@aws-sdk/client-iot';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { iotidentity, mqtt_request_response } from 'aws-iot-device-sdk-v2';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startSimulator } from '../../devices/index.js';
import { makeClients, requireBucket } from '../../src/cloud/clients.js';
import { loadConfig } from '../../src/config/load.js';
import { openHsm } from '../../src/hsm/hsm.js';
import { resolveRuntime } from '../../src/stack/runtime.js';
import { stackUp } from '../../src/stack/stack.js';
import { BIN, json, ROOT, runCli, type CliResult } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';
import { until } from '../helpers/pipeline.js';
import { startPtyPair } from '../helpers/pty.js';
import { makeCsr } from './emulator-helpers.js';
import { sdk5, setClock, waitEvent, type StandIn } from './mqtt-helpers.js';

const HOOK_ARN = 'arn:aws:lambda:us-east-1:123456789012:function:provline-claim-test';
const KEK = Buffer.alloc(32, 7);
const STEP_MS = 30_000;
/** The hook's lease here (PROVLINE_HOOK_LEASE_MS): short, so a retry need not wait 15 s. */
const LEASE_MS = 1000;
/** A device policy cf's template names, made only after cf's first device failed on it. */
const LATE_POLICY = `provline-claim-late-${process.pid}`;

let dir: string;
let home: string;
let ptyDir: string;
let env: NodeJS.ProcessEnv;
let s: StandIn;
let iot: IoTClient;
let redisUrl: string;
let hook: ChildProcess | undefined;
let n = 0;
const cleanups: Array<() => Promise<void>> = [];
const servers: Server[] = [];

const cli = (args: string[], timeoutMs?: number): Promise<CliResult> =>
  runCli(args, { env, ...(timeoutMs ? { timeoutMs } : {}) });
const ok = (r: CliResult): CliResult => {
  expect(r.code, r.stderr + r.stdout).toBe(0);
  return r;
};

function profile(templateName: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    thingName: `${templateName}-{serial}`,
    attributes: { serial: '{serial}' },
    parameters: { SerialNumber: '{serial}', ThingName: '{thingName}', HardwareRevision: '{hw_rev}' },
    template: join(ROOT, 'config/templates/sensor-fleet.json'),
    policy: join(ROOT, 'config/policies/demo-device.json'),
    policyName: 'provline-sensor-claim-device',
    strategy: 'claim',
    keyDelivery: 'wrapped',
    kekLabel: 'claim-test-kek',
    driver: 'provline-serial-v1',
    claim: { templateName, hookArn: HOOK_ARN },
    ...extra,
  };
}

/** cv's fleet template file, which the versions test rewrites. */
const versionedTemplate = (): string => join(dir, 'fleet-versioned.json');

/** sensor-fleet.json with DeviceConfiguration.revision = `n`: a changed body per `n`. */
function templateRevision(n: number): string {
  const t = JSON.parse(readFileSync(join(ROOT, 'config/templates/sensor-fleet.json'), 'utf8')) as {
    DeviceConfiguration: Record<string, unknown>;
  };
  t.DeviceConfiguration.revision = String(n);
  return JSON.stringify(t, null, 2);
}

function csv(name: string, rows: Array<[string, string]>): string {
  const file = join(dir, name);
  writeFileSync(file, `serial,hw_rev\n${rows.map(([a, b]) => `${a},${b}`).join('\n')}\n`);
  return file;
}

beforeAll(async () => {
  dir = tempDir('provline-claim-');
  home = join(dir, 'home');
  ptyDir = mkdtempSync(join(tmpdir(), 'provline-claim-pty-'));
  const up = await stackUp(home);
  redisUrl = up.redis.url!;
  const config = join(dir, 'provline.config.yaml');
  const lateTemplate = join(dir, 'fleet-late-policy.json');
  writeFileSync(versionedTemplate(), templateRevision(0));
  writeFileSync(
    lateTemplate,
    readFileSync(join(ROOT, 'config/templates/sensor-fleet.json'), 'utf8').replace(
      '"provline-sensor-claim-device"',
      JSON.stringify(LATE_POLICY),
    ),
  );
  writeFileSync(
    config,
    stringify({
      home,
      profiles: {
        cw: profile('cw'),
        cp: profile('cp', { keyDelivery: 'plain' }),
        ck: profile('ck', { claim: { templateName: 'ck', hookArn: HOOK_ARN, deviceKey: 'keys' } }),
        cr: profile('cr'),
        cf: profile('cf', { template: lateTemplate }),
        cg: profile('cg'),
        cv: profile('cv', { template: versionedTemplate() }),
        badtpl: profile('badtpl', { template: join(ROOT, 'test/fixtures/claim/fleet-no-hw.json') }),
        badpol: profile('badpol', {
          claim: {
            templateName: 'badpol',
            hookArn: HOOK_ARN,
            policy: join(ROOT, 'test/fixtures/claim/claim-no-subscribe.json'),
          },
        }),
      },
    }),
  );
  env = {
    PROVLINE_CONFIG: config,
    PROVLINE_HOME: home,
    SOFTHSM2_CONF: undefined,
    PROVLINE_HSM_PIN: undefined,
  };
  writeFileSync(join(dir, 'kek.bin'), KEK, { mode: 0o600 });
  ok(await cli(['hsm', 'kek', 'import', '--profile', 'cw', '--file', join(dir, 'kek.bin')]));
  const rt = resolveRuntime(loadConfig({ file: config, env: { PROVLINE_HOME: home } }));
  iot = makeClients(rt.aws, { maxAttempts: 3 }).iot;
  const [host, port] = up.aws.mqttEndpoint!.split(':');
  s = { host: host!, port: Number(port), rootCaFile: rt.aws.rootCaFile, iotUrl: rt.aws.endpoint! } as StandIn;
  for (const p of ['cw', 'cp', 'ck', 'cr']) ok(await cli(['claim', 'create', '--profile', p]));
  // The hook: `provline claim hook serve` (one ARN serves every template; lots are per template).
  const child = spawn(process.execPath, [BIN, 'claim', 'hook', 'serve', '--profile', 'cw'], {
    env: { ...process.env, PROVLINE_LOG_LEVEL: 'warn', PROVLINE_HOOK_LEASE_MS: String(LEASE_MS), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  hook = child;
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await until(
    'the hook to serve',
    () => Promise.resolve(out.includes('serving at') ? true : undefined),
    STEP_MS,
    {
      gone: () => (child.exitCode !== null ? `it exited ${child.exitCode}: ${err}` : undefined),
    },
  );
}, 240_000);

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

afterAll(async () => {
  hook?.kill('SIGTERM');
  for (const server of servers) server.close();
  await removeHome(home);
  rmSync(ptyDir, { recursive: true, force: true });
});

/** A simulated serial-v1 device on a pty; returns the station's end. */
async function device(serial: string): Promise<string> {
  const pair = await startPtyPair(ptyDir, `c${++n}`);
  cleanups.push(() => pair.stop());
  const sim = await startSimulator({ driver: 'provline-serial-v1', port: pair.device, serial, kek: KEK });
  cleanups.push(() => sim.close());
  return pair.host;
}

const lines = (stdout: string): Record<string, unknown>[] =>
  stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

async function station(profileName: string, ports: string[]): Promise<Record<string, unknown>[]> {
  const r = await cli(
    ['station', '--once', '--json', '--profile', profileName, ...ports.flatMap((p) => ['--port', p])],
    120_000,
  );
  return lines(r.stdout).filter((e) => e.event === 'result');
}

async function submit(profileName: string, file: string, extra: string[] = []): Promise<string> {
  const r = json<{ batchId: string }>(
    ok(await cli(['submit', file, '--profile', profileName, '--json', ...extra])),
  );
  return r.batchId;
}

/** The claim key, unwrapped through the HSM, as the device holds it (test-only: the test is the device). */
async function claimFiles(
  profileName: string,
): Promise<{ certFile: string; keyFile: string; keyDer: Buffer }> {
  const redis = new Redis(redisUrl);
  const state = JSON.parse((await redis.get(`provline:claim:${profileName}`))!) as {
    current: { certificatePem: string; wrappedKey: string; kekLabel: string };
  };
  redis.disconnect();
  const rt = resolveRuntime(loadConfig({ file: env.PROVLINE_CONFIG, env: { PROVLINE_HOME: home } }));
  const hsm = await openHsm(rt.hsm, { env: {} });
  let keyDer: Buffer;
  try {
    keyDer = await hsm.unwrapToPkcs8({
      wrappedKey: state.current.wrappedKey,
      kekLabel: state.current.kekLabel,
      keyType: 'P-256',
    });
  } finally {
    hsm.close();
  }
  const certFile = join(dir, `${profileName}-claim.pem`);
  const keyFile = join(dir, `${profileName}-claim.key`);
  writeFileSync(certFile, state.current.certificatePem);
  writeFileSync(
    keyFile,
    createPrivateKey({ key: keyDer, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }),
    { mode: 0o600 },
  );
  cleanups.push(() => Promise.resolve(rmSync(keyFile, { force: true })));
  return { certFile, keyFile, keyDer };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function rejection(p: Promise<unknown>, what: string): Promise<Record<string, unknown>> {
  try {
    await within(p, STEP_MS, what);
  } catch (e) {
    if (e instanceof mqtt_request_response.ServiceError && e.modeledError)
      return e.modeledError as Record<string, unknown>;
    throw e;
  }
  throw new Error(`${what} was accepted; expected a rejection`);
}

/** The official SDK as the device: MQTT 5 with the claim and IotIdentityClientv2. */
async function sdkSession(creds: { certFile: string; keyFile: string }, clientId: string) {
  const c = sdk5(s, creds, clientId);
  await within(c.connected, STEP_MS, 'claim connect');
  const identity = iotidentity.IotIdentityClientv2.newFromMqtt5(c.client, {
    maxRequestResponseSubscriptions: 2,
    maxStreamingSubscriptions: 0,
    operationTimeoutInSeconds: 20,
  });
  return {
    identity,
    /** CreateCertificateFromCsr with a new key (named `name`), within its own budget. */
    certificate: (name: string) =>
      within(
        identity.createCertificateFromCsr({ certificateSigningRequest: makeCsr(name).csr }),
        STEP_MS,
        `CreateCertificateFromCsr (${name})`,
      ),
    /** RegisterThing with the serial and the lot (batch id) the station would have written. */
    register: (templateName: string, token: string, serial: string, lot?: string) =>
      identity.registerThing({
        templateName,
        certificateOwnershipToken: token,
        parameters: { SerialNumber: serial, ...(lot === undefined ? {} : { LotId: lot }) },
      }),
    close: async () => {
      identity.close();
      await c.stop();
    },
  };
}

describe('provisioning by claim through the station', () => {
  it('claim create → submit (allow-list) → station writes the claim → each device provisions itself through the hook and connects; a serial that never came is reported', async () => {
    const batchId = await submit(
      'cw',
      csv('cw.csv', [
        ['CW1', 'B'],
        ['CW2', 'C'],
        ['CW3', 'D'],
      ]),
    );
    const results = await station('cw', [await device('CW1'), await device('CW2')]);
    expect(results).toHaveLength(2);
    for (const r of results)
      expect(r, JSON.stringify(r)).toMatchObject({ outcome: 'verified', connected: true });
    for (const [serial, hw] of [
      ['CW1', 'B'],
      ['CW2', 'C'],
    ] as const) {
      const thing = await iot.send(new DescribeThingCommand({ thingName: `cw-${serial}` }));
      expect(thing.attributes).toEqual({ serial, hw });
    }
    const report = json<Array<Record<string, unknown>>>(
      ok(await cli(['report', batchId, '--format', 'json'])),
    );
    const by = new Map(report.map((d) => [d.serial, d]));
    expect(by.get('CW1')).toMatchObject({ state: 'connected', claim: 'provisioned' });
    expect(by.get('CW3')).toMatchObject({ state: 'accepted', claim: 'not seen' });
    const status = json<{ provisioned: number; usedBy: Record<string, number> }>(
      ok(await cli(['claim', 'status', '--profile', 'cw', '--json'])),
    );
    expect(status.provisioned).toBeGreaterThanOrEqual(2);
    // A thing named like the product's that no lot allowed (made around the hook).
    await iot.send(new CreateThingCommand({ thingName: 'cw-ROGUE' }));
    const rec = await cli(['reconcile', batchId, '--json']);
    expect(rec.code, rec.stderr).toBe(4);
    const claim = (
      JSON.parse(rec.stdout) as { claim: { provisioned: string[]; notSeen: string[]; outside: string[] } }
    ).claim;
    expect(claim.provisioned.sort()).toEqual(['CW1', 'CW2']);
    expect(claim.notSeen).toEqual(['CW3']);
    expect(claim.outside).toEqual(['cw-ROGUE']);
  }, 300_000);

  it('plain claim-key delivery (unwrapped by the station through the HSM) provisions too', async () => {
    await submit('cp', csv('cp.csv', [['CP1', 'B']]));
    const [r] = await station('cp', [await device('CP1')]);
    expect(r, JSON.stringify(r)).toMatchObject({ outcome: 'verified', connected: true });
  }, 180_000);
});

describe('the official device SDK with the claim', () => {
  it('CreateCertificateFromCsr + RegisterThing for a serial of the lot (attributes from the CSV), then a connect as the thing; the same serial again is denied (replay); a serial outside the lot is denied', async () => {
    const lot = await submit('cw', csv('sdk.csv', [['SDK1', 'Q']]));
    const claim = await claimFiles('cw');
    const session = await sdkSession(claim, 'cw-SDK1');
    try {
      const csr = makeCsr('device');
      const created = await within(
        session.identity.createCertificateFromCsr({ certificateSigningRequest: csr.csr }),
        STEP_MS,
        'CreateCertificateFromCsr',
      );
      const registered = await within(
        session.register('cw', created.certificateOwnershipToken!, 'SDK1', lot),
        STEP_MS,
        'RegisterThing',
      );
      // The device asked for nothing but its serial: the hook set ThingName and HardwareRevision.
      expect(registered.thingName).toBe('cw-SDK1');
      const thing = await iot.send(new DescribeThingCommand({ thingName: 'cw-SDK1' }));
      expect(thing.attributes).toEqual({ serial: 'SDK1', hw: 'Q' });

      const again = await session.certificate('d2');
      const replay = await rejection(
        session.register('cw', again.certificateOwnershipToken!, 'SDK1', lot),
        'replay',
      );
      expect(replay).toMatchObject({ statusCode: 403, errorCode: 'ACCESS_DENIED' });
      const e1 = await waitEvent(
        s,
        (e) => e.kind === 'fleet.rejected' && e.certificateId === again.certificateId,
      );
      expect(JSON.stringify(e1.details)).toContain('REPLAY');

      const outside = await session.certificate('d3');
      const denied = await rejection(
        session.register('cw', outside.certificateOwnershipToken!, 'NOT-IN-LOT', lot),
        'outside',
      );
      expect(denied).toMatchObject({ statusCode: 403, errorCode: 'ACCESS_DENIED' });
      const e2 = await waitEvent(
        s,
        (e) => e.kind === 'fleet.rejected' && e.certificateId === outside.certificateId,
      );
      expect(JSON.stringify(e2.details)).toContain('NOT_IN_LOT');
      // A serial of another product's lot (template cp) is not in this template's lots either.
      const other = await session.certificate('d4');
      const cpLot = await submit('cp', csv('cp-other.csv', [['CPX1', 'B']]));
      expect(
        await rejection(
          session.register('cw', other.certificateOwnershipToken!, 'CPX1', cpLot),
          'other product',
        ),
      ).toMatchObject({
        errorCode: 'ACCESS_DENIED',
      });
    } finally {
      await session.close();
    }
    const status = json<{ deniedByCode: Record<string, number> }>(
      ok(await cli(['claim', 'status', '--profile', 'cw', '--json'])),
    );
    expect(status.deniedByCode.REPLAY).toBeGreaterThanOrEqual(1);
    expect(status.deniedByCode.NOT_IN_LOT).toBeGreaterThanOrEqual(2);
  }, 240_000);

  it('CreateKeysAndCertificate + RegisterThing (deviceKey keys), then a connect as the thing', async () => {
    const lot = await submit('ck', csv('ck.csv', [['CK1', 'B']]));
    const claim = await claimFiles('ck');
    const session = await sdkSession(claim, 'ck-CK1');
    let created;
    try {
      created = await within(
        session.identity.createKeysAndCertificate({}),
        STEP_MS,
        'CreateKeysAndCertificate',
      );
      const registered = await within(
        session.register('ck', created.certificateOwnershipToken!, 'CK1', lot),
        STEP_MS,
        'RegisterThing',
      );
      expect(registered.thingName).toBe('ck-CK1');
    } finally {
      await session.close();
    }
    const certFile = join(dir, 'ck1.pem');
    const keyFile = join(dir, 'ck1.key');
    writeFileSync(certFile, created.certificatePem!);
    writeFileSync(keyFile, created.privateKey!, { mode: 0o600 });
    cleanups.push(() => Promise.resolve(rmSync(keyFile, { force: true })));
    const d = sdk5(s, { certFile, keyFile }, 'ck-CK1');
    expect((await within(d.connected, STEP_MS, 'connect as the thing'))?.reasonCode).toBe(0);
    await d.stop();
  }, 180_000);

  it('an expired ownership token is refused, and the serial is still allowed afterwards', async () => {
    const lot = await submit('cw', csv('late.csv', [['LATE1', 'B']]));
    const claim = await claimFiles('cw');
    const session = await sdkSession(claim, 'cw-LATE1');
    try {
      const created = await session.certificate('late');
      await setClock(s, 3601);
      try {
        const late = await rejection(
          session.register('cw', created.certificateOwnershipToken!, 'LATE1', lot),
          'late',
        );
        expect(late).toMatchObject({ errorCode: 'InvalidCertificateOwnershipToken' });
      } finally {
        await setClock(s, 0);
      }
      const fresh = await session.certificate('late2');
      const r = await within(
        session.register('cw', fresh.certificateOwnershipToken!, 'LATE1', lot),
        STEP_MS,
        'RegisterThing',
      );
      expect(r.thingName).toBe('cw-LATE1');
    } finally {
      await session.close();
    }
  }, 180_000);
});

describe('the fleet template over time', () => {
  it('a changed template body becomes a new default version (CreateProvisioningTemplateVersion), the oldest versions pruned to the five AWS keeps; an unchanged one is left alone', async () => {
    type Created = { template: { action: string; defaultVersionId: number } };
    const create = async () =>
      json<Created>(ok(await cli(['claim', 'create', '--profile', 'cv', '--json']))).template;
    expect(await create()).toMatchObject({ action: 'created', defaultVersionId: 1 });
    expect(await create()).toMatchObject({ action: 'unchanged', defaultVersionId: 1 });
    for (let n = 1; n <= 6; n++) {
      writeFileSync(versionedTemplate(), templateRevision(n));
      expect(await create()).toMatchObject({ action: 'new-version', defaultVersionId: n + 1 });
    }
    const versions =
      (await iot.send(new ListProvisioningTemplateVersionsCommand({ templateName: 'cv' }))).versions ?? [];
    expect(versions.map((v) => v.versionId).sort((a, b) => a! - b!)).toEqual([3, 4, 5, 6, 7]);
    expect(versions.find((v) => v.isDefaultVersion)?.versionId).toBe(7);
    const t = await iot.send(new DescribeProvisioningTemplateCommand({ templateName: 'cv' }));
    expect(t.defaultVersionId).toBe(7);
    expect(JSON.parse(t.templateBody!)).toEqual(JSON.parse(templateRevision(6)));
    expect(t.preProvisioningHook?.targetArn).toBe(HOOK_ARN);
    expect(t.enabled).toBe(true);
  }, 240_000);
});

describe('lots and once-only', () => {
  it('a device that sends a serial of another lot is refused (WRONG_LOT, or NO_LOT without a lot), with the reason in claim status and the report; the denial does not use the serial up', async () => {
    const lotA = await submit('cw', csv('lot-a.csv', [['LA1', 'B']]));
    const lotB = await submit('cw', csv('lot-b.csv', [['LB1', 'C']]));
    expect(lotA).not.toBe(lotB);
    const claim = await claimFiles('cw');
    const session = await sdkSession(claim, 'cw-LA1');
    try {
      const created = await session.certificate('la1');
      const token = created.certificateOwnershipToken!;
      // A device of lot A sending lot B's serial.
      expect(await rejection(session.register('cw', token, 'LB1', lotA), 'serial of lot B')).toMatchObject({
        statusCode: 403,
        errorCode: 'ACCESS_DENIED',
      });
      const wrong = await waitEvent(
        s,
        (e) =>
          e.kind === 'fleet.rejected' &&
          e.certificateId === created.certificateId &&
          JSON.stringify(e.details).includes('WRONG_LOT'),
      );
      expect(JSON.stringify(wrong.details)).toContain(`belongs to lot ${lotB}`);
      // Its own serial with another lot's id, and with no lot at all.
      expect(await rejection(session.register('cw', token, 'LA1', lotB), 'lot B for LA1')).toMatchObject({
        errorCode: 'ACCESS_DENIED',
      });
      expect(await rejection(session.register('cw', token, 'LA1'), 'no lot')).toMatchObject({
        errorCode: 'ACCESS_DENIED',
      });
      // Its own serial and lot: allowed (the denials used nothing up).
      const r = await within(session.register('cw', token, 'LA1', lotA), STEP_MS, 'RegisterThing');
      expect(r.thingName).toBe('cw-LA1');
    } finally {
      await session.close();
    }
    const status = json<{
      deniedByCode: Record<string, number>;
      recentDenials: Array<{ serial: string; code: string; reason: string }>;
    }>(ok(await cli(['claim', 'status', '--profile', 'cw', '--json'])));
    expect(status.deniedByCode.WRONG_LOT).toBeGreaterThanOrEqual(2);
    expect(status.deniedByCode.NO_LOT).toBeGreaterThanOrEqual(1);
    const lb1 = status.recentDenials.find((d) => d.serial === 'LB1');
    expect(lb1).toMatchObject({ code: 'WRONG_LOT' });
    expect(lb1!.reason).toContain(`belongs to lot ${lotB}, but the device says it is of lot "${lotA}"`);
    const report = json<Array<Record<string, unknown>>>(ok(await cli(['report', lotB, '--format', 'json'])));
    const row = report.find((d) => d.serial === 'LB1')!;
    expect(row).toMatchObject({ claim: 'denied' });
    expect(String(row.claimReason)).toContain('WRONG_LOT');
  }, 240_000);

  it('a device whose RegisterThing failed after the hook allowed it (template failing on a missing policy) provisions on its next visit; a replay of the completed provisioning is still denied', async () => {
    ok(await cli(['claim', 'create', '--profile', 'cf']));
    const lot = await submit('cf', csv('cf.csv', [['CF1', 'B']]));
    const [first] = await station('cf', [await device('CF1')]);
    expect(first, JSON.stringify(first)).toMatchObject({
      outcome: 'failed',
      code: 'DEVICE_PROVISION_FAILED',
    });
    const failed = await waitEvent(
      s,
      (e) => e.kind === 'fleet.rejected' && e.reason.includes(`Policy`) && e.reason.includes(LATE_POLICY),
    );
    const failedAt = Date.now();
    // The hook had allowed it: the serial is marked with the certificate whose template failed.
    expect(failed.reason).toContain('template cf failed');
    await iot.send(
      new CreatePolicyCommand({
        policyName: LATE_POLICY,
        policyDocument: readFileSync(join(ROOT, 'config/policies/demo-device.json'), 'utf8'),
      }),
    );
    // The earlier certificate holds the serial for the hook's lease; then the retry takes it over.
    await until(
      'the lease of the failed attempt to pass',
      () => Promise.resolve(Date.now() - failedAt > LEASE_MS ? true : undefined),
      STEP_MS,
    );
    const [second] = await station('cf', [await device('CF1')]);
    expect(second, JSON.stringify(second)).toMatchObject({ outcome: 'verified', connected: true });
    const thing = await iot.send(new DescribeThingCommand({ thingName: 'cf-CF1' }));
    expect(thing.attributes).toEqual({ serial: 'CF1', hw: 'B' });

    // Long after the lease, a new certificate for the provisioned serial is a replay.
    const claim = await claimFiles('cf');
    const session = await sdkSession(claim, 'cf-CF1');
    try {
      const again = await session.certificate('cf1');
      expect(
        await rejection(session.register('cf', again.certificateOwnershipToken!, 'CF1', lot), 'replay'),
      ).toMatchObject({ errorCode: 'ACCESS_DENIED' });
      const e = await waitEvent(
        s,
        (x) => x.kind === 'fleet.rejected' && x.certificateId === again.certificateId,
      );
      expect(JSON.stringify(e.details)).toContain('REPLAY');
      expect(JSON.stringify(e.details)).toContain('now ACTIVE');
    } finally {
      await session.close();
    }
  }, 300_000);

  it("the stand-in's S3 conditional writes, through @aws-sdk/client-s3: If-Match over the right ETag only, 404 without an object", async () => {
    const rt = resolveRuntime(loadConfig({ file: env.PROVLINE_CONFIG, env: { PROVLINE_HOME: home } }));
    const { s3, aws } = makeClients(rt.aws, { maxAttempts: 1 });
    const Bucket = requireBucket(aws);
    const Key = `conditional/${process.pid}.json`;
    const status = (p: Promise<unknown>) =>
      p.then(
        () => 200,
        (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode,
      );
    try {
      expect(await status(s3.send(new PutObjectCommand({ Bucket, Key, Body: 'x', IfMatch: '"0"' })))).toBe(
        404,
      );
      const first = await s3.send(new PutObjectCommand({ Bucket, Key, Body: 'a', IfNoneMatch: '*' }));
      expect(await status(s3.send(new PutObjectCommand({ Bucket, Key, Body: 'b', IfNoneMatch: '*' })))).toBe(
        412,
      );
      expect(await status(s3.send(new PutObjectCommand({ Bucket, Key, Body: 'b', IfMatch: '"0123"' })))).toBe(
        412,
      );
      expect(
        await status(s3.send(new PutObjectCommand({ Bucket, Key, Body: 'b', IfMatch: first.ETag! }))),
      ).toBe(200);
      expect(
        await status(s3.send(new PutObjectCommand({ Bucket, Key, Body: 'c', IfMatch: first.ETag! }))),
      ).toBe(412);
      const got = await s3.send(new GetObjectCommand({ Bucket, Key }));
      expect(await got.Body!.transformToString()).toBe('b');
    } finally {
      s3.destroy();
    }
  }, 60_000);
});

describe('provisioning by trusted user', () => {
  it('claim issue prints a five-minute claim with the claim policy attached; a device of the lot provisions with it through the hook; after five minutes it is refused', async () => {
    const lot = await submit('cw', csv('trusted.csv', [['TRU1', 'B']]));
    const issued = json<{
      certificateId: string;
      certificatePem: string;
      privateKeyPem: string;
      expiration: string;
    }>(ok(await cli(['claim', 'issue', '--profile', 'cw', '--json'])));
    const left = Date.parse(issued.expiration) - Date.now();
    expect(left).toBeGreaterThan(60_000);
    expect(left).toBeLessThanOrEqual(7 * 60_000);
    const certFile = join(dir, 'trusted.pem');
    const keyFile = join(dir, 'trusted.key');
    writeFileSync(certFile, issued.certificatePem);
    writeFileSync(keyFile, issued.privateKeyPem, { mode: 0o600 });
    cleanups.push(() => Promise.resolve(rmSync(keyFile, { force: true })));
    const session = await sdkSession({ certFile, keyFile }, 'cw-TRU1');
    try {
      const created = await session.certificate('tru');
      const r = await within(
        session.register('cw', created.certificateOwnershipToken!, 'TRU1', lot),
        STEP_MS,
        'RegisterThing',
      );
      expect(r.thingName).toBe('cw-TRU1');
    } finally {
      await session.close();
    }
    const status = json<{ usedBy: Record<string, number> }>(
      ok(await cli(['claim', 'status', '--profile', 'cw', '--json'])),
    );
    expect(status.usedBy.temporary).toBeGreaterThanOrEqual(1);
    await setClock(s, 301);
    try {
      const late = sdk5(s, { certFile, keyFile }, 'cw-TRU2');
      await expect(
        within(late.connected, STEP_MS, 'connect with an expired temporary claim'),
      ).rejects.toThrow();
      await late.stop(false);
    } finally {
      await setClock(s, 0);
    }
  }, 180_000);
});

describe('turning things off, and failures on the way', () => {
  it('a revoked claim stops provisioning at once (the device is refused); rotate makes a new claim that works', async () => {
    await submit(
      'cr',
      csv('cr.csv', [
        ['CR1', 'B'],
        ['CR2', 'B'],
      ]),
    );
    const old = await claimFiles('cr');
    const revoked = json<{
      claim: { current: unknown; previous: Array<{ status: string; certificateId: string }> };
    }>(ok(await cli(['claim', 'revoke', '--profile', 'cr', '--reason', 'claim seen on a forum', '--json'])));
    expect(revoked.claim.current).toBeNull();
    expect(revoked.claim.previous[0]!.status).toBe('REVOKED');
    const d = await iot.send(
      new DescribeCertificateCommand({ certificateId: revoked.claim.previous[0]!.certificateId }),
    );
    expect(d.certificateDescription!.status).toBe('INACTIVE');
    const c = sdk5(s, old, 'cr-CR1');
    await expect(within(c.connected, STEP_MS, 'connect with a revoked claim')).rejects.toThrow();
    await c.stop(false);
    // The station has no claim to write: the device is refused, untouched.
    const [refused] = await station('cr', [await device('CR1')]);
    expect(refused).toMatchObject({ outcome: 'refused' });
    const submitRevoked = await cli(['submit', csv('cr2.csv', [['CR9', 'B']]), '--profile', 'cr']);
    expect(submitRevoked.code).toBe(3);
    expect(submitRevoked.stderr).toContain('CLAIM_REVOKED');

    ok(await cli(['claim', 'rotate', '--profile', 'cr']));
    const [r] = await station('cr', [await device('CR1')]);
    expect(r, JSON.stringify(r)).toMatchObject({ outcome: 'verified', connected: true });
  }, 240_000);

  it('after claim rotate the old claim stays ACTIVE for its grace period, then the next command deactivates it: submit, and a station', async () => {
    ok(await cli(['claim', 'create', '--profile', 'cg']));
    const graceHours = String(3 / 3600); // three seconds
    const certStatus = async (certificateId: string) =>
      (await iot.send(new DescribeCertificateCommand({ certificateId }))).certificateDescription!.status;
    type Rotated = {
      claim: {
        current: { certificateId: string };
        previous: Array<{ certificateId: string; status: string; deactivateAt: string }>;
      };
    };
    const rotate = async () =>
      json<Rotated>(
        ok(await cli(['claim', 'rotate', '--profile', 'cg', '--grace-hours', graceHours, '--json'])),
      ).claim;
    const graceOver = (deactivateAt: string) =>
      until(
        'the grace period to end',
        () => Promise.resolve(Date.now() > Date.parse(deactivateAt) ? true : undefined),
        STEP_MS,
      );

    const first = await rotate();
    const old1 = first.previous[0]!;
    expect(old1.status).toBe('RETIRING');
    expect(await certStatus(old1.certificateId)).toBe('ACTIVE');
    await graceOver(old1.deactivateAt);
    const lot = await submit('cg', csv('cg.csv', [['CG1', 'B']]));
    expect(await certStatus(old1.certificateId)).toBe('INACTIVE');

    const second = await rotate();
    const old2 = second.previous[0]!;
    expect(old2.certificateId).toBe(first.current.certificateId);
    expect(await certStatus(old2.certificateId)).toBe('ACTIVE');
    await graceOver(old2.deactivateAt);
    const [r] = await station('cg', [await device('CG1')]);
    expect(r, JSON.stringify(r)).toMatchObject({ outcome: 'verified', connected: true });
    expect(await certStatus(old2.certificateId)).toBe('INACTIVE');
    const status = json<{
      claim: { current: { certificateId: string }; previous: Array<{ status: string }> };
    }>(ok(await cli(['claim', 'status', '--profile', 'cg', '--json'])));
    expect(status.claim.current.certificateId).toBe(second.current.certificateId);
    expect(status.claim.previous.map((c) => c.status)).toEqual(['INACTIVE', 'INACTIVE']);
    expect(lot).toBeTruthy();
  }, 240_000);

  it('a hook that does not answer within 5 s: ACCESS_DENIED with the reason logged, and the serial is not used up', async () => {
    await submit('cw', csv('slow.csv', [['SLOW1', 'B']]));
    const slow = createServer((_req, res) => {
      setTimeout(() => res.end(JSON.stringify({ allowProvisioning: true })), 7000);
    });
    servers.push(slow);
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const lambdas = async (body: unknown) =>
      expect(
        (await fetch(`${s.iotUrl}/_emulator/lambdas`, { method: 'PUT', body: JSON.stringify(body) })).status,
      ).toBe(200);
    const before = (await (await fetch(`${s.iotUrl}/_emulator/lambdas`)).json()) as Record<string, string>;
    await lambdas({ [HOOK_ARN]: `http://127.0.0.1:${(slow.address() as AddressInfo).port}/` });
    try {
      const [r] = await station('cw', [await device('SLOW1')]);
      expect(r).toMatchObject({ outcome: 'failed', code: 'DEVICE_PROVISION_DENIED' });
      await waitEvent(
        s,
        (e) => e.kind === 'fleet.rejected' && e.reason.includes('did not answer within 5000 ms'),
      );
    } finally {
      await lambdas({ [HOOK_ARN]: before[HOOK_ARN] });
    }
    // The hook never decided, so the serial is still allowed: the next visit provisions it.
    const [again] = await station('cw', [await device('SLOW1')]);
    expect(again, JSON.stringify(again)).toMatchObject({ outcome: 'verified', connected: true });
  }, 180_000);

  it('throttling from the stand-in fails the device for now (DEVICE_PROVISION_FAILED); the next visit provisions it', async () => {
    await submit('cw', csv('thr.csv', [['THR1', 'B']]));
    const faults = (body: unknown) =>
      fetch(`${s.iotUrl}/_emulator/faults?replace=true`, { method: 'PUT', body: JSON.stringify(body) });
    expect((await faults({ throttle: { CreateCertificateFromCsr: 1 } })).status).toBe(200);
    let first: Record<string, unknown> | undefined;
    try {
      [first] = await station('cw', [await device('THR1')]);
    } finally {
      await faults({});
    }
    expect(first).toMatchObject({ outcome: 'failed', code: 'DEVICE_PROVISION_FAILED' });
    expect(String(first?.message)).toContain('ThrottlingException');
    const [second] = await station('cw', [await device('THR1')]);
    expect(second, JSON.stringify(second)).toMatchObject({ outcome: 'verified', connected: true });
  }, 240_000);
});

describe('bad input is refused with a clear message, nothing provisioned', () => {
  it('a template without a parameter the hook sets; a claim policy without Subscribe; a lot re-submitted with changed rows', async () => {
    const tpl = await cli(['claim', 'create', '--profile', 'badtpl']);
    expect(tpl.code).toBe(3);
    expect(tpl.stderr).toContain('CLAIM_TEMPLATE_INVALID');
    expect(tpl.stderr).toContain('declares no parameter HardwareRevision');
    const pol = await cli(['claim', 'create', '--profile', 'badpol']);
    expect(pol.code).toBe(3);
    expect(pol.stderr).toContain('CLAIM_POLICY_INVALID');
    expect(pol.stderr).toContain('iot:Subscribe on');
    expect(pol.stderr).toContain('/accepted');

    await submit(
      'cw',
      csv('keep.csv', [
        ['KEEP1', 'B'],
        ['KEEP2', 'B'],
      ]),
    );
    const changed = await cli([
      'submit',
      csv('keep2.csv', [
        ['KEEP2', 'Z'],
        ['KEEP3', 'B'],
      ]),
      '--profile',
      'cw',
      '--skip-existing',
    ]);
    expect(changed.code).toBe(3);
    expect(changed.stderr).toContain('CLAIM_LOT_CHANGED');
    expect(changed.stderr).toContain('serial KEEP2');
    const batches = json<Array<{ total: number }>>(ok(await cli(['batches', '--json'])));
    expect(JSON.stringify(batches)).not.toContain('keep2.csv');
  }, 180_000);
});

describe('the hook as a Lambda package', () => {
  it('npm run package:claim-hook shape: unzipped beside @aws-sdk/client-s3 and client-iot alone, with `claim hook env`, it allows a serial of a lot to a device of that lot and denies another lot', async () => {
    const lot = await submit('cw', csv('pkg.csv', [['PKG1', 'B']]));
    const zipFile = join(dir, 'claim-hook.zip');
    const out = ok(await cli(['claim', 'hook', 'package', '--out', zipFile]));
    expect(out.stdout).toContain('index.js, allow-list.js, decide.js');
    expect(out.stdout).toContain('handler index.handler');
    const vars = json<Record<string, string>>(
      ok(await cli(['claim', 'hook', 'env', '--profile', 'cw', '--json'])),
    );
    const task = join(dir, 'hook-task');
    execFileSync('python3', ['-m', 'zipfile', '-e', zipFile, task]);
    expect(readdirSync(task).sort()).toEqual(['allow-list.js', 'decide.js', 'index.js', 'package.json']);
    mkdirSync(join(task, 'node_modules', '@aws-sdk'), { recursive: true });
    for (const m of ['client-s3', 'client-iot'])
      symlinkSync(join(ROOT, 'node_modules', '@aws-sdk', m), join(task, 'node_modules', '@aws-sdk', m));
    const rt = resolveRuntime(loadConfig({ file: env.PROVLINE_CONFIG, env: { PROVLINE_HOME: home } }));
    const event = (serial: string, lotId: string) => ({
      claimCertificateId: 'c'.repeat(64),
      certificateId: `${serial.toLowerCase()}${'0'.repeat(64)}`.slice(0, 64),
      certificatePem: '',
      templateArn: 'arn:aws:iot:us-east-1:123456789012:provisioningtemplate/cw',
      clientId: `cw-${serial}`,
      parameters: { SerialNumber: serial, LotId: lotId },
    });
    const script = `const m = await import(${JSON.stringify(pathToFileURL(join(task, 'index.js')).href)});
for (const e of JSON.parse(process.argv[1])) process.stdout.write('RESULT ' + JSON.stringify(await m.handler(e, { getRemainingTimeInMillis: () => 5000 })) + '\\n');`;
    const run = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        script,
        JSON.stringify([event('PKG1', 'another-lot'), event('PKG1', lot)]),
      ],
      {
        cwd: task,
        encoding: 'utf8',
        timeout: STEP_MS,
        env: {
          PATH: process.env.PATH,
          ...vars,
          PROVLINE_HOOK_S3_ENDPOINT: rt.aws.s3Endpoint!,
          PROVLINE_HOOK_IOT_ENDPOINT: rt.aws.endpoint!,
          AWS_REGION: 'us-east-1',
          AWS_SHARED_CREDENTIALS_FILE: rt.aws.credentialsFile!,
          AWS_PROFILE: rt.aws.profile!,
        },
      },
    );
    const results = run
      .split('\n')
      .filter((l) => l.startsWith('RESULT '))
      .map((l) => JSON.parse(l.slice(7)) as Record<string, unknown>);
    expect(results).toHaveLength(2);
    expect(results[0]).toMatchObject({ allowProvisioning: false, provlineCode: 'WRONG_LOT' });
    expect(results[1]).toEqual({
      allowProvisioning: true,
      parameterOverrides: { SerialNumber: 'PKG1', ThingName: 'cw-PKG1', HardwareRevision: 'B' },
    });
  }, 120_000);
});

describe('secrets', () => {
  it('no claim key in plaintext in Redis, the stand-in state, S3 or the logs; only wrapped', async () => {
    const { keyDer } = await claimFiles('cw');
    const needles = [keyDer.toString('base64').slice(0, 40), keyDer.toString('hex').slice(0, 40)];
    const redis = new Redis(redisUrl);
    const dump: string[] = [];
    for (const key of await redis.keys('*')) {
      const type = await redis.type(key);
      if (type === 'string') dump.push((await redis.get(key)) ?? '');
      else if (type === 'hash') dump.push(JSON.stringify(await redis.hgetall(key)));
    }
    redis.disconnect();
    const text = dump.join('\n');
    expect(text).toContain('wrappedKey');
    expect(text).not.toContain('PRIVATE KEY');
    for (const nd of needles) expect(text).not.toContain(nd);
    // Files under the home except the HSM token (the stand-in's state and S3, logs).
    const walk = (d: string): string[] =>
      readdirSync(d).flatMap((f) => {
        const p = join(d, f);
        if (f === 'hsm') return [];
        return statSync(p).isDirectory() ? walk(p) : [p];
      });
    for (const f of walk(home)) {
      const body = readFileSync(f);
      for (const nd of needles) expect(body.includes(nd), f).toBe(false);
      expect(body.includes(keyDer.subarray(10, 40)), f).toBe(false);
    }
  }, 60_000);
});
