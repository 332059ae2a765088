/**
 * The driver contract suite: every driver against its simulator over real socat ptys and
 * through ser2net. Every injected fault must end verified after a retry or failed with the
 * expected code, and a device is never reported verified unless its stored state (read straight
 * from the simulator) is exactly what was sent. The first connect runs against the stand-in's
 * MQTT endpoint as a real process: the device connects with what was written to it, and the
 * stand-in's events log says whether it saw the thing connect, and why not.
 */
import 'reflect-metadata';
import { Pkcs10CertificateRequest } from '@peculiar/x509';
import {
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateCertificateFromCsrCommand,
  CreatePolicyCommand,
  CreateThingCommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NordicModemModel, SerialV1Model, startSimulator, type Simulator } from '../../devices/index.js';
import type { DriverName } from '../../src/config/schema.js';
import { isProvlineError } from '../../src/core/errors.js';
import {
  canConnect,
  canGenerateKey,
  canProvePossession,
  createDriver,
  openTransport,
  type Credentials,
  type DeviceDriver,
  type Transport,
} from '../../src/flash/index.js';
import { startPtyPair, startSer2net, type PtyPair, type Ser2net } from '../helpers/pty.js';
import { Slot, pemAsWritten, reportedHash } from '../helpers/written.js';
import {
  makeCa,
  makeDeviceKey,
  makeDeviceKeyWithCsr,
  newKek,
  wrapKey,
  type TestCa,
} from './flash-fixtures.js';
import {
  ALLOW_ALL,
  events,
  makeCa as makeJitpCa,
  makeLeaf,
  registerCa,
  startStandIn,
  uniq,
  waitEvent,
  type StandIn,
} from './mqtt-helpers.js';

type Link = 'pty' | 'ser2net';
const SEC_TAG = 16842753;
const TIMING = { commandTimeoutMs: 250, keygenTimeoutMs: 5_000 };

let dir: string;
let ca: TestCa;
let counter = 0;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'provline-flash-'));
  ca = await makeCa();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Rig {
  driver: DeviceDriver;
  sim: Simulator;
  transport: Transport;
  pair: PtyPair;
  bridge?: Ser2net;
  serial: string;
  kek: Buffer;
  /** A fresh driver on a fresh connection to the same device (a station coming back to it). */
  reconnect(): Promise<DeviceDriver>;
}

async function rig(
  driverName: DriverName,
  link: Link,
  options: { faults?: string; baudRate?: number; network?: boolean } = {},
): Promise<Rig> {
  const name = `d${++counter}`;
  const serial = driverName === 'nordic-at' ? `3526561${String(counter).padStart(8, '0')}` : `SN-${counter}`;
  const kek = newKek();
  const pair = await startPtyPair(dir, name);
  cleanups.push(() => pair.stop());
  const sim = await startSimulator({ driver: driverName, port: pair.device, serial, kek, ...options });
  cleanups.push(() => sim.close());
  // An unplugged USB device takes its tty with it: the pty pair goes away too.
  void sim.host.unplugged.then(() => pair.stop());
  const bridge = link === 'ser2net' ? await startSer2net(dir, name, pair.host) : undefined;
  if (bridge) cleanups.push(() => bridge.stop());
  const target = bridge?.url ?? pair.host;
  const connect = async (): Promise<[DeviceDriver, Transport]> => {
    const transport = await openTransport(target, { baudRate: 115_200 });
    cleanups.push(() => transport.close());
    return [
      createDriver({ driver: driverName, transport, settings: { secTag: SEC_TAG }, timing: TIMING }),
      transport,
    ];
  };
  const [driver, transport] = await connect();
  return {
    driver,
    sim,
    transport,
    pair,
    ...(bridge ? { bridge } : {}),
    serial,
    kek,
    reconnect: async () => {
      await driver.close();
      await transport.close();
      return (await connect())[0];
    },
  };
}

/** What each driver is given: plain key delivery for nordic-at, wrapped for serial-v1. */
async function credentialsFor(r: Rig): Promise<{ creds: Credentials; spkiDer: Buffer }> {
  const key = await makeDeviceKey();
  const certificatePem = await ca.issue(r.serial, key.spkiDer);
  const creds: Credentials =
    r.driver.name === 'nordic-at'
      ? { rootCaPem: ca.rootCaPem, certificatePem, privateKeyPem: key.privateKeyPem }
      : { rootCaPem: ca.rootCaPem, certificatePem, wrappedKey: wrapKey(r.kek, key.pkcs8Der) };
  return { creds, spkiDer: key.spkiDer };
}

/** Ground truth from the simulator itself: does the device hold exactly what was sent? */
function deviceHolds(r: Rig, creds: Credentials): boolean {
  const model = r.sim.model;
  if (model instanceof NordicModemModel) {
    const want: [number, string | undefined][] = [
      [0, creds.rootCaPem],
      [1, creds.certificatePem],
      [2, creds.privateKeyPem],
    ];
    return want.every(
      ([type, pem]) =>
        pem === undefined || model.store.get(`${SEC_TAG},${type}`)?.content === pemAsWritten(pem),
    );
  }
  if (model instanceof SerialV1Model) {
    const want: [number, Buffer | undefined][] = [
      [Slot.ROOT_CA, Buffer.from(pemAsWritten(creds.rootCaPem))],
      [Slot.CERTIFICATE, Buffer.from(pemAsWritten(creds.certificatePem))],
      [
        Slot.WRAPPED_KEY,
        typeof creds.wrappedKey === 'string' ? Buffer.from(creds.wrappedKey, 'base64') : undefined,
      ],
    ];
    return want.every(([slot, data]) => data === undefined || model.objects.get(slot)?.equals(data) === true);
  }
  return false;
}

/** Writes and classifies the outcome; asserts the never-falsely-verified rule on the way. */
async function writeOutcome(r: Rig, creds: Credentials): Promise<string> {
  try {
    const result = await r.driver.writeCredentials(creds);
    expect(result.verify.ok).toBe(true);
    expect(deviceHolds(r, creds)).toBe(true);
    return 'verified';
  } catch (e) {
    if (!isProvlineError(e)) throw e;
    return e.code;
  }
}

const DRIVERS: DriverName[] = ['nordic-at', 'provline-serial-v1'];
const LINKS: Link[] = ['pty', 'ser2net'];

describe.each(DRIVERS.flatMap((d) => LINKS.map((l) => [d, l] as const)))('%s over %s', (driverName, link) => {
  it('reads the identity the device reports', async () => {
    const r = await rig(driverName, link);
    const id = await r.driver.readIdentity();
    expect(id.serial).toBe(r.serial);
    expect(id.firmware).toBeTruthy();
  });

  it('writes credentials, verifies them from the device, and detects them on the next visit', async () => {
    const r = await rig(driverName, link);
    await r.driver.readIdentity();
    const { creds } = await credentialsFor(r);
    const before = await r.driver.verify(creds);
    expect(before.ok).toBe(false);
    expect(before.objects.every((o) => o.actual === null)).toBe(true);

    const result = await r.driver.writeCredentials(creds);
    expect(result).toMatchObject({ passes: 1, verify: { ok: true } });
    expect(result.verify.objects.map((o) => o.object).sort()).toEqual(
      driverName === 'nordic-at'
        ? ['certificate', 'privateKey', 'rootCa']
        : ['certificate', 'rootCa', 'wrappedKey'],
    );
    // The expected hash is over exactly the bytes sent: normalised CRLF PEM text.
    expect(result.verify.objects.find((o) => o.object === 'certificate')!.expected).toBe(
      reportedHash(pemAsWritten(creds.certificatePem)),
    );
    expect(deviceHolds(r, creds)).toBe(true);

    const again = await r.reconnect();
    const { sim } = r;
    const commandsBefore = sim.host.stats.commands;
    expect((await again.verify(creds)).ok).toBe(true);
    expect(sim.host.stats.commands - commandsBefore).toBeLessThanOrEqual(4); // read-back only, nothing rewritten
    const other = await credentialsFor(r);
    expect((await again.verify(other.creds)).ok).toBe(false);
  });

  it('generates a key on the device and returns a CSR that verifies', async () => {
    const r = await rig(driverName, link);
    const id = await r.driver.readIdentity();
    if (!canGenerateKey(r.driver)) throw new Error(`${driverName} should generate keys`);
    const generated = await r.driver.generateKey({ subject: `CN=${id.serial}` });
    const csr = new Pkcs10CertificateRequest(generated.csrDer);
    expect(await csr.verify()).toBe(true);
    expect(csr.subject).toBe(`CN=${id.serial}`);
    // Register (here: our CA signs it) and write the certificate back.
    const certificatePem = await ca.issueForCsr(generated.csrPem);
    const result = await r.driver.writeCredentials({ rootCaPem: ca.rootCaPem, certificatePem });
    expect(result.verify.ok).toBe(true);
    if (canProvePossession(r.driver))
      await r.driver.provePossession({ nonce: randomBytes(32), certificatePem });
  });

  const v1Only = driverName === 'provline-serial-v1' ? it : it.skip;
  const nordicOnly = driverName === 'nordic-at' ? it : it.skip;

  v1Only('proves possession of the unwrapped key, and fails for another key', async () => {
    const r = await rig(driverName, link);
    const { creds } = await credentialsFor(r);
    await r.driver.writeCredentials(creds);
    if (!canProvePossession(r.driver)) throw new Error('serial-v1 proves possession');
    const proof = await r.driver.provePossession({
      nonce: randomBytes(32),
      certificatePem: creds.certificatePem,
    });
    expect(proof.signature.length).toBeGreaterThan(60);
    const stranger = await credentialsFor(r);
    await expect(
      r.driver.provePossession({ nonce: randomBytes(32), certificatePem: stranger.creds.certificatePem }),
    ).rejects.toMatchObject({ code: 'DEVICE_POP_FAILED' });
  });

  v1Only('refuses a key wrapped under another KEK (DEVICE_UNWRAP_FAILED), never verified', async () => {
    const r = await rig(driverName, link);
    const key = await makeDeviceKey();
    const creds = {
      rootCaPem: ca.rootCaPem,
      certificatePem: await ca.issue(r.serial, key.spkiDer),
      wrappedKey: wrapKey(newKek(), key.pkcs8Der),
    };
    expect(await writeOutcome(r, creds)).toBe('DEVICE_UNWRAP_FAILED');
  });

  nordicOnly(
    'turns the modem offline before credential work (the simulator refuses with 518 otherwise)',
    async () => {
      const r = await rig(driverName, link);
      const model = r.sim.model as NordicModemModel;
      expect(model.cfun).toBe(1);
      const { creds } = await credentialsFor(r);
      await r.driver.writeCredentials(creds);
      expect(model.cfun).toBe(4);
    },
  );

  // fault spec → expected outcome per driver
  const FAULTS: [string, Record<DriverName, string>][] = [
    ['cme527', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['reject:*', { 'nordic-at': 'DEVICE_CERT_INVALID', 'provline-serial-v1': 'DEVICE_CERT_INVALID' }],
    ['hang@write', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['hang:*@write', { 'nordic-at': 'DEVICE_TIMEOUT', 'provline-serial-v1': 'DEVICE_TIMEOUT' }],
    ['drop@read', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['drop:*@read', { 'nordic-at': 'DEVICE_VERIFY_MISMATCH', 'provline-serial-v1': 'DEVICE_TIMEOUT' }],
    ['corrupt@write', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['corrupt:*@write', { 'nordic-at': 'DEVICE_VERIFY_MISMATCH', 'provline-serial-v1': 'DEVICE_BAD_FRAME' }],
    // A bit flipped in the device's answer: serial-v1's CRC catches it (the frame is dropped and
    // the request sent again), nordic-at's listed hash no longer matches (the object is rewritten).
    ['noise@read', { 'nordic-at': 'verified', 'provline-serial-v1': 'verified' }],
    ['noise:*@read', { 'nordic-at': 'DEVICE_VERIFY_MISMATCH', 'provline-serial-v1': 'DEVICE_TIMEOUT' }],
  ];
  it.each(FAULTS)('fault %s ends as expected, never falsely verified', async (spec, expected) => {
    const r = await rig(driverName, link, { faults: spec });
    const { creds } = await credentialsFor(r);
    const outcome = await writeOutcome(r, creds);
    expect(r.sim.host.faults.fired.length).toBeGreaterThan(0);
    expect(outcome).toBe(expected[driverName]);
  });

  it('an unplug in the middle of a write fails with DEVICE_DISCONNECTED, never verified', async () => {
    const r = await rig(driverName, link, { faults: 'unplug@write#2' });
    const { creds } = await credentialsFor(r);
    const outcome = await writeOutcome(r, creds);
    await r.sim.host.unplugged;
    expect(outcome).toBe('DEVICE_DISCONNECTED');
    expect(deviceHolds(r, creds)).toBe(false);
  });
});

describe('several devices at once', () => {
  it('four simulators on four ptys in parallel, both drivers, both links: all verified', async () => {
    const plan: [DriverName, Link][] = [
      ['nordic-at', 'pty'],
      ['provline-serial-v1', 'pty'],
      ['nordic-at', 'ser2net'],
      ['provline-serial-v1', 'ser2net'],
    ];
    const rigs = await Promise.all(plan.map(([d, l]) => rig(d, l)));
    const results = await Promise.all(
      rigs.map(async (r) => {
        const id = await r.driver.readIdentity();
        const { creds } = await credentialsFor(r);
        const w = await r.driver.writeCredentials(creds);
        return { serial: id.serial, ok: w.verify.ok && deviceHolds(r, creds) };
      }),
    );
    expect(results).toEqual(rigs.map((r) => ({ serial: r.serial, ok: true })));
  });
});

describe('line rate', () => {
  it('a simulator at 115200 8N1 takes at least the wire time for the bytes it moves', async () => {
    const r = await rig('provline-serial-v1', 'pty', { baudRate: 115_200 });
    const { creds } = await credentialsFor(r);
    const t0 = performance.now();
    await r.driver.writeCredentials(creds);
    const elapsed = performance.now() - t0;
    const { bytesIn, bytesOut } = r.sim.host.stats;
    const wireMs = ((bytesIn + bytesOut) / 11_520) * 1000;
    expect(wireMs).toBeGreaterThan(150); // ~2 KB each way: the check below is meaningful
    expect(elapsed).toBeGreaterThanOrEqual(wireMs * 0.95);
    expect(elapsed).toBeLessThan(wireMs * 3 + 500);
  });
});

/** A JITP template: the thing is the certificate's CN, and may connect as itself. */
const JITP_TEMPLATE = JSON.stringify({
  Parameters: {
    'AWS::IoT::Certificate::CommonName': { Type: 'String' },
    'AWS::IoT::Certificate::Id': { Type: 'String' },
  },
  Resources: {
    thing: {
      Type: 'AWS::IoT::Thing',
      Properties: { ThingName: { Ref: 'AWS::IoT::Certificate::CommonName' } },
    },
    certificate: {
      Type: 'AWS::IoT::Certificate',
      Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'ACTIVE' },
    },
    policy: {
      Type: 'AWS::IoT::Policy',
      Properties: {
        PolicyDocument: JSON.stringify({
          Version: '2012-10-17',
          Statement: [
            {
              Effect: 'Allow',
              Action: 'iot:Connect',
              Resource: 'arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}',
            },
          ],
        }),
      },
    },
  },
});

describe.each(DRIVERS)('%s: the first connect, against the stand-in', (driverName) => {
  let standIn: StandIn;
  let rootCaPem: string;
  beforeAll(async () => {
    standIn = await startStandIn(mkdtempSync(join(dir, 'stand-in-')));
    rootCaPem = readFileSync(standIn.rootCaFile, 'utf8');
  });
  afterAll(() => standIn?.stop());

  /** A thing with a certificate the stand-in issued for the device's key, and a policy that lets it connect. */
  async function registered(
    r: Rig,
  ): Promise<{ creds: Credentials; thingName: string; certificateId: string }> {
    const thingName = uniq('thing');
    const key = await makeDeviceKeyWithCsr(thingName);
    const c = await standIn.iot.send(
      new CreateCertificateFromCsrCommand({ certificateSigningRequest: key.csrPem, setAsActive: true }),
    );
    const policyName = uniq('connect');
    await standIn.iot.send(
      new CreatePolicyCommand({ policyName, policyDocument: JSON.stringify(ALLOW_ALL) }),
    );
    await standIn.iot.send(new AttachPolicyCommand({ policyName, target: c.certificateArn! }));
    await standIn.iot.send(new CreateThingCommand({ thingName }));
    await standIn.iot.send(new AttachThingPrincipalCommand({ thingName, principal: c.certificateArn! }));
    const base = { rootCaPem, certificatePem: c.certificatePem! };
    const creds: Credentials =
      r.driver.name === 'nordic-at'
        ? { ...base, privateKeyPem: key.privateKeyPem }
        : { ...base, wrappedKey: wrapKey(r.kek, key.pkcs8Der) };
    return { creds, thingName, certificateId: c.certificateId! };
  }

  /** A first connect that must fail with DEVICE_CONNECT_FAILED: the error and the attempts it reports. */
  async function connectFailure(
    r: Rig,
    clientId: string,
  ): Promise<{ failure: Error; attempts: { outcome: string }[] }> {
    if (!canConnect(r.driver)) throw new Error(`${driverName} should make a first connect`);
    const failure = await r.driver.firstConnect({ host: standIn.host, port: standIn.port, clientId }).then(
      () => new Error('the first connect succeeded'),
      (e: unknown) => e as Error,
    );
    expect(failure).toMatchObject({ code: 'DEVICE_CONNECT_FAILED' });
    return {
      failure,
      attempts: (failure as unknown as { details: { attempts: { outcome: string }[] } }).details.attempts,
    };
  }

  it('connects as its thing with the credentials just written; the stand-in saw that thing connect', async () => {
    const r = await rig(driverName, 'pty');
    const { creds, thingName, certificateId } = await registered(r);
    await r.driver.writeCredentials(creds);
    if (!canConnect(r.driver)) throw new Error(`${driverName} should make a first connect`);
    const result = await r.driver.firstConnect({
      host: standIn.host,
      port: standIn.port,
      clientId: thingName,
    });
    expect(result.attempts).toEqual([{ outcome: 'connack', code: 0 }]);
    const seen = await waitEvent(standIn, (e) => e.kind === 'connect.accepted' && e.clientId === thingName);
    expect(seen.certificateId).toBe(certificateId);
  });

  it('a certificate made INACTIVE before the visit: the device reports each hang-up, DEVICE_CONNECT_FAILED, and the stand-in logged why', async () => {
    const r = await rig(driverName, 'pty');
    const { creds, thingName, certificateId } = await registered(r);
    await r.driver.writeCredentials(creds);
    await standIn.iot.send(new UpdateCertificateCommand({ certificateId, newStatus: 'INACTIVE' }));
    const { failure, attempts } = await connectFailure(r, thingName);
    // AWS hangs up without CONNACK; the device tries again, a bounded number of times.
    expect(attempts.map((a) => a.outcome)).toEqual(['closed', 'closed', 'closed']);
    expect(failure.message).toContain('closed without CONNACK');
    const refused = (await events(standIn, { clientId: thingName })).filter(
      (e) => e.kind === 'connect.refused',
    );
    expect(refused).toHaveLength(3);
    expect(refused[0]!.reason).toContain('INACTIVE');
    expect(refused[0]!.certificateId).toBe(certificateId);
  });

  it('a server the device does not trust is a TLS failure, not retried', async () => {
    const r = await rig(driverName, 'pty');
    const { creds, thingName } = await registered(r);
    // The device trusts another root than the one that signed the endpoint's certificate.
    await r.driver.writeCredentials({ ...creds, rootCaPem: ca.rootCaPem });
    const { attempts } = await connectFailure(r, thingName);
    expect(attempts).toHaveLength(1);
    // serial-v1 firmware tells a TLS failure apart; the modem only answers ERROR to AT#XMQTTCON.
    expect(attempts[0]!.outcome).toBe(driverName === 'nordic-at' ? 'network' : 'tls');
  });

  it('just-in-time provisioning: the stand-in provisions the thing and hangs up on the first connect; the device tries again and connects', async () => {
    const r = await rig(driverName, 'pty');
    // A CA of the device maker's, registered with a JITP template: thing named by the CN,
    // certificate ACTIVE, a policy letting the thing connect as itself.
    const jitpCa = makeJitpCa(uniq('jitp-ca'));
    await registerCa(standIn, jitpCa, { templateBody: JITP_TEMPLATE });
    const thingName = uniq('jitp-thing');
    const leaf = makeLeaf(jitpCa, [['CN', thingName]], mkdtempSync(join(dir, 'jitp-')));
    const pkcs8Der = leaf.key!.export({ type: 'pkcs8', format: 'der' });
    const base = { rootCaPem, certificatePem: leaf.certPem };
    await r.driver.writeCredentials(
      r.driver.name === 'nordic-at'
        ? { ...base, privateKeyPem: leaf.keyPem }
        : { ...base, wrappedKey: wrapKey(r.kek, pkcs8Der) },
    );
    if (!canConnect(r.driver)) throw new Error(`${driverName} should make a first connect`);
    const result = await r.driver.firstConnect({
      host: standIn.host,
      port: standIn.port,
      clientId: thingName,
    });
    expect(result.attempts.map((a) => a.outcome)).toEqual(['closed', 'connack']);
    expect(result.attempts[1]).toEqual({ outcome: 'connack', code: 0 });
    await waitEvent(standIn, (e) => e.kind === 'jitp.provisioned' && e.certificateId === leaf.certificateId);
    await waitEvent(standIn, (e) => e.kind === 'connect.accepted' && e.clientId === thingName);
  });

  const v1Only = driverName === 'provline-serial-v1' ? it : it.skip;
  v1Only(
    'firmware without a network link says so in its capabilities: the driver never sends CONNECT',
    async () => {
      const r = await rig(driverName, 'pty', { network: false });
      if (!canConnect(r.driver)) throw new Error('serial-v1 has the ability');
      await expect(
        r.driver.firstConnect({ host: standIn.host, port: standIn.port, clientId: 'nobody' }),
      ).rejects.toMatchObject({ code: 'DEVICE_UNSUPPORTED_COMMAND' });
      expect(r.sim.host.stats.commands).toBe(1); // HELLO only
    },
  );
});
