/**
 * A JITP lot on the line, as an operator runs it (the built CLI) on the local stack: the
 * factory CA made and registered in SoftHSM2 with its JITP template; a CSV submitted with
 * strategy jitp, whose devices are keyed and signed by the CA in the HSM with no AWS call (no
 * thing or certificate appears in the registry); openssl verifies each certificate against the
 * CA; a station writes certificate, chain and wrapped key to simulated devices over pty pairs;
 * each device's first connect is closed by the stand-in as AWS does, its retry connects as the
 * thing JITP made from the template. And the lots that must be refused before anything is
 * signed: a CA of another profile, a CA on another token, a CA AWS does not know.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DescribeCertificateCommand,
  DescribeThingCommand,
  ListThingPrincipalsCommand,
  ListThingsCommand,
  type IoTClient,
} from '@aws-sdk/client-iot';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSimulator } from '../../devices/index.js';
import { makeClients } from '../../src/cloud/clients.js';
import { loadConfig } from '../../src/config/load.js';
import { resolveRuntime } from '../../src/stack/runtime.js';
import { stackDown, stackUp } from '../../src/stack/stack.js';
import { BIN, json, ROOT, runCli, type CliResult } from '../helpers/cli.js';
import { removeHome, tempDir } from '../helpers/home.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';

const ROLE = 'arn:aws:iam::123456789012:role/provline-jitp';
const SUBJECT_O = 'provline-line-test';

let dir: string;
let home: string;
let ptyDir: string;
let iot: IoTClient;
let redis: Redis;
let awsEndpoint: string;
const kek = randomBytes(32);
const pairs: PtyPair[] = [];
const children: ChildProcess[] = [];

const env = (): NodeJS.ProcessEnv => ({
  PROVLINE_HOME: home,
  PROVLINE_CONFIG: join(dir, 'provline.config.yaml'),
  PROVLINE_LOG_LEVEL: 'warn',
  SOFTHSM2_CONF: undefined,
  PROVLINE_HSM_PIN: undefined,
});
const cli = (args: string[]): Promise<CliResult> => runCli(args, { env: env() });
const ok = (r: CliResult): CliResult => {
  expect(r.code, r.stderr + r.stdout).toBe(0);
  return r;
};

function profile(over: Record<string, unknown>): Record<string, unknown> {
  return {
    strategy: 'jitp',
    thingName: 'jl-{serial}',
    template: join(ROOT, 'config/templates/sensor-jitp.json'),
    policy: join(ROOT, 'config/policies/demo-device.json'),
    policyName: 'provline-demo-device',
    keyDelivery: 'wrapped',
    kekLabel: 'jline-kek',
    csrSubject: { O: SUBJECT_O },
    ca: { label: 'jline-ca', pathLen: 0, subject: { CN: 'line test factory CA', O: SUBJECT_O } },
    driver: 'provline-serial-v1',
    ...over,
  };
}

beforeAll(async () => {
  dir = tempDir('provline-jitp-line-');
  home = join(dir, 'home');
  ptyDir = mkdtempSync(join(tmpdir(), 'provline-jitp-pty-'));
  const s = await stackUp(home);
  writeFileSync(
    join(dir, 'provline.config.yaml'),
    stringify({
      home,
      workers: { lockMs: 2000, flushMs: 200 },
      profiles: {
        jline: profile({}),
        // Names a CA that was never made on this token: another profile's CA cannot sign.
        stranger: profile({
          ca: { label: 'stranger-ca', subject: { CN: 'stranger CA', O: SUBJECT_O } },
        }),
        elsewhere: profile({
          ca: {
            label: 'jline-ca',
            token: 'another-token',
            subject: { CN: 'line test factory CA', O: SUBJECT_O },
          },
        }),
        // O with a space: AWS refuses it as the thing attribute the template makes of it.
        spaced: profile({ csrSubject: { O: 'provline line test' } }),
        // JITP for modems that make their own key: the CA in the station's HSM signs their CSRs.
        jdev: profile({
          thingName: 'jd-{serial}',
          keyDelivery: 'device',
          driver: 'nordic-at',
          driverSettings: { secTag: 16842753 },
        }),
        // JITR: its own CA, registered without a template; the activator makes the things.
        jr: profile({
          strategy: 'jitr',
          thingName: 'jr-{serial}',
          ca: { label: 'jline-jitr-ca', pathLen: 0, subject: { CN: 'line test JITR CA', O: SUBJECT_O } },
        }),
        unregistered: profile({
          ca: { label: 'unregistered-ca', subject: { CN: 'unregistered CA', O: SUBJECT_O } },
        }),
      },
    }),
  );
  writeFileSync(join(dir, 'kek.bin'), kek, { mode: 0o600 });
  ok(await cli(['hsm', 'kek', 'import', '--profile', 'jline', '--file', join(dir, 'kek.bin')]));
  // Every test's lots are signed by these CAs: one for JITP with its template, one for JITR without.
  ok(await cli(['ca', 'create', '--profile', 'jline']));
  ok(await cli(['ca', 'register', '--profile', 'jline', '--template-body', '--role-arn', ROLE]));
  ok(await cli(['ca', 'create', '--profile', 'jr']));
  ok(await cli(['ca', 'register', '--profile', 'jr']));
  const rt = resolveRuntime(loadConfig({ file: join(dir, 'provline.config.yaml'), env: {} }));
  awsEndpoint = rt.aws.endpoint!;
  iot = makeClients(rt.aws, { maxAttempts: 3 }).iot;
  redis = new Redis(s.redis.url!, { maxRetriesPerRequest: 2 });
  // Each CLI call above has its own budget (runCli); the hook's is only their sum's bound.
}, 600_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const p of pairs) await p.stop().catch(() => undefined);
  redis?.disconnect();
  if (home) await stackDown(home).catch(() => undefined);
  await removeHome(home);
  rmSync(ptyDir, { recursive: true, force: true });
});

function csv(name: string, serials: string[]): string {
  const file = join(dir, `${name}.csv`);
  writeFileSync(file, `serial\n${serials.join('\n')}\n`);
  return file;
}

const devKey = (serial: string): string => `provline:dev:${serial}`;

interface StationResult {
  event: string;
  serial: string;
  outcome: string;
  code?: string;
  connected?: boolean;
}

/**
 * A station run over one pty pair per serial, a simulated device of `driver` on each (sensors
 * hold the transport KEK), unplugged once `station --once` has answered.
 */
async function stationOnce(
  profile: string,
  stationId: string,
  serials: readonly string[],
  driver: 'provline-serial-v1' | 'nordic-at' = 'provline-serial-v1',
): Promise<{ station: CliResult; results: StationResult[] }> {
  const rigs = await Promise.all(
    serials.map(async (serial, i) => {
      const pair = await startPtyPair(ptyDir, `${stationId}-${i}`);
      pairs.push(pair);
      const sim = await startSimulator({
        driver,
        port: pair.device,
        serial,
        ...(driver === 'provline-serial-v1' ? { kek } : {}),
      });
      return { pair, sim };
    }),
  );
  const station = await cli([
    'station',
    '--once',
    '--json',
    '--profile',
    profile,
    '--station-id',
    stationId,
    ...rigs.flatMap((r) => ['--port', r.pair.host]),
  ]);
  for (const r of rigs) await r.sim.close();
  const results = station.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as StationResult)
    .filter((e) => e.event === 'result');
  return { station, results };
}

describe('a JITP lot: signed offline by the factory CA in the HSM, provisioned by AWS at first connect', () => {
  it('the factory CA made in beforeAll is registered ACTIVE with auto-registration and its JITP template', async () => {
    const st = json<{ registered: boolean; aws: { status: string; autoRegistrationStatus: string } }>(
      ok(await cli(['ca', 'status', '--profile', 'jline', '--json'])),
    );
    expect(st).toMatchObject({
      registered: true,
      aws: { status: 'ACTIVE', autoRegistrationStatus: 'ENABLE' },
    });
  });

  it.each([
    ['stranger', 'CA_KEY_NOT_FOUND'],
    ['elsewhere', 'CA_WRONG_TOKEN'],
  ])('a lot of profile %s is refused with %s before anything is signed or queued', async (name, code) => {
    const serials = [`${name.toUpperCase()}-1`, `${name.toUpperCase()}-2`];
    const r = await cli(['submit', csv(name, serials), '--profile', name]);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stderr).toContain(code);
    for (const s of serials) expect(await redis.exists(devKey(s))).toBe(0);
  });

  it('a lot whose subject would break the JITP template at first connect is refused at submit, naming line, field and value', async () => {
    const r = await cli(['submit', csv('spaced', ['SPACED-1', 'SPACED-2']), '--profile', 'spaced']);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stderr).toContain('JITP_SUBJECT_INVALID');
    expect(r.stderr).toContain(
      'line 2 (serial SPACED-1): /Resources/thing/Properties/AttributePayload/maker = "provline line test"',
    );
    expect(r.stderr).toContain('line 3 (serial SPACED-2)');
    expect(r.stderr).toContain('no spaces');
    expect(await redis.exists(devKey('SPACED-1'))).toBe(0);
  });

  it('a lot whose CA is in the HSM but unknown to AWS is refused with CA_NOT_REGISTERED, naming the command that fixes it', async () => {
    ok(await cli(['ca', 'create', '--profile', 'unregistered']));
    const r = await cli(['submit', csv('unregistered', ['UNREG-1']), '--profile', 'unregistered']);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stderr).toContain('CA_NOT_REGISTERED');
    expect(r.stderr).toContain('provline ca register --profile unregistered');
    expect(await redis.exists(devKey('UNREG-1'))).toBe(0);
  });

  it('CSV → signed in the HSM (nothing in the registry) → station → devices provisioned by JITP at first connect', async () => {
    const serials = Array.from({ length: 3 }, (_, i) => `JL${process.pid}-${i + 1}`);
    const submitted = json<{
      batchId: string;
      total: number;
      failed: number;
      certificates: string;
      stages: { registered: number };
    }>(
      ok(
        await cli([
          'submit',
          csv('lot', serials),
          '--profile',
          'jline',
          '--wait',
          '--workers',
          'local',
          '--json',
        ]),
      ),
    );
    expect(submitted).toMatchObject({
      total: 3,
      failed: 0,
      certificates: 'signed',
      stages: { registered: 3 },
    });

    // Signed offline: every certificate verifies against the CA, is a TLS client certificate
    // with a random serial of at least 64 bits; AWS has seen none of them.
    const caPem = json<{ ca: { certificatePem: string } }>(
      ok(await cli(['ca', 'status', '--profile', 'jline', '--json'])),
    ).ca.certificatePem;
    writeFileSync(join(dir, 'ca.pem'), caPem);
    const certIds: string[] = [];
    for (const serial of serials) {
      const rec = await redis.hgetall(devKey(serial));
      expect(rec.state).toBe('signed');
      const blocks = rec.certificatePem!.match(
        /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g,
      )!;
      expect(blocks).toHaveLength(2); // the device certificate, then the CA it presents
      const leaf = new X509Certificate(blocks[0]);
      expect(new X509Certificate(blocks[1]!).fingerprint256).toBe(new X509Certificate(caPem).fingerprint256);
      expect(leaf.subject).toContain(`CN=jl-${serial}`);
      expect(leaf.subject).toContain(`O=${SUBJECT_O}`);
      expect(BigInt(`0x${leaf.serialNumber}`) >= 2n ** 63n || leaf.serialNumber.length >= 16).toBe(true);
      writeFileSync(join(dir, `${serial}.pem`), blocks[0]);
      const verified = execFileSync(
        'openssl',
        ['verify', '-CAfile', join(dir, 'ca.pem'), join(dir, `${serial}.pem`)],
        {
          encoding: 'utf8',
        },
      );
      expect(verified.trim()).toBe(`${join(dir, `${serial}.pem`)}: OK`);
      const eku = execFileSync(
        'openssl',
        ['x509', '-in', join(dir, `${serial}.pem`), '-noout', '-ext', 'extendedKeyUsage'],
        {
          encoding: 'utf8',
        },
      );
      expect(eku).toContain('TLS Web Client Authentication');
      certIds.push(rec.certificateId!);
      await expect(
        iot.send(new DescribeCertificateCommand({ certificateId: rec.certificateId! })),
      ).rejects.toMatchObject({
        name: 'ResourceNotFoundException',
      });
      // No private key in the clear: the record holds the key only wrapped under the KEK.
      expect(Object.values(rec).join('\n')).not.toContain('PRIVATE KEY');
    }
    const things = await iot.send(new ListThingsCommand({}));
    expect((things.things ?? []).filter((t) => t.thingName?.startsWith('jl-'))).toEqual([]);

    const before = json<{ checked: number; awaitingFirstConnect: number; orphans: unknown[] }>(
      ok(await cli(['reconcile', submitted.batchId, '--json'])),
    );
    expect(before).toMatchObject({ checked: 0, awaitingFirstConnect: 3, orphans: [] });

    // The station: a port per device, the devices holding the transport KEK.
    const { station, results } = await stationOnce('jline', 'jitp-line', serials);
    ok(station);
    expect(results.map((r) => [r.serial, r.outcome, r.connected]).sort()).toEqual(
      serials.map((s) => [s, 'verified', true]).sort(),
    );

    // AWS made each thing from the template at the first connect, with the certificate the HSM
    // signed, ACTIVE and attached; the stand-in logged the JITP step for each.
    for (const [i, serial] of serials.entries()) {
      const thingName = `jl-${serial}`;
      const thing = await iot.send(new DescribeThingCommand({ thingName }));
      expect(thing.attributes).toEqual({ maker: SUBJECT_O, provisioned: 'jitp' });
      const principals = await iot.send(new ListThingPrincipalsCommand({ thingName }));
      expect(principals.principals).toHaveLength(1);
      expect(principals.principals![0]).toContain(certIds[i]!);
      const cert = await iot.send(new DescribeCertificateCommand({ certificateId: certIds[i]! }));
      expect(cert.certificateDescription?.status).toBe('ACTIVE');
      const events = (await (
        await fetch(`${awsEndpoint}/_emulator/events?clientId=${encodeURIComponent(thingName)}`)
      ).json()) as { events: { kind: string }[] };
      const kinds = events.events.map((e) => e.kind);
      expect(kinds).toContain('jitp.provisioned');
      expect(kinds.indexOf('jitp.provisioned')).toBeLessThan(kinds.lastIndexOf('connect.accepted'));
      expect(await redis.hget(devKey(serial), 'state')).toBe('connected');
    }

    const after = json<{ checked: number; sound: number; awaitingFirstConnect: number }>(
      ok(await cli(['reconcile', submitted.batchId, '--json'])),
    );
    expect(after).toMatchObject({ checked: 3, sound: 3, awaitingFirstConnect: 0 });
    const report = ok(await cli(['report', submitted.batchId, '--format', 'csv']))
      .stdout.trim()
      .split('\n');
    const cols = report[0]!.split(',');
    for (const row of report.slice(1)) {
      const r = Object.fromEntries(row.split(',').map((v, i) => [cols[i], v]));
      expect(r.state).toBe('connected');
      expect(r.registeredAt).toBe('');
      for (const at of ['signedAt', 'flashedAt', 'verifiedAt', 'connectedAt']) expect(r[at], at).not.toBe('');
      expect(r.signedAt! <= r.flashedAt! && r.verifiedAt! <= r.connectedAt!).toBe(true);
    }

    // One device's certificate off and on again, through the journal.
    const status = async (id: string): Promise<string | undefined> =>
      (await iot.send(new DescribeCertificateCommand({ certificateId: id }))).certificateDescription?.status;
    const off = json<{ before: string; after: string; registered: boolean }>(
      ok(await cli(['cert', 'deactivate', serials[0]!, '--json'])),
    );
    expect(off).toMatchObject({ before: 'ACTIVE', after: 'INACTIVE', registered: false });
    expect(await status(certIds[0]!)).toBe('INACTIVE');
    ok(await cli(['cert', 'activate', serials[0]!]));
    expect(await status(certIds[0]!)).toBe('ACTIVE');
  });

  it('a device revoked after signing and before its first connect is refused by AWS at that connect, and never provisioned', async () => {
    const serial = `JLREV${process.pid}`;
    ok(await cli(['submit', csv('revoked', [serial]), '--profile', 'jline', '--wait', '--workers', 'local']));
    const certificateId = await redis.hget(devKey(serial), 'certificateId');
    const revoked = json<{ before: string; after: string; registered: boolean }>(
      ok(await cli(['cert', 'revoke', serial, '--json'])),
    );
    expect(revoked).toEqual(
      expect.objectContaining({ before: 'UNREGISTERED', after: 'REVOKED', registered: true }),
    );
    expect(
      (await iot.send(new DescribeCertificateCommand({ certificateId: certificateId! })))
        .certificateDescription?.status,
    ).toBe('REVOKED');

    const result = (await stationOnce('jline', 'jitp-rev', [serial])).results[0];
    expect(result).toMatchObject({ outcome: 'failed', code: 'DEVICE_CONNECT_FAILED' });
    await expect(iot.send(new DescribeThingCommand({ thingName: `jl-${serial}` }))).rejects.toMatchObject({
      name: 'ResourceNotFoundException',
    });
    const events = (await (
      await fetch(`${awsEndpoint}/_emulator/events?clientId=${encodeURIComponent(`jl-${serial}`)}`)
    ).json()) as { events: { kind: string; reason: string }[] };
    expect(events.events.some((e) => e.kind === 'connect.refused' && e.reason.includes('REVOKED'))).toBe(
      true,
    );
    expect(events.events.some((e) => e.kind.startsWith('jitp.'))).toBe(false);
  });

  it('a JITR lot: signed offline, the first connect registers each certificate PENDING_ACTIVATION, the activator activates it and makes the thing, the device retry connects as its thing', async () => {
    // The activator, as a local process serving the Lambda handler behind a topic rule.
    const activator = spawn(process.execPath, [BIN, 'jitr-activator', '--profile', 'jr'], {
      env: { ...process.env, ...env() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(activator);
    const decisions: Array<{ msg?: string; decision?: string; thingName?: string }> = [];
    let stderr = '';
    activator.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      activator.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = JSON.parse(buf.slice(0, nl)) as { msg?: string };
          buf = buf.slice(nl + 1);
          decisions.push(line);
          if (line.msg === 'jitr activator ready') resolve();
        }
      });
      activator.once('exit', (code) => reject(new Error(`the activator exited with ${code}: ${stderr}`)));
    });

    const serials = [`JR${process.pid}-1`, `JR${process.pid}-2`];
    const submitted = json<{ failed: number; certificates: string; stages: { registered: number } }>(
      ok(
        await cli([
          'submit',
          csv('jr', serials),
          '--profile',
          'jr',
          '--wait',
          '--workers',
          'local',
          '--json',
        ]),
      ),
    );
    expect(submitted).toMatchObject({ failed: 0, certificates: 'signed', stages: { registered: 2 } });
    ok((await stationOnce('jr', 'jitr-line', serials)).station);
    for (const serial of serials) {
      expect(await redis.hget(devKey(serial), 'state')).toBe('connected');
      const thing = await iot.send(new DescribeThingCommand({ thingName: `jr-${serial}` }));
      expect(thing.thingName).toBe(`jr-${serial}`);
      const events = (await (
        await fetch(`${awsEndpoint}/_emulator/events?clientId=${encodeURIComponent(`jr-${serial}`)}`)
      ).json()) as { events: { kind: string }[] };
      const kinds = events.events.map((e) => e.kind);
      expect(kinds).toContain('jitr.registered');
      expect(kinds.indexOf('jitr.registered')).toBeLessThan(kinds.lastIndexOf('connect.accepted'));
      // The activator logged its decision for the thing.
      expect(decisions.some((d) => JSON.stringify(d).includes(`jr-${serial}`))).toBe(true);
    }
    activator.kill('SIGTERM');
  });

  it('JITP with keys the devices make themselves: nothing in the HSM stage, the station has the CA sign each CSR, the device connects as the thing JITP made', async () => {
    const serials = [`35265700${String(process.pid % 10_000_000).padStart(7, '0')}`];
    const submitted = json<{ batchId: string; hsmJobs?: number }>(
      ok(await cli(['submit', csv('jdev', serials), '--profile', 'jdev', '--json'])),
    );
    expect(await redis.hget(devKey(serials[0]!), 'state')).toBe('accepted');
    ok((await stationOnce('jdev', 'jdev', serials, 'nordic-at')).station);
    const rec = await redis.hgetall(devKey(serials[0]!));
    expect(rec).toMatchObject({ state: 'connected', keySource: 'device', batch: submitted.batchId });
    expect(rec.wrappedKey).toBeUndefined();
    const leaf = new X509Certificate(
      rec.certificatePem!.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)![0],
    );
    expect(leaf.subject).toContain(`CN=jd-${serials[0]}`);
    expect(leaf.publicKey.export({ type: 'spki', format: 'pem' })).toBe(rec.publicKey);
    const thing = await iot.send(new DescribeThingCommand({ thingName: `jd-${serials[0]}` }));
    expect(thing.attributes).toEqual({ maker: SUBJECT_O, provisioned: 'jitp' });
  });
});
