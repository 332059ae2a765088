/**
 * JITR activation end to end, as an operator runs it: the factory CA made in SoftHSM2 and
 * registered with the stand-in (auto-registration, no template) by `provline ca`, device
 * certificates signed by it in the HSM, `provline jitr-activator --profile <p>` as a process
 * (its topic rule on the CA's registered topic, its ARN mapped in the stand-in), and devices
 * speaking through the official device SDK: the first connect is closed, the activator
 * activates, the device's own retry connects as its thing. A certificate of another CA (also
 * registered with auto-registration, its events routed to the activator) is refused and the
 * reason logged; a replayed event is a no-op; SIGTERM stops the activator cleanly; and the
 * Lambda package, unzipped where only @aws-sdk/client-iot is installed, activates a device.
 */
import { spawn, execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { X509Certificate, createHash, generateKeyPairSync } from 'node:crypto';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  CreateTopicRuleCommand,
  DescribeCertificateCommand,
  DescribeThingCommand,
  ListAttachedPoliciesCommand,
  ListThingPrincipalsCommand,
} from '@aws-sdk/client-iot';
import { iot, mqtt5 } from 'aws-iot-device-sdk-v2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDeviceCertificate } from '../../src/hsm/ca.js';
import { openHsm } from '../../src/hsm/hsm.js';
import { stackPaths } from '../../src/stack/home.js';
import { SOFTHSM_MODULE, hsmUp } from '../../src/stack/softhsm.js';
import { BIN, ROOT, json, runCli, type CliResult } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';
import { KEY, SECRET } from './emulator-helpers.js';
import {
  events,
  makeCa,
  makeLeaf,
  registerCa,
  sdk5,
  startStandIn,
  uniq,
  waitEvent,
  type StandIn,
} from './mqtt-helpers.js';

const STEP_MS = 30_000;
const POLICY = {
  Version: '2012-10-17',
  Statement: [
    {
      Effect: 'Allow',
      Action: 'iot:Connect',
      Resource: 'arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}',
    },
  ],
};

/** The event AWS IoT publishes on $aws/events/certificates/registered/<caCertificateId>. */
const registeredEvent = (certificateId: string, caCertificateId: string): object => ({
  certificateId,
  caCertificateId,
  timestamp: Date.now(),
  certificateStatus: 'PENDING_ACTIVATION',
  awsAccountId: '123456789012',
  certificateRegistrationTimestamp: null,
});

interface Line {
  msg: string;
  action?: string;
  certificateId?: string;
  code?: string;
  reason?: string;
  thingName?: string;
  url?: string;
  functionArn?: string;
  rules?: Array<{ ruleName: string; topic: string; outcome: string }>;
  unmapped?: boolean;
  steps?: string[];
}

/** `provline jitr-activator` as a process; its stdout JSON lines, waited on one by one. */
class Activator {
  readonly lines: Line[] = [];
  stderr = '';
  private readonly waiters: Array<() => void> = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcessWithoutNullStreams) {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.lines.push(JSON.parse(buf.slice(0, nl)) as Line);
        buf = buf.slice(nl + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    child.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((r) =>
      child.once('exit', (code) => (r(code), this.waiters.splice(0).forEach((w) => w()))),
    );
  }

  wait(pred: (l: Line) => boolean, what: string, budgetMs = STEP_MS): Promise<Line> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `activator: no ${what} within ${budgetMs} ms\nlines: ${JSON.stringify(this.lines)}\nstderr: ${this.stderr}`,
            ),
          ),
        budgetMs,
      );
      const check = (): void => {
        const hit = this.lines.find(pred);
        if (hit) {
          clearTimeout(timer);
          resolve(hit);
        } else if (this.child.exitCode !== null) {
          clearTimeout(timer);
          reject(new Error(`activator exited ${this.child.exitCode} before ${what}: ${this.stderr}`));
        } else this.waiters.push(check);
      };
      check();
    });
  }

  decision(certificateId: string, action: string): Promise<Line> {
    return this.wait(
      (l) => l.msg === 'jitr decision' && l.certificateId === certificateId && l.action === action,
      `${action} of ${certificateId}`,
    );
  }

  async stop(): Promise<number | null> {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }
}

describe('provline jitr-activator against SoftHSM2 and the stand-in', () => {
  let dir: string;
  let home: string;
  let s: StandIn;
  let activator: Activator;
  let ready: Line;
  const devices = new Map<string, { certFile: string; keyFile: string; certificateId: string }>();
  const caPem: Record<string, string> = {};
  const caId: Record<string, string> = {};
  const env = (): NodeJS.ProcessEnv => ({
    PROVLINE_HOME: home,
    PROVLINE_CONFIG: join(dir, 'provline.config.yaml'),
    AWS_ACCESS_KEY_ID: KEY,
    AWS_SECRET_ACCESS_KEY: SECRET,
    AWS_PROFILE: undefined,
    SOFTHSM2_CONF: undefined,
    PROVLINE_HSM_PIN: undefined,
  });
  const ok = (r: CliResult): CliResult => {
    expect(r.code, r.stderr + r.stdout).toBe(0);
    return r;
  };
  const cli = (args: string[]): Promise<CliResult> => runCli(args, { env: env() });
  const startActivator = (args: string[]): Activator =>
    new Activator(
      spawn(process.execPath, [BIN, 'jitr-activator', ...args], {
        cwd: ROOT,
        env: { ...process.env, PROVLINE_LOG_LEVEL: 'warn', ...env() },
        stdio: ['pipe', 'pipe', 'pipe'],
      }),
    );

  /** Device key (software, a file for the SDK) and certificate signed by the profile's CA in the HSM. */
  async function signDevices(label: string, thingNames: string[]): Promise<void> {
    const paths = stackPaths(home);
    const h = await openHsm({
      module: SOFTHSM_MODULE,
      token: 'provline',
      pinFile: paths.userPinFile,
      localToken: true,
      pinEnv: 'PROVLINE_TEST_UNSET_PIN',
      sessions: 1,
      softhsm2Conf: paths.softhsm2Conf,
    });
    try {
      for (const thingName of thingNames) {
        const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
        const pem = await signDeviceCertificate(h, {
          ca: { label, deviceValidityDays: 365 },
          spki: publicKey.export({ format: 'der', type: 'spki' }),
          subject: { O: 'acme-sensors', CN: thingName },
          now: new Date(),
        });
        const certFile = join(dir, `${thingName}.pem`);
        const keyFile = join(dir, `${thingName}.key`);
        writeFileSync(certFile, `${pem}\n`);
        writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
        devices.set(thingName, {
          certFile,
          keyFile,
          certificateId: createHash('sha256').update(new X509Certificate(pem).raw).digest('hex'),
        });
      }
    } finally {
      h.close();
    }
  }

  const serial = (): string => uniq('s').replace(/^s-/, '');

  beforeAll(async () => {
    dir = tempDir('provline-jitr-');
    home = join(dir, 'home');
    hsmUp(stackPaths(home));
    s = await startStandIn(join(dir, 'state'));
    writeFileSync(join(dir, 'template.json'), '{"Resources": {}}');
    writeFileSync(join(dir, 'policy.json'), JSON.stringify(POLICY));
    const profile = (label: string): object => ({
      template: 'template.json',
      policy: 'policy.json',
      policyName: `${label}-device`,
      thingName: 'sensor-{serial}',
      attributes: { serial: '{serial}', lot: 'lot-{lot}' },
      thingType: 'jitr-sensor',
      csrSubject: { O: 'acme-sensors' },
      ca: { label, pathLen: 0, subject: { O: 'acme-sensors', CN: `${label} factory CA` } },
    });
    writeFileSync(
      join(dir, 'provline.config.yaml'),
      JSON.stringify({
        aws: { endpoint: s.iotUrl, s3Endpoint: s.s3Url },
        profiles: {
          jitr: profile('jitr-ca'),
          lambda: profile('lambda-ca'),
          flat: { ...profile('flat-ca'), thingName: 'sensor' },
          noca: { ...profile('noca-ca'), ca: undefined },
        },
      }),
    );
    for (const p of ['jitr', 'lambda']) {
      const made = json<{ certificateId: string; certificatePem: string }>(
        ok(await cli(['ca', 'create', '--profile', p, '--json'])),
      );
      caPem[p] = made.certificatePem;
      caId[p] = made.certificateId;
      const reg = json<{ autoRegistrationStatus: string; registrationConfig?: unknown }>(
        ok(await cli(['ca', 'register', '--profile', p, '--json'])),
      );
      expect(reg.autoRegistrationStatus).toBe('ENABLE');
      expect(reg.registrationConfig).toBeUndefined(); // JITR: no template
    }
    writeFileSync(join(dir, 'lambda-ca.pem'), caPem.lambda!);
    // Signed before any activator runs: one process uses the token at a time.
    await signDevices(
      'jitr-ca',
      ['sensor-e2e', 'sensor-replay'].map((n) => `${n}-${process.pid}`),
    );
    await signDevices('lambda-ca', [`sensor-lambda-${process.pid}`]);

    activator = startActivator(['--profile', 'jitr']);
    ready = await activator.wait((l) => l.msg === 'jitr activator ready', 'ready line', 60_000);
  }, 240_000);

  afterAll(async () => {
    await activator?.stop();
    await s?.stop();
    await removeHome(home);
  });

  it("start-up: the topic rule on the CA's registered topic exists with the activator's lambda action, its ARN is mapped, the left-out attribute is named", async () => {
    expect(ready.rules).toEqual([
      {
        ruleName: `provline_jitr_jitr_${caId.jitr!.slice(0, 12)}`,
        topic: `$aws/events/certificates/registered/${caId.jitr}`,
        outcome: 'created',
      },
    ]);
    expect(ready.functionArn).toBe('arn:aws:lambda:us-east-1:123456789012:function:provline-jitr-jitr');
    const map = (await (await fetch(`${s.iotUrl}/_emulator/lambdas`)).json()) as Record<string, string>;
    expect(map[ready.functionArn!]).toBe(ready.url);
    expect(activator.stderr).toContain(
      'attributes lot of profile jitr use CSV columns the certificate does not carry',
    );
  });

  it("the device's first connect is closed, the activator activates, the device's own retry connects as its thing", async () => {
    const thingName = `sensor-e2e-${process.pid}`;
    const dev = devices.get(thingName)!;
    const builder = iot.AwsIotMqtt5ClientConfigBuilder.newDirectMqttBuilderWithMtlsFromPath(
      s.host,
      dev.certFile,
      dev.keyFile,
    )
      .withPort(s.port)
      .withCertificateAuthorityFromPath(undefined, s.rootCaFile)
      .withConnectProperties({ clientId: thingName, keepAliveIntervalSeconds: 60 })
      .withMinReconnectDelayMs(500)
      .withMaxReconnectDelayMs(2000);
    const client = new mqtt5.Mqtt5Client(builder.build());
    const failed = new Promise<void>((r) => client.once('connectionFailure', () => r()));
    const connected = new Promise<mqtt5.ConnackPacket | undefined>((r) =>
      client.once('connectionSuccess', (e) => r(e.connack)),
    );
    client.start();
    try {
      await failed;
      const closed = await waitEvent(
        s,
        (e) => e.kind === 'jitr.registered' && e.certificateId === dev.certificateId,
      );
      expect(closed.reason).toContain('PENDING_ACTIVATION');
      const decision = await activator.decision(dev.certificateId, 'activate');
      expect(decision).toMatchObject({ thingName, profile: 'jitr' });
      expect(decision.steps).toEqual([
        `CreateThing ${thingName}`,
        'AttachPolicy jitr-ca-device',
        `AttachThingPrincipal ${thingName}`,
        'UpdateCertificate ACTIVE',
      ]);
      const connack = await Promise.race([
        connected,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('the retry did not connect')), STEP_MS),
        ),
      ]);
      expect(connack?.reasonCode ?? 0).toBe(0);
    } finally {
      const stopped = new Promise<void>((r) => client.once('stopped', () => r()));
      client.stop();
      await stopped;
      client.close();
    }
    const accepted = await waitEvent(s, (e) => e.kind === 'connect.accepted' && e.clientId === thingName);
    expect(accepted.certificateId).toBe(dev.certificateId);
    const certArn = `arn:aws:iot:us-east-1:123456789012:cert/${dev.certificateId}`;
    const thing = await s.iot.send(new DescribeThingCommand({ thingName }));
    expect(thing.thingTypeName).toBe('jitr-sensor');
    expect(thing.attributes).toEqual({ serial: `e2e-${process.pid}` });
    expect((await s.iot.send(new ListThingPrincipalsCommand({ thingName }))).principals).toEqual([certArn]);
    expect(
      (await s.iot.send(new ListAttachedPoliciesCommand({ target: certArn }))).policies?.map(
        (p) => p.policyName,
      ),
    ).toEqual(['jitr-ca-device']);
    const cert = await s.iot.send(new DescribeCertificateCommand({ certificateId: dev.certificateId }));
    expect(cert.certificateDescription?.status).toBe('ACTIVE');
  });

  it('a certificate of another CA, registered with auto-registration and its events routed to the activator, is not activated; the reason is logged', async () => {
    const foreign = makeCa(uniq('foreign-ca'));
    const foreignId = await registerCa(s, foreign);
    await s.iot.send(
      new CreateTopicRuleCommand({
        ruleName: `foreign_${process.pid}`,
        topicRulePayload: {
          sql: `SELECT * FROM '$aws/events/certificates/registered/${foreignId}'`,
          actions: [{ lambda: { functionArn: ready.functionArn! } }],
        },
      }),
    );
    const thingName = `sensor-foreign-${serial()}`;
    const leaf = makeLeaf(
      foreign,
      [
        ['O', 'acme-sensors'],
        ['CN', thingName],
      ],
      dir,
    );
    const device = sdk5(s, leaf, thingName);
    await expect(device.connected).rejects.toThrow();
    await device.stop(false);
    const refused = await activator.decision(leaf.certificateId, 'refuse');
    expect(refused.code).toBe('JITR_NOT_SIGNED_BY_FACTORY_CA');
    expect(refused.reason).toContain('provline did not sign it, so it is not activated');
    const cert = await s.iot.send(new DescribeCertificateCommand({ certificateId: leaf.certificateId }));
    expect(cert.certificateDescription?.status).toBe('PENDING_ACTIVATION');
    await expect(s.iot.send(new DescribeThingCommand({ thingName }))).rejects.toMatchObject({
      name: 'ResourceNotFoundException',
    });
    const invoked = await waitEvent(
      s,
      (e) => e.kind === 'rule.invoked' && e.details?.ruleName === `foreign_${process.pid}`,
    );
    expect(invoked.details?.answer).toMatchObject({
      decision: { action: 'refuse', code: 'JITR_NOT_SIGNED_BY_FACTORY_CA' },
    });
  });

  it('a replayed event for an activated certificate is a no-op: nothing is written', async () => {
    const thingName = `sensor-replay-${process.pid}`;
    const dev = devices.get(thingName)!;
    const device = sdk5(s, dev, thingName);
    await expect(device.connected).rejects.toThrow();
    await device.stop(false);
    await activator.decision(dev.certificateId, 'activate');
    const before = await s.iot.send(new DescribeCertificateCommand({ certificateId: dev.certificateId }));
    const thingBefore = await s.iot.send(new DescribeThingCommand({ thingName }));
    expect(before.certificateDescription?.status).toBe('ACTIVE');
    const event = registeredEvent(dev.certificateId, caId.jitr!);
    const res = await fetch(ready.url!, { method: 'POST', body: JSON.stringify(event) });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      decision: { action: 'none', certificateId: dev.certificateId },
      steps: [],
    });
    const line = await activator.decision(dev.certificateId, 'none');
    expect(line.reason).toContain('ACTIVE already');
    const after = await s.iot.send(new DescribeCertificateCommand({ certificateId: dev.certificateId }));
    expect(after.certificateDescription?.lastModifiedDate).toEqual(
      before.certificateDescription?.lastModifiedDate,
    );
    expect((await s.iot.send(new DescribeThingCommand({ thingName }))).version).toBe(thingBefore.version);
  });

  it('SIGTERM stops an activator cleanly: its ARN is unmapped, exit 0; --ca-cert replaces the HSM lookup', async () => {
    const other = startActivator([
      '--profile',
      'lambda',
      '--ca-cert',
      join(dir, 'lambda-ca.pem'),
      '--function-name',
      'stop-test',
    ]);
    const up = await other.wait((l) => l.msg === 'jitr activator ready', 'ready line', 60_000);
    expect(up.rules?.[0]?.topic).toBe(`$aws/events/certificates/registered/${caId.lambda}`);
    expect(other.stderr).not.toContain('PIN');
    other.child.kill('SIGTERM');
    const stopped = await other.wait((l) => l.msg === 'jitr activator stopped', 'stop line');
    expect(stopped).toMatchObject({ signal: 'SIGTERM', unmapped: true });
    expect(await other.exited).toBe(0);
    const map = (await (await fetch(`${s.iotUrl}/_emulator/lambdas`)).json()) as Record<string, string>;
    expect(map[up.functionArn!]).toBeUndefined();
    expect(map[ready.functionArn!]).toBe(ready.url); // the other activator's mapping is untouched
  });

  it('bad input is refused before anything starts, naming the field: no profile, a thing name without placeholder, no CA, a CA file without a certificate', async () => {
    const none = await cli(['jitr-activator']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('needs --profile');
    const flat = await cli(['jitr-activator', '--profile', 'flat', '--ca-cert', join(dir, 'lambda-ca.pem')]);
    expect(flat.code).toBe(3);
    expect(flat.stderr).toContain('JITR_CONFIG_INVALID');
    expect(flat.stderr).toContain('thingName: "sensor" has no placeholder');
    const noca = await cli(['jitr-activator', '--profile', 'noca']);
    expect(noca.code).toBe(3);
    expect(noca.stderr).toContain('CA_NOT_CONFIGURED');
    writeFileSync(join(dir, 'empty.pem'), 'no certificate here\n');
    const empty = await cli(['jitr-activator', '--profile', 'jitr', '--ca-cert', join(dir, 'empty.pem')]);
    expect(empty.code).toBe(3);
    expect(empty.stderr).toContain('holds no PEM certificate');
  });

  it('the Lambda package (npm run package:jitr-lambda shape), unzipped beside @aws-sdk/client-iot alone, activates a pending device with its documented environment', async () => {
    const thingName = `sensor-lambda-${process.pid}`;
    const dev = devices.get(thingName)!;
    const first = sdk5(s, dev, thingName);
    await expect(first.connected).rejects.toThrow();
    await first.stop(false);
    await waitEvent(s, (e) => e.kind === 'jitr.registered' && e.certificateId === dev.certificateId);

    const zipFile = join(dir, 'jitr-lambda.zip');
    const lambdaCli = async (...extra: string[]): Promise<CliResult> =>
      ok(
        await cli([
          'jitr-activator',
          '--profile',
          'lambda',
          '--ca-cert',
          join(dir, 'lambda-ca.pem'),
          ...extra,
        ]),
      );
    await lambdaCli('--package', zipFile);
    const envOut = json<{ Variables: Record<string, string> }>(await lambdaCli('--print-config'));
    const task = join(dir, 'task');
    execFileSync('python3', ['-m', 'zipfile', '-e', zipFile, task]);
    mkdirSync(join(task, 'node_modules', '@aws-sdk'), { recursive: true });
    symlinkSync(
      join(ROOT, 'node_modules', '@aws-sdk', 'client-iot'),
      join(task, 'node_modules', '@aws-sdk', 'client-iot'),
    );
    const event = registeredEvent(dev.certificateId, caId.lambda!);
    const script = `import(${JSON.stringify(pathToFileURL(join(task, 'index.js')).href)}).then((m) => m.handler(${JSON.stringify(event)})).then((r) => process.stdout.write('RESULT ' + JSON.stringify(r) + '\\n'))`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: task,
      encoding: 'utf8',
      timeout: STEP_MS,
      env: {
        PATH: process.env.PATH,
        ...envOut.Variables,
        PROVLINE_JITR_CA_CERTS: 'ca-certificates.pem', // the file the package carries
        AWS_REGION: 'us-east-1',
        AWS_ACCESS_KEY_ID: KEY,
        AWS_SECRET_ACCESS_KEY: SECRET,
        AWS_ENDPOINT_URL_IOT: s.iotUrl,
      },
    });
    const logLine = JSON.parse(out.split('\n').find((l) => l.startsWith('{'))!) as Line;
    expect(logLine).toMatchObject({ msg: 'jitr decision', action: 'activate', thingName, profile: 'lambda' });
    const result = JSON.parse(
      out
        .split('\n')
        .find((l) => l.startsWith('RESULT '))!
        .slice(7),
    ) as { steps: string[] };
    expect(result.steps).toContain('UpdateCertificate ACTIVE');
    expect(envOut.Variables.PROVLINE_JITR_CA_CERTS).toContain('-----BEGIN CERTIFICATE-----');

    const again = sdk5(s, dev, thingName);
    await again.connected;
    await again.stop();
    expect((await events(s, { clientId: thingName })).some((e) => e.kind === 'connect.accepted')).toBe(true);
  });
});
