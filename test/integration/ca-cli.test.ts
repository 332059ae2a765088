/**
 * `provline ca …` as an operator runs it (the built CLI), against SoftHSM2 in this file's own
 * home and the AWS IoT stand-in as a process: create the CA in the HSM, register it with its
 * JITP template (verification certificate signed in the HSM), idempotently; AWS's view with
 * `ca status`; a template that would fail in the field refused before anything is signed; a
 * wrong registration code refused by the stand-in and reported; and one device, its
 * certificate signed by the HSM CA, provisioned by JITP on its first connect through the
 * official device SDK.
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DescribeThingCommand, ListCACertificatesCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as cloudCa from '../../src/cloud/ca.js';
import type { CloudClients } from '../../src/cloud/clients.js';
import { ProvlineError } from '../../src/core/errors.js';
import { createCa, signDeviceCertificate, signVerificationCertificate } from '../../src/hsm/ca.js';
import { openHsm, type Hsm } from '../../src/hsm/hsm.js';
import { stackPaths } from '../../src/stack/home.js';
import { hsmUp, SOFTHSM_MODULE } from '../../src/stack/softhsm.js';
import { json, runCli, type CliResult } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';
import { KEY, SECRET, s3Client } from './emulator-helpers.js';
import { sdk5, startStandIn, waitEvent, type StandIn } from './mqtt-helpers.js';

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

function jitpTemplate(subjectParameter: string): string {
  return JSON.stringify({
    Parameters: {
      'AWS::IoT::Certificate::CommonName': { Type: 'String' },
      [subjectParameter]: { Type: 'String' },
      'AWS::IoT::Certificate::Id': { Type: 'String' },
    },
    Resources: {
      thing: {
        Type: 'AWS::IoT::Thing',
        Properties: {
          ThingName: { Ref: 'AWS::IoT::Certificate::CommonName' },
          AttributePayload: { maker: { Ref: subjectParameter } },
        },
      },
      certificate: {
        Type: 'AWS::IoT::Certificate',
        Properties: { CertificateId: { Ref: 'AWS::IoT::Certificate::Id' }, Status: 'ACTIVE' },
      },
      policy: { Type: 'AWS::IoT::Policy', Properties: { PolicyDocument: JSON.stringify(POLICY) } },
    },
  });
}

const ROLE = 'arn:aws:iam::123456789012:role/provline-jitp';

describe('provline ca (CLI) against SoftHSM2 and the stand-in', () => {
  let dir: string;
  let home: string;
  let s: StandIn;
  const env = (): NodeJS.ProcessEnv => ({
    PROVLINE_HOME: home,
    PROVLINE_CONFIG: join(dir, 'provline.config.yaml'),
    AWS_ACCESS_KEY_ID: KEY,
    AWS_SECRET_ACCESS_KEY: SECRET,
    AWS_PROFILE: undefined,
    SOFTHSM2_CONF: undefined,
    PROVLINE_HSM_PIN: undefined,
  });
  const cli = (args: string[]): Promise<CliResult> => runCli(args, { env: env() });
  const ok = (r: CliResult): CliResult => {
    expect(r.code, r.stderr + r.stdout).toBe(0);
    return r;
  };

  /** The HSM in this process, only between CLI calls (one process writes the token at a time). */
  async function withHsm<T>(fn: (h: Hsm) => Promise<T>): Promise<T> {
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
      return await fn(h);
    } finally {
      h.close();
    }
  }

  beforeAll(async () => {
    dir = tempDir('provline-ca-cli-');
    home = join(dir, 'home');
    hsmUp(stackPaths(home));
    s = await startStandIn(join(dir, 'state'));
    writeFileSync(join(dir, 'jitp.json'), jitpTemplate('AWS::IoT::Certificate::Organization'));
    writeFileSync(join(dir, 'jitp-country.json'), jitpTemplate('AWS::IoT::Certificate::Country'));
    const profile = (label: string, template: string): object => ({
      template,
      policyName: 'unused-by-jitp',
      csrSubject: { O: 'acme-sensors' },
      ca: { label, pathLen: 0, subject: { O: 'acme-sensors', CN: `${label} factory CA` } },
    });
    writeFileSync(
      join(dir, 'provline.config.yaml'),
      JSON.stringify({
        aws: { endpoint: s.iotUrl, s3Endpoint: s.s3Url },
        profiles: {
          jitp: profile('jitp-ca', 'jitp.json'),
          country: profile('country-ca', 'jitp-country.json'),
          other: profile('other-ca', 'jitp.json'),
          e2e: profile('e2e-ca', 'jitp.json'),
        },
      }),
    );
  });
  afterAll(async () => {
    await s?.stop();
    await removeHome(home);
  });

  it('ca create, then ca register --template-body registers the CA ACTIVE with auto-registration and its template; a second register finds it and registers nothing', async () => {
    const made = json<{ certificateId: string; uri: string; certificatePem: string }>(
      ok(await cli(['ca', 'create', '--profile', 'jitp', '--json'])),
    );
    expect(made.uri).toMatch(/^pkcs11:token=provline;object=jitp-ca;id=/);
    const again = await cli(['ca', 'create', '--profile', 'jitp']);
    expect(again.code).toBe(3);
    expect(again.stderr).toContain('CA_EXISTS');

    const first = json<{
      certificateId: string;
      status: string;
      autoRegistrationStatus: string;
      alreadyRegistered: boolean;
      registrationConfig: { templateBody: string; roleArn: string };
    }>(
      ok(await cli(['ca', 'register', '--profile', 'jitp', '--template-body', '--role-arn', ROLE, '--json'])),
    );
    expect(first).toMatchObject({
      certificateId: made.certificateId,
      status: 'ACTIVE',
      autoRegistrationStatus: 'ENABLE',
      certificateMode: 'DEFAULT',
      alreadyRegistered: false,
      registrationConfig: { roleArn: ROLE },
    });
    expect(first.registrationConfig.templateBody).toMatch(/^\(inline, \d+ characters\)$/);
    const second = ok(
      await cli(['ca', 'register', '--profile', 'jitp', '--template-body', '--role-arn', ROLE]),
    );
    expect(second.stdout).toContain('already registered');
    const cas = await s.iot.send(new ListCACertificatesCommand({}));
    expect(cas.certificates!.filter((c) => c.certificateId === made.certificateId)).toHaveLength(1);

    const status = json<{ registered: boolean; aws: { status: string }; certificates: { total: number } }>(
      ok(await cli(['ca', 'status', '--profile', 'jitp', '--json'])),
    );
    expect(status).toMatchObject({ registered: true, aws: { status: 'ACTIVE' }, certificates: { total: 0 } });
  });

  it('JITP end to end: a device certificate signed by the HSM CA; the first connect is closed and provisions the thing from the template; the second connect is accepted', async () => {
    ok(await cli(['ca', 'create', '--profile', 'e2e']));
    ok(await cli(['ca', 'register', '--profile', 'e2e', '--template-body', '--role-arn', ROLE]));
    const thingName = `acme-${process.pid}-1`;
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const certPem = await withHsm((h) =>
      signDeviceCertificate(h, {
        ca: { label: 'e2e-ca', deviceValidityDays: 365 },
        spki: publicKey.export({ format: 'der', type: 'spki' }),
        subject: { O: 'acme-sensors', CN: thingName },
        now: new Date(),
      }),
    );
    const dev = { certFile: join(dir, `${thingName}.pem`), keyFile: join(dir, `${thingName}.key`) };
    writeFileSync(dev.certFile, `${certPem}\n`);
    writeFileSync(dev.keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });

    const firstTry = sdk5(s, dev, thingName);
    await expect(firstTry.connected).rejects.toThrow();
    await firstTry.stop(false);
    const provisioned = await waitEvent(s, (e) => e.kind === 'jitp.provisioned' && e.clientId === thingName);
    expect(provisioned.reason).toContain(`thing ${thingName}`);
    const thing = await s.iot.send(new DescribeThingCommand({ thingName }));
    expect(thing.attributes).toEqual({ maker: 'acme-sensors' });

    const secondTry = sdk5(s, dev, thingName);
    await secondTry.connected;
    await secondTry.stop();

    const status = json<{ certificates: { total: number; byStatus: Record<string, number> } }>(
      ok(await cli(['ca', 'status', '--profile', 'e2e', '--json'])),
    );
    expect(status.certificates).toEqual({ total: 1, byStatus: { ACTIVE: 1 } });
  });

  it('a template that would fail on first connect is refused before anything is signed or registered, naming the parameter', async () => {
    const before = (await s.iot.send(new ListCACertificatesCommand({}))).certificates!.length;
    const r = await cli(['ca', 'register', '--profile', 'country', '--template-body', '--role-arn', ROLE]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('JITP_TEMPLATE_INVALID');
    expect(r.stderr).toContain('AWS::IoT::Certificate::Country');
    expect(r.stderr).toContain('subject attribute C');
    expect((await s.iot.send(new ListCACertificatesCommand({}))).certificates!.length).toBe(before);
  });

  it("a profile whose CA is not on the token cannot use another's: ca status exits 3 with CA_KEY_NOT_FOUND", async () => {
    const r = await cli(['ca', 'status', '--profile', 'other']);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('CA_KEY_NOT_FOUND');
    expect(r.stderr).toContain('"other-ca"');
  });

  it('a verification certificate for another registration code is refused by the stand-in (RegistrationCodeValidationException) and reported as CA_REGISTRATION_CODE_REJECTED', async () => {
    const cloud: CloudClients = {
      iot: s.iot,
      s3: s3Client(s.s3Url),
      aws: {
        region: 'us-east-1',
        endpoint: s.iotUrl,
        s3Endpoint: s.s3Url,
        credentialsFile: undefined,
        profile: undefined,
        bucket: undefined,
        roleArn: undefined,
        useRealAws: false,
        rootCaFile: s.rootCaFile,
      },
      destroy: () => undefined,
    };
    const ca = {
      label: 'wrong-code-ca',
      keyType: 'P-256',
      validityDays: 30,
      deviceValidityDays: 30,
      subject: { CN: 'wrong code CA' },
    } as const;
    const error = await withHsm(async (h) => {
      const made = await createCa(h, { settings: ca, now: new Date(), csr: false });
      try {
        await cloudCa.registerCa(cloud, {
          caCertificatePem: made.certificatePem!,
          mode: 'DEFAULT',
          verificationCertificate: (code) =>
            signVerificationCertificate(h, {
              ca,
              registrationCode: code.replace(/^./, (c) => (c === 'f' ? 'e' : 'f')),
              now: new Date(),
            }),
        });
      } catch (e) {
        return e;
      }
      return undefined;
    });
    expect(error).toBeInstanceOf(ProvlineError);
    const e = error as ProvlineError;
    expect(e.code).toBe('CA_REGISTRATION_CODE_REJECTED');
    expect(e.details.errorName).toBe('RegistrationCodeValidationException');
    expect(e.message).toContain('registration code');
    expect(e.hint).toContain('registration code');
  });
});
