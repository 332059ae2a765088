/**
 * Shared by the mqtt-*.test.ts files: the stand-in as a real process with its MQTT endpoint,
 * devices made through the control plane, the official device SDK's MQTT 5 and 3.1.1 clients,
 * Debian's mosquitto clients, a CA made here for JITR/JITP, and the reasons log.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import {
  X509Certificate,
  createHash,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  type KeyObject,
} from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateKeysAndCertificateCommand,
  CreatePolicyCommand,
  CreateThingCommand,
  GetRegistrationCodeCommand,
  RegisterCACertificateCommand,
  type IoTClient,
} from '@aws-sdk/client-iot';
import { iot, mqtt, mqtt5 } from 'aws-iot-device-sdk-v2';
import {
  bitString,
  boolean,
  explicit,
  octetString as octets,
  oid,
  printable,
  seq,
  set,
  time,
  tlv,
  toPem,
  unsignedInteger as uint,
  utf8,
} from '../../src/core/der.js';
import type { LoggedEvent } from '../../emulator/mqtt/events.js';

const boolTrue = boolean(true);
import { ROOT } from '../helpers/cli.js';
import { KEY, SECRET, iotClient } from './emulator-helpers.js';

export interface Ready {
  iotUrl: string;
  s3Url: string;
  mqttEndpoint: string;
  rootCaFile: string;
}

export interface StandIn extends Ready {
  child: ChildProcess;
  host: string;
  port: number;
  iot: IoTClient;
  stop(): Promise<void>;
}

/** Starts `node dist/workers/emulator.js` and waits for its ready line. */
export function startStandIn(stateDir: string, extra: string[] = []): Promise<StandIn> {
  const child = spawn(
    process.execPath,
    [join(ROOT, 'dist/workers/emulator.js'), '--state-dir', stateDir, ...extra],
    {
      env: { ...process.env, AWS_ACCESS_KEY_ID: KEY, AWS_SECRET_ACCESS_KEY: SECRET },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    let out = '';
    child.once('exit', (code) => reject(new Error(`the stand-in exited with ${code}: ${err}`)));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const ready = JSON.parse(out.slice(0, nl)) as Ready;
      child.removeAllListeners('exit');
      const [host, port] = ready.mqttEndpoint.split(':');
      resolve({
        ...ready,
        child,
        host: host!,
        port: Number(port),
        iot: iotClient(ready.iotUrl),
        stop: () =>
          new Promise<void>((r) => {
            if (child.exitCode !== null || child.signalCode !== null) return r();
            child.once('exit', () => r());
            child.kill('SIGTERM');
          }),
      });
    });
  });
}

export interface Device {
  certificateId: string;
  certificateArn: string;
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
}

let counter = 0;
export const uniq = (prefix: string): string =>
  `${prefix}-${process.pid}-${++counter}-${randomBytes(3).toString('hex')}`;

/** A CreateKeysAndCertificate device with `policy` attached (none when undefined), files in `dir`. */
export async function makeDevice(
  s: StandIn,
  dir: string,
  policy: object | undefined,
  opts: { active?: boolean; thingName?: string } = {},
): Promise<Device> {
  const c = await s.iot.send(new CreateKeysAndCertificateCommand({ setAsActive: opts.active ?? true }));
  const name = uniq('dev');
  const certFile = join(dir, `${name}.cert.pem`);
  const keyFile = join(dir, `${name}.key.pem`);
  writeFileSync(certFile, c.certificatePem!);
  writeFileSync(keyFile, c.keyPair!.PrivateKey!, { mode: 0o600 });
  if (policy) {
    const policyName = uniq('policy');
    await s.iot.send(new CreatePolicyCommand({ policyName, policyDocument: JSON.stringify(policy) }));
    await s.iot.send(new AttachPolicyCommand({ policyName, target: c.certificateArn! }));
  }
  if (opts.thingName) {
    await s.iot.send(new CreateThingCommand({ thingName: opts.thingName }));
    await s.iot.send(
      new AttachThingPrincipalCommand({ thingName: opts.thingName, principal: c.certificateArn! }),
    );
  }
  return {
    certificateId: c.certificateId!,
    certificateArn: c.certificateArn!,
    certFile,
    keyFile,
    certPem: c.certificatePem!,
    keyPem: c.keyPair!.PrivateKey!,
  };
}

export const ALLOW_ALL = {
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Action: 'iot:*', Resource: '*' }],
};

/** A policy allowing everything the brief's clients need on `prefix/*` topics, connect as any id. */
export function topicPolicy(prefix: string): object {
  return {
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Action: 'iot:Connect', Resource: 'arn:aws:iot:us-east-1:123456789012:client/*' },
      {
        Effect: 'Allow',
        Action: ['iot:Publish', 'iot:Receive'],
        Resource: `arn:aws:iot:us-east-1:123456789012:topic/${prefix}/*`,
      },
      {
        Effect: 'Allow',
        Action: 'iot:Subscribe',
        Resource: `arn:aws:iot:us-east-1:123456789012:topicfilter/${prefix}/*`,
      },
    ],
  };
}

// ---- the official device SDK ----

export interface Sdk5 {
  client: mqtt5.Mqtt5Client;
  messages: Array<{ topic: string; payload: string }>;
  /** Resolves with the CONNACK, rejects with the connection failure. */
  connected: Promise<mqtt5.ConnackPacket | undefined>;
  /** Resolves at the first disconnection (its error code, if any). */
  disconnected: Promise<string>;
  waitMessage(topic: string, budgetMs?: number): Promise<string>;
  /** Stops the client; with `graceful` (default) it sends DISCONNECT first. */
  stop(graceful?: boolean): Promise<void>;
}

/** The SDK's MQTT 5 client (mTLS from files; ALPN x-amzn-mqtt-ca as the SDK sets it). */
export function sdk5(
  s: StandIn,
  dev: Pick<Device, 'certFile' | 'keyFile'> | iot.AwsIotMqtt5ClientConfigBuilder,
  clientId: string,
): Sdk5 {
  const builder =
    dev instanceof iot.AwsIotMqtt5ClientConfigBuilder
      ? dev
      : iot.AwsIotMqtt5ClientConfigBuilder.newDirectMqttBuilderWithMtlsFromPath(
          s.host,
          dev.certFile,
          dev.keyFile,
        );
  builder
    .withPort(s.port)
    .withCertificateAuthorityFromPath(undefined, s.rootCaFile)
    .withConnectProperties({ clientId, keepAliveIntervalSeconds: 60 })
    .withMinReconnectDelayMs(60_000)
    .withMaxReconnectDelayMs(60_000);
  const client = new mqtt5.Mqtt5Client(builder.build());
  const messages: Array<{ topic: string; payload: string }> = [];
  const waiters: Array<() => void> = [];
  client.on('messageReceived', (e) => {
    const p = e.message.payload;
    messages.push({
      topic: e.message.topicName,
      payload: p === undefined ? '' : Buffer.from(p as ArrayBuffer).toString('utf8'),
    });
    for (const w of waiters.splice(0)) w();
  });
  const connected = new Promise<mqtt5.ConnackPacket | undefined>((resolve, reject) => {
    client.once('connectionSuccess', (e) => resolve(e.connack));
    client.once('connectionFailure', (e) =>
      reject(Object.assign(new Error(String(e.error)), { connack: e.connack })),
    );
  });
  connected.catch(() => undefined);
  const disconnected = new Promise<string>((resolve) => {
    client.once('disconnection', (e) =>
      resolve(`${e.error ? String(e.error) : ''} ${e.disconnect?.reasonCode ?? ''}`.trim()),
    );
  });
  client.start();
  return {
    client,
    messages,
    connected,
    disconnected,
    waitMessage: (topic, budgetMs = 10_000) =>
      new Promise<string>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no message on ${topic} within ${budgetMs} ms`)),
          budgetMs,
        );
        const check = (): void => {
          const m = messages.find((x) => x.topic === topic);
          if (m) {
            clearTimeout(timer);
            resolve(m.payload);
          } else waiters.push(check);
        };
        check();
      }),
    stop: async (graceful = true) => {
      const stopped = new Promise<void>((r) => client.once('stopped', () => r()));
      client.stop(graceful ? { reasonCode: mqtt5.DisconnectReasonCode.NormalDisconnection } : undefined);
      await stopped;
      client.close();
    },
  };
}

/** The SDK's MQTT 3.1.1 connection. */
export function sdk311(
  s: StandIn,
  dev: Pick<Device, 'certFile' | 'keyFile'> | iot.AwsIotMqttConnectionConfigBuilder,
  clientId: string,
): mqtt.MqttClientConnection {
  const builder =
    dev instanceof iot.AwsIotMqttConnectionConfigBuilder
      ? dev
      : iot.AwsIotMqttConnectionConfigBuilder.new_mtls_builder_from_path(dev.certFile, dev.keyFile);
  builder
    .with_endpoint(s.host)
    .with_port(s.port)
    .with_certificate_authority_from_path(undefined, s.rootCaFile)
    .with_client_id(clientId)
    .with_clean_session(true)
    .with_keep_alive_seconds(60)
    .with_reconnect_min_sec(60)
    .with_reconnect_max_sec(60);
  return new mqtt.MqttClient().new_connection(builder.build());
}

// ---- mosquitto ----

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** mosquitto_pub / mosquitto_sub against the stand-in with the device's files. */
export function mosquitto(
  tool: 'mosquitto_pub' | 'mosquitto_sub' | 'mosquitto_rr',
  s: StandIn,
  dev: Pick<Device, 'certFile' | 'keyFile'>,
  args: string[],
  timeoutMs = 15_000,
): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      `/usr/bin/${tool}`,
      [
        '-h',
        s.host,
        '-p',
        String(s.port),
        '--cafile',
        s.rootCaFile,
        '--cert',
        dev.certFile,
        '--key',
        dev.keyFile,
        ...args,
      ],
      { timeout: timeoutMs },
      (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

// ---- the reasons log ----

export async function events(
  s: StandIn,
  q: { since?: number; clientId?: string } = {},
): Promise<LoggedEvent[]> {
  const params = new URLSearchParams();
  if (q.since !== undefined) params.set('since', String(q.since));
  if (q.clientId !== undefined) params.set('clientId', q.clientId);
  const res = await fetch(`${s.iotUrl}/_emulator/events?${params.toString()}`);
  return ((await res.json()) as { events: LoggedEvent[] }).events;
}

/** Waits (per-step budget) until an event matching `pred` is logged. */
export async function waitEvent(
  s: StandIn,
  pred: (e: LoggedEvent) => boolean,
  budgetMs = 10_000,
): Promise<LoggedEvent> {
  const deadline = Date.now() + budgetMs;
  for (;;) {
    const hit = (await events(s)).find(pred);
    if (hit) return hit;
    if (Date.now() > deadline) {
      const all = await events(s);
      throw new Error(
        `no matching event within ${budgetMs} ms; log tail: ${JSON.stringify(all.slice(-8), null, 1)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function setClock(s: StandIn, offsetSeconds: number): Promise<void> {
  const res = await fetch(`${s.iotUrl}/_emulator/clock`, {
    method: 'POST',
    body: JSON.stringify({ offsetSeconds }),
  });
  if (!res.ok) throw new Error(await res.text());
}

// ---- a CA of our own (JITR / JITP) ----

const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

export interface TestCa {
  key: KeyObject;
  cert: X509Certificate;
  pem: string;
  name: Buffer;
}

function keyId(spki: Buffer): Buffer {
  return createHash('sha1').update(spki).digest();
}

/** An RDN sequence from [oid, value] pairs (PrintableString for C, UTF8 otherwise). */
export function dn(attrs: Array<[string, string]>): Buffer {
  const OIDS: Record<string, string> = {
    C: '2.5.4.6',
    ST: '2.5.4.8',
    L: '2.5.4.7',
    O: '2.5.4.10',
    OU: '2.5.4.11',
    CN: '2.5.4.3',
    serialNumber: '2.5.4.5',
    dnQualifier: '2.5.4.46',
  };
  return seq(
    ...attrs.map(([k, v]) =>
      set(
        seq(oid(OIDS[k]!), k === 'C' || k === 'serialNumber' || k === 'dnQualifier' ? printable(v) : utf8(v)),
      ),
    ),
  );
}

function certDer(opts: {
  issuer: Buffer;
  subject: Buffer;
  spki: Buffer;
  signer: KeyObject;
  ca: boolean;
  notBefore?: Date;
  notAfter?: Date;
}): Buffer {
  const exts = opts.ca
    ? [
        seq(oid('2.5.29.19'), boolTrue, octets(seq(boolTrue))),
        seq(oid('2.5.29.15'), boolTrue, octets(Buffer.from([0x03, 0x02, 0x01, 0x06]))),
        seq(oid('2.5.29.14'), octets(octets(keyId(opts.spki)))),
      ]
    : [seq(oid('2.5.29.19'), boolTrue, octets(seq()))];
  const tbs = seq(
    explicit(0, tlv(0x02, Buffer.from([2]))),
    uint(randomBytes(16)),
    ECDSA_SHA256,
    opts.issuer,
    seq(
      time(opts.notBefore ?? new Date(Date.now() - 3_600_000)),
      time(opts.notAfter ?? new Date(Date.now() + 365 * 86_400_000)),
    ),
    opts.subject,
    opts.spki,
    explicit(3, seq(...exts)),
  );
  return seq(tbs, ECDSA_SHA256, bitString(sign('sha256', tbs, opts.signer)));
}

export function makeCa(cn: string): TestCa {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const name = dn([
    ['O', 'provline tests'],
    ['CN', cn],
  ]);
  const der = certDer({
    issuer: name,
    subject: name,
    spki: publicKey.export({ format: 'der', type: 'spki' }),
    signer: privateKey,
    ca: true,
  });
  const pem = toPem(der, 'CERTIFICATE');
  return { key: privateKey, cert: new X509Certificate(der), pem, name };
}

/** A leaf for `spki` (or a fresh P-256 key) signed by `ca`; PEM files written to `dir`. */
export function makeLeaf(
  ca: TestCa,
  subject: Array<[string, string]>,
  dir: string,
  opts: { publicKeyPem?: string; notBefore?: Date; notAfter?: Date } = {},
): Device & { key?: KeyObject } {
  let key: KeyObject | undefined;
  let spki: Buffer;
  if (opts.publicKeyPem) spki = createPublicKey(opts.publicKeyPem).export({ format: 'der', type: 'spki' });
  else {
    key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
  }
  const der = certDer({
    issuer: ca.name,
    subject: dn(subject),
    spki,
    signer: ca.key,
    ca: false,
    ...(opts.notBefore ? { notBefore: opts.notBefore } : {}),
    ...(opts.notAfter ? { notAfter: opts.notAfter } : {}),
  });
  const certPem = toPem(der, 'CERTIFICATE');
  const name = uniq('leaf');
  const certFile = join(dir, `${name}.cert.pem`);
  const keyFile = join(dir, `${name}.key.pem`);
  writeFileSync(certFile, certPem);
  const keyPem = key ? (key.export({ format: 'pem', type: 'pkcs8' }) as string) : '';
  if (key) writeFileSync(keyFile, keyPem, { mode: 0o600 });
  const certificateId = createHash('sha256').update(der).digest('hex');
  return {
    certificateId,
    certificateArn: `arn:aws:iot:us-east-1:123456789012:cert/${certificateId}`,
    certFile,
    keyFile,
    certPem,
    keyPem,
    ...(key ? { key } : {}),
  };
}

/** Registers `ca` (verification certificate signed here), ACTIVE, with auto-registration on. */
export async function registerCa(
  s: StandIn,
  ca: TestCa,
  opts: { templateBody?: string; templateName?: string; autoRegistration?: boolean } = {},
): Promise<string> {
  const { registrationCode } = await s.iot.send(new GetRegistrationCodeCommand({}));
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const verification = toPem(
    certDer({
      issuer: ca.name,
      subject: dn([['CN', registrationCode!]]),
      spki: publicKey.export({ format: 'der', type: 'spki' }),
      signer: ca.key,
      ca: false,
    }),
    'CERTIFICATE',
  );
  const out = await s.iot.send(
    new RegisterCACertificateCommand({
      caCertificate: ca.pem,
      verificationCertificate: verification,
      setAsActive: true,
      allowAutoRegistration: opts.autoRegistration ?? true,
      ...(opts.templateBody || opts.templateName
        ? {
            registrationConfig: {
              ...(opts.templateBody
                ? { templateBody: opts.templateBody, roleArn: 'arn:aws:iam::123456789012:role/provline-jitp' }
                : {}),
              ...(opts.templateName ? { templateName: opts.templateName } : {}),
            },
          }
        : {}),
    }),
  );
  return out.certificateId!;
}
